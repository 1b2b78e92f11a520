"""Several CPUs sharing one PhysMem, and TLB shootdowns across them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emu.cpus import TLBConfig
from emu.errors import EmuValueError
from emu.mmu import MMU
from emu.physmem import PhysMem


class CPUSet:
    """One ``emu.MMU`` per CPU over a shared ``PhysMem``.

    A shootdown runs a flush on every CPU, the way Linux's ``flush_tlb_kernel_range``
    and ``on_each_cpu`` do: the initiator flushes itself and sends one IPI to each other
    CPU.

    Args:
        mem: the shared physical memory.
        ncpus: number of CPUs (>= 1).
        cpu: preset name, TLBConfig or dict, as for ``emu.MMU``.
        a_policy: A-bit policy of the walkers.

    Attributes:
        mmus: the CPUs' MMUs, index = CPU number.
        ipis: IPIs sent so far.
        shootdowns: shootdown operations so far.
    """

    def __init__(
        self,
        mem: PhysMem,
        ncpus: int = 1,
        cpu: str | TLBConfig | dict[str, Any] = "skylake",
        a_policy: str = "success",
    ) -> None:
        if isinstance(ncpus, bool) or not isinstance(ncpus, int) or ncpus < 1:
            raise EmuValueError(f"ncpus={ncpus!r} must be a positive integer")
        self.mem = mem
        self.mmus = [MMU(mem, cpu, a_policy=a_policy) for _ in range(ncpus)]
        self.ipis = 0
        self.shootdowns = 0

    def __len__(self) -> int:
        return len(self.mmus)

    def __getitem__(self, i: int) -> MMU:
        return self.mmus[i]

    def shootdown(self, op: Callable[[MMU], None], initiator: int = 0) -> None:
        """Run ``op`` on every CPU; counts one IPI per CPU other than ``initiator``."""
        if not 0 <= initiator < len(self.mmus):
            raise EmuValueError(
                f"initiator={initiator} is not a CPU of {len(self.mmus)}"
            )
        for mmu in self.mmus:
            op(mmu)
        self.ipis += len(self.mmus) - 1
        self.shootdowns += 1

    def invlpg_range(self, start: int, npages: int, initiator: int = 0) -> None:
        """INVLPG of ``npages`` pages from ``start`` on every CPU (one IPI each)."""

        def op(mmu: MMU) -> None:
            for i in range(npages):
                mmu.invlpg(start + i * 4096)

        self.shootdown(op, initiator)

    def flush_all(self, include_global: bool = True, initiator: int = 0) -> None:
        """A full flush on every CPU (one IPI each)."""
        self.shootdown(lambda m: m.flush_all(include_global), initiator)

    def write_cr3_all(self, value: int) -> None:
        """Load the same CR3 on every CPU (no IPIs: each CPU does it itself)."""
        for mmu in self.mmus:
            mmu.write_cr3(value)
