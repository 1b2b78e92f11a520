"""CPA rules of reference/linux-mm.md sections 1.7 and 2, with exact outcomes.

Every expected value here was derived by hand from the reference (the derivation is
in the comments), never copied from a run.  Machines are 16 GiB PC layouts: RAM
[0, 0x9fc00), [1M, 3G) and [4G, 17G), the PCI hole [3G, 4G).  ``pristine()`` stops
right after init_mem_mapping (rodata=False, kfence=False), so its direct map is
exactly what section 1 builds:

* [0, 2M): 512 4K PTEs (the ISA range and [1M, 2M), whose 2M is not all RAM);
* [2M, 1G): 511 2M leaves; [1G, 3G) and [4G, 17G): 1G leaves;
* direct_pages_count = 512 / 511 / 17: the 1G at [16G, 17G) is counted three times,
  because the top-down windows [17G-2M, 17G), [16.5G, 17G-2M) and [1M, 16.5G) each
  reach it and ``phys_pud_init`` counts a kept 1G leaf again at boot (1.5);
* leaves are __PAGE_KERNEL(_LARGE): 0x8000000000000163 / 0x80000000000001e3.

The kernel image is at 16M (phys_base 0): text [0x1000000, 0x2209988), rodata
[0x2400000, 0x2e0a000), data from 0x3000000, _brk_end 0x3c58000; the high map has
2M leaves (0x1e3) over [16M, 62M).
"""

from __future__ import annotations

import re

import pytest
from cpa_probe import Probe, counts

import emu
from kernel_model.machine import Machine

PAGE_OFFSET = 0xFFFF888000000000
START_KERNEL_MAP = 0xFFFFFFFF80000000
VMALLOC_START = 0xFFFFC90000000000
K4 = 1 << 12
M2 = 1 << 21
G1 = 1 << 30

# section 0
P, RW, USR, A, D, PSE, G = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80, 0x100
PAT_4K, SOFTW1, KERNEL_4K, PAT_LARGE, NX = 0x80, 0x200, 0x800, 0x1000, 1 << 63
PAGE_KERNEL = 0x8000000000000163
PAGE_KERNEL_LARGE = 0x80000000000001E3
PAGE_KERNEL_RO = 0x8000000000000121
KERNPG_TABLE = 0x63

LVL_4K, LVL_2M, LVL_1G = 1, 2, 3
PRISTINE_COUNT = (512, 511, 17)  # 4K, 2M, 1G pages, derived in the module docstring


def pristine(**config: object) -> Machine:
    return Machine(ram="16G", rodata=False, kfence=False, **config)


def booted() -> Machine:
    return Machine(ram="16G")


def dm(pa: int) -> int:
    """__va(): the direct-map address of pa."""
    return PAGE_OFFSET + pa


def hm(pa: int) -> int:
    """The high-kernel-map address of an image pa (phys_base = 0)."""
    return START_KERNEL_MAP + pa


def leaf(m: Machine, va: int) -> tuple[int, int | None]:
    look = m.pt.lookup_address(va)
    return look.level, look.entry


def entry_pa(m: Machine, va: int) -> int:
    look = m.pt.lookup_address(va)
    assert look.entry_pa is not None
    return look.entry_pa


def meminfo_text(n4k: int, n2m: int, n1g: int | None) -> str:
    """arch_report_meminfo() (1.7): %8lu kB, 4k << 2, 2M << 11, 1G << 20."""
    text = f"DirectMap4k:    {n4k << 2:8d} kB\nDirectMap2M:    {n2m << 11:8d} kB\n"
    if n1g is not None:
        text += f"DirectMap1G:    {n1g << 20:8d} kB\n"
    return text


def cpa_stats_text(
    gb: tuple[int, int, int] = (0, 0, 0),
    mb: tuple[int, int, int] = (0, 0, 0),
    k4: int = 0,
) -> str:
    """debugfs x86/cpa_stats (2.10): checked, sameprot, preserved per size."""
    return (
        f"1G pages checked:     {gb[0]:16d}\n"
        f"1G pages sameprot:    {gb[1]:16d}\n"
        f"1G pages preserved:   {gb[2]:16d}\n"
        f"2M pages checked:     {mb[0]:16d}\n"
        f"2M pages sameprot:    {mb[1]:16d}\n"
        f"2M pages preserved:   {mb[2]:16d}\n"
        f"4K pages set-checked: {k4:16d}\n"
    )


# ---- the machine the rules start from ------------------------------------------------


def test_pristine_direct_map_is_what_init_mem_mapping_builds():
    m = pristine()
    assert counts(m) == PRISTINE_COUNT
    assert m.meminfo() == (
        "DirectMap4k:        2048 kB\n"
        "DirectMap2M:     1046528 kB\n"
        "DirectMap1G:    17825792 kB\n"
    )
    assert leaf(m, dm(0x5000)) == (LVL_4K, 0x5000 | PAGE_KERNEL)
    assert leaf(m, dm(0x600000)) == (LVL_2M, 0x600000 | PAGE_KERNEL_LARGE)
    assert leaf(m, dm(4 * G1)) == (LVL_1G, 4 * G1 | PAGE_KERNEL_LARGE)
    assert m.system_state == "booting"
    assert m.cpa_stats() == cpa_stats_text()


# ---- 2.7: the worked example ---------------------------------------------------------


def test_worked_example_ro_on_three_pages_inside_a_1g_leaf():
    m = pristine()
    base = 4 * G1 + 5 * M2  # the 2M child (index 5) of the 1G leaf [4G, 5G)
    pa = base + 7 * K4
    pud_pa = entry_pa(m, dm(pa))
    p = Probe(m)

    assert m.set_memory_ro(dm(pa), 3) == 0

    # split 1G -> 2M (flush), split 2M -> 4K (flush), three 4K updates, one ranged
    # flush of 3 pages on every CPU
    p.flushes_are(split=2, ranged=3)
    new = p.new_tables()
    assert len(new) == 2
    assert all(not m.page_alloc.is_free(t >> 12) for t in new)
    # the PUD now points to the PMD table, the PMD to the PTE table, both _KERNPG_TABLE
    pud = m.mem.read_u64(pud_pa)
    assert pud & 0xFFF == KERNPG_TABLE
    assert pud >> 12 << 12 in new
    pmd_table = pud & ~0xFFF
    pmd = m.mem.read_u64(pmd_table + 8 * 5)
    assert pmd & 0xFFF == KERNPG_TABLE
    assert pmd & ~0xFFF in new - {pmd_table}
    pte_table = pmd & ~0xFFF
    # the other 511 2M children copy the 1G leaf's flags (large format)
    pmds = [int(x) for x in m.pt.read_table(pmd_table)]
    assert pmds[:5] + pmds[6:] == [
        4 * G1 + i * M2 | PAGE_KERNEL_LARGE for i in range(512) if i != 5
    ]
    ptes = [int(x) for x in m.pt.read_table(pte_table)]
    assert ptes == [
        base + i * K4 | (PAGE_KERNEL_RO if i in (7, 8, 9) else PAGE_KERNEL)
        for i in range(512)
    ]
    for i in (7, 8, 9):
        assert leaf(m, dm(base + i * K4)) == (LVL_4K, base + i * K4 | PAGE_KERNEL_RO)
    # DirectMap1G -1048576 kB, DirectMap2M +1046528 kB, DirectMap4k +2048 kB
    assert p.count_delta() == (512, 511, -1)
    assert m.meminfo() == meminfo_text(512 + 512, 511 + 511, 17 - 1)
    assert m.meminfo() == (
        "DirectMap4k:        4096 kB\n"
        "DirectMap2M:     2093056 kB\n"
        "DirectMap1G:    16777216 kB\n"
    )
    assert m.cpa.stats.splits == {LVL_1G: 1, LVL_2M: 1}
    assert m.cpa_stats() == cpa_stats_text(gb=(1, 0, 0), mb=(1, 0, 0), k4=3)
    assert p.vm_delta() == {}  # system_state is "booting"
    assert p.warnings() == []


