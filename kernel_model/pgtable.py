"""The kernel's page tables in simulated RAM (asm/pgtable*.h, Linux 7.0).

Every entry is a real x86-64 entry in ``emu.PhysMem`` at a real frame; every table page
is a frame taken from the buddy allocator.  This module is the one place that writes
kernel page-table entries: boot (``init``), CPA (``set_memory``) and vmalloc all go
through :class:`PageTables`.

Levels use Linux's ``enum pg_level`` numbering, which is also the SDM's:
``PG_LEVEL_4K`` = 1 (PTE), ``PG_LEVEL_2M`` = 2 (PMD), ``PG_LEVEL_1G`` = 3 (PUD),
``PG_LEVEL_512G`` = 4 (P4D, the PGD itself with 4-level paging), ``PG_LEVEL_256T`` = 5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from emu import arch
from emu.errors import EmuMemoryError, EmuValueError
from emu.physmem import PhysMem

PG_LEVEL_NONE = 0
PG_LEVEL_4K = 1
PG_LEVEL_2M = 2
PG_LEVEL_1G = 3
PG_LEVEL_512G = 4
PG_LEVEL_256T = 5

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PMD_SHIFT = 21
PMD_SIZE = 1 << PMD_SHIFT
PUD_SHIFT = 30
PUD_SIZE = 1 << PUD_SHIFT
PTRS_PER_TABLE = 512

# arch/x86/include/asm/pgtable_types.h
_PAGE_PRESENT = arch.PTE_P
_PAGE_RW = arch.PTE_RW
_PAGE_USER = arch.PTE_US
_PAGE_PWT = arch.PTE_PWT
_PAGE_PCD = arch.PTE_PCD
_PAGE_ACCESSED = arch.PTE_A
_PAGE_DIRTY = arch.PTE_D
_PAGE_PSE = arch.PTE_PS
_PAGE_PAT = arch.PTE_PAT
_PAGE_GLOBAL = arch.PTE_G
_PAGE_SOFTW1 = 1 << 9
_PAGE_CPA_TEST = _PAGE_SOFTW1
_PAGE_KERNEL_4K = 1 << 11  # SOFTW3: "do not merge back into a large page"
_PAGE_PAT_LARGE = arch.PTE_PAT_LARGE
_PAGE_NX = arch.PTE_NX
PTE_PFN_MASK = arch.PTE_ADDR_MASK
PTE_FLAGS_MASK = ~PTE_PFN_MASK & ((1 << 64) - 1)

PAGE_KERNEL = 0x8000000000000163  # P RW A D G NX
PAGE_KERNEL_EXEC = 0x163
PAGE_KERNEL_LARGE = 0x80000000000001E3
PAGE_KERNEL_LARGE_EXEC = 0x1E3
PAGE_KERNEL_RO = 0x8000000000000121
PAGE_KERNEL_ROX = 0x121
_KERNPG_TABLE = 0x63  # P RW A D: table entry a CPA split installs
_PAGE_TABLE = 0x67  # P RW USR A D: table entry the boot-time builder installs

LEVEL_SHIFT = {
    PG_LEVEL_4K: PAGE_SHIFT,
    PG_LEVEL_2M: PMD_SHIFT,
    PG_LEVEL_1G: PUD_SHIFT,
    PG_LEVEL_512G: 39,
    PG_LEVEL_256T: 48,
}


def page_level_size(level: int) -> int:
    """Bytes mapped by one entry at ``level`` (page_level_size(), Linux 7.0)."""
    return 1 << LEVEL_SHIFT[level]


def pte_flags(entry: int) -> int:
    """The non-PFN bits of an entry (pte_flags())."""
    return entry & PTE_FLAGS_MASK


def pte_pfn(entry: int) -> int:
    """The frame number of a 4K entry, or of a table entry."""
    return (entry & PTE_PFN_MASK) >> PAGE_SHIFT


def large_pfn(entry: int, level: int) -> int:
    """Frame number of a 2M/1G leaf (PAT bit 12 excluded)."""
    mask = PTE_PFN_MASK & ~(page_level_size(level) - 1)
    return (entry & mask) >> PAGE_SHIFT


def pgprot_large_2_4k(prot: int) -> int:
    """Move the PAT bit from bit 12 to bit 7 and drop PSE (pgprot_large_2_4k())."""
    pat = bool(prot & _PAGE_PAT_LARGE)
    prot &= ~(_PAGE_PAT | _PAGE_PAT_LARGE)
    return prot | (_PAGE_PAT if pat else 0)


def pgprot_4k_2_large(prot: int) -> int:
    """Move the PAT bit from bit 7 to bit 12 (pgprot_4k_2_large()); not PSE."""
    pat = bool(prot & _PAGE_PAT)
    prot &= ~(_PAGE_PAT | _PAGE_PAT_LARGE)
    return prot | (_PAGE_PAT_LARGE if pat else 0)


@dataclass(frozen=True)
class Lookup:
    """Result of :meth:`PageTables.lookup_address` (lookup_address_in_pgd_attr()).

    Attributes:
        entry: the entry's value, or None where Linux returns NULL.
        entry_pa: physical address of the entry (None with ``entry``).
        level: PG_LEVEL_* as Linux leaves it.
        nx: NX ORed over the upper (non-leaf) entries walked.
        rw: RW ANDed over the upper entries walked.
    """

    entry: int | None
    entry_pa: int | None
    level: int
    nx: bool
    rw: bool


class PageTables:
    """The kernel PGD and every table below it, in simulated RAM.

    Args:
        mem: the physical memory.
        alloc_table: returns the physical address of a free 4 KiB frame, or None when
            memory is exhausted.
        free_table: gives a frame back to the allocator.
        la57: 5-level paging.

    Attributes:
        pgd: physical address of the top-level table (what CR3 holds).
        tables: physical addresses of every table page in use.
        writes: number of entries written so far.
    """

    def __init__(
        self,
        mem: PhysMem,
        alloc_table: Callable[[], int | None],
        free_table: Callable[[int], None],
        la57: bool = False,
    ) -> None:
        self.mem = mem
        self._alloc = alloc_table
        self._free = free_table
        self.la57 = la57
        self.tables: set[int] = set()
        self.writes = 0
        self.pgd = self.alloc_table()

    @property
    def top_level(self) -> int:
        """PG_LEVEL_256T with LA57, else PG_LEVEL_512G."""
        return PG_LEVEL_256T if self.la57 else PG_LEVEL_512G

    # ---- table pages ---------------------------------------------------------------

    def alloc_table(self) -> int:
        """A zeroed table page (alloc_low_page() / pte_alloc_one_kernel()).

        Raises:
            EmuMemoryError: the allocator has no free page.
        """
        pa = self._alloc()
        if pa is None:
            raise EmuMemoryError("no free page for a page table")
        self.mem.discard(pa >> PAGE_SHIFT)  # a recycled frame must read as zeros
        self.tables.add(pa)
        return pa

    def free_table(self, pa: int) -> None:
        """Give a table page back (its contents are dropped)."""
        if pa not in self.tables:
            raise EmuValueError(f"{pa:#x} is not a page-table page")
        self.tables.discard(pa)
        self.mem.discard(pa >> PAGE_SHIFT)
        self._free(pa)

    # ---- entries: the one writer -----------------------------------------------------

    @staticmethod
    def index(va: int, level: int) -> int:
        """Index of ``va`` in a table of ``level``."""
        return (va >> LEVEL_SHIFT[level]) & 0x1FF

    def read(self, table: int, idx: int) -> int:
        """Entry ``idx`` of the table at ``table``."""
        return self.mem.read_u64(table + 8 * idx)

    def write(self, table: int, idx: int, value: int) -> None:
        """Write entry ``idx`` of the table at ``table`` (set_pte/set_pmd/...)."""
        self.mem.write_u64(table + 8 * idx, value)
        self.writes += 1

    def read_table(self, table: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
        """All 512 entries of a table."""
        return self.mem.read_table(table)

    def write_table(
        self, table: int, entries: np.ndarray[Any, Any], changed: int | None = None
    ) -> None:
        """Write a whole table at once (the boot builder's fast path)."""
        self.mem.write_table(table, entries)
        self.writes += PTRS_PER_TABLE if changed is None else changed

    # ---- walking ---------------------------------------------------------------------

    def table_of(self, va: int, level: int) -> int | None:
        """Physical address of the table at ``level`` covering ``va``.

        None when a none, non-present or leaf entry above stops the walk.
        """
        table = self.pgd
        for lvl in range(self.top_level, level, -1):
            e = self.read(table, self.index(va, lvl))
            if not e & _PAGE_PRESENT or (lvl <= PG_LEVEL_1G and e & _PAGE_PSE):
                return None
            table = e & PTE_PFN_MASK
        return table

    def ensure_table(
        self,
        va: int,
        level: int,
        entry_flags: int = _KERNPG_TABLE,
        created: list[tuple[int, int, int]] | None = None,
    ) -> int:
        """The table at ``level`` for ``va``, allocating missing tables above it.

        As pud_alloc()/pmd_alloc()/pte_alloc_kernel() do.

        Raises:
            EmuValueError: a leaf or non-present entry is in the way.
            EmuMemoryError: no page for a new table (nothing changed then).

        ``created`` (optional) receives (table, index, new table) for every table
        made, so a caller can undo them.
        """
        table = self.pgd
        if created is None:
            created = []
        for lvl in range(self.top_level, level, -1):
            idx = self.index(va, lvl)
            e = self.read(table, idx)
            if e == 0:
                try:
                    new = self.alloc_table()
                except EmuMemoryError:
                    self.undo_tables(created)
                    raise
                self.write(table, idx, new | entry_flags)
                created.append((table, idx, new))
                table = new
                continue
            if not e & _PAGE_PRESENT or (lvl <= PG_LEVEL_1G and e & _PAGE_PSE):
                raise EmuValueError(
                    f"va {va:#x}: a leaf or non-present entry at level "
                    f"{lvl} is in the way"
                )
            table = e & PTE_PFN_MASK
        return table

    def undo_tables(self, created: list[tuple[int, int, int]]) -> None:
        """Remove tables that ensure_table() made (newest first)."""
        for table, idx, new in reversed(created):
            self.write(table, idx, 0)
            self.free_table(new)
        created.clear()

    def lookup_address(self, va: int) -> Lookup:
        """Models lookup_address_in_pgd_attr() (arch/x86/mm/pat/set_memory.c, 7.0).

        Returns the entry and level as Linux does: the leaf for 4K/2M/1G mappings, a
        non-present large entry at its level, a (possibly none) PTE at PG_LEVEL_4K, or
        ``entry=None`` with ``level`` left where the walk found a none entry.
        """
        nx = False
        rw = True
        table = self.pgd
        top = self.top_level
        # every entry on the path in one read; C stops after a zero entry, and so does
        # this walk, so each level reached below is in the list
        path = self.mem.read_path(table, va, top)
        # PGD: with 4-level paging the P4D is folded into it
        idx = self.index(va, top)
        e = path[0]
        level = PG_LEVEL_256T
        if top == PG_LEVEL_256T:
            if e == 0:
                return Lookup(None, None, level, nx, rw)
            nx |= bool(e & _PAGE_NX)
            rw &= bool(e & _PAGE_RW)
            table = e & PTE_PFN_MASK
            idx = self.index(va, PG_LEVEL_512G)
            e = path[1]
        level = PG_LEVEL_512G
        epa = table + 8 * idx
        if e == 0:
            return Lookup(None, None, level, nx, rw)
        if not e & _PAGE_PRESENT:
            return Lookup(e, epa, level, nx, rw)
        for level in (PG_LEVEL_1G, PG_LEVEL_2M):
            nx |= bool(e & _PAGE_NX)
            rw &= bool(e & _PAGE_RW)
            table = e & PTE_PFN_MASK
            idx = self.index(va, level)
            epa = table + 8 * idx
            e = path[top - level]
            if e == 0:
                return Lookup(None, None, level, nx, rw)
            if e & _PAGE_PSE or not e & _PAGE_PRESENT:
                return Lookup(e, epa, level, nx, rw)
        nx |= bool(e & _PAGE_NX)
        rw &= bool(e & _PAGE_RW)
        table = e & PTE_PFN_MASK
        idx = self.index(va, PG_LEVEL_4K)
        epa = table + 8 * idx
        return Lookup(path[top - PG_LEVEL_4K], epa, PG_LEVEL_4K, nx, rw)

    def leaves(
        self, start: int = 0, end: int = 1 << 64
    ) -> Iterator[tuple[int, int, int]]:
        """Every leaf in [start, end) in address order, as (va, level, entry).

        Non-present non-zero entries at any level count too (they end a walk as
        leaves do).
        """
        yield from self._leaves(self.pgd, self.top_level, 0, start, end)

    def _leaves(
        self, table: int, level: int, base: int, start: int, end: int
    ) -> Iterator[tuple[int, int, int]]:
        size = page_level_size(level)
        entries = self.read_table(table)
        for idx in np.flatnonzero(entries):
            va = base + int(idx) * size
            if level == self.top_level and va >= 1 << 47 + (9 if self.la57 else 0):
                va |= ~((1 << (48 + (9 if self.la57 else 0))) - 1) & ((1 << 64) - 1)
            if va + size <= start or va >= end:
                continue
            e = int(entries[idx])
            if (
                not e & _PAGE_PRESENT
                or level == PG_LEVEL_4K
                or (level <= PG_LEVEL_1G and e & _PAGE_PSE)
            ):
                yield va, level, e
            else:
                yield from self._leaves(e & PTE_PFN_MASK, level - 1, va, start, end)

    def table_refs(self) -> dict[int, int]:
        """How many entries reference each table page (the PGD counts once)."""
        refs: dict[int, int] = {self.pgd: 1}
        stack = [(self.pgd, self.top_level)]
        while stack:
            table, level = stack.pop()
            entries = self.read_table(table)
            for idx in np.flatnonzero(entries):
                e = int(entries[idx])
                if level == PG_LEVEL_4K or not e & _PAGE_PRESENT:
                    continue
                if level <= PG_LEVEL_1G and e & _PAGE_PSE:
                    continue
                child = e & PTE_PFN_MASK
                refs[child] = refs.get(child, 0) + 1
                if refs[child] == 1:
                    stack.append((child, level - 1))
        return refs
