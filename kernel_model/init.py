"""Boot: the kernel address-space layout and the direct map as Linux 7.0 builds it.

Models arch/x86/mm/init.c (``probe_page_size_mask``, ``init_mem_mapping``,
``memory_map_top_down``/``bottom_up``, ``init_range_memory_mapping``,
``init_memory_mapping``, ``split_mem_range``, ``adjust_range_page_size_mask``) and
arch/x86/mm/init_64.c (``kernel_physical_mapping_init`` and the ``phys_*_init`` walkers
with their ``update_page_count`` accounting), following reference/linux-mm.md section 1.

Simplifications (each also in the README): the memblock "memory" type is the E820 RAM;
the only memblock reservations that matter here (the choice of the first top-down
window) are the first 1 MiB and the kernel image; vmemmap, the CPU entry area, ESPfix
and the fixmap are not populated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kernel_model import pgtable as pt
from kernel_model.e820 import E820Table, E820Type, KernelImage, PhysRange
from kernel_model.pgtable import (
    PG_LEVEL_1G,
    PG_LEVEL_2M,
    PG_LEVEL_4K,
    PMD_SHIFT,
    PMD_SIZE,
    PUD_SIZE,
    PageTables,
)

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
ISA_END_ADDRESS = 0x100000
PFN_PER_PMD = PMD_SIZE >> PAGE_SHIFT  # 512
PFN_PER_PUD = PUD_SIZE >> PAGE_SHIFT  # 262144
NR_RANGE_MR = 5


@dataclass(frozen=True)
class Layout:
    """Kernel virtual address-space layout (Documentation/arch/x86/x86_64/mm.rst).

    Attributes:
        la57: 5-level paging.
        page_offset: ``page_offset_base``: start of the direct map.
        vmalloc_start / vmalloc_end: the vmalloc area.
        vmemmap_start: ``vmemmap_base``.
        cpu_entry_area: start of the CPU entry area.
        espfix_base: start of the ESPfix area.
        start_kernel_map: ``__START_KERNEL_map``.
        kernel_image_size: ``KERNEL_IMAGE_SIZE``.
        modules_vaddr / modules_end: the module area.
        fixaddr_start: start of the fixmap area (approximate: the model maps nothing
            there).
        kaslr_seed: seed used to randomise the bases, or None.
    """

    la57: bool
    page_offset: int
    vmalloc_start: int
    vmalloc_end: int
    vmemmap_start: int
    cpu_entry_area: int
    espfix_base: int
    start_kernel_map: int
    kernel_image_size: int
    modules_vaddr: int
    modules_end: int
    fixaddr_start: int
    kaslr_seed: int | None = None

    @property
    def kernel_space(self) -> int:
        """Start of the kernel half (``1 << 63`` for ptdump's marker)."""
        return 1 << 63

    def markers(self) -> list[tuple[int, str]]:
        """Ptdump's address markers in Linux's order (arch/x86/mm/dump_pagetables.c)."""
        return [
            (0, "User Space"),
            (self.kernel_space, "Kernel Space"),
            (self.page_offset, "Low Kernel Mapping"),
            (self.vmalloc_start, "vmalloc() Area"),
            (self.vmemmap_start, "Vmemmap"),
            (self.cpu_entry_area, "CPU entry Area"),
            (self.espfix_base, "ESPfix Area"),
            (self.start_kernel_map, "High Kernel Mapping"),
            (self.modules_vaddr, "Modules"),
            (self.modules_end, "End Modules"),
            (self.fixaddr_start, "Fixmap Area"),
        ]


def make_layout(
    la57: bool = False, kaslr_seed: int | None = None, ram_bytes: int = 0
) -> Layout:
    """Models page_64_types.h's layout and kernel_randomize_memory() (7.0).

    With a seed (arch/x86/mm/kaslr.c), the direct map, vmalloc and vmemmap bases move
    by random multiples of 1 GiB (PUD_SIZE) inside their region.
    """
    if la57:
        page_offset, vmalloc, vmemmap = (
            0xFF11000000000000,
            0xFFA0000000000000,
            0xFFD4000000000000,
        )
        vmalloc_size = 12800 << 40
    else:
        page_offset, vmalloc, vmemmap = (
            0xFFFF888000000000,
            0xFFFFC90000000000,
            0xFFFFEA0000000000,
        )
        vmalloc_size = 32 << 40
    image_size = 512 << 20
    if kaslr_seed is not None:
        # kernel_randomize_memory(): the regions keep their order; each gets a random
        # PUD-aligned offset within the entropy left by the others.  Simplified to a
        # seeded draw of that shape (the exact entropy split is not modelled).
        rng = np.random.default_rng(kaslr_seed)
        tb = 1 << 40
        dm_size = ((ram_bytes + tb - 1) // tb) * tb + (10 << 40)  # + padding (10 TB)
        region_end = 0xFFFFE90000000000 if not la57 else 0xFFD3000000000000
        entropy = region_end - page_offset - dm_size - vmalloc_size - (1 << 40)
        slots = max(entropy // PUD_SIZE // 3, 1)
        page_offset += int(rng.integers(0, slots)) * PUD_SIZE
        vmalloc = page_offset + dm_size + int(rng.integers(0, slots)) * PUD_SIZE
        vmemmap = vmalloc + vmalloc_size + int(rng.integers(0, slots)) * PUD_SIZE
        image_size = 1 << 30
    start_kernel_map = 0xFFFFFFFF80000000
    return Layout(
        la57=la57,
        page_offset=page_offset,
        vmalloc_start=vmalloc,
        vmalloc_end=vmalloc + vmalloc_size - 1,
        vmemmap_start=vmemmap,
        cpu_entry_area=0xFFFFFE0000000000,
        espfix_base=0xFFFFFF0000000000,
        start_kernel_map=start_kernel_map,
        kernel_image_size=image_size,
        modules_vaddr=start_kernel_map + image_size,
        modules_end=0xFFFFFFFFFF000000,
        fixaddr_start=0xFFFFFFFFFF5FE000,
        kaslr_seed=kaslr_seed,
    )


#: A typical 6.x kernel image (the captured machine's /proc/iomem): text, rodata,
#: data and bss physical ranges.
DEFAULT_KERNEL_IMAGE = KernelImage(
    code=PhysRange(0x1000000, 0x2209988),
    rodata=PhysRange(0x2400000, 0x2E0A000),
    data=PhysRange(0x3000000, 0x327C100),
    bss=PhysRange(0x3B34000, 0x3C58000),
)


#: [__init_begin, __init_end) of that image: kallsyms' __init_begin plus the 3728K
#: dmesg reports freed as "unused kernel image (initmem)".
DEFAULT_INIT_RANGE = (0x3783000, 0x3783000 + 3728 * 1024)


@dataclass
class MapRange:
    """struct map_range: [start, end) in bytes and a page_size_mask."""

    start: int
    end: int
    page_size_mask: int


def _bit(level: int) -> int:
    return 1 << level


@dataclass
class DirectMapState:
    """What boot leaves behind for CPA and meminfo.

    Attributes:
        direct_pages_count: per PG_LEVEL_*, as arch/x86/mm/pat/set_memory.c keeps it.
        pfn_mapped: ``pfn_mapped[]`` ranges (add_pfn_range_mapped()).
        page_size_mask: the mask probe_page_size_mask() chose.
        direct_gbpages: whether 1G pages are used for the direct map.
        windows: the top-down windows in the order they were mapped (for the boot
            summary), as (start, end).
        ranges: every ``[mem ...] page`` range init_memory_mapping mapped, as Linux's
            pr_debug prints it.
    """

    direct_pages_count: list[int] = field(default_factory=lambda: [0] * 6)
    pfn_mapped: list[tuple[int, int]] = field(default_factory=list)
    page_size_mask: int = 0
    direct_gbpages: bool = False
    windows: list[tuple[int, int]] = field(default_factory=list)
    ranges: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def max_pfn_mapped(self) -> int:
        """Highest mapped frame number + 1."""
        return max((e for _, e in self.pfn_mapped), default=0)

    def pfn_range_is_mapped(self, start_pfn: int, end_pfn: int) -> bool:
        """pfn_range_is_mapped() (arch/x86/mm/init.c)."""
        return any(s <= start_pfn and end_pfn <= e for s, e in self.pfn_mapped)


class DirectMapBuilder:
    """Builds the direct map into ``tables`` for the RAM of ``e820``.

    Args:
        tables: the kernel page tables.
        e820: the physical layout (memblock.memory = its usable RAM).
        layout: the virtual layout (PAGE_OFFSET).
        prot: PAGE_KERNEL for this configuration (G removed with PTI).
        gbpages: allow 1G pages (``direct_gbpages``; the CPU has them).
        debug_pagealloc: map everything with 4K pages.
        bottom_up: memblock allocates bottom-up (``movable_node``).
        reserved: memblock reservations that the first top-down window avoids.
    """

    def __init__(
        self,
        tables: PageTables,
        e820: E820Table,
        layout: Layout,
        prot: int,
        gbpages: bool = True,
        debug_pagealloc: bool = False,
        bottom_up: bool = False,
        reserved: list[tuple[int, int]] | None = None,
    ) -> None:
        self.t = tables
        self.e820 = e820
        self.layout = layout
        self.prot = prot
        self.gbpages = gbpages
        self.debug_pagealloc = debug_pagealloc
        self.bottom_up = bottom_up
        self.reserved = reserved or []
        self.memory = [(s << PAGE_SHIFT, e << PAGE_SHIFT) for s, e in e820.pfn_ranges()]
        self.state = DirectMapState()

    # ---- memblock and e820 queries ---------------------------------------------------

    def memblock_is_region_memory(self, start: int, end: int) -> bool:
        """Whether [start, end) lies inside one memblock.memory region."""
        return any(s <= start and end <= e for s, e in self.memory)

    def e820_mapped_ram_or_acpi(self, start: int, end: int) -> bool:
        """e820__mapped_any() of E820_TYPE_RAM or of E820_TYPE_ACPI."""
        return self.e820.mapped_any(start, end, E820Type.RAM) or self.e820.mapped_any(
            start, end, E820Type.ACPI
        )

    # ---- arch/x86/mm/init.c ----------------------------------------------------------

    def probe_page_size_mask(self) -> int:
        """probe_page_size_mask(): 2M unless debug_pagealloc; 1G if also gbpages."""
        mask = 0
        if not self.debug_pagealloc:
            mask |= _bit(PG_LEVEL_2M)
        self.state.direct_gbpages = bool(mask) and self.gbpages
        if self.state.direct_gbpages:
            mask |= _bit(PG_LEVEL_1G)
        self.state.page_size_mask = mask
        return mask

    def split_mem_range(self, start: int, end: int) -> list[MapRange]:
        """split_mem_range(): at most NR_RANGE_MR ranges, then adjust and merge."""
        mask = self.state.page_size_mask
        mr: list[MapRange] = []

        def save(s_pfn: int, e_pfn: int, m: int) -> None:
            if s_pfn < e_pfn:
                mr.append(MapRange(s_pfn << PAGE_SHIFT, e_pfn << PAGE_SHIFT, m))

        def round_up(x: int, a: int) -> int:
            return (x + a - 1) // a * a

        def round_down(x: int, a: int) -> int:
            return x // a * a

        limit = end >> PAGE_SHIFT
        pfn = start_pfn = start >> PAGE_SHIFT
        # head, not 2M aligned: 4K
        end_pfn = min(round_up(pfn, PFN_PER_PMD), limit)
        if start_pfn < end_pfn:
            save(start_pfn, end_pfn, 0)
            pfn = end_pfn
        # 2M pages up to the first 1G boundary
        start_pfn = round_up(pfn, PFN_PER_PMD)
        end_pfn = min(round_up(pfn, PFN_PER_PUD), round_down(limit, PFN_PER_PMD))
        if start_pfn < end_pfn:
            save(start_pfn, end_pfn, mask & _bit(PG_LEVEL_2M))
            pfn = end_pfn
        # the 1G-aligned middle
        start_pfn = round_up(pfn, PFN_PER_PUD)
        end_pfn = round_down(limit, PFN_PER_PUD)
        if start_pfn < end_pfn:
            save(start_pfn, end_pfn, mask & (_bit(PG_LEVEL_2M) | _bit(PG_LEVEL_1G)))
            pfn = end_pfn
        # 2M tail
        start_pfn = round_up(pfn, PFN_PER_PMD)
        end_pfn = round_down(limit, PFN_PER_PMD)
        if start_pfn < end_pfn:
            save(start_pfn, end_pfn, mask & _bit(PG_LEVEL_2M))
            pfn = end_pfn
        # 4K tail
        save(pfn, limit, 0)

        self.adjust_range_page_size_mask(mr)
        # merge neighbours with equal masks
        i = 0
        while i < len(mr) - 1:
            if (
                mr[i].end == mr[i + 1].start
                and mr[i].page_size_mask == mr[i + 1].page_size_mask
            ):
                mr[i + 1].start = mr[i].start
                del mr[i]
            else:
                i += 1
        return mr

    def adjust_range_page_size_mask(self, mr: list[MapRange]) -> None:
        """adjust_range_page_size_mask(): widen masks over all-RAM 2M/1G regions.

        A range gains 2M (1G) when its whole enclosing 2M (1G) region is memblock
        memory.
        """
        mask = self.state.page_size_mask
        for r in mr:
            if mask & _bit(PG_LEVEL_2M) and not r.page_size_mask & _bit(PG_LEVEL_2M):
                s = r.start // PMD_SIZE * PMD_SIZE
                e = (r.end + PMD_SIZE - 1) // PMD_SIZE * PMD_SIZE
                if self.memblock_is_region_memory(s, e):
                    r.page_size_mask |= _bit(PG_LEVEL_2M)
            if mask & _bit(PG_LEVEL_1G) and not r.page_size_mask & _bit(PG_LEVEL_1G):
                s = r.start // PUD_SIZE * PUD_SIZE
                e = (r.end + PUD_SIZE - 1) // PUD_SIZE * PUD_SIZE
                if self.memblock_is_region_memory(s, e):
                    r.page_size_mask |= _bit(PG_LEVEL_1G)

    def init_memory_mapping(self, start: int, end: int) -> int:
        """init_memory_mapping(start, end, PAGE_KERNEL): returns the end mapped."""
        ret = 0
        for r in self.split_mem_range(start, end):
            size = (
                "1G"
                if r.page_size_mask & _bit(PG_LEVEL_1G)
                else "2M"
                if r.page_size_mask & _bit(PG_LEVEL_2M)
                else "4k"
            )
            self.state.ranges.append((r.start, r.end, size))
            ret = self.kernel_physical_mapping_init(r.start, r.end, r.page_size_mask)
        self.add_pfn_range_mapped(start >> PAGE_SHIFT, ret >> PAGE_SHIFT)
        return ret

    def add_pfn_range_mapped(self, start_pfn: int, end_pfn: int) -> None:
        """add_pfn_range_mapped(): merge into pfn_mapped[]."""
        ranges = [*self.state.pfn_mapped, (start_pfn, end_pfn)]
        ranges.sort()
        merged: list[tuple[int, int]] = []
        for s, e in ranges:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        self.state.pfn_mapped = merged

    def init_range_memory_mapping(self, r_start: int, r_end: int) -> int:
        """init_range_memory_mapping(): map the RAM of a window; returns bytes."""
        mapped = 0
        for s, e in self.memory:
            start = min(max(s, r_start), r_end)
            end = min(max(e, r_start), r_end)
            if start >= end:
                continue
            self.init_memory_mapping(start, end)
            mapped += end - start
        if mapped:
            self.state.windows.append((r_start, r_end))
        return mapped

    def top_free_pmd_block(self, map_start: int, map_end: int) -> int:
        """memblock_phys_alloc_range(PMD_SIZE, PMD_SIZE, start, end), top-down.

        Returns the highest 2M-aligned block of free RAM (RAM minus reservations).
        """
        for s, e in reversed(self.memory):
            hi = min(e, map_end) // PMD_SIZE * PMD_SIZE
            while hi - PMD_SIZE >= max(s, map_start):
                blk = hi - PMD_SIZE
                if not any(rs < hi and blk < re for rs, re in self.reserved):
                    return blk
                hi -= PMD_SIZE
        return map_start // PMD_SIZE * PMD_SIZE

    def memory_map_top_down(self, map_start: int, map_end: int) -> None:
        """memory_map_top_down(): map RAM in windows from the top down.

        The step grows 2M -> 512M -> 128G -> ... as mapped RAM reaches it; the part
        above the first block is mapped last.
        """
        addr = self.top_free_pmd_block(map_start, map_end)
        real_end = addr + PMD_SIZE
        step = PMD_SIZE
        last_start = real_end
        mapped = 0
        while last_start > map_start:
            if last_start > step:
                start = max((last_start - 1) // step * step, map_start)
            else:
                start = map_start
            mapped += self.init_range_memory_mapping(start, last_start)
            last_start = start
            if mapped >= step:
                step <<= PMD_SHIFT - PAGE_SHIFT - 1  # get_new_step_size()
        if real_end < map_end:
            self.init_range_memory_mapping(real_end, map_end)

    def memory_map_bottom_up(self, map_start: int, map_end: int) -> None:
        """memory_map_bottom_up(): windows from the bottom, the same growing step."""
        start = map_start
        step = PMD_SIZE
        mapped = 0
        while start < map_end:
            if step and map_end - start > step:
                nxt = min((start + step) // step * step, map_end)
            else:
                nxt = map_end
            mapped += self.init_range_memory_mapping(start, nxt)
            start = nxt
            if mapped >= step:
                step <<= PMD_SHIFT - PAGE_SHIFT - 1

    def init_mem_mapping(self) -> DirectMapState:
        """init_mem_mapping(): the ISA range, then all RAM in windows."""
        self.probe_page_size_mask()
        end = self.e820.max_pfn << PAGE_SHIFT
        self.init_memory_mapping(0, ISA_END_ADDRESS)
        if self.bottom_up:
            # map above the kernel first, so tables can come from there
            kernel_end = max((e for _, e in self.reserved), default=ISA_END_ADDRESS)
            kernel_end = min(max(kernel_end, ISA_END_ADDRESS), end)
            self.memory_map_bottom_up(kernel_end, end)
            self.memory_map_bottom_up(ISA_END_ADDRESS, kernel_end)
        else:
            self.memory_map_top_down(ISA_END_ADDRESS, end)
        return self.state

    # ---- arch/x86/mm/init_64.c -------------------------------------------------------

    def update_page_count(self, level: int, pages: int) -> None:
        """update_page_count(): add to direct_pages_count[level]."""
        self.state.direct_pages_count[level] += pages

    def kernel_physical_mapping_init(
        self, paddr_start: int, paddr_end: int, page_size_mask: int
    ) -> int:
        """__kernel_physical_mapping_init(): fill the direct map for a range.

        Per top-level slot, the P4D/PUD table is allocated when the slot is empty.
        """
        t = self.t
        po = self.layout.page_offset
        vaddr = po + paddr_start
        vaddr_end = po + paddr_end
        paddr_last = paddr_end
        top = t.top_level
        while vaddr < vaddr_end:
            slot = pt.page_level_size(top)
            vaddr_next = (vaddr // slot) * slot + slot
            idx = t.index(vaddr, top)
            e = t.read(t.pgd, idx)
            if e:
                table = e & pt.PTE_PFN_MASK
                new = False
            else:
                table = t.alloc_table()
                new = True
            if top == pt.PG_LEVEL_256T:
                paddr_last = self.phys_p4d_init(
                    table, vaddr - po, paddr_end, page_size_mask
                )
            else:
                paddr_last = self.phys_pud_init(
                    table, vaddr - po, paddr_end, page_size_mask
                )
            if new:
                t.write(t.pgd, idx, table | pt._PAGE_TABLE)
            vaddr = vaddr_next
        return paddr_last

    def phys_p4d_init(self, table: int, paddr: int, paddr_end: int, mask: int) -> int:
        """phys_p4d_init() with 5-level paging: one PUD table per 512G slot."""
        t = self.t
        po = self.layout.page_offset
        paddr_last = paddr_end
        size = pt.page_level_size(pt.PG_LEVEL_512G)
        vaddr, vaddr_end = po + paddr, po + paddr_end
        while vaddr < vaddr_end:  # the loop stops at the range's end (no clearing)
            i = t.index(vaddr, pt.PG_LEVEL_512G)
            vaddr_next = (vaddr // size) * size + size
            paddr = vaddr - po
            e = t.read(table, i)
            if e:
                paddr_last = self.phys_pud_init(
                    e & pt.PTE_PFN_MASK, paddr, paddr_end, mask
                )
            else:
                pud = t.alloc_table()
                paddr_last = self.phys_pud_init(pud, paddr, paddr_end, mask)
                t.write(table, i, pud | pt._PAGE_TABLE)
            vaddr = vaddr_next
        return paddr_last

    def phys_pud_init(self, table: int, paddr: int, paddr_end: int, mask: int) -> int:
        """phys_pud_init(): 1G leaves where allowed, else PMD tables."""
        return self._phys_large_init(table, paddr, paddr_end, mask, PG_LEVEL_1G)

    def phys_pmd_init(
        self, table: int, paddr: int, paddr_end: int, mask: int, prot: int
    ) -> int:
        """phys_pmd_init(): 2M leaves where allowed, else PTE tables."""
        return self._phys_large_init(table, paddr, paddr_end, mask, PG_LEVEL_2M, prot)

    def _phys_large_init(
        self,
        table: int,
        paddr: int,
        paddr_end: int,
        mask: int,
        level: int,
        prot: int | None = None,
    ) -> int:
        t = self.t
        po = self.layout.page_offset
        size = pt.page_level_size(level)
        entries = t.read_table(table)
        before = entries.copy()
        paddr_last = paddr_end
        pages = 0
        base_prot = self.prot if prot is None else prot
        i = t.index(po + paddr, level)
        while i < pt.PTRS_PER_TABLE:
            paddr_next = (paddr // size) * size + size
            if paddr >= paddr_end:
                if not self.e820_mapped_ram_or_acpi(paddr // size * size, paddr_next):
                    entries[i] = 0
                paddr, i = paddr_next, i + 1
                continue
            e = int(entries[i])
            new_prot = base_prot
            if e:
                if not e & pt._PAGE_PSE:
                    t.write_table(
                        table, entries, int(np.count_nonzero(entries != before))
                    )
                    before = entries.copy()
                    if level == PG_LEVEL_1G:
                        paddr_last = self.phys_pmd_init(
                            e & pt.PTE_PFN_MASK, paddr, paddr_end, mask, base_prot
                        )
                    else:
                        paddr_last = self.phys_pte_init(
                            e & pt.PTE_PFN_MASK, paddr, paddr_end, base_prot
                        )
                    entries = t.read_table(table)
                    before = entries.copy()
                    paddr, i = paddr_next, i + 1
                    continue
                if mask & _bit(level):
                    pages += 1  # kept leaf, counted again at boot
                    paddr_last = paddr_next
                    paddr, i = paddr_next, i + 1
                    continue
                # a large leaf where large is not allowed: rebuild below it with its
                # own protection (pte_pgprot(pte_clrhuge()))
                new_prot = pt.pte_flags(e) & ~pt._PAGE_PSE
            if mask & _bit(level):
                pages += 1
                frame = (paddr // size) * size
                entries[i] = frame | new_prot | pt._PAGE_PSE  # prot_sethuge()
                paddr_last = paddr_next
                paddr, i = paddr_next, i + 1
                continue
            child = t.alloc_table()
            if level == PG_LEVEL_1G:
                paddr_last = self.phys_pmd_init(child, paddr, paddr_end, mask, new_prot)
            else:
                paddr_last = self.phys_pte_init(child, paddr, paddr_end, new_prot)
            entries[i] = child | pt._PAGE_TABLE
            paddr, i = paddr_next, i + 1
        t.write_table(table, entries, int(np.count_nonzero(entries != before)))
        self.update_page_count(level, pages)
        return paddr_last

    def phys_pte_init(self, table: int, paddr: int, paddr_end: int, prot: int) -> int:
        """phys_pte_init(): one PTE per page in range; existing PTEs kept (counted)."""
        t = self.t
        entries = t.read_table(table)
        first = t.index(paddr, PG_LEVEL_4K)
        base = paddr & ~(PMD_SIZE - 1)
        idx = np.arange(first, pt.PTRS_PER_TABLE, dtype=np.uint64)
        pas = np.uint64(base) + idx * np.uint64(PAGE_SIZE)
        in_range = pas < np.uint64(paddr_end)
        existing = entries[first:] != 0
        new = in_range & ~existing
        pages = int(np.count_nonzero(in_range))
        before = entries.copy()
        entries[first:][new] = pas[new] | np.uint64(prot)
        # beyond the range: clear entries whose page has no RAM and no ACPI
        beyond = np.flatnonzero(~in_range & existing)
        for k in beyond:
            pa = int(pas[k])
            if not self.e820_mapped_ram_or_acpi(pa, pa + PAGE_SIZE):
                entries[first + int(k)] = 0
        t.write_table(table, entries, int(np.count_nonzero(entries != before)))
        self.update_page_count(PG_LEVEL_4K, pages)
        paddr_last = paddr_end
        if new.any():
            paddr_last = int(pas[new][-1]) + PAGE_SIZE
        return paddr_last
