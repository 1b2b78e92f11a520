"""Sparse simulated physical memory (``csrc/physmem.c``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from emu import arch
from emu._check import u64
from emu._ffi import check, ffi, from_array, lib
from emu.errors import EmuMemoryError, EmuValueError

PA_LIMIT = 1 << arch.PA_BITS_MAX
_U64_PA_MAX = PA_LIMIT - 8  # highest address of a whole 8-byte word


def _pa(pa: Any, nbytes: int, align: int, name: str = "pa") -> int:
    v = u64(pa, name)
    if v + nbytes > PA_LIMIT:
        raise EmuValueError(
            f"{name}={v:#x}+{nbytes} bytes reaches beyond 2^{arch.PA_BITS_MAX}"
        )
    if v % align:
        raise EmuValueError(f"{name}={v:#x} is not {align}-byte aligned")
    return v


class PhysMem:
    """Simulated physical memory of 4 KiB frames, zero until written.

    Physical addresses run up to 2^52.  Only frames that have been written cost host
    memory, so a 1 TiB machine costs what its page tables cost.
    """

    def __init__(self) -> None:
        h = lib.emu_physmem_new()
        if h == ffi.NULL:
            raise EmuMemoryError("cannot allocate physical memory")
        self._h = ffi.gc(h, lib.emu_physmem_free)

    def read_u64(self, pa: int) -> int:
        """Return the 8-byte little-endian word at ``pa`` (8-byte aligned)."""
        out = ffi.new("uint64_t *")
        if type(pa) is not int or not 0 <= pa <= _U64_PA_MAX or pa & 7:
            pa = _pa(pa, 8, 8)  # the checks (and their errors) for anything unusual
        check(lib.emu_physmem_read_u64(self._h, pa, out), "read_u64")
        return int(out[0])

    def write_u64(self, pa: int, value: int) -> None:
        """Write the 8-byte word ``value`` at ``pa`` (8-byte aligned)."""
        if type(value) is not int or not 0 <= value < 1 << 64:
            value = u64(value, "value")
        if type(pa) is not int or not 0 <= pa <= _U64_PA_MAX or pa & 7:
            pa = _pa(pa, 8, 8)
        check(lib.emu_physmem_write_u64(self._h, pa, value), "write_u64")

    def read_path(self, table_pa: int, va: int, top_level: int) -> list[int]:
        """The entries on ``va``'s path from the table at ``table_pa``, in one C call.

        From level ``top_level`` (``arch.LVL_*``: 4 for a PML4, 5 for a PML5) down to
        the page table, each next table taken from the entry's address bits 51:12 with
        no other check (present, PS and reserved bits are the caller's to judge);
        stops after a zero entry.  ``[0]`` is the top-level entry.
        """
        if not (  # the checks (and their errors) only for anything unusual
            type(table_pa) is int
            and 0 <= table_pa <= PA_LIMIT - arch.PAGE_SIZE
            and not table_pa & 0xFFF
            and type(va) is int
            and 0 <= va < 1 << 64
            and type(top_level) is int
            and 1 <= top_level <= 5
        ):
            if isinstance(top_level, bool) or top_level not in range(1, 6):
                raise EmuValueError(f"top_level={top_level!r} must be 1..5")
            table_pa = _pa(table_pa, arch.PAGE_SIZE, arch.PAGE_SIZE, "table_pa")
            va = u64(va, "va")
        out = ffi.new("uint64_t[5]")
        count = ffi.new("uint32_t *")
        rc = lib.emu_physmem_read_path(self._h, table_pa, va, top_level, out, count)
        if rc:
            check(rc, "read_path")
        return list(out[0 : count[0]])

    def read_bytes(self, pa: int, n: int) -> bytes:
        """Return ``n`` bytes starting at ``pa``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise EmuValueError(f"n={n!r} must be a non-negative integer")
        buf = ffi.new("uint8_t[]", max(n, 1))
        check(lib.emu_physmem_read(self._h, _pa(pa, n, 1), buf, n), "read_bytes")
        return bytes(ffi.buffer(buf, n))

    def write_bytes(self, pa: int, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` starting at ``pa``; frames are created as needed."""
        mv = memoryview(data).cast("B")
        start = _pa(pa, len(mv), 1)
        src = ffi.from_buffer("uint8_t[]", mv)
        check(lib.emu_physmem_write(self._h, start, src, len(mv)), "write_bytes")

    def read_table(self, pa: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
        """Return the 512 entries of the 4 KiB-aligned table at ``pa``."""
        out = np.zeros(arch.ENTRIES_PER_TABLE, dtype=np.uint64)
        start = _pa(pa, arch.PAGE_SIZE, arch.PAGE_SIZE)
        buf = from_array("uint8_t[]", out.view(np.uint8), writable=True)
        check(lib.emu_physmem_read(self._h, start, buf, arch.PAGE_SIZE), "read_table")
        return out

    def write_table(self, pa: int, entries: Any) -> None:
        """Write 512 entries (any integer array) to the 4 KiB table at ``pa``."""
        arr = np.ascontiguousarray(entries, dtype=np.uint64)
        if arr.shape != (arch.ENTRIES_PER_TABLE,):
            raise EmuValueError(f"a table has 512 entries, got shape {arr.shape}")
        start = _pa(pa, arch.PAGE_SIZE, arch.PAGE_SIZE)
        buf = from_array("uint8_t[]", arr.view(np.uint8))
        check(lib.emu_physmem_write(self._h, start, buf, arch.PAGE_SIZE), "write_table")

    def discard(self, pfn: int) -> None:
        """Forget frame ``pfn``: it reads as zeros and costs nothing again."""
        v = u64(pfn, "pfn")
        if v >= PA_LIMIT >> arch.PAGE_SHIFT:
            raise EmuValueError(f"pfn={v:#x} is beyond 2^{arch.PA_BITS_MAX}")
        check(lib.emu_physmem_discard(self._h, v), "discard")

    @property
    def frame_count(self) -> int:
        """Number of frames that have been written (and not discarded)."""
        return int(lib.emu_physmem_frame_count(self._h))

    @property
    def bytes_used(self) -> int:
        """Host bytes held by frames and their index."""
        return int(lib.emu_physmem_bytes_used(self._h))

    def frames(self) -> np.ndarray[Any, np.dtype[np.uint64]]:
        """Frame numbers that exist, ascending."""
        n = self.frame_count
        out = np.zeros(n, dtype=np.uint64)
        needed = ffi.new("size_t *")
        check(
            lib.emu_physmem_frames(
                self._h, from_array("uint64_t[]", out, writable=True), n, needed
            ),
            "frames",
        )
        return out

    def __repr__(self) -> str:
        return f"PhysMem(frames={self.frame_count}, bytes_used={self.bytes_used})"