def test_worked_example_costs_ncpus_minus_one_ipis_per_shootdown():
    m = pristine(ncpus=4)
    p = Probe(m)
    assert m.set_memory_ro(dm(4 * G1 + 5 * M2 + 7 * K4), 3) == 0
    p.flushes_are(split=2, ranged=3)
    assert m.cpus.ipis - p.ipis == 3 * 3


# ---- 2.4: the 4K path ----------------------------------------------------------------


def test_4k_path_updates_the_pte_in_place_and_counts_set_checked():
    m = pristine()
    base = 4 * G1 + 5 * M2
    m.set_memory_ro(dm(base + 7 * K4), 3)
    p = Probe(m)
    # set_memory_rw sets RW only: the D bit cleared by set_memory_ro stays clear
    assert m.set_memory_rw(dm(base + 8 * K4), 1) == 0
    assert leaf(m, dm(base + 8 * K4)) == (LVL_4K, base + 8 * K4 | PAGE_KERNEL_RO | RW)
    assert leaf(m, dm(base + 7 * K4)) == (LVL_4K, base + 7 * K4 | PAGE_KERNEL_RO)
    p.flushes_are(ranged=1)
    assert p.new_tables() == set()
    assert p.count_delta() == (0, 0, 0)
    assert m.cpa_stats() == cpa_stats_text(gb=(1, 0, 0), mb=(1, 0, 0), k4=4)


def test_4k_path_without_a_change_counts_but_does_not_flush():
    m = pristine()
    va = dm(4 * G1 + 5 * M2 + 7 * K4)
    m.set_memory_ro(va, 1)
    p = Probe(m)
    assert (
        m.set_memory_ro(va, 1) == 0
    )  # already RO: CPA_FLUSHTLB never set (2.3 step 5)
    p.flushes_are()
    assert m.cpa.stats.set_checked_4k - p.stats.set_checked_4k == 1


# ---- 2.6: keep or split --------------------------------------------------------------


def test_sameprot_keeps_a_1g_leaf_whatever_the_range():
    m = pristine()
    p = Probe(m)
    # NX is already set: req == old for an unaligned 5-page range inside [4G, 5G)...
    assert m.set_memory_nx(dm(4 * G1 + 3 * K4), 5) == 0
    # ... and for 4 pages straddling [4G, 5G) and [5G, 6G): clamped to 2 + 2
    assert m.set_memory_nx(dm(5 * G1 - 2 * K4), 4) == 0
    assert leaf(m, dm(4 * G1)) == (LVL_1G, 4 * G1 | PAGE_KERNEL_LARGE)
    assert leaf(m, dm(5 * G1)) == (LVL_1G, 5 * G1 | PAGE_KERNEL_LARGE)
    p.flushes_are()
    assert p.new_tables() == set()
    assert m.cpa_stats() == cpa_stats_text(gb=(3, 3, 0))


def test_sameprot_keeps_2m_leaves_across_a_boundary():
    m = pristine()
    p = Probe(m)
    assert m.set_memory_rw(dm(4 * M2 - K4), 2) == 0
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | PAGE_KERNEL_LARGE)
    assert leaf(m, dm(4 * M2)) == (LVL_2M, 4 * M2 | PAGE_KERNEL_LARGE)
    p.flushes_are()
    assert m.cpa_stats() == cpa_stats_text(mb=(2, 2, 0))


def test_partial_coverage_of_a_2m_leaf_splits_it():
    m = pristine()
    p = Probe(m)
    assert m.set_memory_ro(dm(3 * M2 + K4), 1) == 0
    assert leaf(m, dm(3 * M2 + K4)) == (LVL_4K, 3 * M2 + K4 | PAGE_KERNEL_RO)
    assert leaf(m, dm(3 * M2)) == (LVL_4K, 3 * M2 | PAGE_KERNEL)
    p.flushes_are(split=1, ranged=1)
    assert len(p.new_tables()) == 1
    assert p.count_delta() == (512, -1, 0)
    assert m.cpa_stats() == cpa_stats_text(mb=(1, 0, 0), k4=1)


def test_full_coverage_of_a_2m_leaf_updates_it_in_place():
    m = pristine()
    p = Probe(m)
    assert m.set_memory_ro(dm(3 * M2), 512) == 0
    # __PAGE_KERNEL_LARGE minus RW and D
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | 0x80000000000001A1)
    p.flushes_are(full=1)  # 512 pages > 33
    assert p.new_tables() == set()
    assert p.count_delta() == (0, 0, 0)
    assert m.cpa_stats() == cpa_stats_text(mb=(1, 0, 1))


def test_full_coverage_of_a_1g_leaf_updates_it_in_place():
    m = pristine()
    p = Probe(m)
    assert m.set_memory_ro(dm(4 * G1), 262144) == 0
    assert leaf(m, dm(4 * G1 + 12345 * K4)) == (LVL_1G, 4 * G1 | 0x80000000000001A1)
    p.flushes_are(full=1)
    assert p.count_delta() == (0, 0, 0)
    assert m.cpa_stats() == cpa_stats_text(gb=(1, 0, 1))


def test_1g_split_whose_2m_child_is_fully_covered_keeps_the_child():
    m = pristine()
    p = Probe(m)
    assert m.set_memory_ro(dm(4 * G1 + M2), 512) == 0
    assert leaf(m, dm(4 * G1 + M2)) == (LVL_2M, 4 * G1 + M2 | 0x80000000000001A1)
    assert leaf(m, dm(4 * G1)) == (LVL_2M, 4 * G1 | PAGE_KERNEL_LARGE)
    p.flushes_are(split=1, full=1)
    assert p.count_delta() == (0, 512, -1)
    assert m.cpa_stats() == cpa_stats_text(gb=(1, 0, 0), mb=(1, 0, 1))


