"""kernel_model.process: a user address space with demand paging (issue 6, item 2).

Every expected outcome is derived from the fault path the module models
(``do_anonymous_page`` / ``do_huge_pmd_anonymous_page`` / hugetlb): a first touch maps
exactly one page of the policy's size when a block is free, the kernel half is the
kernel's own tables, and a failed fault changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

import emu
from emu.errors import EmuMemoryError, EmuValueError
from kernel_model import pgtable as pt
from kernel_model.machine import Machine
from kernel_model.page_alloc import GFP_KERNEL
from kernel_model.process import Process

K4, M2, G1 = 1 << 12, 1 << 21, 1 << 30


@dataclass(frozen=True)
class MachineConfig:
    """A small machine.

    ``rodata=False`` stops the boot once the kernel's tables are built (no
    free_initmem, mark_rodata_ro or KFENCE pool): all a process needs, 15x faster.
    """

    ram: str = "256M"
    la57: bool = False
    rodata: bool = False


@pytest.fixture
def boot():
    """Factory: a freshly booted machine (processes change its allocator)."""

    def make(cfg: MachineConfig = MachineConfig()) -> Machine:
        return Machine(ram=cfg.ram, la57=cfg.la57, rodata=cfg.rodata, ncpus=1)

    return make


def user_leaves(p: Process) -> dict[int, int]:
    """Every leaf of the process's user half: va -> page-table level."""
    return {va: level for va, level, _ in p.pt.leaves(0, p.user_limit)}


def translate(m: Machine, p: Process, va: int, access: str = "r") -> emu.Translation:
    """A user access through the machine's MMU under the process's CR3."""
    mmu = m.mmus[0]
    mmu.write_cr3(p.cr3)
    return mmu.translate(va, access, user=True)


def exhaust(m: Machine, down_to: int = 0) -> list[tuple[int, int]]:
    """Allocate every free block of order >= ``down_to``, largest first."""
    held = []
    for order in range(10, down_to - 1, -1):
        while (pfn := m.page_alloc.alloc_pages(order, GFP_KERNEL)) is not None:
            held.append((pfn, order))
    return held


def leave_free(m: Machine, npages: int) -> None:
    """Exhaust the allocator, then give back exactly ``npages`` single pages."""
    held = exhaust(m)
    singles = [h for h in held if h[1] == 0]
    while len(singles) < npages:  # break a bigger block into single pages
        pfn, order = next(h for h in held if h[1] > 0)
        held.remove((pfn, order))
        m.page_alloc.free_pages(pfn, order)
        singles += [
            (m.page_alloc.alloc_pages(0, GFP_KERNEL), 0) for _ in range(1 << order)
        ]
    for pfn, order in singles[:npages]:
        m.page_alloc.free_pages(pfn, order)
    assert m.page_alloc.nr_free_pages() == npages


# ---- demand paging, 4K ---------------------------------------------------------------


def test_4k_demand_paging_maps_exactly_the_touched_pages(boot) -> None:
    m = boot()
    p = Process(m)
    assert user_leaves(p) == {}
    touches = [
        0x400123, 0x400FFF, 0x401000, 0x5FF000, 0x600008,  # same page twice, 2M edge
        0x7FFD8A1B2C30, 0x7FFD8A1B2C28, 0x1FFF000778, 0x0,
    ]  # fmt: skip
    for va in touches:
        if not p.pt.lookup_address(va).entry:
            assert p.handle_fault(va) == pt.PG_LEVEL_4K
    pages = {va & ~(K4 - 1) for va in touches}
    assert user_leaves(p) == dict.fromkeys(pages, pt.PG_LEVEL_4K)
    assert p.footprint() == {"4k": len(pages), "2m": 0, "1g": 0}
    assert p.stats.faults_4k == p.stats.total == len(pages)
    assert p.stats.fallbacks == 0
    for va in touches:  # each page on its own frame, offset kept
        pfn, order = p.frames[va & ~(K4 - 1)]
        assert order == 0
        assert translate(m, p, va, "w").pa == (pfn << 12) | (va & 0xFFF)
    assert len({pfn for pfn, _ in p.frames.values()}) == len(pages)


