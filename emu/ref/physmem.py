"""Reference physical memory: a dict of 8-byte words."""

from __future__ import annotations

from emu import arch
from emu._check import u64
from emu.errors import EmuValueError


class PhysMem:
    """Physical memory as a dict from word address to value (zero when absent)."""

    def __init__(self) -> None:
        self.words: dict[int, int] = {}

    @staticmethod
    def _check(pa: int) -> int:
        v = u64(pa, "pa")
        if v + 8 > 1 << arch.PA_BITS_MAX:
            raise EmuValueError(f"pa={v:#x} reaches beyond 2^{arch.PA_BITS_MAX}")
        if v % 8:
            raise EmuValueError(f"pa={v:#x} is not 8-byte aligned")
        return v

    def read_u64(self, pa: int) -> int:
        """Return the word at ``pa``."""
        return self.words.get(self._check(pa), 0)

    def write_u64(self, pa: int, value: int) -> None:
        """Store ``value`` at ``pa``."""
        self.words[self._check(pa)] = u64(value, "value")
