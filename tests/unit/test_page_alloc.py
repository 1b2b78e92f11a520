"""kernel_model.page_alloc: boot, buddy split/merge, fallbacks, errors, text formats."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from emu.errors import EmuValueError
from kernel_model.e820 import E820Table, E820Type
from kernel_model.page_alloc import (
    GFP,
    GFP_DMA,
    GFP_DMA32,
    GFP_HIGHUSER_MOVABLE,
    GFP_KERNEL,
    MAX_DMA32_PFN,
    MAX_DMA_PFN,
    MAX_PAGE_ORDER,
    MigrateType,
    PageAllocator,
    ZoneType,
    gfp_migratetype,
    gfp_zone,
)

RAM, RES = E820Type.RAM, E820Type.RESERVED
UNMOV, MOV, RECL = MigrateType.UNMOVABLE, MigrateType.MOVABLE, MigrateType.RECLAIMABLE
DMA, DMA32, NORMAL = ZoneType.DMA, ZoneType.DMA32, ZoneType.NORMAL
MACHINE = Path(__file__).resolve().parents[1] / "data" / "machine"
G = 1 << 30


def small() -> PageAllocator:
    """16 MiB PC: only ZONE_DMA, pfns [1, 0x9f) and [0x100, 0x1000) present.

    The first 1 MiB is reserved, so the buddy gets [0x100, 0x1000): 0x100 order 8
    (in pageblock 0, whose first pfn is not RAM: Unmovable), 0x200 order 9 and
    0x400/0x800/0xc00 order 10 (Movable).
    """
    return PageAllocator(E820Table.from_ram_size("16M"))


def three_zones() -> PageAllocator:
    """RAM to 20 MiB and 4 MiB at 4 GiB: one order-10 block in DMA32 and in Normal."""
    return PageAllocator(E820Table([(0, 0x9FC00, RAM), (0x9FC00, 0x100000, RES),
                                    (0x100000, 0x1400000, RAM),
                                    (4 * G, 4 * G + 0x400000, RAM)]))


def lists(a: PageAllocator, zone: ZoneType = DMA) -> dict[tuple[str, int], list[int]]:
    """Every non-empty free list of a zone, keyed by (migratetype initial, order)."""
    out = {}
    for mt in MigrateType:
        for order in range(MAX_PAGE_ORDER + 1):
            blocks = a.free_list(zone, order, mt)
            if blocks:
                out[(mt.name[0], order)] = blocks
    return out


def free_set(a: PageAllocator) -> set[tuple[int, int]]:
    return {(b.pfn, b.order) for b in a.free_blocks()}


# --- boot -----------------------------------------------------------------------------

def test_boot_small_layout_free_lists_and_zone_sizes() -> None:
    a = small()
    assert lists(a) == {("U", 8): [0x100], ("M", 9): [0x200],
                        ("M", 10): [0x400, 0x800, 0xC00]}
    z = a.zone("DMA")
    assert (z.zone_start_pfn, z.spanned_pages, z.present_pages, z.managed_pages) == (
        1, 4095, 158 + 3840, 3840)
    assert not a.zone(DMA32).populated
    assert not a.zone("Normal").populated
    assert a.nr_free_pages() == a.managed_pages() == 3840
    assert a.pageblock_migratetype(0) == UNMOV
    assert a.pageblock_migratetype(0x200) == MOV
    assert a.page_group_by_mobility_disabled is False
    assert [r.reason for r in a.reservations()] == ["first 1 MiB (reserve_real_mode)"]


def test_boot_three_zones_and_zonelists() -> None:
    a = three_zones()
    assert lists(a, DMA32) == {("M", 10): [0x1000]}
    assert lists(a, NORMAL) == {("M", 10): [0x100000]}
    assert a.zone(DMA32).zone_start_pfn == MAX_DMA_PFN
    assert a.zone(DMA32).spanned_pages == MAX_DMA32_PFN - MAX_DMA_PFN
    assert a.zone(DMA32).present_pages == 1024
    assert a.zone(NORMAL).zone_start_pfn == MAX_DMA32_PFN
    assert a.zonelist(GFP_KERNEL) == [NORMAL, DMA32, DMA]
    assert a.zonelist(GFP_HIGHUSER_MOVABLE) == [NORMAL, DMA32, DMA]
    assert a.zonelist(GFP_DMA32) == [DMA32, DMA]
    assert a.zonelist(GFP_DMA) == [DMA]
    assert small().zonelist(GFP_KERNEL) == [DMA]
    assert a.zone_of(0x100) == DMA
    assert a.zone_of(0) is None  # DMA starts at pfn 1: page 0 is reserved E820
    assert a.zone_of(0x2000) == DMA32
    assert a.zone_of(MAX_DMA32_PFN + 5) == NORMAL
    assert a.zone_of(MAX_DMA32_PFN + 0x400) is None


def test_boot_reservations_stay_out_of_the_buddy() -> None:
    a = PageAllocator(E820Table.from_ram_size("16M"),
                      reserved=[(0x400, 0x400, "kernel image"), (0xC80, 3, "pgd")])
    # [0xc00, 0xc80) is one order-7 block; [0xc83, 0x1000) splits by alignment
    assert lists(a) == {("U", 8): [0x100], ("M", 9): [0x200, 0xE00],
                        ("M", 10): [0x800], ("M", 0): [0xC83], ("M", 2): [0xC84],
                        ("M", 3): [0xC88], ("M", 4): [0xC90], ("M", 5): [0xCA0],
                        ("M", 6): [0xCC0], ("M", 7): [0xC00], ("M", 8): [0xD00]}
    assert a.zone(DMA).managed_pages == 3840 - 0x400 - 3
    assert a.nr_free_pages() == a.managed_pages()


@given(st.lists(st.tuples(st.integers(0, 0x1400), st.integers(1, 0x300)), max_size=6))
def test_boot_frees_exactly_ram_minus_reservations(
        spans: list[tuple[int, int]]) -> None:
    taken: set[int] = set(range(0x100))
    reserved = []
    for start, n in spans:
        pages = set(range(start, start + n))
        if not pages & taken:
            taken |= pages
            reserved.append((start, n, "r"))
    a = PageAllocator(E820Table([(0, 0x9FC00, RAM), (0x9FC00, 0x100000, RES),
                                 (0x100000, 0x800000, RAM), (0x900000, 0xC00000, RAM),
                                 (0xD00000, 0x1200000, RAM)]), reserved=reserved)
    ram = set(range(1, 0x9F)) | set(range(0x100, 0x800)) | set(range(0x900, 0xC00)) \
        | set(range(0xD00, 0x1200))
    free: set[int] = set()
    for b in a.free_blocks():
        free.update(range(b.pfn, b.pfn + (1 << b.order)))
    assert free == ram - taken
    assert a.managed_pages() == len(ram - taken)


@pytest.mark.parametrize("reserved", [
    [(0x80, 0x100, "overlaps the first MiB")],
    [(0x400, 0x10, "a"), (0x40F, 1, "b")],
    [(0x400, 0, "empty")],
    [("0x400", 1, "str")],
    [(0x400, 1)],
])
def test_boot_rejects_bad_reservations(reserved: list[tuple[object, ...]]) -> None:
    with pytest.raises(EmuValueError):
        PageAllocator(E820Table.from_ram_size("16M"), reserved=reserved)  # type: ignore[arg-type]


def test_boot_tiny_machine_turns_mobility_grouping_off() -> None:
    a = PageAllocator(E820Table.from_ram_size("8M"))  # 1950 pages < 512 * 5
    assert a.page_group_by_mobility_disabled is True
    pfn = a.alloc_pages(0, GFP_HIGHUSER_MOVABLE)
    assert pfn is not None
    assert a.allocated_order(pfn) == 0
    # every request is treated as unmovable and claims whole pageblocks
    assert a.pageblock_migratetype(pfn) == UNMOV


# --- a hand-computed alloc/free sequence ----------------------------------------------

def test_alloc_free_sequence_exact_free_lists() -> None:
    a = small()
    assert a.alloc_pages(0, GFP_HIGHUSER_MOVABLE) == 0x200  # order 9 split down
    assert lists(a) == {
        ("U", 8): [0x100],
        ("M", 0): [0x201], ("M", 1): [0x202], ("M", 2): [0x204], ("M", 3): [0x208],
        ("M", 4): [0x210], ("M", 5): [0x220], ("M", 6): [0x240], ("M", 7): [0x280],
        ("M", 8): [0x300], ("M", 10): [0x400, 0x800, 0xC00]}
    assert not a.is_free(0x200)
    assert a.is_free(0x2FF)  # inside the order-7 block at 0x280
    assert not a.is_free(0x10)  # reserved
    assert a.alloc_pages(1, migratetype=MOV) == 0x202
    assert a.alloc_pages(0, GFP_KERNEL) == 0x100  # unmovable: its own order-8 list
    assert a.alloc_pages(2, GFP_KERNEL) == 0x104
    # no unmovable block of order >= 9: claim the largest movable block (order 10)
    assert a.alloc_pages(9, GFP_KERNEL) == 0x400
    assert a.pageblock_migratetype(0x400) == a.pageblock_migratetype(0x600) == UNMOV
    assert lists(a) == {
        ("U", 0): [0x101], ("U", 1): [0x102], ("U", 3): [0x108], ("U", 4): [0x110],
        ("U", 5): [0x120], ("U", 6): [0x140], ("U", 7): [0x180], ("U", 9): [0x600],
        ("M", 0): [0x201], ("M", 2): [0x204], ("M", 3): [0x208], ("M", 4): [0x210],
        ("M", 5): [0x220], ("M", 6): [0x240], ("M", 7): [0x280], ("M", 8): [0x300],
        ("M", 10): [0x800, 0xC00]}
    assert a.zone(DMA).nr_free == [2, 1, 1, 2, 2, 2, 2, 2, 1, 1, 2]
    assert list(a.allocated_blocks()) == [(0x100, 0), (0x104, 2), (0x200, 0),
                                          (0x202, 1), (0x400, 9)]

    a.free_pages(0x202, 1)  # buddy 0x200 is allocated: no merge
    assert a.free_list(DMA, 1, MOV) == [0x202]
    a.free_pages(0x200, 0)  # merges 0x201..0x300 back into order 9
    a.free_pages(0x104, 2)
    a.free_pages(0x400, 9)  # merges with 0x600 into order 10, on the unmovable list
    a.free_pages(0x100, 0)
    assert lists(a) == {("U", 8): [0x100], ("U", 10): [0x400], ("M", 9): [0x200],
                        ("M", 10): [0x800, 0xC00]}
    assert a.buddyinfo() == small().buddyinfo()
    assert free_set(a) == free_set(small())
    assert list(a.allocated_blocks()) == []


def test_free_goes_to_tail_when_a_merge_is_likely() -> None:
    a = small()
    first = a.alloc_pages(0, GFP_HIGHUSER_MOVABLE)  # 0x200; 0x201 free at order 0
    a.alloc_pages(0, GFP_HIGHUSER_MOVABLE)  # 0x201
    assert a.alloc_pages(0, GFP_HIGHUSER_MOVABLE) == 0x202  # splits 0x202 order 1
    assert a.free_list(DMA, 0, MOV) == [0x203]
    a.free_pages(0x201, 0)
    # buddy 0x200 is allocated; the order-1 buddy of [0x200, 0x202) is not free, so
    # 0x201 goes to the head
    assert a.free_list(DMA, 0, MOV) == [0x201, 0x203]
    assert first == 0x200
    b = small()
    b.alloc_pages(0, GFP_HIGHUSER_MOVABLE)  # 0x200
    b.alloc_pages(0, GFP_HIGHUSER_MOVABLE)  # 0x201
    assert b.alloc_pages(1, GFP_HIGHUSER_MOVABLE) == 0x202
    assert b.alloc_pages(0, GFP_HIGHUSER_MOVABLE) == 0x204  # 0x205, 0x206 now free
    b.free_pages(0x202, 1)  # [0x200, 0x204)'s buddy 0x204 is allocated: head
    assert b.free_list(DMA, 1, MOV) == [0x202, 0x206]
    b.free_pages(0x201, 0)  # 0x200 allocated; [0x200,0x202)'s buddy 0x202 is free
    assert b.free_list(DMA, 0, MOV) == [0x205, 0x201]  # likely merge: tail


def test_lifo_frees_restore_the_exact_boot_state() -> None:
    a = small()
    boot = a.snapshot()
    got = [(a.alloc_pages(o, GFP_HIGHUSER_MOVABLE), o) for o in (0, 3, 10, 1, 10, 0)]
    for pfn, order in reversed(got):
        assert pfn is not None
        a.free_pages(pfn, order)
    assert a.snapshot() == boot


# --- fallbacks ------------------------------------------------------------------------

def test_unmovable_claims_a_small_pageblock_when_half_is_free() -> None:
    a = small()
    for _ in range(3):
        a.alloc_pages(10, GFP_HIGHUSER_MOVABLE)
    assert a.alloc_pages(0, GFP_HIGHUSER_MOVABLE) == 0x200
    assert a.alloc_pages(8, GFP_KERNEL) == 0x100  # the last unmovable block
    # 511 of 512 pages of pageblock 0x200 are free: take the whole pageblock
    assert a.alloc_pages(0, GFP_KERNEL) == 0x201
    assert a.pageblock_migratetype(0x200) == UNMOV
    assert lists(a) == {("U", 1): [0x202], ("U", 2): [0x204], ("U", 3): [0x208],
                        ("U", 4): [0x210], ("U", 5): [0x220], ("U", 6): [0x240],
                        ("U", 7): [0x280], ("U", 8): [0x300]}


def test_unmovable_steals_without_claiming_a_mostly_movable_pageblock() -> None:
    a = small()
    for _ in range(3):
        a.alloc_pages(10, GFP_HIGHUSER_MOVABLE)
    assert a.alloc_pages(0, GFP_HIGHUSER_MOVABLE) == 0x200
    assert a.alloc_pages(8, GFP_HIGHUSER_MOVABLE) == 0x300
    assert a.alloc_pages(7, GFP_HIGHUSER_MOVABLE) == 0x280
    assert a.alloc_pages(8, GFP_KERNEL) == 0x100
    # pageblock 0x200: 63 free, 385 movable, 64 "alike": 127 < 256, so steal the
    # smallest movable block and leave the pageblock movable
    assert a.alloc_pages(0, GFP_KERNEL) == 0x201
    assert a.pageblock_migratetype(0x200) == MOV
    assert a.alloc_pages(1, GFP_KERNEL) == 0x202


def test_movable_steals_from_unmovable_when_nothing_else_is_left() -> None:
    a = small()
    assert [a.alloc_pages(10, GFP_HIGHUSER_MOVABLE) for _ in range(4)] == [
        0x400, 0x800, 0xC00, None]
    assert a.alloc_pages(9, GFP_HIGHUSER_MOVABLE) == 0x200
    assert a.alloc_pages(9, GFP_HIGHUSER_MOVABLE) is None
    assert a.alloc_pages(8, GFP_HIGHUSER_MOVABLE) == 0x100  # stolen, not claimed
    assert a.pageblock_migratetype(0x100) == UNMOV
    assert a.alloc_pages(0, GFP_KERNEL) is None
    assert a.nr_free_pages() == 0
    for pfn, order in list(a.allocated_blocks()):
        a.free_pages(pfn, order)
    assert free_set(a) == free_set(small())
    assert a.nr_free_pages() == 3840


def test_reclaimable_claims_the_largest_block_unmovable_first() -> None:
    a = small()
    # __rmqueue_claim starts at MAX_PAGE_ORDER: the order-10 movable block wins
    # over the order-8 unmovable one
    assert a.alloc_pages(0, GFP.RECLAIMABLE) == 0x400
    assert a.pageblock_migratetype(0x400) == a.pageblock_migratetype(0x600) == RECL
    assert a.free_list(DMA, 0, RECL) == [0x401]
    b = small()
    assert b.alloc_pages(10, GFP_KERNEL) == 0x400
    b.free_pages(0x400, 10)
    assert b.free_list(DMA, 10, UNMOV) == [0x400]
    # at order 10 both lists are non-empty: fallbacks[RECLAIMABLE] tries unmovable
    assert b.alloc_pages(0, GFP.RECLAIMABLE) == 0x400
    assert b.free_list(DMA, 10, MOV) == [0x800, 0xC00]


# --- zones ----------------------------------------------------------------------------

def test_zone_fallback_order_normal_dma32_dma() -> None:
    a = three_zones()
    got = [a.alloc_pages(10, GFP_KERNEL) for _ in range(6)]
    assert got == [MAX_DMA32_PFN, 0x1000, 0x400, 0x800, 0xC00, None]
    assert a.alloc_pages(0, GFP_DMA32) == 0x100  # DMA32 empty: falls back to DMA
    assert a.alloc_pages(0, GFP_DMA) == 0x101


def test_gfp_dma_never_leaves_zone_dma() -> None:
    a = three_zones()
    assert [a.alloc_pages(10, GFP_DMA) for _ in range(4)] == [0x400, 0x800, 0xC00, None]
    assert a.alloc_pages(9, GFP_DMA) == 0x200
    assert a.alloc_pages(8, GFP_DMA) == 0x100
    assert a.alloc_pages(0, GFP_DMA) is None
    assert a.zone(DMA).nr_free_pages() == 0
    assert a.alloc_pages(0, GFP_DMA32) == 0x1000
    assert a.alloc_pages(0, GFP_KERNEL) == MAX_DMA32_PFN


def test_nofragment_pass_prefers_a_lower_zone_to_polluting_normal() -> None:
    a = three_zones()
    assert a.alloc_pages(0, GFP_HIGHUSER_MOVABLE) == MAX_DMA32_PFN
    assert a.alloc_pages(9, GFP_HIGHUSER_MOVABLE) == MAX_DMA32_PFN + 0x200
    # Normal only has small movable blocks: ALLOC_NOFRAGMENT skips them and claims
    # DMA32's whole order-10 block instead
    assert a.alloc_pages(0, GFP_KERNEL) == 0x1000
    assert a.pageblock_migratetype(0x1000) == UNMOV
    assert [a.alloc_pages(9, GFP_DMA) for _ in range(4)] == [0x400, 0x600, 0x800,
                                                             0xA00]
    assert a.alloc_pages(9, GFP_DMA32) == 0x1200
    assert a.alloc_pages(8, GFP_DMA) == 0x100
    assert a.alloc_pages(0, GFP_KERNEL) == 0x1001  # DMA32's unmovable list first
    # drain DMA32 and DMA completely
    assert [a.alloc_pages(o, GFP_DMA32) for o in range(1, 9)] == [
        0x1002, 0x1004, 0x1008, 0x1010, 0x1020, 0x1040, 0x1080, 0x1100]
    assert a.alloc_pages(10, GFP_DMA) == 0xC00
    assert a.alloc_pages(9, GFP_DMA) == 0x200
    # no zone has a whole free pageblock: the second pass, without
    # ALLOC_NOFRAGMENT, claims Normal's partly used pageblock (511 pages free)
    assert a.alloc_pages(0, GFP_KERNEL) == MAX_DMA32_PFN + 1
    assert a.pageblock_migratetype(MAX_DMA32_PFN) == UNMOV


# --- errors leave the state untouched -------------------------------------------------

@pytest.mark.parametrize(("pfn", "order", "message"), [
    (0x203, 0, "double free"),
    (0x201, 0, "inside the order-1 block allocated at 0x200"),
    (0x200, 0, "allocated with order 1"),
    (0x10, 0, "reserved (first 1 MiB"),
    (0x5000, 0, "not RAM"),
    (0x400, 10, "double free"),
])
def test_bad_free_raises_and_changes_nothing(pfn: int, order: int,
                                             message: str) -> None:
    a = small()
    assert a.alloc_pages(1, GFP_HIGHUSER_MOVABLE) == 0x200
    before = a.snapshot()
    with pytest.raises(EmuValueError, match=re.escape(message)):
        a.free_pages(pfn, order)
    assert a.snapshot() == before


def test_double_free_after_a_good_free_raises() -> None:
    a = small()
    pfn = a.alloc_pages(3, GFP_KERNEL)
    assert pfn is not None
    a.free_pages(pfn, 3)
    before = a.snapshot()
    with pytest.raises(EmuValueError, match="double free"):
        a.free_pages(pfn, 3)
    assert a.snapshot() == before


@pytest.mark.parametrize(("args", "kwargs"), [
    ((-1,), {}), (("0",), {}), ((0, GFP.DMA | GFP.DMA32), {}),
    ((0, GFP.MOVABLE | GFP.RECLAIMABLE), {}), ((0,), {"migratetype": 3}),
    ((0, GFP.DMA32 | GFP.HIGHMEM), {}),
])
def test_alloc_rejects_invalid_arguments(args: tuple[object, ...],
                                         kwargs: dict[str, object]) -> None:
    a = small()
    before = a.snapshot()
    with pytest.raises(EmuValueError):
        a.alloc_pages(*args, **kwargs)  # type: ignore[arg-type]
    assert a.snapshot() == before


def test_alloc_above_max_order_returns_none_as_linux_returns_null() -> None:
    a = small()
    before = a.snapshot()
    assert a.alloc_pages(MAX_PAGE_ORDER + 1) is None
    assert a.snapshot() == before


def test_gfp_helpers() -> None:
    assert gfp_zone(GFP_KERNEL) == NORMAL
    assert gfp_zone(GFP_HIGHUSER_MOVABLE) == NORMAL
    assert gfp_zone(GFP_DMA32 | GFP.MOVABLE) == DMA32
    assert gfp_zone(GFP_DMA) == DMA
    assert gfp_migratetype(GFP_KERNEL) == UNMOV
    assert gfp_migratetype(GFP_HIGHUSER_MOVABLE) == MOV
    assert gfp_migratetype(GFP.RECLAIMABLE | 0x100000) == RECL


# --- late reservations ----------------------------------------------------------------

def test_reserve_splits_free_blocks_and_free_reserved_area_merges_back() -> None:
    a = small()
    boot = free_set(a)
    a.reserve(0x401, 2, "boot page tables")
    assert lists(a) == {("U", 8): [0x100], ("M", 9): [0x200, 0x600],
                        ("M", 10): [0x800, 0xC00], ("M", 0): [0x400, 0x403],
                        ("M", 2): [0x404], ("M", 3): [0x408], ("M", 4): [0x410],
                        ("M", 5): [0x420], ("M", 6): [0x440], ("M", 7): [0x480],
                        ("M", 8): [0x500]}
    assert a.zone(DMA).managed_pages == 3840 - 2
    assert a.nr_free_pages() == a.managed_pages()
    assert a.reservations()[1].reason == "boot page tables"
    a.free_reserved_area(0x401, 2)
    assert free_set(a) == boot
    assert a.zone(DMA).managed_pages == 3840
    assert len(a.reservations()) == 1


def test_free_reserved_area_of_part_of_the_first_mib() -> None:
    a = small()
    a.free_reserved_area(0x90, 8)
    assert a.free_list(DMA, 3, UNMOV) == [0x90]
    assert [(r.start_pfn, r.npages) for r in a.reservations()] == [(0, 0x90),
                                                                   (0x98, 0x68)]
    before = a.snapshot()
    with pytest.raises(EmuValueError, match="not RAM"):
        a.free_reserved_area(0x9E, 2)  # 0x9f is the EBDA
    with pytest.raises(EmuValueError, match=r"pfn 0x90 is not reserved \(free\)"):
        a.free_reserved_area(0x8F, 2)
    assert a.snapshot() == before


def test_reserve_of_a_non_free_page_raises_and_changes_nothing() -> None:
    a = small()
    pfn = a.alloc_pages(0, GFP_KERNEL)
    assert pfn == 0x100
    before = a.snapshot()
    with pytest.raises(EmuValueError, match=r"pfn 0x100 is not free \(allocated\)"):
        a.reserve(0x100, 4, "x")
    with pytest.raises(EmuValueError, match=r"pfn 0xff is not free \(reserved: first"):
        a.reserve(0xFF, 4, "x")
    with pytest.raises(EmuValueError, match="not RAM"):
        a.reserve(0x2000, 1, "x")
    assert a.snapshot() == before


# --- text formats ---------------------------------------------------------------------

def test_buddyinfo_exact_linux_format() -> None:
    assert small().buddyinfo() == (
        "Node 0, zone      DMA      0      0      0      0      0      0      0"
        "      0      1      1      3 \n")
    a = three_zones()
    a.alloc_pages(0, GFP_KERNEL)
    assert a.buddyinfo() == (
        "Node 0, zone      DMA      0      0      0      0      0      0      0"
        "      0      1      1      3 \n"
        "Node 0, zone    DMA32      0      0      0      0      0      0      0"
        "      0      0      0      1 \n"
        "Node 0, zone   Normal      1      1      1      1      1      1      1"
        "      1      1      1      0 \n")


def test_pagetypeinfo_exact_linux_format() -> None:
    zeros = "      0" * 11
    assert small().pagetypeinfo() == (
        "Page block order: 9\n"
        "Pages per block:  512\n"
        "\n"
        "Free pages count per migrate type at order       0      1      2      3"
        "      4      5      6      7      8      9     10 \n"
        "Node    0, zone      DMA, type    Unmovable      0      0      0      0"
        "      0      0      0      0      1      0      0 \n"
        "Node    0, zone      DMA, type      Movable      0      0      0      0"
        "      0      0      0      0      0      1      3 \n"
        f"Node    0, zone      DMA, type  Reclaimable{zeros} \n"
        f"Node    0, zone      DMA, type   HighAtomic{zeros} \n"
        f"Node    0, zone      DMA, type      Isolate{zeros} \n"
        "\n"
        "Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic"
        "      Isolate \n"
        "Node 0, zone      DMA            1            7            0            0"
        "            0 \n")


def test_pagetypeinfo_caps_long_lists_at_100000() -> None:
    a = PageAllocator(E820Table.from_ram_size("512G"))
    line = next(ln for ln in a.pagetypeinfo().splitlines()
                if ln.startswith("Node    0, zone   Normal, type      Movable"))
    assert line.endswith("      0 >100000 ")  # 130304 order-10 blocks


# --- the captured machine -------------------------------------------------------------

def test_machine_dmesg_boot_matches_the_machine_dma_zone_exactly() -> None:
    a = PageAllocator(E820Table.parse_dmesg((MACHINE / "dmesg").read_text()))
    buddy = (MACHINE / "buddyinfo").read_text().splitlines()
    assert a.buddyinfo().splitlines()[0] == buddy[0]
    info = (MACHINE / "pagetypeinfo").read_text().splitlines()
    ours = a.pagetypeinfo().splitlines()
    assert ours[:4] == info[:4]
    assert [ln for ln in ours if "zone      DMA" in ln] == \
        [ln for ln in info if "zone      DMA" in ln]
    zoneinfo = (MACHINE / "zoneinfo").read_text()
    sizes = re.findall(r"spanned\s+(\d+)\s+present\s+(\d+)\s+managed\s+(\d+)", zoneinfo)
    starts = re.findall(r"start_pfn:\s+(\d+)", zoneinfo)
    for zone, (spanned, present, managed), start in zip(a.zones, sizes, starts,
                                                         strict=False):
        assert zone.zone_start_pfn == int(start)
        assert zone.spanned_pages == int(spanned)
        assert zone.present_pages == int(present)
        if zone.zone_type == DMA:  # elsewhere the kernel's own reservations differ
            assert zone.managed_pages == int(managed)


def test_one_tib_machine_boots_into_max_order_blocks() -> None:
    a = PageAllocator(E820Table.from_ram_size("1T"))
    normal = a.zone(NORMAL)
    assert normal.nr_free[MAX_PAGE_ORDER] == ((1 << 40) - 3 * G) >> 22
    assert sum(normal.nr_free[:MAX_PAGE_ORDER]) == 0
    assert a.nr_free_pages() == (1 << 28) - 256
    top = a.alloc_pages(0, GFP_KERNEL)
    assert top == MAX_DMA32_PFN
    a.free_pages(top, 0)
    assert a.nr_free_pages() == (1 << 28) - 256


# --- property: against a flat set of allocated pages ----------------------------------

GFPS = [GFP_KERNEL, GFP_DMA32, GFP_DMA, GFP_HIGHUSER_MOVABLE, GFP.RECLAIMABLE]


class BuddyAgainstFlatModel(RuleBasedStateMachine):
    """Random allocs and frees; a plain set of pages is the reference."""

    blocks = Bundle("blocks")

    def __init__(self) -> None:
        super().__init__()
        self.alloc = three_zones()
        self.boot_free = free_set(self.alloc)
        self.pages: set[int] = set()

    @rule(target=blocks, order=st.integers(0, MAX_PAGE_ORDER + 1),
          gfp=st.sampled_from(GFPS))
    def allocate(self, order: int, gfp: GFP) -> tuple[int, int] | None:
        pfn = self.alloc.alloc_pages(order, gfp)
        if pfn is None:
            if order <= MAX_PAGE_ORDER:
                allowed = set(self.alloc.zonelist(gfp))
                assert not any(b.order >= order and b.zone in allowed
                               for b in self.alloc.free_blocks())
            return None
        assert pfn % (1 << order) == 0
        assert self.alloc.zone_of(pfn) in self.alloc.zonelist(gfp)
        new = set(range(pfn, pfn + (1 << order)))
        assert not new & self.pages
        self.pages |= new
        return (pfn, order)

    @rule(block=consumes(blocks))
    def free(self, block: tuple[int, int] | None) -> None:
        if block is None:
            return
        pfn, order = block
        self.alloc.free_pages(pfn, order)
        self.pages -= set(range(pfn, pfn + (1 << order)))

    @rule(pfn=st.integers(0, MAX_DMA32_PFN + 0x500), order=st.integers(0, 3))
    def bad_free(self, pfn: int, order: int) -> None:
        if self.alloc.allocated_order(pfn) == order:
            return
        before = self.alloc.snapshot()
        with pytest.raises(EmuValueError):
            self.alloc.free_pages(pfn, order)
        assert self.alloc.snapshot() == before

    @invariant()
    def conserved_and_disjoint(self) -> None:
        a = self.alloc
        assert len(self.pages) + a.nr_free_pages() == a.managed_pages()
        free = list(a.free_blocks())
        allocated = list(a.allocated_blocks())
        spans = sorted([(b.pfn, b.pfn + (1 << b.order)) for b in free]
                       + [(p, p + (1 << o)) for p, o in allocated])
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert end <= start  # no block overlaps another
        assert sum(1 << o for _, o in allocated) == len(self.pages)
        for p, o in allocated:
            assert p in self.pages
            assert p + (1 << o) - 1 in self.pages
        orders = {}
        for b in free:
            assert b.pfn % (1 << b.order) == 0
            for pb in range(b.pfn, b.pfn + (1 << b.order), 512):
                assert a.pageblock_migratetype(pb) == b.migratetype
            orders[b.pfn] = b.order
        for pfn, order in orders.items():  # fully merged: no free buddy pairs
            if order < MAX_PAGE_ORDER:
                assert orders.get(pfn ^ (1 << order)) != order

    def teardown(self) -> None:
        for pfn, order in list(self.alloc.allocated_blocks()):
            self.alloc.free_pages(pfn, order)
        assert free_set(self.alloc) == self.boot_free


BuddyAgainstFlatModel.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None)
TestBuddyAgainstFlatModel = BuddyAgainstFlatModel.TestCase