def test_untouched_user_page_faults_not_present(boot) -> None:
    m = boot()
    p = Process(m)
    p.handle_fault(0x400000)
    with pytest.raises(emu.PageFault) as exc:
        translate(m, p, 0x401000)
    assert exc.value.va == 0x401000
    assert not exc.value.error_code & 1  # P=0: not present
    assert exc.value.error_code & 4  # U=1: user access


def test_faulted_frames_come_from_the_buddy_allocator(boot) -> None:
    m = boot()
    p = Process(m)
    p.handle_fault(0x400000)  # builds the tables of the region
    free = m.page_alloc.nr_free_pages()
    p.handle_fault(0x401000)
    pfn, order = p.frames[0x401000]
    assert m.page_alloc.allocated_order(pfn) == order == 0
    assert m.page_alloc.nr_free_pages() == free - 1


# ---- THP -----------------------------------------------------------------------------


def test_thp_maps_2m_on_first_touch_of_a_2m_region(boot) -> None:
    m = boot()
    p = Process(m, pages="thp")
    assert p.handle_fault(0x600123) == pt.PG_LEVEL_2M
    assert user_leaves(p) == {0x600000: pt.PG_LEVEL_2M}
    pfn, order = p.frames[0x600000]
    assert order == 9
    assert pfn % 512 == 0
    assert m.page_alloc.allocated_order(pfn) == 9
    t = translate(m, p, 0x7FFFF8)  # last bytes of the region: same huge page
    assert t.page_size == M2
    assert t.pa == (pfn << 12) + 0x1FFFF8
    with pytest.raises(EmuValueError, match="already mapped"):
        p.handle_fault(0x7FF000)
    assert p.footprint() == {"4k": 0, "2m": 1, "1g": 0}
    assert (p.stats.faults_2m, p.stats.faults_4k, p.stats.fallbacks) == (1, 0, 0)


def test_thp_falls_back_to_4k_when_no_order_9_block_is_free(boot) -> None:
    m = boot()
    p = Process(m, pages="thp")
    held = exhaust(m, down_to=9)
    assert m.page_alloc.nr_free_pages() > 0  # small blocks are left
    assert p.handle_fault(0x600123) == pt.PG_LEVEL_4K
    assert user_leaves(p) == {0x600000: pt.PG_LEVEL_4K}
    assert (p.stats.faults_4k, p.stats.faults_2m, p.stats.fallbacks) == (1, 0, 1)
    # an order-9 block again: the next fresh region gets a huge page ...
    m.page_alloc.free_pages(*next(h for h in held if h[1] == 9))
    assert p.handle_fault(0xA00000) == pt.PG_LEVEL_2M
    # ... but a region that already has a 4K page stays 4K
    assert p.handle_fault(0x601000) == pt.PG_LEVEL_4K
    assert p.footprint() == {"4k": 2, "2m": 1, "1g": 0}
    assert p.stats.fallbacks == 2


# ---- 1G ------------------------------------------------------------------------------


def test_1g_pages_with_random_placement_map_1g_on_first_touch(boot) -> None:
    m = boot(MachineConfig(ram="4G"))  # [1G, 3G) holds free 1G-aligned runs
    p = Process(m, pages="1g", placement="random", seed=5)
    assert p.handle_fault(0x40000123) == pt.PG_LEVEL_1G
    assert user_leaves(p) == {0x40000000: pt.PG_LEVEL_1G}
    pfn, order = p.frames[0x40000000]
    assert order == 18
    assert pfn % (1 << 18) == 0
    t = translate(m, p, 0x7FFFFFF0)
    assert (t.page_size, t.pa) == (G1, (pfn << 12) + 0x3FFFFFF0)
    assert p.footprint() == {"4k": 0, "2m": 0, "1g": 1}


