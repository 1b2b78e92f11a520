"""CPA alias processing (reference/linux-mm.md 2.9) and mark_rodata_ro (2.7, 5).

Expected values are derived by hand from the reference; see test_cpa_rules.py's
docstring for the 16 GiB machine and its pristine direct map.  The vmalloc tests take
the area's frame from the allocator and check, as a precondition, that its direct-map
alias sits in a 1G leaf (the allocator hands out ZONE_NORMAL pages from 4G up).
"""

from __future__ import annotations

import pytest
from cpa_probe import Probe, counts

from kernel_model.machine import Machine

PAGE_OFFSET = 0xFFFF888000000000
START_KERNEL_MAP = 0xFFFFFFFF80000000
K4 = 1 << 12
M2 = 1 << 21
G1 = 1 << 30

P, RW, A, D, PSE, G, NX = 0x1, 0x2, 0x20, 0x40, 0x80, 0x100, 1 << 63
PAGE_KERNEL = 0x8000000000000163
PAGE_KERNEL_LARGE = 0x80000000000001E3
PAGE_KERNEL_RO = 0x8000000000000121
PAGE_KERNEL_LARGE_EXEC = 0x1E3
LVL_4K, LVL_2M, LVL_1G = 1, 2, 3


def pristine(**config: object) -> Machine:
    return Machine(ram="16G", rodata=False, kfence=False, **config)


def dm(pa: int) -> int:
    return PAGE_OFFSET + pa


def hm(pa: int) -> int:
    return START_KERNEL_MAP + pa


def leaf(m: Machine, va: int) -> tuple[int, int | None]:
    look = m.pt.lookup_address(va)
    return look.level, look.entry


def vmalloc_page(m: Machine) -> tuple[int, int]:
    """A one-page vmalloc area: (its address, its frame's physical address)."""
    area = m.vmalloc.vmalloc(K4)
    pa = area.pages[0] << 12
    assert leaf(m, dm(pa)) == (LVL_1G, pa & ~(G1 - 1) | PAGE_KERNEL_LARGE)
    return area.addr, pa


# ---- 2.9 step 2: the direct-map alias ------------------------------------------------


def test_set_memory_ro_on_vmalloc_also_splits_and_protects_the_direct_map():
    m = pristine()
    va, pa = vmalloc_page(m)
    p = Probe(m)
    assert m.set_memory_ro(va, 1) == 0
    assert leaf(m, va) == (LVL_4K, pa | PAGE_KERNEL_RO)
    assert leaf(m, dm(pa)) == (LVL_4K, pa | PAGE_KERNEL_RO)
    assert leaf(m, dm(pa ^ K4)) == (LVL_4K, (pa ^ K4) | PAGE_KERNEL)
    p.flushes_are(split=2, full=1)  # the alias forces a full flush for one page
    assert p.count_delta() == (512, 511, -1)
    assert len(set(m.pt.tables) - p.tables) == 2
    assert m.cpa.stats.gb_checked == 1
    assert m.cpa.stats.mb_checked == 1
    assert m.cpa.stats.set_checked_4k == 2


def test_set_memory_rw_on_vmalloc_restores_rw_on_both_aliases_but_not_d():
    m = pristine()
    va, pa = vmalloc_page(m)
    m.set_memory_ro(va, 1)
    p = Probe(m)
    assert m.set_memory_rw(va, 1) == 0
    assert leaf(m, va) == (LVL_4K, pa | PAGE_KERNEL_RO | RW)
    assert leaf(m, dm(pa)) == (LVL_4K, pa | PAGE_KERNEL_RO | RW)
    p.flushes_are(full=1)