def test_numpages_is_clamped_to_the_large_page():
    m = pristine()
    p = Probe(m)
    # 512 + 3 pages from 6M: the first leaf is covered exactly once clamped to 512
    # (updated in place), the next one only partly (split)
    assert m.set_memory_ro(dm(3 * M2), 515) == 0
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | 0x80000000000001A1)
    assert leaf(m, dm(4 * M2 + 2 * K4)) == (LVL_4K, 4 * M2 + 2 * K4 | PAGE_KERNEL_RO)
    assert leaf(m, dm(4 * M2 + 3 * K4)) == (LVL_4K, 4 * M2 + 3 * K4 | PAGE_KERNEL)
    p.flushes_are(split=1, full=1)
    assert p.count_delta() == (512, -1, 0)
    assert m.cpa_stats() == cpa_stats_text(mb=(2, 0, 1), k4=3)


def test_a_range_straddling_two_2m_leaves_splits_both():
    m = pristine()
    p = Probe(m)
    assert m.set_memory_ro(dm(4 * M2 - 4 * K4), 8) == 0
    for i in range(-4, 4):
        pa = 4 * M2 + i * K4
        assert leaf(m, dm(pa)) == (LVL_4K, pa | PAGE_KERNEL_RO)
    assert leaf(m, dm(4 * M2 - 5 * K4)) == (LVL_4K, 4 * M2 - 5 * K4 | PAGE_KERNEL)
    assert leaf(m, dm(4 * M2 + 4 * K4)) == (LVL_4K, 4 * M2 + 4 * K4 | PAGE_KERNEL)
    p.flushes_are(split=2, ranged=8)
    assert p.count_delta() == (1024, -2, 0)
    assert m.cpa_stats() == cpa_stats_text(mb=(2, 0, 0), k4=8)


# ---- 2.7: what a split writes --------------------------------------------------------


def test_2m_split_moves_the_pat_bit_from_bit_12_to_bit_7():
    m = pristine()
    # a 2M leaf with PAT index bit 2 set, written by hand
    m.mem.write_u64(entry_pa(m, dm(3 * M2)), 3 * M2 | PAGE_KERNEL_LARGE | PAT_LARGE)
    assert m.set_memory_ro(dm(3 * M2 + 5 * K4), 1) == 0
    # large -> 4K: clear bits 7 and 12, set bit 7 since bit 12 was set
    assert leaf(m, dm(3 * M2)) == (LVL_4K, 3 * M2 | PAGE_KERNEL | PAT_4K)
    assert leaf(m, dm(3 * M2 + 2 * K4)) == (
        LVL_4K,
        3 * M2 + 2 * K4 | PAGE_KERNEL | PAT_4K,
    )
    assert leaf(m, dm(3 * M2 + 5 * K4)) == (
        LVL_4K,
        3 * M2 + 5 * K4 | PAGE_KERNEL_RO | PAT_4K,
    )


def test_1g_split_keeps_the_pat_bit_at_bit_12_in_the_2m_children():
    m = pristine()
    m.mem.write_u64(entry_pa(m, dm(4 * G1)), 4 * G1 | PAGE_KERNEL_LARGE | PAT_LARGE)
    assert m.set_memory_ro(dm(4 * G1 + 3 * M2 + 5 * K4), 1) == 0
    # the 2M children stay in large format: PSE, PAT at bit 12
    assert leaf(m, dm(4 * G1)) == (LVL_2M, 4 * G1 | PAGE_KERNEL_LARGE | PAT_LARGE)
    assert leaf(m, dm(4 * G1 + 511 * M2)) == (
        LVL_2M,
        4 * G1 + 511 * M2 | PAGE_KERNEL_LARGE | PAT_LARGE,
    )
    # the 2M child split again: PAT at bit 7
    pa = 4 * G1 + 3 * M2
    assert leaf(m, dm(pa)) == (LVL_4K, pa | PAGE_KERNEL | PAT_4K)
    assert leaf(m, dm(pa + 5 * K4)) == (LVL_4K, pa + 5 * K4 | PAGE_KERNEL_RO | PAT_4K)


def test_split_installs_kernpg_table_and_children_copy_a_d_g_nx():
    m = pristine()
    # two hand-written 2M leaves with complementary A/D/G/NX bits
    leaf_a = P | RW | A | PSE | G  # 0x1a3: no D, no NX
    leaf_b = P | RW | D | PSE | NX  # no A, no G
    pmd_a = entry_pa(m, dm(3 * M2))
    pmd_b = entry_pa(m, dm(4 * M2))
    m.mem.write_u64(pmd_a, 3 * M2 | leaf_a)
    m.mem.write_u64(pmd_b, 4 * M2 | leaf_b)
    p = Probe(m)
    assert m.set_memory_ro(dm(3 * M2 + 5 * K4), 1) == 0
    assert m.set_memory_ro(dm(4 * M2 + 5 * K4), 1) == 0
    new = p.new_tables()
    for pmd in (pmd_a, pmd_b):
        e = m.mem.read_u64(pmd)
        # P|RW|A|D: no NX, no G, no USR, no PSE
        assert e & ~0xFFF in new
        assert e & 0xFFF == KERNPG_TABLE
        assert not e & NX
    ptes_a = [int(x) for x in m.pt.read_table(m.mem.read_u64(pmd_a) & ~0xFFF)]
    ptes_b = [int(x) for x in m.pt.read_table(m.mem.read_u64(pmd_b) & ~0xFFF)]
    assert ptes_a == [
        3 * M2 + i * K4 | (P | A | G if i == 5 else P | RW | A | G) for i in range(512)
    ]
    assert ptes_b == [
        4 * M2 + i * K4 | (P | NX if i == 5 else P | RW | D | NX) for i in range(512)
    ]


# ---- 2.1: set_direct_map_* -----------------------------------------------------------


def test_invalid_then_default_cycle_loses_g_and_d():
    m = pristine()
    pa = 4 * G1 + 3 * M2 + 5 * K4
    p = Probe(m)
    assert m.set_direct_map_invalid_noflush(pa >> 12) == 0
    # invalid clears P, RW, D; non-present also drops G (pgprot_clear_protnone_bits)
    assert leaf(m, dm(pa)) == (LVL_4K, pa | A | NX)
    p.flushes_are(split=2)  # the splits flush; the CPA itself never does
    p2 = Probe(m)
    assert m.set_direct_map_default_noflush(pa >> 12) == 0
    assert leaf(m, dm(pa)) == (LVL_4K, pa | P | RW | A | NX)  # G and D gone
    p2.flushes_are()
    assert leaf(m, dm(pa + K4)) == (LVL_4K, pa + K4 | PAGE_KERNEL)
    assert m.cpa_stats() == cpa_stats_text(gb=(1, 0, 0), mb=(1, 0, 0), k4=2)
    assert p.warnings() == []
    # the CPU sets D on the next write; G is never set again
    m.mmus[0].translate(dm(pa), "w")
    assert leaf(m, dm(pa)) == (LVL_4K, pa | P | RW | A | D | NX)