def test_1g_falls_back_to_2m_when_no_1g_block_is_free(boot) -> None:
    # the kernel image is in the first 1G, the KFENCE pool at the top of the second
    m = boot(MachineConfig(ram="2G", rodata=True))
    p = Process(m, pages="1g", placement="random", seed=5)
    assert p.handle_fault(0x40000123) == pt.PG_LEVEL_2M
    assert user_leaves(p) == {0x40000000: pt.PG_LEVEL_2M}
    assert (p.stats.faults_1g, p.stats.faults_2m, p.stats.fallbacks) == (0, 1, 1)


def test_1g_pages_with_buddy_placement_map_1g_on_first_touch(boot) -> None:
    m = boot(MachineConfig(ram="4G"))
    p = Process(m, pages="1g")
    assert p.handle_fault(0x40000000) == pt.PG_LEVEL_1G


# ---- the kernel half -----------------------------------------------------------------


@pytest.mark.parametrize("la57", [False, True], ids=["4-level", "5-level"])
def test_kernel_half_translates_as_under_the_kernel_cr3(boot, la57) -> None:
    m = boot(MachineConfig(la57=la57))
    p = Process(m)
    assert p.cr3 != m.pt.pgd
    p.handle_fault(0x400000)  # the user half differs ...
    kernel_vas = [
        m.va(0x2000000),  # direct map, 2M page
        m.va(0x9F000),  # direct map, first 2M (4K pages)
        m.va(0xFFF0000 - 8),
        m.highmap_va(m.image.code.start),  # the kernel image mapping
    ]
    for va in kernel_vas:
        mine = emu.walk(m.mem, va, "r", cr3=p.cr3, la57=la57)
        kernel = emu.walk(m.mem, va, "r", cr3=m.pt.pgd, la57=la57)
        assert mine.ok
        assert kernel.ok
        assert (mine.pa, mine.page_size) == (kernel.pa, kernel.page_size)
    top = p.pt.top_level
    half = pt.PTRS_PER_TABLE // 2
    for idx in range(half, pt.PTRS_PER_TABLE):  # ... the kernel half is the same tables
        assert p.pt.read(p.pt.pgd, idx) == m.pt.read(m.pt.pgd, idx)
    assert top == m.pt.top_level
    user = emu.walk(m.mem, 0x400000, "r", cr3=m.pt.pgd, la57=la57)
    assert not user.ok  # the user page is not in the kernel's tables


def test_kernel_direct_map_translates_identically_through_the_mmu(boot) -> None:
    m = boot()
    p = Process(m)
    mmu = m.mmus[0]
    va = m.va(0x3000000) + 0x123
    mmu.write_cr3(m.pt.pgd)
    kernel = mmu.translate(va, "r")
    mmu.flush_all()
    mmu.write_cr3(p.cr3)
    mine = mmu.translate(va, "r")
    assert (mine.pa, mine.page_size) == (kernel.pa, kernel.page_size) == (0x3000123, M2)


# ---- placement -----------------------------------------------------------------------


def _random_frames(boot, seed: int) -> list[int]:
    m = boot()
    p = Process(m, placement="random", seed=seed)
    for va in (0x400000, 0x401000, 0x7FFD00000000, 0x600000):
        p.handle_fault(va)
    return [p.frames[va][0] for va in (0x400000, 0x401000, 0x7FFD00000000, 0x600000)]


def test_random_placement_is_reproducible_for_a_seed(boot) -> None:
    a = _random_frames(boot, seed=7)
    assert _random_frames(boot, seed=7) == a
    assert _random_frames(boot, seed=8) != a
    assert len(set(a)) == 4


