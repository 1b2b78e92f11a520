"""CPA_COLLAPSE (reference/linux-mm.md section 3), with exact outcomes.

Expected values are derived by hand from the reference; see test_cpa_rules.py's
docstring for the 16 GiB machine.  Notation: a 4K PTE of the direct map starts as
__PAGE_KERNEL (0x8000000000000163); set_memory_rox clears RW, D and NX, so it becomes
0x121 (P|A|G); a merged 2M/1G leaf then is 0x1a1 (P|A|PSE|G).
"""

from __future__ import annotations

from cpa_probe import Probe, counts

from kernel_model.machine import Machine

PAGE_OFFSET = 0xFFFF888000000000
K4 = 1 << 12
M2 = 1 << 21
G1 = 1 << 30

P, RW, A, D, PSE, G = 0x1, 0x2, 0x20, 0x40, 0x80, 0x100
PAT_4K, KERNEL_4K, PAT_LARGE, NX = 0x80, 0x800, 0x1000, 1 << 63
PAGE_KERNEL = 0x8000000000000163
PAGE_KERNEL_LARGE = 0x80000000000001E3
PAGE_KERNEL_RO = 0x8000000000000121
ROX_4K = 0x121
ROX_LARGE = 0x1A1
LVL_4K, LVL_2M, LVL_1G = 1, 2, 3
PRISTINE_COUNT = (512, 511, 17)


def pristine(**config: object) -> Machine:
    return Machine(ram="16G", rodata=False, kfence=False, **config)


def dm(pa: int) -> int:
    return PAGE_OFFSET + pa


def leaf(m: Machine, va: int) -> tuple[int, int | None]:
    look = m.pt.lookup_address(va)
    return look.level, look.entry


def entry_pa(m: Machine, va: int) -> int:
    look = m.pt.lookup_address(va)
    assert look.entry_pa is not None
    return look.entry_pa


def split_2m(m: Machine, pa: int) -> int:
    """Split the direct-map 2M leaf at pa with set_memory_ro on its second page;
    returns the new PTE table."""
    before = set(m.pt.tables)
    assert m.set_memory_ro(dm(pa + K4), 1) == 0
    (table,) = set(m.pt.tables) - before
    return table


# ---- 3.3: PMD merge ------------------------------------------------------------------


def test_rox_over_a_split_2m_merges_it_back_and_frees_the_table():
    m = pristine()
    table = split_2m(m, 3 * M2)
    p = Probe(m)
    assert m.set_memory_rox(dm(3 * M2), 512) == 0
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | ROX_LARGE)
    assert leaf(m, dm(3 * M2 + 511 * K4)) == (LVL_2M, 3 * M2 | ROX_LARGE)
    # end of CPA: 512 pages > 33, full flush; then one collapse flush; then the free
    p.flushes_are(full=1, collapse=1)
    assert p.freed_tables() == {table}
    assert m.page_alloc.is_free(table >> 12)
    assert p.count_delta() == (-512, 1, 0)
    assert counts(m) == PRISTINE_COUNT
    assert m.meminfo() == (
        "DirectMap4k:        2048 kB\n"
        "DirectMap2M:     1046528 kB\n"
        "DirectMap1G:    17825792 kB\n"
    )
    assert p.vm_delta() == {}  # booting
    assert m.cpa.stats.collapses == {LVL_1G: 0, LVL_2M: 1}
    assert m.cpa.stats.set_checked_4k - p.stats.set_checked_4k == 512


def test_collapse_is_a_vm_event_once_running():
    m = pristine()
    m.system_state = "running"
    split_2m(m, 3 * M2)
    p = Probe(m)
    assert m.set_memory_rox(dm(3 * M2), 512) == 0
    assert p.vm_delta() == {"direct_map_level2_collapses": 1}
    assert "direct_map_level2_collapses 1\n" in m.vmstat()