def test_direct_map_noflush_leaves_stale_tlb_entries():
    m = pristine()
    pa = 4 * G1 + 3 * M2 + 5 * K4
    m.set_memory_ro(dm(pa + K4), 1)  # make the page 4K first
    m.mmus[0].translate(dm(pa), "r")
    assert m.set_direct_map_invalid_noflush(pa >> 12) == 0
    # CPU 0 still uses its stale entry; CPU 1 walks the tables and faults
    assert m.mmus[0].translate(dm(pa), "r").pa == pa
    with pytest.raises(emu.PageFault):
        m.mmus[1].translate(dm(pa), "r")
    m.cpus.invlpg_range(dm(pa), 1)  # the caller's flush
    with pytest.raises(emu.PageFault):
        m.mmus[0].translate(dm(pa), "r")


def test_set_direct_map_valid_noflush_covers_nr_pages_without_flushing():
    m = pristine()
    pa = 3 * M2 + 4 * K4
    m.set_memory_ro(dm(3 * M2), 1)  # split first
    p = Probe(m)
    assert m.set_direct_map_valid_noflush(pa >> 12, 3, False) == 0
    assert [leaf(m, dm(pa + i * K4)) for i in range(4)] == [
        (LVL_4K, pa | A | NX),
        (LVL_4K, pa + K4 | A | NX),
        (LVL_4K, pa + 2 * K4 | A | NX),
        (LVL_4K, pa + 3 * K4 | PAGE_KERNEL),
    ]
    assert m.set_direct_map_valid_noflush(pa >> 12, 3, True) == 0
    assert [leaf(m, dm(pa + i * K4))[1] for i in range(3)] == [
        pa + i * K4 | P | RW | A | NX for i in range(3)
    ]
    p.flushes_are()


def test_np_then_p_on_a_whole_2m_leaf_keeps_it_large_but_loses_g():
    m = pristine()
    p = Probe(m)
    assert m.set_memory_np(dm(3 * M2), 512) == 0
    # req = 4K->large((0x163 & ~P)) with G dropped (non-present), no PSE: in place
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | RW | A | D | NX)
    assert m.set_memory_p(dm(3 * M2), 512) == 0
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | P | RW | A | D | PSE | NX)
    p.flushes_are(full=2)
    assert p.count_delta() == (0, 0, 0)
    assert m.cpa_stats() == cpa_stats_text(mb=(2, 0, 2))


def test_p_on_one_page_of_a_non_present_1g_leaf_splits_it_twice():
    m = pristine()
    assert m.set_memory_np(dm(4 * G1), 262144) == 0
    assert leaf(m, dm(4 * G1)) == (LVL_1G, 4 * G1 | RW | A | D | NX)
    p = Probe(m)
    pa = 4 * G1 + 3 * M2 + 5 * K4
    assert m.set_memory_p(dm(pa), 1) == 0
    # the non-present 1G's children: non-present 2M entries without PSE
    assert leaf(m, dm(4 * G1)) == (LVL_2M, 4 * G1 | RW | A | D | NX)
    assert leaf(m, dm(pa - 5 * K4)) == (LVL_4K, pa - 5 * K4 | RW | A | D | NX)
    assert leaf(m, dm(pa)) == (LVL_4K, pa | P | RW | A | D | NX)
    p.flushes_are(split=2, ranged=1)
    assert p.count_delta() == (512, 511, -1)
    assert m.cpa_stats() == cpa_stats_text(gb=(2, 0, 1), mb=(1, 0, 0), k4=1)


def test_set_memory_global_and_nonglobal_update_a_whole_2m_leaf_in_place():
    m = pristine()
    assert m.set_memory_nonglobal(dm(3 * M2), 512) == 0
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | (PAGE_KERNEL_LARGE & ~G))
    assert m.set_memory_global(dm(3 * M2), 512) == 0
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | PAGE_KERNEL_LARGE)
    assert m.cpa_stats() == cpa_stats_text(mb=(2, 0, 2))


def test_set_memory_4k_force_splits_without_checking_and_marks_the_page():
    m = pristine()
    pa = 4 * G1 + 3 * M2 + 5 * K4
    p = Probe(m)
    assert m.set_memory_4k(dm(pa), 1) == 0
    assert leaf(m, dm(pa)) == (LVL_4K, pa | PAGE_KERNEL | KERNEL_4K)
    assert leaf(m, dm(pa + K4)) == (LVL_4K, pa + K4 | PAGE_KERNEL)
    p.flushes_are(split=2, ranged=1)
    assert p.count_delta() == (512, 511, -1)
    # force_split returns before __should_split_large_page counts anything
    assert m.cpa_stats() == cpa_stats_text(k4=1)


def test_set_pages_ro_and_rw_act_on_the_direct_map_address():
    m = pristine()
    pfn = (3 * M2 + 5 * K4) >> 12
    assert m.set_pages_ro(pfn, 2) == 0
    assert leaf(m, dm(pfn << 12)) == (LVL_4K, pfn << 12 | PAGE_KERNEL_RO)
    assert leaf(m, dm(pfn + 1 << 12)) == (LVL_4K, pfn + 1 << 12 | PAGE_KERNEL_RO)
    assert m.set_pages_rw(pfn, 1) == 0
    assert leaf(m, dm(pfn << 12)) == (LVL_4K, pfn << 12 | PAGE_KERNEL_RO | RW)


# ---- 2.2 array modes -----------------------------------------------------------------


def test_cpa_array_processes_each_address_and_flushes_from_the_first():
    m = pristine()
    a = 4 * G1 + 3 * M2 + 5 * K4
    b = 4 * G1 + 5 * M2 + 3 * K4
    p = Probe(m)
    assert m.change_page_attr_set([dm(a), dm(b)], 2, SOFTW1, array=True) == 0
    assert leaf(m, dm(a)) == (LVL_4K, a | PAGE_KERNEL | SOFTW1)
    assert leaf(m, dm(b)) == (LVL_4K, b | PAGE_KERNEL | SOFTW1)
    # 7.0 cpa_flush: flush_tlb_kernel_range(first address, + numpages pages)
    p.flushes_are(split=3, ranged=2)
    assert m.cpa_stats() == cpa_stats_text(gb=(1, 0, 0), mb=(2, 0, 0), k4=2)
    assert m.change_page_attr_clear([dm(a), dm(b)], 2, SOFTW1, array=True) == 0
    assert leaf(m, dm(b)) == (LVL_4K, b | PAGE_KERNEL)


