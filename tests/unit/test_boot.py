"""Boot: the direct map Linux 7.0 builds (linux-mm.md 1), its counters and texts.

Machines are booted with ``rodata=False``: the state right after ``init_mem_mapping``
and the high kernel map, before ``kfence_init``/``mark_rodata_ro`` split anything (the
CPA issue).  Every expected number and text below is derived by hand from the rules;
the derivations are in the comments and in ``tests/golden/README.md``.

Sizes used in the derivations: 1M = 0x100000, 2M = 0x200000, 1G = 0x40000000.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import emu
from emu.errors import EmuValueError
from emu.mmu import MMU_RESULT_DTYPE
from kernel_model import Machine
from kernel_model import pgtable as pt
from kernel_model.e820 import E820Table, E820Type, KernelImage, PhysRange
from kernel_model.init import DirectMapBuilder, MapRange, make_layout
from kernel_model.meminfo import direct_map_meminfo, direct_map_vmstat

TESTS = Path(__file__).resolve().parents[1]
DATA = TESTS / "data" / "machine"
GOLDEN = TESTS / "golden"

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40
PO = 0xFFFF888000000000
PO_LA57 = 0xFF11000000000000
RAM = E820Type.RAM
PAGE_KERNEL = 0x8000000000000163
PAGE_KERNEL_LARGE = 0x80000000000001E3
G_BIT = 1 << 8
BIT_2M, BIT_1G = 1 << pt.PG_LEVEL_2M, 1 << pt.PG_LEVEL_1G


def golden(name: str) -> str:
    return (GOLDEN / name).read_text()


def boot(**kw: object) -> Machine:
    """A machine right after the page tables are built."""
    return Machine(rodata=False, **kw)


@pytest.fixture(scope="module")
def captured() -> Machine:
    return boot(dmesg=DATA / "dmesg")


@pytest.fixture(scope="module")
def m8g() -> Machine:
    return boot(ram="8G")


class Bump:
    """A bump allocator of table pages for builder-only tests."""

    def __init__(self) -> None:
        self.next = 0x7F000000

    def alloc(self) -> int:
        self.next += 4096
        return self.next

    def free(self, pa: int) -> None:  # pragma: no cover
        raise AssertionError(pa)


def builder(
    e820: E820Table,
    *,
    gbpages: bool = True,
    debug_pagealloc: bool = False,
    image: tuple[int, int] = (16 * M, 62 * M),
) -> DirectMapBuilder:
    bump = Bump()
    tables = pt.PageTables(emu.PhysMem(), bump.alloc, bump.free)
    return DirectMapBuilder(
        tables,
        e820,
        make_layout(),
        PAGE_KERNEL,
        gbpages=gbpages,
        debug_pagealloc=debug_pagealloc,
        reserved=[(0, 1 * M), image],
    )


# ---- Linux's text formats: /proc/meminfo and /proc/vmstat ----------------------------


def test_direct_map_meminfo_lines_lowercase_k_and_8_wide_fields() -> None:
    assert direct_map_meminfo([0, 512, 511, 25, 0, 0], True) == (
        "DirectMap4k:        2048 kB\n"
        "DirectMap2M:     1046528 kB\n"
        "DirectMap1G:    26214400 kB\n"
    )


def test_direct_map_meminfo_has_no_1g_line_without_gbpages() -> None:
    assert direct_map_meminfo([0, 512, 12287, 0, 0, 0], False) == (
        "DirectMap4k:        2048 kB\nDirectMap2M:    25163776 kB\n"
    )


def test_direct_map_meminfo_zero_and_wider_than_8_digits() -> None:
    assert direct_map_meminfo([0, 0, 0, 1025, 0, 0], True) == (
        "DirectMap4k:           0 kB\n"
        "DirectMap2M:           0 kB\n"
        "DirectMap1G:    1074790400 kB\n"
    )


def test_direct_map_meminfo_reproduces_captured_machine_lines() -> None:
    # 26624 kB = 6656 pages, 2070528 kB = 1011 pages, 25165824 kB = 24 pages
    real = [
        ln
        for ln in (DATA / "meminfo").read_text().splitlines()
        if ln.startswith("DirectMap")
    ]
    assert direct_map_meminfo([0, 6656, 1011, 24, 0, 0], True) == "\n".join(real) + "\n"


def test_direct_map_vmstat_lines_in_vmstat_order() -> None:
    assert direct_map_vmstat({}) == golden("vmstat_boot.txt")


def test_direct_map_vmstat_reproduces_captured_machine_lines() -> None:
    real = [
        ln
        for ln in (DATA / "vmstat").read_text().splitlines()
        if ln.startswith("direct_map_")
    ]
    assert direct_map_vmstat({"direct_map_level2_splits": 3}) == "\n".join(real) + "\n"


# ---- the captured machine ------------------------------------------------------------
# RAM (memblock): pfns [1, 0x9f), [0x100, 0xc0000), [0x100000, 0x640000), i.e. bytes
# [4K, 636K), [1M, 3G), [4G, 25G).  max_pfn = 0x640000.
# Windows (1.3): top free 2M block [25G-2M, 25G), so [25G-2M, 25G) (step 2M -> 512M),
# [24.5G, 25G-2M) (mapped 512M -> step 128G), then [1M, 24.5G).
# 4K: ISA [0, 1M) 256 + [1M, 2M) 256 = 512.  2M: [2M, 1G) = 511.
# 1G: [1G, 3G) 2 + [4G, 25G) 21 = 23 leaves; [24G, 25G) is visited by all three
# windows and counted each time (kept leaf at boot) -> 25.


def test_captured_dmesg_meminfo_at_boot(captured: Machine) -> None:
    assert captured.direct.direct_pages_count == [0, 512, 511, 25, 0, 0]
    assert captured.meminfo() == golden("meminfo_captured_boot.txt")
    assert captured.vmstat() == golden("vmstat_boot.txt")


@pytest.mark.parametrize("source", ["iomem", "memmap"])
def test_captured_iomem_and_firmware_memmap_give_same_direct_map(source: str) -> None:
    # iomem: the same RAM; memmap (the kexec table) keeps page 0 as RAM, which the ISA
    # mapping covers anyway
    m = boot(**{source: DATA / ("iomem" if source == "iomem" else "firmware-memmap")})
    assert m.meminfo() == golden("meminfo_captured_boot.txt")


def test_captured_iomem_gives_kernel_image() -> None:
    m = boot(iomem=DATA / "iomem")
    assert m.image.code == PhysRange(0x1000000, 0x2209988)
    assert m.image.bss == PhysRange(0x3B34000, 0x3C58000)


def test_captured_top_down_windows(captured: Machine) -> None:
    assert captured.direct.windows == [
        (25 * G - 2 * M, 25 * G),
        (24 * G + 512 * M, 25 * G - 2 * M),
        (1 * M, 24 * G + 512 * M),
    ]


def test_captured_init_memory_mapping_ranges(captured: Machine) -> None:
    # ISA; each window's RAM through split_mem_range + adjust + merge
    assert captured.direct.ranges == [
        (0, 1 * M, "4k"),
        (25 * G - 2 * M, 25 * G, "1G"),  # 2M piece widened: [24G, 25G) is all RAM
        (24 * G + 512 * M, 25 * G - 2 * M, "1G"),
        (1 * M, 2 * M, "4k"),  # [0, 2M) is not one memblock region
        (2 * M, 1 * G, "2M"),
        (1 * G, 3 * G, "1G"),
        (4 * G, 24 * G + 512 * M, "1G"),  # 1G middle + widened 2M tail, merged
    ]


def test_captured_low_kernel_mapping_ptdump(captured: Machine) -> None:
    assert captured.ptdump("Low Kernel Mapping") == golden(
        "ptdump_captured_low_kernel_mapping.txt"
    )


def test_8g_low_kernel_mapping_ptdump(m8g: Machine) -> None:
    # RAM [0, 0x9fc00), [1M, 3G), [4G, 9G): the same shape with 5G above 4G
    assert m8g.ptdump("low kernel mapping") == golden(
        "ptdump_8g_low_kernel_mapping.txt"
    )


def _tables_below(m: Machine, table: int, level: int) -> int:
    if level == pt.PG_LEVEL_4K:
        return 1
    n = 1
    for e in m.pt.read_table(table):
        e = int(e)
        if e & 1 and not e & pt._PAGE_PSE:
            n += _tables_below(m, e & pt.PTE_PFN_MASK, level - 1)
    return n


def test_captured_direct_map_uses_three_table_pages(captured: Machine) -> None:
    # PGD[273] -> one PUD table -> one PMD table ([0, 1G)) -> one PTE table ([0, 2M))
    pud = captured.pt.read(captured.pt.pgd, 273) & pt.PTE_PFN_MASK
    assert _tables_below(captured, pud, pt.PG_LEVEL_1G) == 3
    assert captured.pt.read(captured.pt.pgd, 273) & 0xFFF == 0x67  # _PAGE_TABLE


def test_captured_leaf_entries_carry_page_kernel(captured: Machine) -> None:
    assert captured.lookup_address(PO + 0x5000).entry == 0x5000 | PAGE_KERNEL
    assert captured.lookup_address(PO + 0x9F000).entry == 0x9F000 | PAGE_KERNEL  # hole
    assert captured.lookup_address(PO + 4 * M).entry == 4 * M | PAGE_KERNEL_LARGE
    assert captured.lookup_address(PO + 24 * G).entry == 24 * G | PAGE_KERNEL_LARGE


# ---- memory_map_top_down windows -----------------------------------------------------


def test_windows_8g() -> None:
    st = builder(E820Table.from_ram_size("8G")).init_mem_mapping()
    assert st.windows == [
        (9 * G - 2 * M, 9 * G),
        (8 * G + 512 * M, 9 * G - 2 * M),
        (1 * M, 8 * G + 512 * M),
    ]


def test_windows_1t_grow_step_to_128g_then_32t() -> None:
    # RAM above 4G ends at E = 1025G.  2M: [E-2M, E) -> 512M; [1024.5G, E-2M) -> 128G;
    # [1024G, 1024.5G) (mapped 1G < 128G); [896G, 1024G) (mapped 129G -> 32T);
    # then [1M, 896G).
    st = builder(E820Table.from_ram_size("1T")).init_mem_mapping()
    e = 1025 * G
    assert st.windows == [
        (e - 2 * M, e),
        (e - 512 * M, e - 2 * M),
        (1024 * G, e - 512 * M),
        (896 * G, 1024 * G),
        (1 * M, 896 * G),
    ]
    # [1024G, 1025G) is visited by the first three windows: 1023 leaves + 2
    assert st.direct_pages_count == [0, 512, 511, 1025, 0, 0]


def test_windows_skip_reserved_kernel_image_and_map_above_it_last() -> None:
    # RAM [1M, 62M) with the image reserved as [16M, 62M) (2M-rounded): the top free
    # 2M block is [14M, 16M); then [1M, 14M); then [16M, 62M) after the loop.
    e820 = E820Table([(0, 0x9FC00, RAM), (1 * M, 62 * M, RAM)])
    st = builder(e820).init_mem_mapping()
    assert st.windows == [(14 * M, 16 * M), (1 * M, 14 * M), (16 * M, 62 * M)]
    # 4K: ISA 256 + [1M, 2M) 256; 2M: [2M, 62M) = 30 leaves, no window cuts one
    assert st.direct_pages_count == [0, 512, 30, 0, 0, 0]


def test_ram_ending_mid_gigabyte_maps_4k_tail_last() -> None:
    # RAM [1M, 1G+5M).  Top block [1G+2M, 1G+4M); [1G, 1G+2M); [512M, 1G) (mapped
    # 516M -> 128G); [1M, 512M); then [1G+4M, 1G+5M) above the first block.
    e820 = E820Table([(0, 0x9FC00, RAM), (1 * M, G + 5 * M, RAM)])
    st = builder(e820).init_mem_mapping()
    assert st.windows == [
        (G + 2 * M, G + 4 * M),
        (G, G + 2 * M),
        (512 * M, G),
        (1 * M, 512 * M),
        (G + 4 * M, G + 5 * M),
    ]
    # 4K: 256 ISA + 256 [1M, 2M) + 256 [1G+4M, 1G+5M); 2M: 511 + 2; no 1G
    assert st.direct_pages_count == [0, 768, 513, 0, 0, 0]


# ---- split_mem_range -----------------------------------------------------------------


def test_split_mem_range_five_pieces() -> None:
    # memblock is exactly the range, so adjust widens nothing
    s, e = 1 * G - 4 * M - 8 * K, 3 * G + 6 * M + 12 * K
    b = builder(E820Table([(s, e, RAM)]), image=(0, 0))
    b.probe_page_size_mask()
    assert b.split_mem_range(s, e) == [
        MapRange(s, 1 * G - 4 * M, 0),  # 4K head up to the first 2M boundary
        MapRange(1 * G - 4 * M, 1 * G, BIT_2M),  # 2M up to the first 1G boundary
        MapRange(1 * G, 3 * G, BIT_2M | BIT_1G),  # 1G middle
        MapRange(3 * G, 3 * G + 6 * M, BIT_2M),  # 2M tail
        MapRange(3 * G + 6 * M, e, 0),  # 4K tail
    ]


def test_split_mem_range_without_gbpages_and_with_debug_pagealloc() -> None:
    s, e = 1 * G - 4 * M - 8 * K, 3 * G + 6 * M + 12 * K
    b = builder(E820Table([(s, e, RAM)]), gbpages=False, image=(0, 0))
    b.probe_page_size_mask()
    assert b.split_mem_range(s, e) == [
        MapRange(s, 1 * G - 4 * M, 0),
        MapRange(1 * G - 4 * M, 3 * G + 6 * M, BIT_2M),  # 2M, 1G-as-2M, 2M merged
        MapRange(3 * G + 6 * M, e, 0),
    ]
    b = builder(E820Table([(s, e, RAM)]), debug_pagealloc=True, image=(0, 0))
    assert b.probe_page_size_mask() == 0
    assert b.split_mem_range(s, e) == [MapRange(s, e, 0)]


def test_adjust_widens_head_and_tail_to_2m_and_merges() -> None:
    # RAM [1M, 8G).  [3M+4K, 7M): head [3M+4K, 4M) and 4K tail [6M, 7M) lie in
    # all-RAM 2M regions -> 2M; [0, 1G) is not all RAM -> no 1G; all three merge.
    b = builder(E820Table([(1 * M, 8 * G, RAM)]))
    b.probe_page_size_mask()
    assert b.split_mem_range(3 * M + 4 * K, 7 * M) == [
        MapRange(3 * M + 4 * K, 7 * M, BIT_2M)
    ]


def test_adjust_widens_window_cut_piece_to_1g() -> None:
    # the second top-down window of the captured machine: a 2M piece inside the
    # all-RAM gigabyte [24G, 25G) gets the 1G bit
    b = builder(E820Table([(4 * G, 25 * G, RAM)]))
    b.probe_page_size_mask()
    assert b.split_mem_range(24 * G + 512 * M, 25 * G - 2 * M) == [
        MapRange(24 * G + 512 * M, 25 * G - 2 * M, BIT_2M | BIT_1G)
    ]


def test_adjust_does_not_widen_across_a_hole() -> None:
    # RAM [1M, 1G+3M) and [1G+4M, 2G): the 4K tail [1G+2M, 1G+3M) sits in a 2M region
    # with a hole; the head [1G+4M+4K, 1G+6M) in an all-RAM one
    b = builder(E820Table([(1 * M, G + 3 * M, RAM), (G + 4 * M, 2 * G, RAM)]))
    b.probe_page_size_mask()
    assert b.split_mem_range(G + 1 * M, G + 3 * M) == [
        MapRange(G + 1 * M, G + 2 * M, BIT_2M),  # [1G, 1G+2M) is all RAM
        MapRange(G + 2 * M, G + 3 * M, 0),
    ]
    assert b.split_mem_range(G + 4 * M + 4 * K, G + 6 * M) == [
        MapRange(G + 4 * M + 4 * K, G + 6 * M, BIT_2M)
    ]


# ---- variants on the captured layout (exact counts) ----------------------------------


def test_captured_without_gbpages() -> None:
    # no 1G: 2M leaves [2M, 3G) 1535 + [4G, 25G) 10752 = 12287, none cut by a window
    m = boot(dmesg=DATA / "dmesg", gbpages=False)
    assert m.direct.direct_pages_count == [0, 512, 12287, 0, 0, 0]
    assert m.meminfo() == "DirectMap4k:        2048 kB\nDirectMap2M:    25163776 kB\n"
    assert "Using GB pages" not in m.boot_summary()


def test_debug_pagealloc_maps_everything_4k() -> None:
    # 4G: RAM [0, 0x9fc00), [1M, 3G), [4G, 5G): ISA 256 + 786176 + 262144 = 1048576
    m = boot(ram="4G", debug_pagealloc=True)
    assert m.direct.direct_pages_count == [0, 1048576, 0, 0, 0, 0]
    assert m.meminfo() == "DirectMap4k:     4194304 kB\nDirectMap2M:           0 kB\n"
    pud = m.pt.read(m.pt.pgd, 273) & pt.PTE_PFN_MASK
    for e in m.pt.read_table(pud):  # no PUD leaf, and no PMD leaf below any PUD
        assert not int(e) & pt._PAGE_PSE
        if int(e) & 1:
            pmds = m.pt.read_table(int(e) & pt.PTE_PFN_MASK)
            assert not (pmds & pt._PAGE_PSE).any()


def test_captured_la57_same_counts_at_5_level_page_offset() -> None:
    m = boot(dmesg=DATA / "dmesg", la57=True)
    assert m.layout.page_offset == PO_LA57
    assert m.meminfo() == golden("meminfo_captured_boot.txt")
    assert m.lookup_address(PO_LA57 + 24 * G).entry == 24 * G | PAGE_KERNEL_LARGE
    assert m.lookup_address(PO_LA57 + 24 * G).level == pt.PG_LEVEL_1G


def test_captured_pti_drops_global_bit() -> None:
    m = boot(dmesg=DATA / "dmesg", pti=True)
    assert m.meminfo() == golden("meminfo_captured_boot.txt")
    assert m.lookup_address(PO + 0x5000).entry == 0x5000 | (PAGE_KERNEL & ~G_BIT)
    assert m.lookup_address(PO + 4 * M).entry == 4 * M | (PAGE_KERNEL_LARGE & ~G_BIT)
    assert m.lookup_address(PO + 1 * G).entry == 1 * G | 0x80000000000000E3
    assert "GLB" not in m.ptdump("Low Kernel Mapping")


# ---- lookup_address (linux-mm.md 2.5) ------------------------------------------------


@pytest.fixture(scope="module")
def short() -> Machine:
    # RAM [1M, 1G+5M): PUD[1] -> PMD table with 2M leaves [1G, 1G+4M), a PTE table for
    # [1G+4M, 1G+6M) filled up to 1G+5M, then none PMDs; PUD[2..] none
    return boot(e820=E820Table([(0, 0x9FC00, RAM), (1 * M, G + 5 * M, RAM)]))


def test_lookup_address_4k_2m_1g_leaves(captured: Machine) -> None:
    for pa, level, prot in (
        (0x1000, pt.PG_LEVEL_4K, PAGE_KERNEL),
        (2 * M + 0x123, pt.PG_LEVEL_2M, PAGE_KERNEL_LARGE),
        (5 * G + 0x456789, pt.PG_LEVEL_1G, PAGE_KERNEL_LARGE),
    ):
        r = captured.lookup_address(PO + pa)
        size = pt.page_level_size(level)
        assert (r.entry, r.level) == (pa // size * size | prot, level)
        assert r.nx is False  # no upper entry has NX
        assert r.rw is True
        assert captured.mem.read_u64(r.entry_pa) == r.entry


def test_lookup_address_none_entries_return_none_at_their_level(short: Machine) -> None:
    r = short.lookup_address(PO + 2 * G)  # PUD none
    assert (r.entry, r.entry_pa, r.level) == (None, None, pt.PG_LEVEL_1G)
    r = short.lookup_address(PO + G + 10 * M)  # PMD none
    assert (r.entry, r.entry_pa, r.level) == (None, None, pt.PG_LEVEL_2M)
    # 4-level: pgd_none() is 0, the folded P4D is none -> NULL at PG_LEVEL_512G
    r = short.lookup_address(0x0000100000000000)
    assert (r.entry, r.level) == (None, pt.PG_LEVEL_512G)


def test_lookup_address_returns_none_pte_at_4k(short: Machine) -> None:
    r = short.lookup_address(PO + G + 5 * M)  # first page past the RAM in the table
    assert (r.entry, r.level) == (0, pt.PG_LEVEL_4K)
    assert r.entry_pa is not None
    assert short.lookup_address(PO + G + 5 * M - 4096).entry == (
        (G + 5 * M - 4096) | PAGE_KERNEL
    )


def test_lookup_address_la57_none_pgd_and_p4d() -> None:
    m = boot(ram="4G", la57=True)
    r = m.lookup_address(0x0000100000000000)  # PGD[0] none
    assert (r.entry, r.level) == (None, pt.PG_LEVEL_256T)
    r = m.lookup_address(PO_LA57 + 512 * G)  # P4D[1] none
    assert (r.entry, r.level) == (None, pt.PG_LEVEL_512G)


def _clear_present(m: Machine, entry_pa: int) -> int:
    table, idx = entry_pa & ~0xFFF, (entry_pa & 0xFFF) // 8
    value = m.pt.read(table, idx) & ~1
    m.pt.write(table, idx, value)
    return value


def test_lookup_address_returns_non_present_large_entry_at_its_level() -> None:
    m = boot(ram="8G")
    for pa, level in ((4 * M, pt.PG_LEVEL_2M), (5 * G, pt.PG_LEVEL_1G)):
        r = m.lookup_address(PO + pa)
        value = _clear_present(m, r.entry_pa)
        r2 = m.lookup_address(PO + pa + 0x3000)
        assert (r2.entry, r2.entry_pa, r2.level) == (value, r.entry_pa, level)


# ---- KASLR ---------------------------------------------------------------------------


def test_kaslr_seed_is_reproducible_and_1g_aligned() -> None:
    a = boot(ram="8G", kaslr_seed=7)
    b = boot(ram="8G", kaslr_seed=7)
    assert a.layout == b.layout
    lay = a.layout
    for base in (lay.page_offset, lay.vmalloc_start, lay.vmemmap_start):
        assert base % G == 0
    assert lay.page_offset >= PO
    assert lay.page_offset < lay.vmalloc_start < lay.vmemmap_start
    assert a.meminfo() == boot(ram="8G").meminfo()
    r = a.lookup_address(lay.page_offset + 5 * G)
    assert (r.entry, r.level) == (5 * G | PAGE_KERNEL_LARGE, pt.PG_LEVEL_1G)
    first = a.ptdump("Low Kernel Mapping").splitlines()[1]
    assert first.startswith(f"0x{lay.page_offset:016x}-")


def test_kaslr_seeds_move_the_direct_map() -> None:
    bases = {boot(ram="8G", kaslr_seed=s).layout.page_offset for s in range(5)}
    assert len(bases) > 1


# ---- scale ---------------------------------------------------------------------------


def test_1t_machine_costs_only_its_page_tables() -> None:
    m = boot(ram="1T")
    assert m.meminfo() == (
        "DirectMap4k:        2048 kB\n"
        "DirectMap2M:     1046528 kB\n"
        "DirectMap1G:    1074790400 kB\n"
    )
    assert m.mem.frame_count == len(m.pt.tables)  # no data frame exists
    assert m.mem.bytes_used < 256 * 1024


# ---- bad input -----------------------------------------------------------------------


def test_unknown_ptdump_section_is_named(m8g: Machine) -> None:
    with pytest.raises(EmuValueError, match="Vmalloc Area"):
        m8g.ptdump("Vmalloc Area")


def test_malformed_dmesg_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "dmesg"
    bad.write_text(
        "[    0.000000] BIOS-provided physical RAM map:\n"
        "[    0.000000] BIOS-e820: [mem 0x0000000000000000-0x00000000zz] usable\n"
    )
    with pytest.raises(EmuValueError, match="line 2"):
        Machine(dmesg=bad, rodata=False)


def test_dmesg_without_e820_table_is_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "dmesg"
    bad.write_text("[    0.000000] Linux version 7.0\n")
    with pytest.raises(EmuValueError, match="BIOS-e820"):
        Machine(dmesg=bad, rodata=False)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(EmuValueError, match="nope"):
        Machine(iomem=tmp_path / "nope", rodata=False)


def test_kernel_image_outside_ram_is_rejected() -> None:
    with pytest.raises(EmuValueError, match="not in RAM"):
        Machine(
            ram="8G",
            kernel_image=KernelImage(code=PhysRange(3 * G, 3 * G + 2 * M)),
            rodata=False,
        )


def test_two_layout_sources_are_rejected() -> None:
    with pytest.raises(EmuValueError, match="one of"):
        Machine(ram="8G", dmesg=DATA / "dmesg", rodata=False)


def test_mmu_walks_direct_map_across_pml4_slots() -> None:
    # 2T: the direct map spans PML4 slots 273..277 (512G each); one batch through the
    # machine's MMU, slot after slot, must give pa = va - PAGE_OFFSET everywhere
    m = boot(ram="2T")
    pas = np.array(
        [
            s * 512 * G + off
            for s in range(4)
            for off in (0x1234, 5 * G + 0x5678, 511 * G + 0x9ABC)
        ],
        dtype=np.uint64,
    )
    out = np.zeros(pas.size, dtype=MMU_RESULT_DTYPE)
    m.mmus[0].run(pas + np.uint64(PO), "r", out=out)
    assert out["vector"].tolist() == [0] * pas.size
    assert [hex(int(x)) for x in out["pa"]] == [hex(int(x)) for x in pas]