def test_rox_merges_every_overlapped_pmd_with_one_flush():
    m = pristine()
    t1 = split_2m(m, 3 * M2)
    t2 = split_2m(m, 4 * M2)
    p = Probe(m)
    # range mode: every PMD the range overlaps is tried
    assert m.set_memory_rox(dm(3 * M2), 1024) == 0
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | ROX_LARGE)
    assert leaf(m, dm(4 * M2)) == (LVL_2M, 4 * M2 | ROX_LARGE)
    p.flushes_are(full=1, collapse=1)
    assert p.freed_tables() == {t1, t2}
    assert p.count_delta() == (-1024, 2, 0)


def test_collapse_moves_the_pat_bit_back_to_bit_12():
    m = pristine()
    m.mem.write_u64(entry_pa(m, dm(3 * M2)), 3 * M2 | PAGE_KERNEL_LARGE | PAT_LARGE)
    split_2m(m, 3 * M2)
    assert leaf(m, dm(3 * M2)) == (LVL_4K, 3 * M2 | PAGE_KERNEL | PAT_4K)
    assert m.set_memory_rox(dm(3 * M2), 512) == 0
    # 4K -> large: clear bits 7 and 12, set bit 12 since bit 7 was set; then PSE
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | P | A | G | PAT_LARGE | PSE)


# ---- 3.3: PUD merge ------------------------------------------------------------------


def test_rox_over_a_whole_split_1g_merges_the_pmd_then_the_pud():
    m = pristine()
    pud_pa = entry_pa(m, dm(4 * G1))  # the 1G leaf's own entry
    before = set(m.pt.tables)
    assert m.set_memory_ro(dm(4 * G1 + M2 + K4), 1) == 0  # 1G -> 2M -> 4K
    split_tables = set(m.pt.tables) - before
    assert len(split_tables) == 2
    p = Probe(m)
    assert m.set_memory_rox(dm(4 * G1), 262144) == 0
    # 511 2M leaves updated in place, 512 PTEs updated, then the PMD merge at 4G+2M
    # makes all 512 PMDs identical consecutive leaves: the PUD merges right after it
    assert m.mem.read_u64(pud_pa) == 4 * G1 | ROX_LARGE
    assert leaf(m, dm(4 * G1 + M2 + K4)) == (LVL_1G, 4 * G1 | ROX_LARGE)
    p.flushes_are(full=1, collapse=1)
    assert p.freed_tables() == split_tables
    assert all(m.page_alloc.is_free(t >> 12) for t in split_tables)
    assert counts(m) == PRISTINE_COUNT
    assert m.cpa.stats.collapses == {LVL_1G: 1, LVL_2M: 1}
    s = m.cpa.stats
    assert (
        s.mb_checked - p.stats.mb_checked,
        s.mb_preserved - p.stats.mb_preserved,
        s.set_checked_4k - p.stats.set_checked_4k,
    ) == (511, 511, 512)


def test_pud_collapse_is_a_level3_vm_event_once_running():
    m = pristine()
    m.system_state = "running"
    m.set_memory_ro(dm(4 * G1 + M2 + K4), 1)
    p = Probe(m)
    m.set_memory_rox(dm(4 * G1), 262144)
    assert p.vm_delta() == {
        "direct_map_level2_collapses": 1,
        "direct_map_level3_collapses": 1,
    }


def test_no_pud_merge_without_direct_gbpages():
    m = pristine(gbpages=False)
    assert "DirectMap1G" not in m.meminfo()
    # [4G, 5G) is a PMD table of 512 2M leaves
    assert leaf(m, dm(4 * G1)) == (LVL_2M, 4 * G1 | PAGE_KERNEL_LARGE)
    pud_pa = m.pt.table_of(dm(4 * G1), LVL_1G) + 8 * 4
    pud = m.mem.read_u64(pud_pa)
    assert pud & 0xFFF == 0x67  # _PAGE_TABLE, from the boot-time builder
    split_2m(m, 4 * G1 + M2)
    p = Probe(m)
    assert m.set_memory_rox(dm(4 * G1), 262144) == 0
    assert m.mem.read_u64(pud_pa) == pud
    pmds = [int(x) for x in m.pt.read_table(pud & ~0xFFF)]
    assert pmds == [4 * G1 + i * M2 | ROX_LARGE for i in range(512)]
    assert len(p.freed_tables()) == 1
    assert p.count_delta() == (-512, 1, 0)
    p.flushes_are(full=1, collapse=1)