def test_set_memory_x_and_nx_on_vmalloc_leave_the_direct_map_but_flush_all():
    m = pristine()
    va, pa = vmalloc_page(m)
    before = leaf(m, dm(pa))
    p = Probe(m)
    assert m.set_memory_x(va, 1) == 0
    assert leaf(m, va) == (LVL_4K, pa | (PAGE_KERNEL & ~NX))
    assert leaf(m, dm(pa)) == before  # NX is masked out of the alias: no split
    assert p.warnings() == [
        f"CPA detected W^X violation: 8000000000000163 -> 0000000000000163 range: "
        f"0x{va:016x} - 0x{va + K4 - 1:016x} PFN {pa >> 12:x}"
    ]
    p.flushes_are(full=1)  # force_flush_all is set before the (empty) alias walk
    p = Probe(m)
    assert m.set_memory_nx(va, 1) == 0
    assert leaf(m, va) == (LVL_4K, pa | PAGE_KERNEL)
    assert leaf(m, dm(pa)) == before
    p.flushes_are(full=1)
    assert p.count_delta() == (0, 0, 0)


def test_set_memory_np_on_vmalloc_unmaps_the_direct_map_alias_too():
    m = pristine()
    va, pa = vmalloc_page(m)
    p = Probe(m)
    assert m.set_memory_np(va, 1) == 0
    # P cleared, and G with it (non-present must not look PROTNONE)
    assert leaf(m, va) == (LVL_4K, pa | RW | A | D | NX)
    assert leaf(m, dm(pa)) == (LVL_4K, pa | RW | A | D | NX)
    p.flushes_are(split=2, full=1)
    assert p.count_delta() == (512, 511, -1)


def test_set_memory_np_noalias_leaves_the_aliases_alone():
    m = pristine()
    va, pa = vmalloc_page(m)
    before = leaf(m, dm(pa))
    p = Probe(m)
    assert m.set_memory_np_noalias(va, 1) == 0
    assert leaf(m, va) == (LVL_4K, pa | RW | A | D | NX)
    assert leaf(m, dm(pa)) == before
    p.flushes_are(ranged=1)  # no alias touched: a ranged flush
    assert p.count_delta() == (0, 0, 0)


# ---- 2.9 step 3: the high-kernel-map alias -------------------------------------------


def test_direct_map_change_of_an_image_page_reaches_the_high_map_alias():
    m = pristine()
    pa = 0x3003000  # a data page of the image
    p = Probe(m)
    assert m.set_memory_ro(dm(pa), 1) == 0
    assert leaf(m, dm(pa)) == (LVL_4K, pa | PAGE_KERNEL_RO)
    # the high map is executable (no NX), and the alias masks carry no NX
    assert leaf(m, hm(pa)) == (LVL_4K, pa | (PAGE_KERNEL_RO & ~NX))
    assert leaf(m, hm(pa - K4)) == (LVL_4K, pa - K4 | PAGE_KERNEL_LARGE_EXEC & ~PSE)
    p.flushes_are(split=2, full=1)
    # both splits move the DirectMap counters (the high-map one by the quirk of 1.7)
    assert p.count_delta() == (1024, -2, 0)
    assert m.cpa.stats.mb_checked == 2
    assert m.cpa.stats.set_checked_4k == 2


def test_high_map_change_of_an_image_page_reaches_the_direct_map_alias():
    m = pristine()
    pa = 0x3003000
    p = Probe(m)
    assert m.set_memory_ro(hm(pa), 1) == 0
    assert leaf(m, hm(pa)) == (LVL_4K, pa | (PAGE_KERNEL_RO & ~NX))
    assert leaf(m, dm(pa)) == (LVL_4K, pa | PAGE_KERNEL_RO)
    p.flushes_are(split=2, full=1)
    assert p.count_delta() == (1024, -2, 0)


def test_set_memory_np_noalias_on_the_direct_map_leaves_the_high_map():
    m = pristine()
    pa = 0x3003000
    p = Probe(m)
    assert m.set_memory_np_noalias(dm(pa), 1) == 0
    assert leaf(m, dm(pa)) == (LVL_4K, pa | RW | A | D | NX)
    assert leaf(m, hm(pa)) == (LVL_2M, 0x3000000 | PAGE_KERNEL_LARGE_EXEC)
    p.flushes_are(split=1, ranged=1)