def test_cpa_pages_array_uses_the_pages_direct_map_addresses():
    m = pristine()
    a = 3 * M2 + 5 * K4
    b = 7 * M2
    p = Probe(m)
    assert m.change_page_attr_set_pages([a >> 12, b >> 12], SOFTW1) == 0
    assert leaf(m, dm(a)) == (LVL_4K, a | PAGE_KERNEL | SOFTW1)
    assert leaf(m, dm(b)) == (LVL_4K, b | PAGE_KERNEL | SOFTW1)
    p.flushes_are(split=2, ranged=2)


# ---- 2.6: static protections and W^X -------------------------------------------------


def test_text_nx_keeps_kernel_text_executable():
    m = booted()
    p = Probe(m)
    # the high-map text 2M leaf is RO+X (0x1a1) after mark_rodata_ro; NX on one page:
    # split (req != old, partial), then the 4K path drops NX again
    assert m.set_memory_nx(hm(0x1000000), 1) == 0
    assert leaf(m, hm(0x1000000)) == (LVL_4K, 0x1000000 | P | A | G)
    assert leaf(m, hm(0x1001000)) == (LVL_4K, 0x1001000 | P | A | G)
    assert p.warnings() == [
        "CPA  protect    Text NX: 0xffffffff81000000 - 0xffffffff81000fff PFN 1000 "
        "req 8000000000000121 prevent 8000000000000000"
    ]
    p.flushes_are(split=1)  # nothing changed after the split: no end flush
    # high-map quirk; the machine is running, so the split is a vm event
    assert p.count_delta() == (512, -1, 0)
    assert p.vm_delta() == {"direct_map_level2_splits": 1}


def test_rodata_ro_protects_every_alias_by_pfn():
    m = booted()
    pa = 0x2405000  # a rodata page; its direct-map 2M leaf is RO (mark_rodata_ro)
    p = Probe(m)
    assert m.set_memory_rw(dm(pa), 1) == 0
    # direct map: split, the 4K update refused; high-map alias: the same
    assert leaf(m, dm(pa)) == (LVL_4K, pa | PAGE_KERNEL_RO)
    assert leaf(m, hm(pa)) == (LVL_4K, pa | PAGE_KERNEL_RO)
    assert leaf(m, dm(pa + K4)) == (LVL_4K, pa + K4 | PAGE_KERNEL_RO)
    assert p.warnings() == [
        "CPA  protect  Rodata RO: 0xffff888002405000 - 0xffff888002405fff PFN 2405 "
        "req 8000000000000123 prevent 0000000000000002",
        "CPA  protect  Rodata RO: 0xffffffff82405000 - 0xffffffff82405fff PFN 2405 "
        "req 8000000000000123 prevent 0000000000000002",
    ]
    p.flushes_are(split=2)
    assert p.count_delta() == (1024, -2, 0)
    assert p.vm_delta() == {"direct_map_level2_splits": 2}


def test_text_ro_is_enforced_on_split_children_while_the_text_is_large():
    m = booted()
    # plant an inconsistent text leaf: RW and NX (Text NX forbids the NX)
    pmd_pa = entry_pa(m, hm(0x1000000))
    m.mem.write_u64(pmd_pa, 0x1000000 | PAGE_KERNEL_LARGE)
    p = Probe(m)
    assert m.set_memory_np_noalias(hm(0x1005000), 1) == 0
    warnings = p.warnings()
    assert (
        "CPA conflict    Text NX: 0xffffffff81000000 - 0xffffffff811fffff PFN 1000 "
        "req 80000000000001e3 prevent 8000000000000000"
    ) in warnings
    # force_static_prot: each child is fixed with lpsize = 0 while the mapping is still
    # the 2M leaf, so Text RO removes RW and Text NX removes NX
    text_ro = [
        w
        for w in warnings
        if re.fullmatch(
            r"CPA +\w+ +Text RO: 0x[0-9a-f]{16} - 0x[0-9a-f]{16} PFN [0-9a-f]+ "
            r"req 8000000000000163 prevent 0000000000000002",
            w,
        )
    ]
    assert len(text_ro) == 512
    assert text_ro[0].endswith(
        "Text RO: 0xffffffff81000000 - 0xffffffff81000fff PFN 1000 "
        "req 8000000000000163 prevent 0000000000000002"
    )
    assert m.mem.read_u64(pmd_pa) & 0xFFF == KERNPG_TABLE
    ptes = [int(x) for x in m.pt.read_table(m.mem.read_u64(pmd_pa) & ~0xFFF)]
    assert ptes == [
        0x1000000 + i * K4 | (A | D if i == 5 else P | A | D | G) for i in range(512)
    ]
    p.flushes_are(split=1, ranged=1)
    assert p.count_delta() == (512, -1, 0)


def test_wx_violation_warns_once_and_the_change_is_applied():
    m = pristine()
    pa = 4 * G1 + 3 * M2 + 5 * K4
    p = Probe(m)
    assert m.set_memory_x(dm(pa), 1) == 0
    assert leaf(m, dm(pa)) == (LVL_4K, pa | (PAGE_KERNEL & ~NX))
    assert p.warnings() == [
        "CPA detected W^X violation: 8000000000000163 -> 0000000000000163 range: "
        "0xffff888100605000 - 0xffff888100605fff PFN 100605"
    ]
    assert m.set_memory_x(dm(pa + K4), 1) == 0  # WARN_ONCE
    assert leaf(m, dm(pa + K4)) == (LVL_4K, pa + K4 | (PAGE_KERNEL & ~NX))
    assert len(p.warnings()) == 1


# ---- 2.4: holes and faults -----------------------------------------------------------


def test_holes_in_the_direct_map_are_skipped_page_by_page():
    m = pristine()
    p = Probe(m)
    # two RAM pages below 3G (1G leaf [2G, 3G)), then two pages of the PCI hole
    assert m.set_memory_ro(dm(3 * G1 - 2 * K4), 4) == 0
    assert leaf(m, dm(3 * G1 - 2 * K4)) == (LVL_4K, 3 * G1 - 2 * K4 | PAGE_KERNEL_RO)
    assert leaf(m, dm(3 * G1 - K4)) == (LVL_4K, 3 * G1 - K4 | PAGE_KERNEL_RO)
    assert leaf(m, dm(3 * G1 - 3 * K4)) == (LVL_4K, 3 * G1 - 3 * K4 | PAGE_KERNEL)
    assert leaf(m, dm(3 * G1)) == (LVL_1G, None)
    assert p.warnings() == []
    p.flushes_are(split=2, ranged=4)
    assert p.count_delta() == (512, 511, -1)
    assert m.cpa_stats() == cpa_stats_text(gb=(1, 0, 0), mb=(1, 0, 0), k4=2)