# ---- 3.3: what is never merged -------------------------------------------------------


def test_pages_made_4k_by_set_memory_4k_are_never_merged():
    m = pristine()
    assert m.set_memory_4k(dm(3 * M2), 512) == 0
    p = Probe(m)
    assert m.set_memory_rox(dm(3 * M2), 512) == 0
    # 512 identical consecutive PTEs, but the first carries _PAGE_KERNEL_4K
    assert leaf(m, dm(3 * M2)) == (LVL_4K, 3 * M2 | ROX_4K | KERNEL_4K)
    assert leaf(m, dm(3 * M2 + 511 * K4)) == (
        LVL_4K,
        3 * M2 + 511 * K4 | ROX_4K | KERNEL_4K,
    )
    p.flushes_are(full=1)
    assert p.freed_tables() == set()
    assert p.count_delta() == (0, 0, 0)


def test_a_pte_differing_in_g_is_never_merged():
    m = pristine()
    split_2m(m, 3 * M2)
    assert m.set_memory_nonglobal(dm(3 * M2 + 7 * K4), 1) == 0
    p = Probe(m)
    assert m.set_memory_rox(dm(3 * M2), 512) == 0
    assert leaf(m, dm(3 * M2 + 7 * K4)) == (LVL_4K, 3 * M2 + 7 * K4 | P | A)
    assert leaf(m, dm(3 * M2)) == (LVL_4K, 3 * M2 | ROX_4K)
    p.flushes_are(full=1)
    assert p.count_delta() == (0, 0, 0)


def test_a_pte_differing_in_a_is_never_merged():
    m = pristine()
    split_2m(m, 3 * M2)
    pte9 = entry_pa(m, dm(3 * M2 + 9 * K4))
    m.mem.write_u64(pte9, 3 * M2 + 9 * K4 | (PAGE_KERNEL & ~A))  # never accessed
    p = Probe(m)
    assert m.set_memory_rox(dm(3 * M2), 512) == 0
    assert m.mem.read_u64(pte9) == 3 * M2 + 9 * K4 | P | G
    assert leaf(m, dm(3 * M2))[0] == LVL_4K
    p.flushes_are(full=1)


def test_the_invalid_default_cycle_blocks_the_merge():
    m = pristine()
    pa = 3 * M2 + 5 * K4
    m.set_direct_map_invalid_noflush(pa >> 12)  # splits the 2M leaf
    m.set_direct_map_default_noflush(pa >> 12)
    assert leaf(m, dm(pa)) == (LVL_4K, pa | P | RW | A | NX)
    p = Probe(m)
    assert m.set_memory_rox(dm(3 * M2), 512) == 0
    assert leaf(m, dm(pa)) == (LVL_4K, pa | P | A)  # no G: differs from 0x121
    assert leaf(m, dm(3 * M2)) == (LVL_4K, 3 * M2 | ROX_4K)
    p.flushes_are(full=1)
    assert p.count_delta() == (0, 0, 0)


def test_rox_over_part_of_a_split_2m_does_not_merge():
    m = pristine()
    split_2m(m, 3 * M2)
    p = Probe(m)
    assert m.set_memory_rox(dm(3 * M2), 256) == 0
    assert leaf(m, dm(3 * M2 + 255 * K4)) == (LVL_4K, 3 * M2 + 255 * K4 | ROX_4K)
    assert leaf(m, dm(3 * M2 + 256 * K4)) == (LVL_4K, 3 * M2 + 256 * K4 | PAGE_KERNEL)
    p.flushes_are(full=1)


# ---- 3.2: when collapse runs ---------------------------------------------------------