# ---- mark_rodata_ro on a default machine (2.7, 5.3-5.6) ------------------------------
#
# Machine(ram="16G") boots with kfence and rodata.  In order (hand derivation):
# * kfence: a 2M pool below the top of RAM spans the 2M blocks [17G-4M, 17G-2M) and
#   [17G-2M, 17G): set_memory_4k splits the 1G leaf [16G, 17G) and those two 2M leaves.
# * free_initmem, high map [0x3783000, 0x3b27000): NX splits the high-map 2M leaves at
#   0x3600000 and 0x3a00000 (partial), updates 0x3800000 in place; RW changes nothing
#   (its direct-map aliases are already RW: sameprot).
# * mark_rodata_ro: RO on high [16M, 48M) = 16 whole 2M leaves, updated in place, and so
#   are their 16 direct-map aliases (whole 2M leaves too).  NX on high
#   [0x220a000, 0x3e00000): the leaf at 0x2200000 splits, the others are updated in
#   place (or are already NX / already 4K).  The text/rodata gap [0x220a000, 0x2400000)
#   becomes RW: its direct-map alias 2M leaf at 0x2200000 splits.  The rodata/data gap
#   [0x2e0a000, 0x3000000) becomes RW: the high-map leaf and its direct-map alias at
#   0x2e00000 split.
# Splits: one 1G, eight 2M (4 of them high-map, counted by the quirk), all booting.

# ptdump columns (5.4): USR, RW/ro, PWT, PCD, PSE, PAT, GLB, NX/x; never USR/PWT/PCD/PAT
# here


def _flags(rw: bool, pse: bool, nx: bool, glb: bool = True) -> str:
    return (
        "    "
        + ("RW " if rw else "ro ")
        + "    "
        + "    "
        + ("PSE " if pse else "    ")
        + "    "
        + ("GLB " if glb else "    ")
        + ("NX " if nx else "x  ")
    )


_RO_PSE_X = _flags(rw=False, pse=True, nx=False)
_RO_X = _flags(rw=False, pse=False, nx=False)
_RW_NX = _flags(rw=True, pse=False, nx=True)
_RO_NX = _flags(rw=False, pse=False, nx=True)
_RO_PSE_NX = _flags(rw=False, pse=True, nx=True)
_RW_PSE_NX = _flags(rw=True, pse=True, nx=True)
_HOLE = " " * 30  # a non-present run


def _line(start: int, end: int, size: str, flags: str, level: str) -> str:
    return f"0x{start:016x}-0x{end:016x}   {size:>10} {flags}{level}"


HIGH_KERNEL_MAPPING = (
    "\n".join(
        [
            "---[ High Kernel Mapping ]---",
            _line(hm(0), hm(0x1000000), "16M", _HOLE, "pmd"),
            # the line of the reference's example (5.5), byte for byte
            "0xffffffff81000000-0xffffffff82200000   "
            "       18M     ro         PSE     GLB x  pmd",
            _line(hm(0x2200000), hm(0x220A000), "40K", _RO_X, "pte"),
            _line(hm(0x220A000), hm(0x2400000), "2008K", _RW_NX, "pte"),
            _line(hm(0x2400000), hm(0x2E00000), "10M", _RO_PSE_NX, "pmd"),
            _line(hm(0x2E00000), hm(0x2E0A000), "40K", _RO_NX, "pte"),
            _line(hm(0x2E0A000), hm(0x3000000), "2008K", _RW_NX, "pte"),
            _line(hm(0x3000000), hm(0x3600000), "6M", _RW_PSE_NX, "pmd"),
            _line(hm(0x3600000), hm(0x3800000), "2M", _RW_NX, "pte"),
            _line(hm(0x3800000), hm(0x3A00000), "2M", _RW_PSE_NX, "pmd"),
            _line(hm(0x3A00000), hm(0x3C00000), "2M", _RW_NX, "pte"),
            _line(hm(0x3C00000), hm(0x3E00000), "2M", _RW_PSE_NX, "pmd"),
            _line(hm(0x3E00000), 0xFFFFFFFFA0000000, "450M", _HOLE, "pmd"),
        ]
    )
    + "\n"
)