def test_a_range_inside_a_hole_changes_nothing():
    m = pristine()
    p = Probe(m)
    assert m.set_memory_ro(dm(3 * G1 + 4 * K4), 2) == 0
    p.flushes_are()
    assert p.warnings() == []
    assert m.cpa_stats() == cpa_stats_text()


def test_unmapped_vmalloc_address_is_efault_with_a_warning():
    m = pristine()
    va = VMALLOC_START + G1
    p = Probe(m)
    assert m.set_memory_ro(va, 1) == -14
    assert p.warnings() == [
        "CPA: called for zero pte. vaddr = ffffc90040000000 "
        "cpa->vaddr = ffffc90040000000"
    ]
    p.flushes_are()


def test_address_beyond_max_pfn_mapped_is_not_a_hole():
    m = pristine()
    p = Probe(m)
    assert m.set_memory_ro(dm(17 * G1), 1) == -14
    assert p.warnings() == [
        "CPA: called for zero pte. vaddr = ffff888440000000 "
        "cpa->vaddr = ffff888440000000"
    ]
    p.flushes_are()


def test_fault_after_a_change_flushes_everything():
    m = pristine()
    area = m.vmalloc.vmalloc(K4)
    pa = area.pages[0] << 12
    assert leaf(m, dm(pa))[0] == LVL_1G  # precondition: its alias is in a 1G leaf
    assert leaf(m, area.addr + K4) == (LVL_4K, 0)  # the guard page
    p = Probe(m)
    assert m.set_memory_ro(area.addr, 2) == -14
    assert leaf(m, area.addr) == (LVL_4K, pa | PAGE_KERNEL_RO)
    assert leaf(m, dm(pa)) == (LVL_4K, pa | PAGE_KERNEL_RO)
    assert p.warnings() == [
        f"CPA: called for zero pte. vaddr = {area.addr + K4:x} "
        f"cpa->vaddr = {area.addr:x}"
    ]
    p.flushes_are(split=2, full=1)  # CPA_FLUSHTLB and an error: cpa_flush_all


def test_fault_in_the_high_map_is_silent():
    m = pristine()
    p = Probe(m)
    # the last mapped high-map page, then the first unmapped one: cpa->pfn is then
    # inside the image, so -EFAULT without a warning
    assert m.set_memory_nx(hm(0x3E00000 - K4), 2) == -14
    assert leaf(m, hm(0x3E00000 - K4)) == (LVL_4K, 0x3E00000 - K4 | PAGE_KERNEL)
    assert p.warnings() == []
    p.flushes_are(split=1, full=1)
    assert p.count_delta() == (512, -1, 0)


def test_misaligned_address_is_aligned_down_with_one_warning():
    m = pristine()
    pa = 4 * G1 + 3 * M2 + 5 * K4
    p = Probe(m)
    assert m.set_memory_ro(dm(pa + 0x123), 1) == 0
    assert leaf(m, dm(pa)) == (LVL_4K, pa | PAGE_KERNEL_RO)
    assert leaf(m, dm(pa + K4)) == (LVL_4K, pa + K4 | PAGE_KERNEL)
    assert len(p.warnings()) == 1
    p.flushes_are(split=2, ranged=1)
    assert m.set_memory_ro(dm(pa + K4 + 0x456), 1) == 0  # WARN_ON_ONCE
    assert leaf(m, dm(pa + K4)) == (LVL_4K, pa + K4 | PAGE_KERNEL_RO)
    assert len(p.warnings()) == 1


# ---- 2.7: table-page allocation failure ----------------------------------------------


def test_enomem_on_the_first_split_leaves_everything_as_it_was():
    m = pristine()
    pa = 4 * G1 + 3 * M2 + 5 * K4
    pud_pa = entry_pa(m, dm(pa))
    buddy = m.page_alloc.snapshot()
    p = Probe(m)
    m.cpa.fail_table_allocs = 1
    assert m.set_memory_ro(dm(pa), 3) == -12
    assert m.mem.read_u64(pud_pa) == 4 * G1 | PAGE_KERNEL_LARGE
    assert leaf(m, dm(pa)) == (LVL_1G, 4 * G1 | PAGE_KERNEL_LARGE)
    assert set(m.pt.tables) == p.tables
    assert m.page_alloc.snapshot() == buddy
    assert p.count_delta() == (0, 0, 0)
    assert p.vm_delta() == {}
    p.flushes_are()
    assert m.cpa_stats() == cpa_stats_text(gb=(1, 0, 0))
    assert m.cpa.fail_table_allocs == 0
    assert m.set_memory_ro(dm(pa), 3) == 0  # and the state is still usable


def test_enomem_after_a_change_flushes_everything():
    m = pristine()
    m.set_memory_ro(dm(3 * M2 + K4), 1)  # [6M, 8M) is now 4K
    pmd_8m = entry_pa(m, dm(4 * M2))
    p = Probe(m)
    m.cpa.fail_table_allocs = 1
    assert m.set_memory_ro(dm(4 * M2 - K4), 2) == -12
    assert leaf(m, dm(4 * M2 - K4)) == (LVL_4K, 4 * M2 - K4 | PAGE_KERNEL_RO)
    assert m.mem.read_u64(pmd_8m) == 4 * M2 | PAGE_KERNEL_LARGE
    assert p.new_tables() == set()
    assert p.count_delta() == (0, 0, 0)
    p.flushes_are(full=1)


# ---- 1.7: counters and vm events -----------------------------------------------------


def test_split_events_count_only_once_the_system_is_running():
    m = pristine()
    p = Probe(m)
    m.set_memory_ro(dm(4 * G1 + 5 * K4), 1)
    assert p.count_delta() == (512, 511, -1)
    assert p.vm_delta() == {}
    m.system_state = "running"
    m.set_memory_ro(dm(5 * G1 + 5 * K4), 1)
    assert p.count_delta() == (1024, 1022, -2)
    assert p.vm_delta() == {
        "direct_map_level2_splits": 1,
        "direct_map_level3_splits": 1,
    }
    assert "direct_map_level2_splits 1\n" in m.vmstat()
    assert "direct_map_level3_splits 1\n" in m.vmstat()


