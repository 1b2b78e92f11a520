"""A user process under the modelled kernel: its own page tables, demand paging.

Models what matters for translation of a traced process: ``pgd_alloc`` (a new PGD whose
kernel half points at the kernel's tables, as clone_pgd_range() copies them), and the
anonymous-memory fault path (``handle_mm_fault`` -> ``do_anonymous_page`` /
``do_huge_pmd_anonymous_page`` / hugetlb) that maps a page on first touch.

Page-size policies: ``"4k"``, ``"thp"`` (transparent huge pages ``always``: the first
touch of a 2M-aligned region maps a 2M page when an order-9 block is free, else 4K, as
the THP fault path falls back), ``"1g"`` (hugetlb 1G pages, falling back likewise).
Frame placement: ``"buddy"`` (the buddy allocator decides, so physical fragmentation is
real), ``"random"`` (a seeded uniform draw among free frames), or an explicit
``{virtual page: frame}`` map.

Simplifications: no VMAs (every canonical user address is anonymous memory that may
be faulted in), user pages are mapped read-write and executable (P|RW|USR|A|D), and
there is no reclaim: when memory runs out the fault fails with EmuMemoryError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from emu.errors import EmuMemoryError, EmuValueError
from kernel_model import pgtable as pt
from kernel_model.page_alloc import GFP_HIGHUSER_MOVABLE, MAX_PAGE_ORDER
from kernel_model.pgtable import PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K, PageTables

if TYPE_CHECKING:
    from kernel_model.machine import Machine

USER_PAGE = (
    pt._PAGE_PRESENT | pt._PAGE_RW | pt._PAGE_USER | pt._PAGE_ACCESSED | pt._PAGE_DIRTY
)
PAGE_SIZES = {"4k": PG_LEVEL_4K, "thp": PG_LEVEL_2M, "1g": PG_LEVEL_1G}


@dataclass
class FaultStats:
    """Faults the demand-paging handler took, by the page size it mapped."""

    faults_4k: int = 0
    faults_2m: int = 0
    faults_1g: int = 0
    fallbacks: int = 0  # a huge page was wanted but no block was free

    @property
    def total(self) -> int:
        """All faults handled."""
        return self.faults_4k + self.faults_2m + self.faults_1g


class Process:
    """One user address space.

    Args:
        machine: the kernel it runs under (its allocator and kernel tables).
        pages: page-size policy: "4k", "thp" or "1g".
        placement: "buddy", "random", or a dict {virtual page number: frame number}.
        seed: seed of the random placement.
        pcid: the PCID its CR3 carries (used when CR4.PCIDE is set).
    """

    def __init__(
        self,
        machine: Machine,
        pages: str = "4k",
        placement: str | dict[int, int] = "buddy",
        seed: int = 0,
        pcid: int = 1,
    ) -> None:
        if pages not in PAGE_SIZES:
            raise EmuValueError(f"page policy {pages!r} not in {sorted(PAGE_SIZES)}")
        if isinstance(placement, str) and placement not in ("buddy", "random"):
            raise EmuValueError(f"placement {placement!r}: 'buddy', 'random' or a dict")
        self.m = machine
        self.policy = PAGE_SIZES[pages]
        self.placement = placement
        self.rng = np.random.default_rng(seed)
        self.pcid = pcid
        self.pt = PageTables(
            machine.mem, machine.pt._alloc, machine.pt._free, la57=machine.pt.la57
        )
        # clone_pgd_range(): the kernel half shares the kernel's tables
        top = self.pt.top_level
        half = pt.PTRS_PER_TABLE // 2
        for idx in range(half, pt.PTRS_PER_TABLE):
            e = machine.pt.read(machine.pt.pgd, idx)
            if e:
                self.pt.write(self.pt.pgd, idx, e)
        self._top = top
        self.stats = FaultStats()
        self.mapped: dict[int, int] = {}  # leaf va -> level, for footprint and unmap
        self.frames: dict[int, tuple[int, int]] = {}  # leaf va -> (pfn, order)
        self._from_buddy: dict[int, bool] = {}  # leaf va -> frame came from the buddy
        self.user_limit = 1 << (56 if machine.pt.la57 else 47)

    @property
    def cr3(self) -> int:
        """CR3 for this process (PGD address; its PCID in the low bits)."""
        return self.pt.pgd

    def is_user(self, va: int) -> bool:
        """Whether ``va`` lies in the user half."""
        return 0 <= va < self.user_limit

    # ---- frames ----------------------------------------------------------------------

    def _frame(self, va: int, order: int) -> tuple[int, bool] | None:
        """A frame of ``order`` for ``va``: (pfn, from the buddy allocator)."""
        pa = self.m.page_alloc
        if isinstance(self.placement, dict):
            pfn = self.placement.get(va >> 12)
            if pfn is None:
                raise EmuValueError(
                    f"placement map has no frame for page {va >> 12:#x}"
                )
            if order:
                return None  # explicit placement is per 4K page
            try:
                pa.reserve(pfn, 1, "process")
            except EmuValueError as exc:
                raise EmuValueError(f"placement frame {pfn:#x}: {exc}") from exc
            return pfn, False
        if self.placement == "random":
            ram = [(r.start >> 12, r.end >> 12) for r in self.m.ram_ranges()]
            sizes = np.array([e - s for s, e in ram], dtype=np.float64)
            for _ in range(256):
                k = int(self.rng.choice(len(ram), p=sizes / sizes.sum()))
                lo, hi = ram[k]
                if hi - lo < 1 << order:
                    continue
                pfn = int(self.rng.integers(lo, hi - (1 << order) + 1))
                pfn &= ~((1 << order) - 1)
                if pfn < lo or self._take(pfn, order) is None:
                    continue
                return pfn, False
            return None
        if order <= MAX_PAGE_ORDER:
            got = pa.alloc_pages(order, GFP_HIGHUSER_MOVABLE)
            return None if got is None else (got, True)
        # hugetlb 1G pages come from contiguous free memory, not the buddy lists
        for r in reversed(self.m.ram_ranges()):
            step = 1 << (order + 12)
            base = -(-r.start // step) * step
            for start in range(
                r.end - step - (r.end - step - base) % step, base - 1, -step
            ):
                if self._take(start >> 12, order) is not None:
                    return start >> 12, False
        return None

    def _take(self, pfn: int, order: int) -> int | None:
        try:
            self.m.page_alloc.reserve(pfn, 1 << order, "process")
        except EmuValueError:
            return None
        return pfn

    def _give_back(self, pfn: int, order: int, buddy: bool) -> None:
        if buddy:
            self.m.page_alloc.free_pages(pfn, order)
        else:
            self.m.page_alloc.free_reserved_area(pfn, 1 << order)

    # ---- the fault path --------------------------------------------------------------

    def handle_fault(self, va: int, *, count: bool = True) -> int:
        """Map the page containing ``va`` (first touch); returns the level mapped.

        Page tables are allocated first, then the frame (as Linux's fault path does),
        so a failure leaves no frame taken.  ``count=False`` maps without counting a
        fault (an explicit mapping event).

        Raises:
            EmuValueError: ``va`` is not a user address, or is already mapped (the
                fault has another cause: a protection fault is not demand paging).
            EmuMemoryError: no free frame or table page.
        """
        if not self.is_user(va):
            raise EmuValueError(f"fault at {va:#x}: not a user address")
        level = self.mapping_level(va)
        if level is not None:
            size = pt.page_level_size(level)
            raise EmuValueError(
                f"fault at {va:#x}: already mapped (a {size >> 10} KiB page at "
                f"{va & ~(size - 1):#x})"
            )
        created: list[tuple[int, int, int]] = []
        for level in range(self.policy, PG_LEVEL_4K - 1, -1):
            size = pt.page_level_size(level)
            base = va & ~(size - 1)
            if level > PG_LEVEL_4K and not self._region_free(base, level):
                continue
            try:
                table = self.pt.ensure_table(base, level, pt._PAGE_TABLE, created)
            except EmuMemoryError:
                continue
            order = (size >> 12).bit_length() - 1
            got = self._frame(base, order)
            if got is None:
                continue
            pfn, buddy = got
            flags = USER_PAGE | (pt._PAGE_PSE if level > PG_LEVEL_4K else 0)
            self.pt.write(table, self.pt.index(base, level), (pfn << 12) | flags)
            self.frames[base] = (pfn, order)
            self._from_buddy[base] = buddy
            self.mapped[base] = level
            if count:
                if level == PG_LEVEL_1G:
                    self.stats.faults_1g += 1
                elif level == PG_LEVEL_2M:
                    self.stats.faults_2m += 1
                else:
                    self.stats.faults_4k += 1
                if level < self.policy:
                    self.stats.fallbacks += 1
            return level
        self.pt.undo_tables(created)  # leave the address space as it was
        raise EmuMemoryError(f"no free frame for a fault at {va:#x}")

    def mapping_level(self, va: int) -> int | None:
        """Level of this process's leaf that maps ``va``, or None.

        ``mapped`` records every user leaf this process made (faults and map events)
        and unmap removes them, so this agrees with walking the user half of the page
        tables, without the walk.
        """
        for level in (PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G):
            if self.mapped.get(va & ~(pt.page_level_size(level) - 1)) == level:
                return level
        return None

    def _region_free(self, base: int, level: int) -> bool:
        """A huge page fits: nothing mapped below it yet."""
        table = self.pt.table_of(base, level)
        if table is None:
            return self.pt.lookup_address(base).entry is None
        return self.pt.read(table, self.pt.index(base, level)) == 0

    def unmap(self, va: int, length: int) -> list[int]:
        """munmap(): drop every leaf that overlaps [va, va+length).

        Simplification: a huge page partly inside the range goes whole (Linux would
        split it).  Returns the dropped leaves' addresses; the caller flushes them.
        """
        end = va + length
        gone = [
            b
            for b, lvl in self.mapped.items()
            if b < end and va < b + pt.page_level_size(lvl)
        ]
        for b in gone:
            look = self.pt.lookup_address(b)
            if look.entry_pa is not None:
                self.pt.write(look.entry_pa & ~0xFFF, (look.entry_pa & 0xFFF) // 8, 0)
            pfn, order = self.frames[b]
            self._give_back(pfn, order, self._from_buddy.pop(b))
            del self.frames[b]
            del self.mapped[b]
        return gone

    def footprint(self) -> dict[str, int]:
        """Mapped leaves by size."""
        out = {"4k": 0, "2m": 0, "1g": 0}
        for level in self.mapped.values():
            out[{PG_LEVEL_4K: "4k", PG_LEVEL_2M: "2m", PG_LEVEL_1G: "1g"}[level]] += 1
        return out