LOW_KERNEL_MAPPING_HEAD = [
    "---[ Low Kernel Mapping ]---",
    _line(dm(0), dm(0x200000), "2M", _RW_NX, "pte"),
    _line(dm(0x200000), dm(0x1000000), "14M", _RW_PSE_NX, "pmd"),
    _line(dm(0x1000000), dm(0x2200000), "18M", _RO_PSE_NX, "pmd"),
    _line(dm(0x2200000), dm(0x220A000), "40K", _RO_NX, "pte"),
    _line(dm(0x220A000), dm(0x2400000), "2008K", _RW_NX, "pte"),
    _line(dm(0x2400000), dm(0x2E00000), "10M", _RO_PSE_NX, "pmd"),
    _line(dm(0x2E00000), dm(0x2E0A000), "40K", _RO_NX, "pte"),
    _line(dm(0x2E0A000), dm(0x3000000), "2008K", _RW_NX, "pte"),
    _line(dm(0x3000000), dm(G1), "976M", _RW_PSE_NX, "pmd"),
    _line(dm(G1), dm(3 * G1), "2G", _RW_PSE_NX, "pud"),
    _line(dm(3 * G1), dm(4 * G1), "1G", _HOLE, "pud"),
    _line(dm(4 * G1), dm(16 * G1), "12G", _RW_PSE_NX, "pud"),
]


def test_line_formatter_reproduces_the_reference_examples():
    assert _line(hm(0x1000000), hm(0x2200000), "18M", _RO_PSE_X, "pmd") == (
        "0xffffffff81000000-0xffffffff82200000   "
        "       18M     ro         PSE     GLB x  pmd"
    )
    assert _line(dm(0x200000), dm(0x40000000), "1022M", _RW_PSE_NX, "pmd") == (
        "0xffff888000200000-0xffff888040000000   "
        "     1022M     RW         PSE     GLB NX pmd"
    )
    assert _line(dm(0xC0000000), dm(0x100000000), "1G", _HOLE, "pud") == (
        "0xffff8880c0000000-0xffff888100000000           1G"
        "                               pud"
    )


@pytest.fixture(scope="module")
def booted() -> Machine:
    """A default machine after boot; the tests using it only read it."""
    return Machine(ram="16G")


def test_boot_prints_linux_dmesg_lines(booted):
    assert booted.dmesg == [
        "Freeing unused kernel image (initmem) memory: 3728K",
        "Write protecting the kernel read-only data: 32768k",
        "Freeing unused kernel image (text/rodata gap) memory: 2008K",
        "Freeing unused kernel image (rodata/data gap) memory: 2008K",
    ]


def test_high_kernel_mapping_after_mark_rodata_ro(booted):
    assert booted.ptdump("High Kernel Mapping") == HIGH_KERNEL_MAPPING


def test_direct_map_around_the_image_after_mark_rodata_ro(booted):
    lines = booted.ptdump("Low Kernel Mapping").splitlines()
    assert lines[: len(LOW_KERNEL_MAPPING_HEAD)] == LOW_KERNEL_MAPPING_HEAD


def test_check_wx_passes_after_boot(booted):
    assert booted.check_wx().rstrip("\n") == (
        "x86/mm: Checked W+X mappings: passed, no W+X pages found."
    )


def test_boot_splits_move_direct_map_counters_but_not_vm_events(booted):
    assert counts(booted) == (512 + 8 * 512, 511 + 512 - 8, 17 - 1)
    assert booted.meminfo() == (
        "DirectMap4k:       18432 kB\n"
        "DirectMap2M:     2078720 kB\n"
        "DirectMap1G:    16777216 kB\n"
    )
    assert booted.vm_events == {
        "direct_map_level2_splits": 0,
        "direct_map_level3_splits": 0,
        "direct_map_level2_collapses": 0,
        "direct_map_level3_collapses": 0,
    }
    assert booted.system_state == "running"
    assert booted.cpa.kernel_set_to_readonly


