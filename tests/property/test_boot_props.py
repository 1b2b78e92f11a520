"""Boot invariants on random E820 layouts (linux-mm.md section 1).

Random tables mix RAM with holes, reserved, ACPI and NVS ranges, byte-unaligned
edges, RAM from address 0 or not, and sizes from bytes to TiB.  Each is booted
(``rodata=False``: the state ``init_mem_mapping`` leaves) with gbpages, la57, PTI and
KASLR drawn, and checked against an independent model written from the rules, not
from init.py:

* **mapping.**  memblock = the E820 RAM trimmed to whole pages, touching ranges merged.
  The direct map maps exactly [0, 1M) plus memblock, each page at PAGE_OFFSET + pa.  A
  1G-aligned gigabyte inside one memblock range is a 1G leaf (with gbpages); else a
  2M-aligned 2M block inside one memblock range is a 2M leaf; everything else is 4K.
  (adjust_range_page_size_mask widens every piece of such a block, and every window
  boundary is 2M-aligned except 1M, which cuts only [0, 2M).)  So no large page
  covers a hole.  Every leaf is PAGE_KERNEL (4K) or PAGE_KERNEL_LARGE, G dropped by
  PTI.  Walking sampled addresses through the machine's MMU gives pa = va -
  PAGE_OFFSET where mapped and #PF elsewhere.
* **counters (exact).**  Calls of kernel_physical_mapping_init come from the ISA range
  and from "pieces" = top-down window x memblock range.  A PTE is visited by exactly one
  piece (pieces are disjoint), so count[4K] = number of 4K leaves.  A 2M/1G leaf is
  visited once by every piece that overlaps it (the first creates it, the others keep
  it and phys_pmd_init/phys_pud_init count it again at boot); all sub-ranges of one
  piece that overlap a leaf have the same mask after adjust and are merged, so each
  piece counts it once.  Hence count[level] = sum over leaves of the number of
  overlapping pieces.  The windows come from an independent memory_map_top_down:
  the highest free 2M block of memblock minus the first 1M and the kernel image,
  steps 2M -> 512M -> 128G -> 32T, and the part above the first block last.
* **tables.**  Every table page is referenced exactly once, is allocated in the buddy
  allocator and is RAM outside the first 1M and the kernel image.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

import emu
from emu import arch
from emu.mmu import MMU_RESULT_DTYPE
from kernel_model import Machine
from kernel_model import pgtable as pt
from kernel_model.e820 import E820Table, E820Type, KernelImage, PhysRange
from kernel_model.init import DirectMapBuilder, make_layout

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
MACHINE_EXAMPLES = 100 if PROFILE == "ci" else 25
BUILDER_EXAMPLES = 200 if PROFILE == "ci" else 60

K, M, G, T = 1 << 10, 1 << 20, 1 << 30, 1 << 40
PMD, PUD = 2 * M, 1 * G
ISA_END = 1 * M
IMAGE_SIZE = 20 * M  # a kernel image (code only) of 20 MiB
PAGE_KERNEL = 0x8000000000000163
PAGE_KERNEL_LARGE = 0x80000000000001E3
G_BIT = 1 << 8
LEVEL_SIZE = {pt.PG_LEVEL_4K: 4 * K, pt.PG_LEVEL_2M: PMD, pt.PG_LEVEL_1G: PUD}

Interval = tuple[int, int]


def rdown(x: int, a: int) -> int:
    return x // a * a


def rup(x: int, a: int) -> int:
    return -(-x // a) * a


def normalize(ivs: list[Interval]) -> list[Interval]:
    """Sorted, non-empty, touching/overlapping intervals merged."""
    out: list[Interval] = []
    for s, e in sorted(iv for iv in ivs if iv[0] < iv[1]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def subtract(ivs: list[Interval], cut: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for s, e in normalize(ivs):
        pos = s
        for cs, ce in normalize(cut):
            if ce <= pos or cs >= e:
                continue
            if cs > pos:
                out.append((pos, cs))
            pos = max(pos, ce)
        if pos < e:
            out.append((pos, e))
    return out


def overlap_len(ivs: list[Interval], s: int, e: int) -> int:
    return sum(max(0, min(b, e) - max(a, s)) for a, b in ivs)


# ---- random layouts ------------------------------------------------------------------


@dataclass
class Layout:
    """A random machine: E820 entries (non-overlapping) and the kernel image."""

    entries: list[tuple[int, int, int]]
    image: Interval

    @property
    def ram(self) -> list[Interval]:
        return [(s, e) for s, e, t in self.entries if t == E820Type.RAM]

    def e820(self) -> E820Table:
        return E820Table(self.entries)


ALIGNS = (1, 0x400, 4 * K, PMD, PUD)
GAP_TYPES = (None, E820Type.RESERVED, E820Type.ACPI, E820Type.NVS)


@st.composite
def sizes(draw: st.DrawFn, cap: int) -> int:
    """Log-uniform sizes from 1 byte up to ``cap`` (at most 2 TiB), often aligned."""
    top_bits = min(cap, 2 * T).bit_length()
    bits = draw(st.integers(1, top_bits))
    size = min(draw(st.integers(1 << (bits - 1), (1 << bits) - 1)), cap)
    align = draw(st.sampled_from(ALIGNS))
    return max(rdown(size, align), 1) if size > align else size


@st.composite
def layouts(draw: st.DrawFn, total_cap: int) -> Layout:
    """RAM segments separated by gaps (unlisted, reserved, ACPI or NVS); one segment
    holds the kernel image at a 2M-aligned address above 1M."""
    pos = draw(st.sampled_from((0, 0, 0x1000, 0x9FC00, 1 * M, 16 * M, 4 * G)))
    n = draw(st.integers(1, 6))
    holder = draw(st.integers(0, n - 1))
    entries: list[tuple[int, int, int]] = []
    image: Interval | None = None
    budget = total_cap
    for i in range(n):
        if i or pos:
            gap = draw(sizes(cap=64 * G))
            gap_type = draw(st.sampled_from(GAP_TYPES))
            if gap_type is not None:
                entries.append((pos, pos + gap, gap_type))
            pos += gap
        size = draw(sizes(cap=max(budget, 1)))
        if i == holder:
            base = rup(max(pos, ISA_END), PMD) + PMD * draw(st.integers(0, 3))
            size = max(size, base + IMAGE_SIZE - pos + draw(st.integers(0, 64 * M)))
            image = (base, base + IMAGE_SIZE)
        budget -= size
        entries.append((pos, pos + size, E820Type.RAM))
        pos += size
    if draw(st.booleans()):  # something listed above the RAM (ACPI tables count too)
        entries.append(
            (pos, pos + draw(sizes(cap=4 * G)), draw(st.sampled_from(GAP_TYPES[1:])))
        )
    assert image is not None
    return Layout(entries, image)


@dataclass(frozen=True)
class Config:
    gbpages: bool
    la57: bool
    pti: bool
    kaslr_seed: int | None


configs = st.builds(
    Config,
    gbpages=st.booleans(),
    la57=st.booleans(),
    pti=st.booleans(),
    kaslr_seed=st.none() | st.integers(0, 2**32 - 1),
)


@st.composite
def machines(draw: st.DrawFn) -> tuple[Layout, Config]:
    cfg = draw(configs)
    # without gbpages every 2M leaf is a table entry: keep those machines small
    lay = draw(layouts(total_cap=(4 * T if cfg.gbpages else 32 * G)))
    return lay, cfg


# ---- the independent model -----------------------------------------------------------


@dataclass
class Expected:
    memblock: list[Interval]
    leaves: dict[int, list[Interval]]  # level -> normalized byte intervals
    windows: list[Interval]
    counts: list[int]

    def mapped(self, pa: int) -> bool:
        return pa < ISA_END or any(s <= pa < e for s, e in self.memblock)


def memblock_of(lay: Layout) -> list[Interval]:
    """e820__memblock_setup + memblock_trim_memory(PAGE_SIZE): whole pages of RAM."""
    pages = [(rup(s, 4 * K), rdown(e, 4 * K)) for s, e in lay.ram]
    return normalize(pages)


def max_pfn_end(lay: Layout) -> int:
    """e820__end_of_ram_pfn(): the end of the highest RAM or ACPI entry, in bytes."""
    ends = [
        rdown(e, 4 * K) for s, e, t in lay.entries if t in (E820Type.RAM, E820Type.ACPI)
    ]
    return max(ends)


def top_down_windows(
    memblock: list[Interval], reserved: list[Interval], map_end: int
) -> list[Interval]:
    """memory_map_top_down(1M, map_end) as linux-mm.md 1.3 describes it."""
    addr = 0  # memblock_phys_alloc_range() failing returns 0
    for s, e in reversed(subtract(memblock, reserved)):
        lo, hi = max(s, ISA_END), min(e, map_end)
        if rdown(hi, PMD) - PMD >= lo:
            addr = rdown(hi, PMD) - PMD
            break
    real_end = addr + PMD
    step, last_start, mapped = PMD, real_end, 0
    windows = []
    while last_start > ISA_END:
        start = (
            max(rdown(last_start - 1, step), ISA_END) if last_start > step else ISA_END
        )
        windows.append((start, last_start))
        mapped += overlap_len(memblock, start, last_start)
        last_start = start
        if mapped >= step:
            step <<= 8
    if real_end < map_end:
        windows.append((real_end, map_end))
    return windows


def expected_state(lay: Layout, cfg: Config) -> Expected:
    mb = memblock_of(lay)
    l1g = [(rup(s, PUD), rdown(e, PUD)) for s, e in mb] if cfg.gbpages else []
    l1g = normalize(l1g)
    l2m = subtract([(rup(s, PMD), rdown(e, PMD)) for s, e in mb], l1g)
    l4k = subtract([(0, ISA_END), *mb], [*l1g, *l2m])
    reserved = [(0, ISA_END), lay.image]
    windows = top_down_windows(mb, reserved, max_pfn_end(lay))
    pieces = [(0, ISA_END)]
    for ws, we in windows:
        pieces += [(max(s, ws), min(e, we)) for s, e in mb if max(s, ws) < min(e, we)]

    def visits(leaves: list[Interval], size: int) -> int:
        n = 0
        for ps, pe in pieces:
            for a, b in leaves:
                lo, hi = max(a, rdown(ps, size)), min(b, rup(pe, size))
                n += max(0, hi - lo) // size
        return n

    counts = [
        0,
        sum(e - s for s, e in l4k) // (4 * K),
        visits(l2m, PMD),
        visits(l1g, PUD),
        0,
        0,
    ]
    ran = [w for w in windows if overlap_len(mb, *w)]
    return Expected(
        mb, {pt.PG_LEVEL_4K: l4k, pt.PG_LEVEL_2M: l2m, pt.PG_LEVEL_1G: l1g}, ran, counts
    )


# ---- checks --------------------------------------------------------------------------


def check_direct_map(
    tables: pt.PageTables, page_offset: int, end_va: int, exp: Expected, cfg: Config
) -> None:
    """Leaves of [PAGE_OFFSET, end_va) are exactly the expected ones, with the flags."""
    g = 0 if cfg.pti else G_BIT
    want_flags = {
        pt.PG_LEVEL_4K: PAGE_KERNEL & ~G_BIT | g,
        pt.PG_LEVEL_2M: PAGE_KERNEL_LARGE & ~G_BIT | g,
        pt.PG_LEVEL_1G: PAGE_KERNEL_LARGE & ~G_BIT | g,
    }
    got: dict[int, list[Interval]] = {lvl: [] for lvl in LEVEL_SIZE}
    for va, level, entry in tables.leaves(page_offset, end_va):
        pa = va - page_offset
        assert level in LEVEL_SIZE, f"leaf at level {level} for pa {pa:#x}"
        assert entry == pa | want_flags[level], (
            f"pa {pa:#x} level {level}: entry {entry:#x}"
        )
        got[level].append((pa, pa + LEVEL_SIZE[level]))
    for level in LEVEL_SIZE:
        assert normalize(got[level]) == exp.leaves[level], f"level {level}"
    # no large page covers a hole: each 2M/1G leaf lies inside one memblock range
    for s, e in got[pt.PG_LEVEL_2M] + got[pt.PG_LEVEL_1G]:
        assert any(a <= s and e <= b for a, b in exp.memblock), f"[{s:#x}, {e:#x})"


def check_counts(count: list[int], exp: Expected) -> None:
    leaves = [0] + [
        sum(e - s for s, e in exp.leaves[lvl]) // LEVEL_SIZE[lvl]
        for lvl in (pt.PG_LEVEL_4K, pt.PG_LEVEL_2M, pt.PG_LEVEL_1G)
    ]
    for lvl in (pt.PG_LEVEL_4K, pt.PG_LEVEL_2M, pt.PG_LEVEL_1G):
        assert count[lvl] >= leaves[lvl]
    assert count == exp.counts


def sample_addresses(lay: Layout, exp: Expected, rng: random.Random) -> list[int]:
    top = max(e for _, e, _ in lay.entries) + 3 * G
    pts = {0, ISA_END - 1, ISA_END, top}
    for s, e, _ in lay.entries:
        for x in (s, e, s + 4 * K, e - 4 * K, rup(s, PMD), rup(s, PUD), rdown(e, PMD)):
            pts.update((x - 1, x, x + 1))
    for s, e in exp.memblock:
        pts.update(rng.randrange(s, e) for _ in range(3))
    pts.update(rng.randrange(0, top) for _ in range(64))
    return sorted(p for p in pts if 0 <= p < 1 << 46)


def check_mmu_walk(m: Machine, lay: Layout, exp: Expected, rng: random.Random) -> None:
    pas = np.array(sample_addresses(lay, exp, rng), dtype=np.uint64)
    vas = pas + np.uint64(m.layout.page_offset)
    kinds = np.array([rng.randrange(2) for _ in range(pas.size)], dtype=np.uint8)
    out = np.zeros(pas.size, dtype=MMU_RESULT_DTYPE)
    m.mmus[0].run(vas, kinds, out=out)
    for i, pa in enumerate(pas.tolist()):
        if exp.mapped(pa):
            assert out["vector"][i] == arch.VEC_NONE, f"pa {pa:#x} faulted"
            assert int(out["pa"][i]) == pa
        else:
            assert out["vector"][i] == arch.VEC_PF, f"hole pa {pa:#x} translated"


def check_tables(m: Machine, lay: Layout, exp: Expected) -> None:
    refs = m.pt.table_refs()
    assert set(refs) == m.pt.tables
    assert all(n == 1 for n in refs.values())
    for pa in m.pt.tables:
        assert m.page_alloc.allocated_order(pa >> 12) == 0, f"table {pa:#x}"
        assert exp.mapped(pa)
        assert pa >= ISA_END
        assert not lay.image[0] <= pa < lay.image[1]


# ---- the properties ------------------------------------------------------------------


@settings(max_examples=MACHINE_EXAMPLES)
@given(machines(), st.integers(0, 2**32 - 1))
@example(  # RAM beyond 1T: the direct map spans PML4 slots 273..275
    (
        Layout(
            [(0, 0x9FC00, E820Type.RAM), (1 * M, 1536 * G, E820Type.RAM)],
            (16 * M, 36 * M),
        ),
        Config(True, False, False, None),
    ),
    0,
)
def test_boot_invariants_on_random_layouts(
    case: tuple[Layout, Config], seed: int
) -> None:
    lay, cfg = case
    m = Machine(
        e820=lay.e820(),
        kernel_image=KernelImage(code=PhysRange(*lay.image)),
        gbpages=cfg.gbpages,
        la57=cfg.la57,
        pti=cfg.pti,
        kaslr_seed=cfg.kaslr_seed,
        ncpus=1,
        rodata=False,
    )
    exp = expected_state(lay, cfg)
    assert m.direct.direct_gbpages == cfg.gbpages
    assert m.direct.windows == exp.windows
    check_counts(m.direct.direct_pages_count, exp)
    check_direct_map(m.pt, m.layout.page_offset, m.layout.vmalloc_start, exp, cfg)
    check_mmu_walk(m, lay, exp, random.Random(seed))
    check_tables(m, lay, exp)


class _Bump:
    def __init__(self) -> None:
        self.next = 1 << 50  # far above any RAM drawn: tables never alias data

    def alloc(self) -> int:
        self.next += 4 * K
        return self.next

    def free(self, pa: int) -> None:  # pragma: no cover
        raise AssertionError(f"free {pa:#x}")


@settings(max_examples=BUILDER_EXAMPLES)
@given(machines())
def test_direct_map_builder_on_random_layouts(case: tuple[Layout, Config]) -> None:
    # the builder alone (no buddy allocator): cheap enough for many more layouts
    lay, cfg = case
    bump = _Bump()
    tables = pt.PageTables(emu.PhysMem(), bump.alloc, bump.free, la57=cfg.la57)
    layout = make_layout(cfg.la57)
    prot = PAGE_KERNEL & ~(G_BIT if cfg.pti else 0)
    img = (rdown(lay.image[0], PMD), rup(lay.image[1], PMD))
    st_ = DirectMapBuilder(
        tables,
        lay.e820(),
        layout,
        prot,
        gbpages=cfg.gbpages,
        reserved=[(0, ISA_END), img],
    ).init_mem_mapping()
    exp = expected_state(lay, cfg)
    assert st_.windows == exp.windows
    check_counts(st_.direct_pages_count, exp)
    check_direct_map(tables, layout.page_offset, layout.vmalloc_start, exp, cfg)
    refs = tables.table_refs()
    assert set(refs) == tables.tables
    assert all(n == 1 for n in refs.values())
