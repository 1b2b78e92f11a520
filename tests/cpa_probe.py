"""A machine's counters at one moment, shared by the CPA rule tests (tests/unit)."""

from __future__ import annotations

import copy

from kernel_model.machine import Machine
from kernel_model.pgtable import PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K


def counts(m: Machine) -> tuple[int, int, int]:
    """direct_pages_count as (4K, 2M, 1G)."""
    c = m.direct.direct_pages_count
    return c[PG_LEVEL_4K], c[PG_LEVEL_2M], c[PG_LEVEL_1G]


class Probe:
    """A machine's counters at one moment, to check an operation's exact deltas."""

    def __init__(self, m: Machine) -> None:
        self.m = m
        self.flushes = [mmu.stats["tlb_flushes"] for mmu in m.mmus]
        self.invlpg = [mmu.stats["invlpg"] for mmu in m.mmus]
        self.ipis = m.cpus.ipis
        self.shootdowns = m.cpus.shootdowns
        self.count = counts(m)
        self.vm = dict(m.vm_events)
        self.tables = set(m.pt.tables)
        self.stats = copy.deepcopy(m.cpa.stats)
        self.nwarn = len(m.cpa.warnings)

    def new_tables(self) -> set[int]:
        return set(self.m.pt.tables) - self.tables

    def freed_tables(self) -> set[int]:
        return self.tables - set(self.m.pt.tables)

    def warnings(self) -> list[str]:
        return self.m.cpa.warnings[self.nwarn :]

    def count_delta(self) -> tuple[int, int, int]:
        return tuple(a - b for a, b in zip(counts(self.m), self.count, strict=True))

    def vm_delta(self) -> dict[str, int]:
        return {
            k: v - self.vm[k] for k, v in self.m.vm_events.items() if v != self.vm[k]
        }

    def flushes_are(
        self, *, split: int = 0, ranged: int = 0, full: int = 0, collapse: int = 0
    ) -> None:
        """2.8: a split/full/collapse flush is one global flush on every CPU; a
        ranged flush is one INVLPG per page on every CPU; each shootdown costs
        ncpus - 1 IPIs."""
        m = self.m
        n = len(m.mmus)
        global_flushes = split + full + collapse
        assert [
            mmu.stats["tlb_flushes"] - b
            for mmu, b in zip(m.mmus, self.flushes, strict=True)
        ] == [global_flushes] * n
        assert [
            mmu.stats["invlpg"] - b for mmu, b in zip(m.mmus, self.invlpg, strict=True)
        ] == [ranged] * n
        shootdowns = global_flushes + (1 if ranged else 0)
        assert m.cpus.shootdowns - self.shootdowns == shootdowns
        assert m.cpus.ipis - self.ipis == shootdowns * (n - 1)
        s, b = m.cpa.stats, self.stats
        assert s.split_flushes - b.split_flushes == split
        assert s.ranged_flushes - b.ranged_flushes == (1 if ranged else 0)
        assert s.ranged_flush_pages - b.ranged_flush_pages == ranged
        assert s.full_flushes - b.full_flushes == full
        assert s.collapse_flushes - b.collapse_flushes == collapse
