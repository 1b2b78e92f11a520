"""A modelled machine: physical layout, buddy allocator, kernel page tables, CPUs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import emu
from emu.errors import EmuValueError
from emu.mmu import MMU
from emu.smp import CPUSet
from kernel_model import pgtable as pt
from kernel_model.e820 import E820Table, KernelImage, PhysRange
from kernel_model.init import (
    DEFAULT_INIT_RANGE,
    DEFAULT_KERNEL_IMAGE,
    DirectMapBuilder,
    Layout,
    make_layout,
)
from kernel_model.meminfo import VMSTAT_NAMES, direct_map_meminfo, direct_map_vmstat
from kernel_model.page_alloc import GFP_KERNEL, PageAllocator
from kernel_model.pgtable import PMD_SIZE, Lookup, PageTables
from kernel_model.ptdump import check_wx, ptdump
from kernel_model.set_memory import CPA, KernelSymbols, SetMemoryAPI
from kernel_model.vmalloc import Vmalloc

#: sizeof(pglist_data) as the captured machine's dmesg shows it ("NODE_DATA(0)
#: allocated [mem 0x63ffd5500-0x63fffffff]"): 0x2ab00 bytes
NODE_DATA_BYTES = 0x2AB00
KFENCE_POOL_SIZE = (255 + 1) * 2 * 4096  # (CONFIG_KFENCE_NUM_OBJECTS + 1) * 2 pages
SYSTEM_BOOTING = "booting"
SYSTEM_RUNNING = "running"
START_KERNEL_PHYS = 0x1000000  # CONFIG_PHYSICAL_START: phys_base = load address - this


@dataclass(frozen=True)
class BootConfig:
    """The knobs of a boot, echoed in reports.

    Attributes:
        gbpages: allow 1G direct-map pages (``direct_gbpages``).
        la57: 5-level paging.
        pti: page-table isolation (kernel mappings lose the global bit).
        kaslr_seed: randomise the direct map / vmalloc / vmemmap bases with this seed.
        ncpus: modelled CPUs.
        cpu: CPU preset (emu.cpus).
        debug_pagealloc: map the direct map with 4K pages only.
        rodata: finish the boot as Linux does (free_initmem, mark_rodata_ro) and enter
            SYSTEM_RUNNING; False stops right after the page tables are built.
        kfence: model the KFENCE pool (CONFIG_KFENCE, 255 objects): 2 MiB taken
            top-down from memblock below the node data, then made 4K page by page
            (arch_kfence_init_pool's set_memory_4k), as distribution kernels do.
        merge: CPA collapse policy, "linux" or "eager".
        flush_ceiling: tlb_single_page_flush_ceiling.
    """

    gbpages: bool = True
    la57: bool = False
    pti: bool = False
    kaslr_seed: int | None = None
    ncpus: int = 2
    cpu: str = "skylake"
    debug_pagealloc: bool = False
    rodata: bool = True
    kfence: bool = True
    merge: str = "linux"
    flush_ceiling: int = 33


def load_e820(
    *,
    ram: int | str | None = None,
    e820: E820Table | None = None,
    dmesg: str | os.PathLike[str] | None = None,
    iomem: str | os.PathLike[str] | None = None,
    memmap: str | os.PathLike[str] | None = None,
) -> tuple[E820Table, KernelImage | None]:
    """Pick the physical layout from exactly one source.

    Raises:
        EmuValueError: none or several sources, or a malformed file.
    """
    given = [x for x in (ram, e820, dmesg, iomem, memmap) if x is not None]
    if len(given) > 1:
        raise EmuValueError("give one of ram, e820, dmesg, iomem, memmap")
    if e820 is not None:
        return e820, None
    if dmesg is not None:
        return E820Table.parse_dmesg(_read(dmesg)), None
    if iomem is not None:
        table, image = E820Table.parse_iomem(_read(iomem))
        return table, image
    if memmap is not None:
        return E820Table.parse_firmware_memmap(memmap), None
    return E820Table.from_ram_size(ram if ram is not None else "16G"), None


def _read(path: str | os.PathLike[str]) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise EmuValueError(f"{path}: cannot read: {exc}") from exc


class Machine(SetMemoryAPI):
    """Models one x86-64 machine running Linux 7.0's memory management.

    Booting builds, in order: the E820 layout, the buddy allocator (with the first
    1 MiB and the kernel image reserved), the kernel PGD, the direct map as
    ``init_mem_mapping`` builds it, the high kernel mapping of the image, and one
    ``emu.MMU`` per CPU with CR3 at the kernel PGD and CR4.PGE set.

    Args:
        ram: RAM size for a PC-like layout ("16G", bytes).
        e820: an explicit layout.
        dmesg / iomem / memmap: files describing a real machine.
        kernel_image: physical ranges of the kernel image (default: iomem's, else a
            typical 6.x image at 16 MiB).
        init_range: physical [__init_begin, __init_end) of the image (default: the
            captured 6.x image's, else from the data end up to the bss).
        **config: fields of :class:`BootConfig`.

    Attributes:
        e820, image, layout, mem, page_alloc, pt, cpus, direct: the parts.
        vm_events: /proc/vmstat direct-map counters.
        system_state: "booting" or "running" (split events count only when running).
    """

    def __init__(
        self,
        ram: int | str | None = None,
        e820: E820Table | None = None,
        *,
        dmesg: str | os.PathLike[str] | None = None,
        iomem: str | os.PathLike[str] | None = None,
        memmap: str | os.PathLike[str] | None = None,
        kernel_image: KernelImage | None = None,
        init_range: tuple[int, int] | None = None,
        **config: Any,
    ) -> None:
        self.config = BootConfig(**config)
        self.e820, image = load_e820(
            ram=ram, e820=e820, dmesg=dmesg, iomem=iomem, memmap=memmap
        )
        self.image = kernel_image or image or DEFAULT_KERNEL_IMAGE
        if self.image.code is None:
            raise EmuValueError("the kernel image needs at least its code range")
        ram_bytes = self.e820.total_ram_bytes()
        self.layout: Layout = make_layout(
            self.config.la57, self.config.kaslr_seed, ram_bytes
        )
        img_lo = self.image.start // PMD_SIZE * PMD_SIZE
        img_hi = -(-self.image.end // PMD_SIZE) * PMD_SIZE
        if not self.e820.mapped_all(self.image.start, self.image.end, 1):
            raise EmuValueError(
                f"kernel image [{self.image.start:#x}, {self.image.end:#x}) "
                "is not in RAM"
            )
        self.page_alloc = PageAllocator(
            self.e820,
            reserved=[
                (
                    self.image.start >> 12,
                    -(-self.image.end // 4096) - (self.image.start >> 12),
                    "kernel image",
                )
            ],
        )
        self.mem = emu.PhysMem()
        self.pt = PageTables(
            self.mem, self._alloc_table, self._free_table, la57=self.config.la57
        )
        self.system_state = SYSTEM_BOOTING
        self.vm_events = dict.fromkeys(VMSTAT_NAMES, 0)

        self.page_kernel = pt.PAGE_KERNEL & ~(pt._PAGE_GLOBAL if self.config.pti else 0)
        builder = DirectMapBuilder(
            self.pt,
            self.e820,
            self.layout,
            self.page_kernel,
            gbpages=self.config.gbpages,
            debug_pagealloc=self.config.debug_pagealloc,
            reserved=[(0, 0x100000), (img_lo, img_hi)],
        )
        self.direct = builder.init_mem_mapping()
        self.phys_base = self.image.code.start - START_KERNEL_PHYS
        self._map_kernel_image(img_lo, img_hi)

        self.sym = self._symbols(init_range)
        self.supported_pte_mask = (1 << 64) - 1  # NX and PGE supported
        self.dmesg: list[str] = []
        self.kfence_pool: tuple[int, int] | None = None

        self.cpus = CPUSet(self.mem, self.config.ncpus, self.config.cpu)
        for mmu in self.cpus.mmus:
            mmu.cr4_la57 = self.config.la57
            mmu.cr4_pge = True
            mmu.write_cr3(self.pt.pgd)
        self.cpa = CPA(
            self, merge=self.config.merge, flush_ceiling=self.config.flush_ceiling
        )
        self.vmalloc = Vmalloc(self)
        if self.config.rodata:
            self.finish_boot()

    # ---- end of boot (init/main.c kernel_init) ---------------------------------------

    def _symbols(self, init_range: tuple[int, int] | None) -> KernelSymbols:
        img = self.image
        assert img.code is not None
        hv = self.highmap_va
        rodata = img.rodata or PhysRange(
            -(-img.code.end // PMD_SIZE) * PMD_SIZE,
            -(-img.code.end // PMD_SIZE) * PMD_SIZE,
        )
        data = img.data or PhysRange(
            -(-rodata.end // PMD_SIZE) * PMD_SIZE, -(-rodata.end // PMD_SIZE) * PMD_SIZE
        )
        bss = img.bss or PhysRange(
            -(-data.end // 4096) * 4096, -(-data.end // 4096) * 4096
        )
        if init_range is None:
            if img == DEFAULT_KERNEL_IMAGE:
                init_range = DEFAULT_INIT_RANGE
            else:  # unknown: the page-aligned gap between the data and the bss
                init_range = (-(-data.end // 4096) * 4096, bss.start)
        brk_end = -(-bss.end // 4096) * 4096
        return KernelSymbols(
            text=hv(img.code.start),
            etext=hv(img.code.end),
            start_rodata=hv(rodata.start),
            end_rodata=hv(rodata.end),
            sdata=hv(data.start),
            edata=hv(data.end),
            init_begin=hv(init_range[0]),
            init_end=hv(init_range[1]),
            bss_start=hv(bss.start),
            bss_stop=hv(bss.end),
            brk_end=hv(brk_end),
            phys_base=self.phys_base,
            start_kernel_map=self.layout.start_kernel_map,
        )

    def free_init_pages(self, what: str, begin: int, end: int) -> None:
        """free_init_pages() (arch/x86/mm/init.c): NX + RW, then free the pages.

        With debug_pagealloc the range is unmapped instead.
        """
        begin = -(-begin // 4096) * 4096
        end &= ~0xFFF
        if begin >= end:
            return
        n = (end - begin) >> 12
        if self.config.debug_pagealloc:
            self.set_memory_np(begin, n)
        else:
            self.set_memory_nx(begin, n)
            self.set_memory_rw(begin, n)
            self.page_alloc.free_reserved_area(self.pa(begin) >> 12, n)
        self.dmesg.append(f"Freeing {what} memory: {(end - begin) >> 10}K")

    def free_kernel_image_pages(self, what: str, begin: int, end: int) -> None:
        """free_kernel_image_pages(): free_init_pages, plus a PTI high-map unmap.

        With PTI the freed range leaves the high map (set_memory_np_noalias).
        """
        self.free_init_pages(what, begin, end)
        if self.config.pti:
            self.set_memory_np_noalias(begin, (end - begin) >> 12)

    def mark_rodata_ro(self) -> None:
        """mark_rodata_ro() (arch/x86/mm/init_64.c, 7.0).

        Text and rodata become RO through the high map (its alias reaches the direct
        map), NX goes from the text end to the 2M-rounded brk end, then the
        text/rodata and rodata/data gaps are freed.
        """
        s = self.sym
        start = s.text & ~0xFFF
        rodata_start = -(-s.start_rodata // 4096) * 4096
        end = s.end_rodata_hpage_align
        text_end = -(-s.etext // 4096) * 4096
        rodata_end = -(-s.end_rodata // 4096) * 4096
        self.dmesg.append(
            f"Write protecting the kernel read-only data: {(end - start) >> 10}k"
        )
        self.set_memory_ro(start, (end - start) >> 12)
        self.cpa.kernel_set_to_readonly = True
        all_end = -(-s.brk_end // PMD_SIZE) * PMD_SIZE
        self.set_memory_nx(text_end, (all_end - text_end) >> 12)
        self.free_kernel_image_pages(
            "unused kernel image (text/rodata gap)", text_end, rodata_start
        )
        self.free_kernel_image_pages(
            "unused kernel image (rodata/data gap)", rodata_end, s.sdata
        )

    def kfence_init(self) -> None:
        """kfence_alloc_pool_and_metadata() + arch_kfence_init_pool() (7.0).

        A 2 MiB pool below the top of RAM (under the node data memblock gave out
        first), every page of it forced to 4K (arch/x86/include/asm/kfence.h).
        """
        top = max(r.end for r in self.e820.ram_ranges()) & ~0xFFF
        end = (top - NODE_DATA_BYTES) & ~0xFFF
        start = end - KFENCE_POOL_SIZE
        if start < 0x100000 or not self.e820.mapped_all(start, end, 1):
            return
        try:
            self.page_alloc.reserve(start >> 12, KFENCE_POOL_SIZE >> 12, "kfence pool")
        except EmuValueError:
            # something already sits there (a small machine's boot tables): take any
            # free 2 MiB block instead, or run without KFENCE as Linux would
            pfn = self.page_alloc.alloc_pages(9, GFP_KERNEL)
            if pfn is None:
                return
            start, end = pfn << 12, (pfn << 12) + KFENCE_POOL_SIZE
        self.kfence_pool = (start, end)
        for pa in range(start, end, 4096):
            look = self.pt.lookup_address(self.va(pa))
            if look.entry is None:
                return
            if look.level != pt.PG_LEVEL_4K:
                self.set_memory_4k(self.va(pa), 1)

    def finish_boot(self) -> None:
        """Finish booting: kfence, free_initmem(), mark_readonly(), SYSTEM_RUNNING."""
        if self.system_state == SYSTEM_RUNNING:
            raise EmuValueError("the machine has already finished booting")
        if not self.direct.direct_gbpages:
            # arch/x86/kernel/cpu/common.c: the first 2M never becomes a large page
            # (fixed MTRRs cover it)
            self.set_memory_4k(self.va(0), 1)
        if self.config.kfence:
            self.kfence_init()
        self.free_kernel_image_pages(
            "unused kernel image (initmem)", self.sym.init_begin, self.sym.init_end
        )
        self.mark_rodata_ro()
        self.system_state = SYSTEM_RUNNING

    # ---- direct_pages_count (arch/x86/mm/pat/set_memory.c) ---------------------------

    def split_page_count(self, level: int) -> None:
        """split_page_count(): move one page of ``level`` to 512 of the level below."""
        count = self.direct.direct_pages_count
        if count[level] == 0:
            return
        count[level] -= 1
        if self.system_state == SYSTEM_RUNNING:
            key = (
                "direct_map_level2_splits"
                if level == pt.PG_LEVEL_2M
                else "direct_map_level3_splits"
            )
            self.vm_events[key] += 1
        count[level - 1] += pt.PTRS_PER_TABLE

    def collapse_page_count(self, level: int) -> None:
        """collapse_page_count(): the reverse of split_page_count()."""
        count = self.direct.direct_pages_count
        count[level] += 1
        if self.system_state == SYSTEM_RUNNING:
            key = (
                "direct_map_level2_collapses"
                if level == pt.PG_LEVEL_2M
                else "direct_map_level3_collapses"
            )
            self.vm_events[key] += 1
        count[level - 1] -= pt.PTRS_PER_TABLE

    def cpa_stats(self) -> str:
        """/sys/kernel/debug/x86/cpa_stats."""
        return self.cpa.stats.text()

    # ---- boot pieces -----------------------------------------------------------------

    def _alloc_table(self) -> int | None:
        pfn = self.page_alloc.alloc_pages(0, GFP_KERNEL)
        return None if pfn is None else pfn << 12

    def _free_table(self, pa: int) -> None:
        self.page_alloc.free_pages(pa >> 12, 0)

    def _map_kernel_image(self, lo: int, hi: int) -> None:
        """The high kernel mapping: 2M pages over the image.

        As head_64.S's level2_kernel_pgt looks after cleanup_highmap().
        """
        prot = pt.PAGE_KERNEL_LARGE_EXEC & ~(pt._PAGE_GLOBAL if self.config.pti else 0)
        for pa in range(lo, hi, PMD_SIZE):
            va = self.highmap_va(pa)
            table = self.pt.ensure_table(va, pt.PG_LEVEL_2M, pt._PAGE_TABLE)
            self.pt.write(table, self.pt.index(va, pt.PG_LEVEL_2M), pa | prot)

    # ---- addresses -------------------------------------------------------------------

    def highmap_va(self, pa: int) -> int:
        """__START_KERNEL_map alias of a physical address of the image."""
        return self.layout.start_kernel_map + pa - self.phys_base

    def va(self, pa: int) -> int:
        """__va(): the direct-map address of ``pa``."""
        return self.layout.page_offset + pa

    def pa(self, va: int) -> int:
        """__pa() for direct-map and high-map addresses."""
        lay = self.layout
        if lay.start_kernel_map <= va < lay.start_kernel_map + lay.kernel_image_size:
            return va - lay.start_kernel_map + self.phys_base
        if va >= lay.page_offset:
            return va - lay.page_offset
        raise EmuValueError(
            f"{va:#x} is neither a direct-map nor a kernel-image address"
        )

    @property
    def mmus(self) -> list[MMU]:
        """One MMU per modelled CPU."""
        return self.cpus.mmus

    # ---- Linux's texts ---------------------------------------------------------------

    def meminfo(self) -> str:
        """/proc/meminfo's DirectMap lines."""
        return direct_map_meminfo(
            self.direct.direct_pages_count, self.direct.direct_gbpages
        )

    def vmstat(self) -> str:
        """/proc/vmstat's direct_map_* lines."""
        return direct_map_vmstat(self.vm_events)

    def buddyinfo(self) -> str:
        """/proc/buddyinfo."""
        return self.page_alloc.buddyinfo()

    def ptdump(self, section: str | None = None) -> str:
        """/sys/kernel/debug/page_tables/kernel, or one section of it.

        Args:
            section: a marker name ("Low Kernel Mapping", ...); case-insensitive.
        """
        text, _, _ = ptdump(self.pt, self.layout.markers())
        if section is None:
            return text
        names = [n for _, n in self.layout.markers()]
        want = [n for n in names if n.lower() == section.lower()]
        if not want:
            raise EmuValueError(f"no ptdump section {section!r}; sections: {names}")
        out: list[str] = []
        inside = False
        for line in text.splitlines():
            if line.startswith("---["):
                inside = line == f"---[ {want[0]} ]---"
            if inside:
                out.append(line)
        return "\n".join(out) + "\n"

    def check_wx(self) -> str:
        """The W+X check's closing message."""
        _, wx, _ = ptdump(self.pt, self.layout.markers())
        return check_wx(wx)

    def lookup_address(self, va: int) -> Lookup:
        """lookup_address(): entry and level for a kernel virtual address."""
        return self.pt.lookup_address(va)

    def boot_summary(self) -> str:
        """What the boot did, in dmesg's words where Linux has them."""
        lines = [self.e820.format_dmesg().rstrip("\n")]
        if self.direct.direct_gbpages:
            lines.append("Using GB pages for direct mapping")
        lines.append(f"last_pfn = {self.e820.max_pfn:#x}")
        for start, end, size in self.direct.ranges:
            lines.append(f" [mem {start:#010x}-{end - 1:#010x}] page {size}")
        lines.append(
            f"page tables: {len(self.pt.tables)} pages "
            f"({len(self.pt.tables) * 4} kB), simulated memory "
            f"{self.mem.bytes_used // 1024} kB"
        )
        return "\n".join(lines) + "\n"

    def ram_ranges(self) -> list[PhysRange]:
        """Usable RAM."""
        return self.e820.ram_ranges()