def test_random_placement_takes_free_frames_out_of_the_allocator(boot) -> None:
    m = boot()
    p = Process(m, placement="random", seed=7)
    before = m.page_alloc.nr_free_pages()
    p.handle_fault(0x400000)
    pfn, _ = p.frames[0x400000]
    assert not m.page_alloc.is_free(pfn)
    assert m.page_alloc.nr_free_pages() < before
    assert translate(m, p, 0x400010).pa == (pfn << 12) | 0x10


def test_explicit_placement_map_is_honoured(boot) -> None:
    m = boot()
    frames = {0x400: 0x9000, 0x401: 0x8000, 0x7FFD8A1B2: 0x9001}
    p = Process(m, placement=frames)
    for va in (0x400123, 0x401FF8, 0x7FFD8A1B2C30):
        p.handle_fault(va)
        assert translate(m, p, va).pa == (frames[va >> 12] << 12) | (va & 0xFFF)
    assert {va >> 12: pfn for va, (pfn, _) in p.frames.items()} == frames
    assert not any(m.page_alloc.is_free(pfn) for pfn in frames.values())


def test_explicit_placement_without_the_page_raises(boot) -> None:
    m = boot()
    p = Process(m, placement={0x400: 0x9000})
    with pytest.raises(EmuValueError, match="no frame for page 0x402"):
        p.handle_fault(0x402000)
    assert user_leaves(p) == {}


def test_explicit_placement_of_a_used_frame_raises(boot) -> None:
    m = boot()
    image_pfn = m.image.code.start >> 12  # the kernel image: reserved at boot
    p = Process(m, placement={0x400: image_pfn})
    with pytest.raises(EmuValueError, match="placement frame"):
        p.handle_fault(0x400000)
    assert user_leaves(p) == {}
    assert p.footprint() == {"4k": 0, "2m": 0, "1g": 0}


def test_explicit_placement_under_thp_maps_4k_pages(boot) -> None:
    m = boot()
    p = Process(m, pages="thp", placement={0x600: 0x9000})
    assert p.handle_fault(0x600000) == pt.PG_LEVEL_4K
    assert p.frames[0x600000] == (0x9000, 0)


def test_bad_policy_and_placement_raise(boot) -> None:
    m = boot()
    with pytest.raises(EmuValueError, match="page policy"):
        Process(m, pages="2m")
    with pytest.raises(EmuValueError, match="placement"):
        Process(m, placement="first-fit")


# ---- unmap ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pages", "va", "order"), [("4k", 0x401000, 0), ("thp", 0x600000, 9)]
)
def test_unmap_frees_frames_back_to_the_buddy_allocator(boot, pages, va, order) -> None:
    m = boot()
    p = Process(m, pages=pages)
    first = p.handle_fault(0x400000)  # tables of the first 1G exist from now on
    free = m.page_alloc.nr_free_pages()
    p.handle_fault(va)
    pfn, got = p.frames[va]
    assert got == order
    assert m.page_alloc.nr_free_pages() == free - (1 << order)
    assert p.unmap(va, 1 << (12 + order)) == [va]
    assert m.page_alloc.nr_free_pages() == free
    assert m.page_alloc.is_free(pfn)
    assert va not in p.frames
    assert user_leaves(p) == {0x400000: first}
    assert not emu.walk(m.mem, va, "r", cr3=p.cr3, user=True).ok


def test_unmap_drops_only_leaves_inside_the_range(boot) -> None:
    m = boot()
    p = Process(m)
    for va in (0x400000, 0x401000, 0x402000, 0x403000):
        p.handle_fault(va)
    assert sorted(p.unmap(0x401000, 0x2000)) == [0x401000, 0x402000]
    assert user_leaves(p) == dict.fromkeys((0x400000, 0x403000), pt.PG_LEVEL_4K)
    assert p.footprint()["4k"] == 2
    p.handle_fault(0x401000)  # faults in again on the next touch
    assert p.footprint()["4k"] == 3


