"""vmalloc and module-area mappings (mm/vmalloc.c, arch/x86 module_alloc via execmem).

Models ``__vmalloc_node_range`` for the model's needs: a virtual range from the vmalloc
(or module) area, first fit with a guard page after each area as Linux keeps, backed by
order-0 pages from the buddy allocator (or one order-9 page per 2M with
``VM_ALLOW_HUGE_VMAP``), mapped with 4K PTEs (2M PMD leaves for huge areas) through the
kernel page tables.  ``vfree`` unmaps, flushes the range on every CPU and frees the
pages.  Simplification: lazy purging of freed areas is not modelled (vfree flushes at
once), so ``vm_unmap_aliases`` has nothing left to purge.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from emu.errors import EmuMemoryError, EmuValueError
from kernel_model import pgtable as pt
from kernel_model.page_alloc import GFP_KERNEL
from kernel_model.pgtable import PG_LEVEL_2M, PG_LEVEL_4K, PMD_SIZE

if TYPE_CHECKING:
    from kernel_model.machine import Machine

PAGE_SIZE = 4096


@dataclass
class VmArea:
    """struct vm_struct: one vmalloc area.

    Attributes:
        addr: start (virtual).
        size: bytes mapped (without the guard page).
        pages: backing page frames, one per 4K page.
        huge: mapped with 2M leaves.
        prot: the leaf protection it was mapped with.
        owned: the pages were allocated by vmalloc (freed by vfree); False for vmap.
    """

    addr: int
    size: int
    pages: list[int]
    huge: bool
    prot: int
    owned: bool = True

    @property
    def npages(self) -> int:
        """Number of 4K pages."""
        return self.size // PAGE_SIZE


class Vmalloc:
    """The vmalloc and module areas of one Machine.

    Args:
        machine: the machine whose tables, allocator and CPUs are used.
    """

    def __init__(self, machine: Machine) -> None:
        self.m = machine
        self.areas: dict[int, VmArea] = {}

    def _find_gap(self, start: int, end: int, size: int, align: int) -> int:
        addr = -(-start // align) * align
        for a in sorted(self.areas.values(), key=lambda v: v.addr):
            if a.addr + a.size + PAGE_SIZE <= addr:
                continue
            if addr + size + PAGE_SIZE <= a.addr:
                break
            addr = -(-(a.addr + a.size + PAGE_SIZE) // align) * align
        if addr + size > end:
            raise EmuMemoryError(f"no room for {size} bytes in [{start:#x}, {end:#x})")
        return addr

    def vmalloc(
        self,
        size: int,
        *,
        huge: bool = False,
        prot: int | None = None,
        module: bool = False,
    ) -> VmArea:
        """__vmalloc_node_range(): map ``size`` bytes of fresh pages.

        The size is rounded up to pages, or to 2M with ``huge``.

        Raises:
            EmuValueError: a non-positive size.
            EmuMemoryError: no virtual room or no free pages (nothing is left mapped or
                allocated then).
        """
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise EmuValueError(f"vmalloc size={size!r} must be a positive integer")
        lay = self.m.layout
        unit = PMD_SIZE if huge else PAGE_SIZE
        size = -(-size // unit) * unit
        start, end = (
            (lay.modules_vaddr, lay.modules_end)
            if module
            else (lay.vmalloc_start, lay.vmalloc_end + 1)
        )
        addr = self._find_gap(start, end, size, unit)
        if prot is None:
            prot = self.m.page_kernel
        pages: list[int] = []
        order = 9 if huge else 0
        try:
            for _ in range(size // unit):
                pfn = self.m.page_alloc.alloc_pages(order, GFP_KERNEL)
                if pfn is None:
                    raise EmuMemoryError(f"vmalloc: out of memory for {size} bytes")
                pages.extend(range(pfn, pfn + (1 << order)))
        except EmuMemoryError:
            for i in range(0, len(pages), 1 << order):
                self.m.page_alloc.free_pages(pages[i], order)
            raise
        area = VmArea(addr, size, pages, huge, prot)
        try:
            self._map(area)
        except EmuMemoryError:
            self._unmap(area)
            for i in range(0, len(pages), 1 << order):
                self.m.page_alloc.free_pages(pages[i], order)
            raise
        self.areas[addr] = area
        return area

    def vmap(
        self, pages: list[int], *, module: bool = False, prot: int | None = None
    ) -> VmArea:
        """vmap(): map existing page frames (owned by the caller) contiguously.

        Raises:
            EmuValueError: no pages.
            EmuMemoryError: no virtual room or no page for a table.
        """
        if not pages:
            raise EmuValueError("vmap needs at least one page")
        lay = self.m.layout
        size = len(pages) * PAGE_SIZE
        start, end = (
            (lay.modules_vaddr, lay.modules_end)
            if module
            else (lay.vmalloc_start, lay.vmalloc_end + 1)
        )
        addr = self._find_gap(start, end, size, PAGE_SIZE)
        area = VmArea(
            addr,
            size,
            list(pages),
            False,
            self.m.page_kernel if prot is None else prot,
            owned=False,
        )
        try:
            self._map(area)
        except EmuMemoryError:
            self._unmap(area)
            raise
        self.areas[addr] = area
        return area

    def _map(self, area: VmArea) -> None:
        t = self.m.pt
        if area.huge:
            large = pt.pgprot_4k_2_large(area.prot) | pt._PAGE_PSE
            for i in range(0, area.npages, 512):
                va = area.addr + i * PAGE_SIZE
                table = t.ensure_table(va, PG_LEVEL_2M)
                idx = t.index(va, PG_LEVEL_2M)
                old = t.read(table, idx)
                if old & pt._PAGE_PRESENT and not old & pt._PAGE_PSE:
                    # vmap_try_huge_pmd() -> pmd_free_pte_page(): drop the empty PTE
                    # table left by an earlier 4K mapping, flush, free it
                    t.write(table, idx, 0)
                    self.m.cpa.flush_tlb_kernel_range(va, va + PMD_SIZE)
                    t.free_table(old & pt.PTE_PFN_MASK)
                t.write(table, idx, (area.pages[i] << 12) | large)
            return
        for i, pfn in enumerate(area.pages):
            va = area.addr + i * PAGE_SIZE
            table = t.ensure_table(va, PG_LEVEL_4K)
            t.write(table, t.index(va, PG_LEVEL_4K), (pfn << 12) | area.prot)

    def _unmap(self, area: VmArea) -> None:
        t = self.m.pt
        level = PG_LEVEL_2M if area.huge else PG_LEVEL_4K
        step = PMD_SIZE if area.huge else PAGE_SIZE
        for va in range(area.addr, area.addr + area.size, step):
            look = t.lookup_address(va)
            if (
                look.entry is not None
                and look.entry_pa is not None
                and look.level == level
            ):
                t.write(look.entry_pa & ~0xFFF, (look.entry_pa & 0xFFF) // 8, 0)
            elif look.entry is not None and look.entry_pa is not None and look.entry:
                # a huge area CPA split into 4K: clear the PTEs of this 2M
                for k in range(512):
                    lk = t.lookup_address(va + k * PAGE_SIZE)
                    if lk.entry_pa is not None:
                        t.write(lk.entry_pa & ~0xFFF, (lk.entry_pa & 0xFFF) // 8, 0)

    def vfree(self, addr: int) -> None:
        """vfree(): unmap, flush the range on every CPU, free the pages.

        Raises:
            EmuValueError: ``addr`` is not the start of a live area (a double free).
        """
        area = self.areas.get(addr)
        if area is None:
            raise EmuValueError(f"vfree({addr:#x}): not the start of a vmalloc area")
        del self.areas[addr]
        self._unmap(area)
        self.m.cpa.flush_tlb_kernel_range(area.addr, area.addr + area.size)
        if not area.owned:  # vunmap(): the pages stay the caller's
            return
        order = 9 if area.huge else 0
        for i in range(0, len(area.pages), 1 << order):
            self.m.page_alloc.free_pages(area.pages[i], order)