def test_high_map_split_moves_the_direct_map_counters():
    m = pristine()
    m.system_state = "running"
    p = Probe(m)
    # NX on one high-map data page: the high-map 2M leaf splits; the direct-map alias
    # gets empty masks (NX removed) and stays a 2M leaf
    assert m.set_memory_nx(hm(0x3001000), 1) == 0
    assert leaf(m, hm(0x3001000)) == (LVL_4K, 0x3001000 | PAGE_KERNEL)
    assert leaf(m, hm(0x3000000)) == (LVL_4K, 0x3000000 | (PAGE_KERNEL & ~NX))
    assert leaf(m, dm(0x3000000)) == (LVL_2M, 0x3000000 | PAGE_KERNEL_LARGE)
    assert p.count_delta() == (512, -1, 0)
    assert p.vm_delta() == {"direct_map_level2_splits": 1}
    assert m.meminfo() == meminfo_text(512 + 512, 511 - 1, 17)
    p.flushes_are(split=1, full=1)  # an alias was processed: full flush


def test_vmalloc_split_is_never_counted():
    m = pristine()
    m.system_state = "running"
    area = m.vmalloc.vmalloc(M2, huge=True)
    pa = area.pages[0] << 12
    p = Probe(m)
    assert m.set_memory_np_noalias(area.addr + K4, 1) == 0
    assert leaf(m, area.addr + K4) == (LVL_4K, pa + K4 | RW | A | D | NX)
    assert leaf(m, area.addr) == (LVL_4K, pa | PAGE_KERNEL)
    assert p.count_delta() == (0, 0, 0)
    assert p.vm_delta() == {}
    assert len(p.new_tables()) == 1
    p.flushes_are(split=1, ranged=1)


# ---- 2.8: the end-of-CPA flush -------------------------------------------------------


def test_end_flush_is_ranged_up_to_33_pages_and_full_above():
    m = pristine()
    m.set_memory_ro(dm(3 * M2 + K4), 1)
    p = Probe(m)
    assert m.set_memory_rw(dm(3 * M2), 33) == 0  # one PTE changes, 33 are flushed
    p.flushes_are(ranged=33)
    p = Probe(m)
    assert m.set_memory_ro(dm(3 * M2), 34) == 0
    p.flushes_are(full=1)


def test_flush_ceiling_is_configurable():
    m = pristine(flush_ceiling=4)
    m.set_memory_ro(dm(3 * M2 + 10 * K4), 1)
    p = Probe(m)
    assert m.set_memory_ro(dm(3 * M2), 4) == 0
    p.flushes_are(ranged=4)
    p = Probe(m)
    assert m.set_memory_ro(dm(3 * M2), 5) == 0
    p.flushes_are(full=1)


# ---- more of 2.3-2.6 -----------------------------------------------------------------


def test_wx_violation_in_the_large_path_warns_with_the_large_page_range():
    m = pristine()
    p = Probe(m)
    assert m.set_memory_x(dm(3 * M2), 512) == 0
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | (PAGE_KERNEL_LARGE & ~NX))
    assert p.warnings() == [
        "CPA detected W^X violation: 80000000000001e3 -> 00000000000001e3 range: "
        "0xffff888000600000 - 0xffff8880007fffff PFN 600"
    ]
    assert m.cpa_stats() == cpa_stats_text(mb=(1, 0, 1))


def test_wx_is_not_reported_when_an_upper_level_forbids_it():
    m = pristine()
    pmd = entry_pa(m, dm(3 * M2))
    m.set_memory_ro(dm(3 * M2 + K4), 1)
    m.mem.write_u64(pmd, m.mem.read_u64(pmd) | NX)  # the table entry above has NX
    pmd_b = entry_pa(m, dm(4 * M2))
    m.set_memory_ro(dm(4 * M2 + K4), 1)
    m.mem.write_u64(pmd_b, m.mem.read_u64(pmd_b) & ~RW)  # the table entry is RO
    p = Probe(m)
    assert m.set_memory_x(dm(3 * M2 + 5 * K4), 1) == 0
    assert m.set_memory_x(dm(4 * M2 + 5 * K4), 1) == 0
    assert p.warnings() == []
    assert leaf(m, dm(3 * M2 + 5 * K4)) == (
        LVL_4K,
        3 * M2 + 5 * K4 | (PAGE_KERNEL & ~NX),
    )
    assert leaf(m, dm(4 * M2 + 5 * K4)) == (
        LVL_4K,
        4 * M2 + 5 * K4 | (PAGE_KERNEL & ~NX),
    )


def test_set_memory_x_and_nx_are_no_ops_without_nx_support():
    m = pristine()
    m.supported_pte_mask &= ~NX
    p = Probe(m)
    assert m.set_memory_nx(dm(3 * M2 + K4), 1) == 0
    assert m.set_memory_x(dm(3 * M2 + K4), 1) == 0
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | PAGE_KERNEL_LARGE)
    p.flushes_are()
    assert m.cpa_stats() == cpa_stats_text()


def test_static_protection_on_a_fully_covered_leaf_splits_it_without_detect_warnings():
    m = booted()
    p = Probe(m)
    # RW on the whole direct-map 2M rodata leaf: step 9's CPA_DETECT check removes RW,
    # so the leaf is split; each 4K page is then refused (and warned) on the direct map
    # and on its high-map alias, which splits at the first page
    assert m.set_memory_rw(dm(0x2400000), 512) == 0
    assert leaf(m, dm(0x2400000)) == (LVL_4K, 0x2400000 | PAGE_KERNEL_RO)
    assert leaf(m, dm(0x25FF000)) == (LVL_4K, 0x25FF000 | PAGE_KERNEL_RO)
    assert leaf(m, hm(0x25FF000)) == (LVL_4K, 0x25FF000 | PAGE_KERNEL_RO)
    warnings = p.warnings()
    assert len(warnings) == 1024
    assert all(w.startswith("CPA  protect  Rodata RO: ") for w in warnings)
    assert warnings[1] == (
        "CPA  protect  Rodata RO: 0xffffffff82400000 - 0xffffffff82400fff PFN 2400 "
        "req 8000000000000123 prevent 0000000000000002"
    )
    p.flushes_are(split=2)
    assert p.count_delta() == (1024, -2, 0)


def test_high_map_alias_bounds_are_the_image_pfns_up_to_the_2m_rounded_brk_end():
    m = pristine()
    # 0x3dff000 is past _brk_end (0x3c58000) but below roundup(_brk_end, 2M): aliased
    p = Probe(m)
    assert m.set_memory_ro(dm(0x3DFF000), 1) == 0
    assert leaf(m, hm(0x3DFF000)) == (LVL_4K, 0x3DFF000 | (PAGE_KERNEL_RO & ~NX))
    p.flushes_are(split=2, full=1)
    # 0x3e00000 is past it: no alias, a ranged flush
    p = Probe(m)
    assert m.set_memory_ro(dm(0x3E00000), 1) == 0
    assert leaf(m, dm(0x3E00000)) == (LVL_4K, 0x3E00000 | PAGE_KERNEL_RO)
    p.flushes_are(split=1, ranged=1)
    # and 0xfff000, below _text, neither
    p = Probe(m)
    assert m.set_memory_ro(dm(0xFFF000), 1) == 0
    p.flushes_are(split=1, ranged=1)