@pytest.mark.parametrize("placement", ["random", "explicit"])
def test_unmap_frees_randomly_or_explicitly_placed_frames(boot, placement) -> None:
    m = boot()
    p = Process(m, placement={0x400: 0x9000} if placement == "explicit" else placement)
    p.handle_fault(0x400000)
    pfn, _ = p.frames[0x400000]
    assert p.unmap(0x400000, K4) == [0x400000]
    assert m.page_alloc.is_free(pfn)


# ---- faults that are not demand paging -----------------------------------------------


def test_handle_fault_on_a_kernel_address_raises(boot) -> None:
    m = boot()
    p = Process(m)
    for va in (m.va(0x2000000), m.highmap_va(m.image.code.start), 1 << 47, 1 << 63):
        with pytest.raises(EmuValueError, match="not a user address"):
            p.handle_fault(va)
    assert p.stats.total == 0


def test_handle_fault_on_a_mapped_page_raises(boot) -> None:
    m = boot()
    p = Process(m)
    p.handle_fault(0x400000)
    free = m.page_alloc.nr_free_pages()
    with pytest.raises(EmuValueError, match="already mapped"):
        p.handle_fault(0x400FF8)
    assert p.stats.total == 1
    assert m.page_alloc.nr_free_pages() == free


def test_user_half_ends_at_the_paging_mode_limit(boot) -> None:
    p4 = Process(boot())
    assert p4.is_user((1 << 47) - 1)
    assert not p4.is_user(1 << 47)
    p5 = Process(boot(MachineConfig(la57=True)))
    assert p5.is_user(1 << 47)
    assert p5.handle_fault(0x00FF_FFFF_FFFF_F000) == pt.PG_LEVEL_4K
    assert not p5.is_user(1 << 56)


# ---- out of memory -------------------------------------------------------------------


def test_out_of_memory_raises_and_maps_nothing(boot) -> None:
    m = boot(MachineConfig(ram="96M"))
    p = Process(m)
    p.handle_fault(0x400000)
    leave_free(m, 0)
    tables = set(p.pt.tables)
    with pytest.raises(EmuMemoryError):
        p.handle_fault(0x401000)
    with pytest.raises(EmuMemoryError):
        p.handle_fault(0x7F0000000000)  # needs new tables too
    assert user_leaves(p) == {0x400000: pt.PG_LEVEL_4K}
    assert p.pt.tables == tables
    assert list(p.frames) == list(p.mapped) == [0x400000]
    assert p.stats.total == 1
    assert m.page_alloc.nr_free_pages() == 0


def test_out_of_memory_for_tables_rolls_the_tables_back(boot) -> None:
    m = boot(MachineConfig(ram="96M"))
    p = Process(m)
    leave_free(m, 2)  # a fresh 512G slot needs PUD, PMD and PT pages, plus the frame
    tables = set(p.pt.tables)
    with pytest.raises(EmuMemoryError):
        p.handle_fault(0x7F0000000000)
    assert p.pt.tables == tables
    assert p.pt.lookup_address(0x7F0000000000).entry is None
    assert user_leaves(p) == {}
    assert p.frames == p.mapped == {}


@pytest.mark.parametrize("free", [1, 2, 3])
def test_out_of_memory_gives_every_page_back(boot, free) -> None:
    m = boot(MachineConfig(ram="96M"))
    p = Process(m)
    leave_free(m, free)
    with pytest.raises(EmuMemoryError):
        p.handle_fault(0x7F0000000000)
    assert m.page_alloc.nr_free_pages() == free


def test_fault_that_fits_exactly_uses_every_free_page(boot) -> None:
    m = boot(MachineConfig(ram="96M"))
    p = Process(m)
    leave_free(m, 4)  # PUD + PMD + PT + the frame
    assert p.handle_fault(0x7F0000000000) == pt.PG_LEVEL_4K
    assert m.page_alloc.nr_free_pages() == 0
    assert translate(m, p, 0x7F0000000008).pa == (p.frames[0x7F0000000000][0] << 12) | 8