def test_boot_cpa_stats(booted):
    # checked / sameprot / preserved / 4K set-checked, step by step:
    # kfence 0/0/0/2 (force_split counts no check);
    # initmem NX 3/0/1/420; initmem RW 422/422/0/420 (420 4K pages whose direct-map
    #   alias 2M leaf is sameprot, plus the 2M leaf at 0x3800000 and its alias);
    # RO 32/0/32/0 (16 high + 16 direct-map leaves in place);
    # NX 12/1/10/1526 (502 + 512 + 512 4K pages);
    # text/rodata gap: NX 0/0/0/502, RW 1/0/0/1004 (the alias split);
    # rodata/data gap: NX 1/1/0/0, RW 2/0/0/1004.
    assert booted.cpa_stats() == (
        "1G pages checked:                    0\n"
        "1G pages sameprot:                   0\n"
        "1G pages preserved:                  0\n"
        "2M pages checked:                  473\n"
        "2M pages sameprot:                 424\n"
        "2M pages preserved:                 43\n"
        "4K pages set-checked:             4878\n"
    )


# ---- 2.9: when there is no alias, and errors in alias walks --------------------------


def test_a_frame_outside_the_direct_map_has_no_alias():
    m = pristine()
    va = 0xFFFFC90000000000  # vmalloc space, mapping a PCI-hole frame (MMIO) by hand
    mmio = 0xC0000000
    table = m.pt.ensure_table(va, LVL_4K)
    m.pt.write(table, m.pt.index(va, LVL_4K), mmio | PAGE_KERNEL)
    p = Probe(m)
    assert m.set_memory_ro(va, 1) == 0
    assert leaf(m, va) == (LVL_4K, mmio | PAGE_KERNEL_RO)
    p.flushes_are(ranged=1)  # pfn_range_is_mapped() is false: no alias, no full flush


def test_an_alias_walk_without_a_change_does_not_flush():
    m = pristine()
    va, _ = vmalloc_page(m)
    p = Probe(m)
    assert m.set_memory_nx(va, 1) == 0  # already NX: nothing changed anywhere
    p.flushes_are()


def test_a_failing_direct_map_alias_returns_its_error():
    m = pristine()
    va, pa = vmalloc_page(m)
    m.cpa.fail_table_allocs = 1
    p = Probe(m)
    assert m.set_memory_ro(va, 1) == -12
    assert leaf(m, va) == (LVL_4K, pa | PAGE_KERNEL_RO)
    assert leaf(m, dm(pa)) == (LVL_1G, pa & ~(G1 - 1) | PAGE_KERNEL_LARGE)
    p.flushes_are(full=1)  # CPA_FLUSHTLB and an error: cpa_flush_all
    assert p.count_delta() == (0, 0, 0)


def test_a_failing_high_map_alias_is_ignored():
    m = pristine()
    pa = 0x3003000
    # split the direct-map leaf without touching the high map
    m.set_direct_map_invalid_noflush(0x3010)
    m.set_direct_map_default_noflush(0x3010)
    m.cpa.fail_table_allocs = 1
    p = Probe(m)
    assert m.set_memory_ro(dm(pa), 1) == 0
    assert leaf(m, dm(pa)) == (LVL_4K, pa | PAGE_KERNEL_RO)
    assert leaf(m, hm(pa)) == (LVL_2M, 0x3000000 | PAGE_KERNEL_LARGE_EXEC)
    p.flushes_are(full=1)