def test_high_map_page_past_brk_end_is_its_own_high_map_alias():
    m = pristine()
    p = Probe(m)
    # the primary is a high-map address outside [_text, _brk_end): the direct-map alias
    # and the high-map alias (the same page again, already RO) are both processed
    assert m.set_memory_ro(hm(0x3D00000), 1) == 0
    assert leaf(m, hm(0x3D00000)) == (LVL_4K, 0x3D00000 | (PAGE_KERNEL_RO & ~NX))
    assert leaf(m, dm(0x3D00000)) == (LVL_4K, 0x3D00000 | PAGE_KERNEL_RO)
    assert m.cpa_stats() == cpa_stats_text(mb=(2, 0, 0), k4=3)
    p.flushes_are(split=2, full=1)


def test_without_gbpages_the_boot_marks_the_first_page_4k():
    # 1.6 / 2.1: with !direct_gbpages, set_memory_4k(__va(0), 1) at boot (fixed MTRRs);
    # [0, 2M) is already 4K here, so the call only sets _PAGE_KERNEL_4K on page 0
    m = Machine(ram="16G", gbpages=False)
    assert leaf(m, dm(0)) == (LVL_4K, PAGE_KERNEL | KERNEL_4K)
    assert leaf(m, dm(K4)) == (LVL_4K, K4 | PAGE_KERNEL)


def test_a_range_from_the_last_2m_of_a_1g_leaf_through_the_next_1g():
    m = pristine()
    p = Probe(m)
    # clamped to the 512 pages left in [4G, 5G): split, the 2M child is then covered
    # exactly (in place); then the whole 1G leaf [5G, 6G) in place
    assert m.set_memory_ro(dm(5 * G1 - M2), 512 + 262144) == 0
    assert leaf(m, dm(5 * G1 - M2)) == (LVL_2M, 5 * G1 - M2 | 0x80000000000001A1)
    assert leaf(m, dm(5 * G1 - 2 * M2)) == (LVL_2M, 5 * G1 - 2 * M2 | PAGE_KERNEL_LARGE)
    assert leaf(m, dm(5 * G1)) == (LVL_1G, 5 * G1 | 0x80000000000001A1)
    p.flushes_are(split=1, full=1)
    assert p.count_delta() == (0, 512, -1)
    assert m.cpa_stats() == cpa_stats_text(gb=(2, 0, 1), mb=(1, 0, 1))


def test_lookup_address_levels_of_missing_entries():
    m = pristine()
    # 2.5: NULL with the level whose table lacked the entry
    assert leaf(m, dm(3 * G1)) == (LVL_1G, None)  # PUD none (PCI hole)
    assert leaf(m, hm(0x3E00000)) == (LVL_2M, None)  # PMD none (past the image)
    assert leaf(m, VMALLOC_START) == (4, None)  # PGD/P4D none: PG_LEVEL_512G


def test_pud_split_cannot_fix_up_static_protections():
    from kernel_model.e820 import KernelImage, PhysRange

    image = KernelImage(
        code=PhysRange(G1 + 0x1000000, G1 + 0x2209988),
        rodata=PhysRange(G1 + 0x2400000, G1 + 0x2E0A000),
        data=PhysRange(G1 + 0x3000000, G1 + 0x327C100),
        bss=PhysRange(G1 + 0x3B34000, G1 + 0x3C58000),
    )
    m = Machine(
        ram="16G",
        kernel_image=image,
        init_range=(G1 + 0x3783000, G1 + 0x3783000 + 3728 * 1024),
    )
    # plant a RW 1G leaf over [1G, 2G), which holds the image's rodata frames
    pud_pa = m.pt.table_of(dm(G1), LVL_1G) + 8 * 1
    m.mem.write_u64(pud_pa, G1 | PAGE_KERNEL_LARGE)
    p = Probe(m)
    assert m.set_memory_ro(dm(G1 + 2 * K4), 1) == 0
    warnings = p.warnings()
    assert (
        "CPA conflict  Rodata RO: 0xffff888040000000 - 0xffff88807fffffff PFN 40000 "
        "req 80000000000001e3 prevent 0000000000000002"
    ) in warnings
    assert "CPA: Cannot fixup static protections for PUD split" in warnings
    # the 2M children keep the parent's RW, rodata frames included
    assert leaf(m, dm(G1 + 0x2400000)) == (LVL_2M, G1 + 0x2400000 | PAGE_KERNEL_LARGE)
    assert leaf(m, dm(G1 + 2 * K4)) == (LVL_4K, G1 + 2 * K4 | PAGE_KERNEL_RO)
    p.flushes_are(split=2, ranged=1)


def test_the_flushes_reach_every_cpus_tlb():
    m = pristine()
    pa = 4 * G1 + 3 * M2 + 5 * K4
    for mmu in m.mmus:  # cache the writable 1G translation on every CPU
        mmu.translate(dm(pa), "w")
    assert m.set_memory_ro(dm(pa), 1) == 0
    for mmu in m.mmus:
        with pytest.raises(emu.PageFault):
            mmu.translate(dm(pa), "w")


def test_a_ranged_flush_leaves_other_pages_cached():
    m = pristine()
    pa = 4 * G1 + 3 * M2 + 5 * K4
    m.set_memory_ro(dm(pa + K4), 1)  # now 4K
    for mmu in m.mmus:
        mmu.translate(dm(pa), "w")
        mmu.translate(dm(pa + 2 * K4), "r")
    assert m.set_memory_ro(dm(pa), 1) == 0  # INVLPG of that one page only
    for mmu in m.mmus:
        assert mmu.translate(dm(pa + 2 * K4), "r").level_hit != "walk"
        with pytest.raises(emu.PageFault):
            mmu.translate(dm(pa), "w")


def test_wx_is_not_checked_without_nx_support():
    # 2.6: verify_rwx() runs "only when NX is supported"; without NX every kernel
    # mapping is executable, so making one writable must not warn
    m = pristine()
    pa = 3 * M2 + 5 * K4
    m.set_memory_ro(dm(pa), 1)
    pte = entry_pa(m, dm(pa))
    m.mem.write_u64(pte, pa | (PAGE_KERNEL_RO & ~NX))  # an entry of an NX-less CPU
    m.supported_pte_mask &= ~NX
    p = Probe(m)
    assert m.set_memory_rw(dm(pa), 1) == 0
    assert leaf(m, dm(pa)) == (LVL_4K, pa | P | RW | A | G)
    assert p.warnings() == []