def test_only_set_memory_rox_collapses_under_linux():
    m = pristine()
    split_2m(m, 3 * M2)
    p = Probe(m)
    assert m.set_memory_ro(dm(3 * M2), 512) == 0  # 512 identical PTEs, no merge
    assert leaf(m, dm(3 * M2)) == (LVL_4K, 3 * M2 | PAGE_KERNEL_RO)
    assert m.set_memory_x(dm(3 * M2), 512) == 0  # 512 identical 0x121, no merge
    assert leaf(m, dm(3 * M2 + 100 * K4)) == (LVL_4K, 3 * M2 + 100 * K4 | ROX_4K)
    p.flushes_are(full=2)
    # rox that changes nothing: CPA_FLUSHTLB is never set, cpa_flush never runs
    p = Probe(m)
    assert m.set_memory_rox(dm(3 * M2), 512) == 0
    assert leaf(m, dm(3 * M2))[0] == LVL_4K
    p.flushes_are()
    assert p.count_delta() == (0, 0, 0)


def test_eager_policy_collapses_after_other_cpas_too():
    m = pristine(merge="eager")
    table = split_2m(m, 3 * M2)
    p = Probe(m)
    assert m.set_memory_ro(dm(3 * M2), 512) == 0
    assert leaf(m, dm(3 * M2)) == (LVL_2M, 3 * M2 | PAGE_KERNEL_RO | PSE)
    assert p.freed_tables() == {table}
    assert p.count_delta() == (-512, 1, 0)


# ---- 3.2: the direct-map alias of a vmalloc area -------------------------------------


def _vmalloc_rox_scenario(merge: str) -> tuple[Machine, int, int]:
    """A 2M huge vmalloc area, RO on its second page (which splits the area and its
    direct-map alias), then set_memory_rox on the whole area."""
    m = pristine(merge=merge)
    area = m.vmalloc.vmalloc(M2, huge=True)
    pa = area.pages[0] << 12
    assert pa % M2 == 0  # precondition: one order-9 block
    assert leaf(m, dm(pa)) == (LVL_1G, pa & ~(G1 - 1) | PAGE_KERNEL_LARGE)
    assert m.set_memory_ro(area.addr + K4, 1) == 0
    assert leaf(m, area.addr + K4) == (LVL_4K, pa + K4 | PAGE_KERNEL_RO)
    assert leaf(m, dm(pa + K4)) == (LVL_4K, pa + K4 | PAGE_KERNEL_RO)
    assert m.set_memory_rox(area.addr, 512) == 0
    return m, area.addr, pa


def test_rox_on_vmalloc_merges_the_area_but_not_its_direct_map_alias():
    m, va, pa = _vmalloc_rox_scenario("linux")
    assert leaf(m, va) == (LVL_2M, pa | ROX_LARGE)
    # the alias got RO (NX masked) page by page, identical, but is not re-merged
    assert leaf(m, dm(pa)) == (LVL_4K, pa | PAGE_KERNEL_RO)
    assert leaf(m, dm(pa + 511 * K4)) == (LVL_4K, pa + 511 * K4 | PAGE_KERNEL_RO)
    # only the direct-map splits count: 1G -> 2M -> 4K; the vmalloc ones never
    assert counts(m) == (512 + 512, 511 + 511, 17 - 1)


def test_rox_on_vmalloc_merges_the_direct_map_alias_under_eager():
    m, va, pa = _vmalloc_rox_scenario("eager")
    assert leaf(m, va) == (LVL_2M, pa | ROX_LARGE)
    assert leaf(m, dm(pa)) == (LVL_2M, pa | PAGE_KERNEL_RO | PSE)
    assert counts(m) == (512, 511 + 512, 17 - 1)


def test_high_map_collapse_moves_the_direct_map_counters_back():
    m = pristine()
    hi = 0xFFFFFFFF80000000 + 0x3000000  # the image's data, high map (phys_base 0)
    assert m.set_memory_nx(hi + K4, 1) == 0  # splits the high-map leaf (counted)
    assert counts(m) == (512 + 512, 511 - 1, 17)
    assert m.set_memory_rox(hi, 512) == 0
    # the high map merges (counted back, 1.7's quirk); the direct-map alias was split
    # by the RO part (NX masked) and is not re-merged
    assert leaf(m, hi) == (LVL_2M, 0x3000000 | ROX_LARGE)
    assert leaf(m, dm(0x3000000)) == (LVL_4K, 0x3000000 | PAGE_KERNEL_RO)
    assert counts(m) == (512 + 512, 511 - 1, 17)