def test_mark_rodata_ro_splits_the_direct_map_1g_leaf_holding_the_image():
    from kernel_model.e820 import KernelImage, PhysRange

    # the default image moved up by 1G: its direct-map alias is inside the 1G leaf
    # [1G, 2G); phys_base = 1G, so the high-map addresses are the default ones
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
    # RO's first direct-map alias step clamps to 512 pages of the 1G leaf, splits it,
    # then updates the 2M child in place; the other 15 are whole 2M leaves.  The rest
    # is the default boot's: kfence 1G + 2 x 2M, six more 2M splits.
    assert leaf(m, dm(G1)) == (LVL_2M, G1 | PAGE_KERNEL_LARGE)
    assert leaf(m, dm(G1 + 0x1000000)) == (LVL_2M, G1 + 0x1000000 | 0x80000000000001A1)
    assert leaf(m, dm(G1 + 0x2C00000)) == (LVL_2M, G1 + 0x2C00000 | 0x80000000000001A1)
    assert leaf(m, dm(G1 + 0x3000000)) == (LVL_2M, G1 + 0x3000000 | PAGE_KERNEL_LARGE)
    assert leaf(m, dm(2 * G1)) == (LVL_1G, 2 * G1 | PAGE_KERNEL_LARGE)
    assert leaf(m, hm(0x1000000)) == (LVL_2M, G1 + 0x1000000 | 0x1A1)  # phys_base 1G
    assert counts(m) == (512 + 8 * 512, 511 + 2 * 512 - 8, 17 - 2)
    assert m.meminfo() == (
        "DirectMap4k:       18432 kB\n"
        "DirectMap2M:     3127296 kB\n"
        "DirectMap1G:    15728640 kB\n"
    )
    assert all(v == 0 for v in m.vm_events.values())
    assert m.check_wx().rstrip("\n") == (
        "x86/mm: Checked W+X mappings: passed, no W+X pages found."
    )


def test_high_kernel_mapping_with_pti_unmaps_the_freed_ranges():
    # 2.7: with PTI, free_kernel_image_pages() also runs set_memory_np_noalias on the
    # freed ranges of the high map; PTI also strips G from every kernel mapping.  The
    # initmem range [0x3783000, 0x3b27000) covers the whole 2M leaf at 0x3800000, which
    # becomes a non-present pmd entry in place.
    m = Machine(ram="16G", pti=True)

    def f(rw: bool, pse: bool, nx: bool) -> str:
        return _flags(rw, pse, nx, glb=False)

    assert (
        m.ptdump("High Kernel Mapping")
        == "\n".join(
            [
                "---[ High Kernel Mapping ]---",
                _line(hm(0), hm(0x1000000), "16M", _HOLE, "pmd"),
                _line(
                    hm(0x1000000), hm(0x2200000), "18M", f(False, True, False), "pmd"
                ),
                _line(
                    hm(0x2200000), hm(0x220A000), "40K", f(False, False, False), "pte"
                ),
                _line(hm(0x220A000), hm(0x2400000), "2008K", _HOLE, "pte"),
                _line(hm(0x2400000), hm(0x2E00000), "10M", f(False, True, True), "pmd"),
                _line(
                    hm(0x2E00000), hm(0x2E0A000), "40K", f(False, False, True), "pte"
                ),
                _line(hm(0x2E0A000), hm(0x3000000), "2008K", _HOLE, "pte"),
                _line(hm(0x3000000), hm(0x3600000), "6M", f(True, True, True), "pmd"),
                _line(
                    hm(0x3600000), hm(0x3783000), "1548K", f(True, False, True), "pte"
                ),
                _line(hm(0x3783000), hm(0x3800000), "500K", _HOLE, "pte"),
                _line(hm(0x3800000), hm(0x3A00000), "2M", _HOLE, "pmd"),
                _line(hm(0x3A00000), hm(0x3B27000), "1180K", _HOLE, "pte"),
                _line(
                    hm(0x3B27000), hm(0x3C00000), "868K", f(True, False, True), "pte"
                ),
                _line(hm(0x3C00000), hm(0x3E00000), "2M", f(True, True, True), "pmd"),
                _line(hm(0x3E00000), 0xFFFFFFFFA0000000, "450M", _HOLE, "pmd"),
            ]
        )
        + "\n"
    )
    assert leaf(m, hm(0x3800000)) == (LVL_2M, 0x3800000 | RW | A | D | NX)
    assert leaf(m, hm(0x220A000)) == (LVL_4K, 0x220A000 | RW | A | NX)
    assert leaf(m, hm(0x3783000)) == (LVL_4K, 0x3783000 | RW | A | D | NX)
    # the direct-map aliases of the freed pages stay mapped (noalias), RW
    assert leaf(m, dm(0x220A000)) == (LVL_4K, 0x220A000 | RW | A | NX | P)
