"""ptdump's text format on hand-built kernel page tables (linux-mm.md section 5).

Every expected line here and in ``tests/golden/ptdump_handbuilt_*.txt`` was written by
hand from the rules of linux-mm.md 5.3/5.4 (see ``tests/golden/README.md``), never
produced by ``kernel_model.ptdump``.  The tables are written entry by entry into an
``emu.PhysMem`` through ``PageTables`` with a bump allocator, so each test says exactly
which entries exist.

Entry values used below (section 0 of linux-mm.md):

* ``0x8000000000000163``: P RW A D G NX, the direct map's 4K PTE;
* ``0x...143`` (A clear), ``0x...123`` (D clear), ``0x...363`` (bit 9 set): the same
  printed columns, different ``PTE_FLAGS_MASK`` bits;
* ``0x...1e3``: P RW A D PSE G NX, a large leaf (on a PTE, bit 7 is PAT instead);
* ``0x67`` / ``0x65``: P RW USR A D / P USR A D, boot-time table entries.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import emu
from kernel_model import pgtable as pt
from kernel_model.ptdump import format_prot, format_size, ptdump

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

NX = 1 << 63
PTE_KERNEL = NX | 0x163  # P RW A D G NX
LARGE_KERNEL = NX | 0x1E3  # ... and PSE
TABLE = 0x67  # _PAGE_TABLE: P RW USR A D
TABLE_RO = 0x65  # a table entry without RW: P USR A D
NP = " " * 30

PO_4 = 0xFFFF888000000000  # PAGE_OFFSET, 4-level
PO_5 = 0xFF11000000000000  # PAGE_OFFSET, 5-level
MARKERS_4 = [
    (0, "User Space"),
    (1 << 63, "Kernel Space"),
    (PO_4, "Low Kernel Mapping"),
    (0xFFFFC90000000000, "vmalloc() Area"),
    (0xFFFFFFFF80000000, "High Kernel Mapping"),
]
MARKERS_5 = [
    (0, "User Space"),
    (1 << 63, "Kernel Space"),
    (PO_5, "Low Kernel Mapping"),
    (0xFFA0000000000000, "vmalloc() Area"),
    (0xFFFFFFFF80000000, "High Kernel Mapping"),
]


class BumpTables:
    """Kernel page tables in a fresh PhysMem, table pages from a bump allocator."""

    def __init__(self, la57: bool = False, base: int = 0x100000) -> None:
        self.mem = emu.PhysMem()
        self.next = base
        self.t = pt.PageTables(self.mem, self._alloc, self._free, la57=la57)

    def _alloc(self) -> int:
        pa = self.next
        self.next += 4096
        return pa

    def _free(self, pa: int) -> None:  # pragma: no cover - never freed here
        raise AssertionError(f"unexpected free of {pa:#x}")

    def table(self, parent: int, idx: int, flags: int = TABLE) -> int:
        """A new table page hooked at entry ``idx`` of ``parent``."""
        child = self.t.alloc_table()
        self.t.write(parent, idx, child | flags)
        return child

    def dump(self, markers: list[tuple[int, str]]) -> str:
        return ptdump(self.t, markers)[0]


def build_handbuilt(la57: bool) -> BumpTables:
    """The tables of ptdump_handbuilt_{4level,la57}.txt (same leaves in both modes)."""
    b = BumpTables(la57=la57)
    t = b.t
    pgd = t.pgd
    # user space: PGD[0] (-> P4D[0]) -> PUD[0] -> PMD[2], PMD[3]
    top = b.table(pgd, 0)
    u_pud = b.table(top, 0) if la57 else top
    u_pmd = b.table(u_pud, 0)
    u_pte = b.table(u_pmd, 2)
    u_pte2 = b.table(u_pmd, 3, TABLE_RO)  # RW dropped on the way: a new effective prot
    t.write(u_pte, 0, 0x1000000 | 0x67)  # USR RW x
    t.write(u_pte, 1, 0x1001000 | 0x65)  # USR ro x
    t.write(u_pte, 2, 0x1002000 | NX | 0x65)  # USR ro NX
    t.write(u_pte, 511, 0x1003000 | PTE_KERNEL)
    t.write(u_pte2, 0, 0x1004000 | PTE_KERNEL)  # same flags, different effective RW
    # the direct map's slot: PGD[273] (-> P4D[0]) -> PUD -> PMD[0] -> PTE
    top = b.table(pgd, 273)
    k_pud = b.table(top, 0) if la57 else top
    k_pmd = b.table(k_pud, 0)
    k_pte = b.table(k_pmd, 0)
    ptes = [PTE_KERNEL] * 4 + [
        NX | 0x143,
        NX | 0x143,  # A clear
        NX | 0x123,  # D clear
        NX | 0x363,  # bit 9 (_PAGE_SOFTW1 / _PAGE_CPA_TEST)
        NX | 0x1E3,  # bit 7 on a PTE: PAT
        NX | 0x17B,  # PWT PCD
        NX | 0x162,  # not present, otherwise the same flags
    ]
    for i, flags in enumerate(ptes):
        t.write(k_pte, i, (i << 12) | flags)
    t.write(k_pmd, 1, 0x200000 | LARGE_KERNEL)
    t.write(k_pmd, 2, 0x400000 | LARGE_KERNEL)
    t.write(k_pmd, 3, 0x600000 | NX | 0x1E1)  # ro
    t.write(k_pmd, 4, 0x800000 | NX | 0x1E2)  # a non-present 2M leaf
    t.write(k_pud, 1, (1 << 30) | LARGE_KERNEL)
    t.write(k_pud, 2, (2 << 30) | LARGE_KERNEL)
    t.write(k_pud, 3, (3 << 30) | 0x1E3)  # executable
    t.write(k_pud, 4, (4 << 30) | NX | 0x1EF)  # USR PWT
    # the high kernel map: PGD[511] (-> P4D[511]) -> PUD[510] -> PMD[8], PMD[9]
    top = b.table(pgd, 511)
    h_pud = b.table(top, 511) if la57 else top
    h_pmd = b.table(h_pud, 510)
    t.write(h_pmd, 8, 0x1000000 | 0x1A1)  # ro x GLB PSE
    t.write(h_pmd, 9, 0x1200000 | 0x1A1)
    return b


def golden(name: str) -> str:
    return (GOLDEN / name).read_text()


# ---- the size column -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (512, "      512B "),
        (4096, "        4K "),
        (0x1F5000, "     2004K "),
        (2 << 20, "        2M "),
        (1022 << 20, "     1022M "),
        (1 << 30, "        1G "),
        (503 << 30, "      503G "),
        (64 << 40, "       64T "),
        (60 << 50, "       60P "),
        (1 << 60, "        1E "),
        (3 << 61, "        6E "),  # E is the last unit: no further division
        (0xFFFF878000000000, "17179745792G "),  # wider than 9: not truncated
    ],
)
def test_size_column_uses_largest_dividing_unit(delta: int, text: str) -> None:
    assert format_size(delta) == text


def test_size_column_of_zero_runs_to_the_last_unit() -> None:
    # dump_pagetables.c: while (!(delta & 1023) && unit[1]) -- 0 is divisible by 1024
    assert format_size(0) == "        0E "


# ---- the flag columns (printk_prot) --------------------------------------------------


@pytest.mark.parametrize(
    ("prot", "depth", "text"),
    [
        (PTE_KERNEL, 4, "    RW                 GLB NX "),
        (LARGE_KERNEL, 3, "    RW         PSE     GLB NX "),
        (LARGE_KERNEL, 2, "    RW         PSE     GLB NX "),
        (NX | 0x121, 4, "    ro                 GLB NX "),
        (0x1E3, 2, "    RW         PSE     GLB x  "),
        (0x67, 4, "USR RW                     x  "),
        (NX | 0x17B, 4, "    RW PWT PCD         GLB NX "),
        (NX | 0x1E3, 4, "    RW             PAT GLB NX "),  # bit 7 at pte: PAT, not PSE
        (NX | 0x11E3, 3, "    RW         PSE PAT GLB NX "),  # bit 12 at pmd
        (NX | 0x11E3, 2, "    RW         PSE PAT GLB NX "),  # bit 12 at pud
        (
            NX | 0x1163,
            4,
            "    RW                 GLB NX ",
        ),  # bit 12 means nothing at pte
        (NX | 0x162, 4, NP),
        (0x1E2, 3, NP),
    ],
)
def test_flag_columns(prot: int, depth: int, text: str) -> None:
    assert format_prot(prot, depth) == text


# ---- whole dumps ---------------------------------------------------------------------


def test_handbuilt_dump_la57_matches_golden() -> None:
    assert build_handbuilt(la57=True).dump(MARKERS_5) == golden(
        "ptdump_handbuilt_la57.txt"
    )


def test_handbuilt_dump_4level_matches_golden() -> None:
    assert build_handbuilt(la57=False).dump(MARKERS_4) == golden(
        "ptdump_handbuilt_4level.txt"
    )


def test_dump_of_empty_4level_tables_names_top_level_holes_pgd() -> None:
    # With 4-level paging PTRS_PER_P4D is 1 at run time, so mm/pagewalk.c's
    # real_depth(1) reports a none top-level entry at depth 0: "pgd".
    b = BumpTables(la57=False)
    assert b.dump(MARKERS_4[:2]) == (
        "---[ User Space ]---\n"
        f"0x0000000000000000-0xffff880000000000    16777096T {NP}pgd\n"
        "---[ Kernel Space ]---\n"
        f"0xffff880000000000-0x0000000000000000         120T {NP}pgd\n"
    )


def test_dump_of_empty_la57_tables() -> None:
    b = BumpTables(la57=True)
    assert b.dump(MARKERS_5[:2]) == (
        "---[ User Space ]---\n"
        f"0x0000000000000000-0xff10000000000000       16324P {NP}pgd\n"
        "---[ Kernel Space ]---\n"
        f"0xff10000000000000-0x0000000000000000          60P {NP}pgd\n"
    )


# ---- focused run rules (only lines below the top level, so they hold in both modes) --


def kernel_pte_table(b: BumpTables) -> int:
    """PGD[273] -> PUD -> PMD[0] -> PTE table at PAGE_OFFSET (4-level)."""
    k_pud = b.table(b.t.pgd, 273)
    k_pmd = b.table(k_pud, 0)
    return b.table(k_pmd, 0)


def lines_at(text: str, level: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.endswith(level)]


@pytest.mark.parametrize(
    ("second", "why"),
    [
        (NX | 0x143, "A clear"),
        (NX | 0x123, "D clear"),
        (NX | 0x363, "bit 9 set"),
        (NX | 0x963, "bit 11 (_PAGE_KERNEL_4K) set"),
        (NX | (1 << 52) | 0x163, "bit 52"),
    ],
)
def test_unprinted_bit_breaks_run_into_identical_looking_lines(
    second: int, why: str
) -> None:
    b = BumpTables()
    pte = kernel_pte_table(b)
    b.t.write(pte, 0, 0x0000 | PTE_KERNEL)
    b.t.write(pte, 1, 0x1000 | PTE_KERNEL)
    b.t.write(pte, 2, 0x2000 | second)
    b.t.write(pte, 3, 0x3000 | second)
    b.t.write(pte, 4, 0x4000 | PTE_KERNEL)
    flags = "    RW                 GLB NX pte"
    assert lines_at(b.dump(MARKERS_4), "pte") == [
        f"0xffff888000000000-0xffff888000002000           8K {flags}",
        f"0xffff888000002000-0xffff888000004000           8K {flags}",
        f"0xffff888000004000-0xffff888000005000           4K {flags}",
        f"0xffff888000005000-0xffff888000200000        2028K {NP}pte",
    ], why


def test_same_flags_different_effective_prot_break_run() -> None:
    # two PTE tables side by side; the second is reached through a table entry
    # without RW, so the effective prot (RW ANDed down the levels) differs
    b = BumpTables()
    k_pud = b.table(b.t.pgd, 273)
    k_pmd = b.table(k_pud, 0)
    first = b.table(k_pmd, 0)
    second = b.table(k_pmd, 1, TABLE_RO)
    for i in range(512):
        b.t.write(first, i, (i << 12) | PTE_KERNEL)
        b.t.write(second, i, ((512 + i) << 12) | PTE_KERNEL)
    flags = "    RW                 GLB NX pte"
    assert lines_at(b.dump(MARKERS_4), "pte") == [
        f"0xffff888000000000-0xffff888000200000           2M {flags}",
        f"0xffff888000200000-0xffff888000400000           2M {flags}",
    ]


def test_pat_bit7_shows_on_4k_pte() -> None:
    b = BumpTables()
    pte = kernel_pte_table(b)
    b.t.write(pte, 0, 0x0000 | NX | 0x1E3)  # PAT (bit 7) on a 4K page
    assert lines_at(b.dump(MARKERS_4), "pte")[0] == (
        "0xffff888000000000-0xffff888000001000           4K"
        "     RW             PAT GLB NX pte"
    )


def test_large_leaf_pat_bit12_is_not_a_ptdump_flag() -> None:
    # note_page() keeps val & PTE_FLAGS_MASK; PTE_FLAGS_MASK = ~PTE_PFN_MASK, and bit 12
    # is inside PTE_PFN_MASK (linux-mm.md 0 and 5.3).  So on x86 a 2M leaf's PAT bit
    # (bit 12) never reaches printk_prot: no "PAT" column, and it breaks no run.
    b = BumpTables()
    k_pud = b.table(b.t.pgd, 273)
    k_pmd = b.table(k_pud, 0)
    b.t.write(k_pmd, 0, 0x000000 | LARGE_KERNEL)
    b.t.write(k_pmd, 1, 0x200000 | LARGE_KERNEL | (1 << 12))
    b.t.write(k_pmd, 2, 0x400000 | LARGE_KERNEL)
    assert lines_at(b.dump(MARKERS_4), "pmd")[0] == (
        "0xffff888000000000-0xffff888000600000           6M"
        "     RW         PSE     GLB NX pmd"
    )


def test_1g_run_and_non_present_1g_run() -> None:
    b = BumpTables()
    k_pud = b.table(b.t.pgd, 273)
    for i in range(3):
        b.t.write(k_pud, i, (i << 30) | LARGE_KERNEL)
    b.t.write(k_pud, 3, (3 << 30) | NX | 0x1E2)  # set_memory_np on a whole 1G page
    b.t.write(k_pud, 4, (4 << 30) | NX | 0x1E2)
    assert lines_at(b.dump(MARKERS_4), "pud") == [
        "0xffff888000000000-0xffff8880c0000000           3G"
        "     RW         PSE     GLB NX pud",
        f"0xffff8880c0000000-0xffff888140000000           2G {NP}pud",
        f"0xffff888140000000-0xffff890000000000         507G {NP}pud",
    ]


def test_two_markers_inside_one_entry_advance_one_per_note() -> None:
    # note_page() advances at most one marker per call; with both markers inside the
    # PMD entry [2M, 4M) the first header comes at the note for 4M, the second at 6M.
    b = BumpTables()
    u_pud = b.table(b.t.pgd, 0)
    b.table(u_pud, 0)  # an empty PMD table: 512 pmd holes
    markers = [
        (0, "User Space"),
        (0x300000, "M1"),
        (0x380000, "M2"),
        (1 << 63, "Kernel Space"),
    ]
    assert b.dump(markers).splitlines()[:7] == [
        "---[ User Space ]---",
        f"0x0000000000000000-0x0000000000400000           4M {NP}pmd",
        "---[ M1 ]---",
        f"0x0000000000400000-0x0000000000600000           2M {NP}pmd",
        "---[ M2 ]---",
        f"0x0000000000600000-0x0000000040000000        1018M {NP}pmd",
        f"0x0000000040000000-0x0000008000000000         511G {NP}pud",
    ]


def test_markers_inside_last_entry_of_a_run_advance_on_following_entries() -> None:
    # both markers lie in the last entry of a leaf run; the next run starts with a
    # break at 4M (new flags: M1), and its second entry, at 6M, brings M2
    b = BumpTables()
    u_pud = b.table(b.t.pgd, 0)
    u_pmd = b.table(u_pud, 0)
    b.t.write(u_pmd, 0, 0x000000 | LARGE_KERNEL)
    b.t.write(u_pmd, 1, 0x200000 | LARGE_KERNEL)
    markers = [
        (0, "User Space"),
        (0x300000, "M1"),
        (0x380000, "M2"),
        (1 << 63, "Kernel Space"),
    ]
    assert b.dump(markers).splitlines()[:7] == [
        "---[ User Space ]---",
        "0x0000000000000000-0x0000000000400000           4M"
        "     RW         PSE     GLB NX pmd",
        "---[ M1 ]---",
        f"0x0000000000400000-0x0000000000600000           2M {NP}pmd",
        "---[ M2 ]---",
        f"0x0000000000600000-0x0000000040000000        1018M {NP}pmd",
        f"0x0000000040000000-0x0000008000000000         511G {NP}pud",
    ]


def test_marker_inside_a_leaf_run_breaks_at_next_entry() -> None:
    # a marker that is not entry-aligned takes effect at the first entry at or above it
    b = BumpTables()
    k_pud = b.table(b.t.pgd, 273)
    k_pmd = b.table(k_pud, 0)
    for i in range(4):
        b.t.write(k_pmd, i, (i << 21) | LARGE_KERNEL)
    markers = [*MARKERS_4[:3], (PO_4 + 0x280000, "Mid"), *MARKERS_4[3:]]
    flags = "    RW         PSE     GLB NX pmd"
    text = b.dump(markers).splitlines()
    start = text.index("---[ Low Kernel Mapping ]---")
    assert text[start : start + 5] == [
        "---[ Low Kernel Mapping ]---",
        f"0xffff888000000000-0xffff888000400000           4M {flags}",
        "---[ Mid ]---",
        f"0xffff888000400000-0xffff888000800000           4M {flags}",
        f"0xffff888000800000-0xffff888040000000        1016M {NP}pmd",
    ]


def test_dump_ends_with_run_up_to_address_zero() -> None:
    text = build_handbuilt(la57=False).dump(MARKERS_4)
    assert text.endswith(
        f"0xffffffffc0000000-0x0000000000000000           1G {NP}pud\n"
    )


def test_marker_headers_appear_once_each_in_order() -> None:
    text = build_handbuilt(la57=True).dump(MARKERS_5)
    headers = [ln for ln in text.splitlines() if ln.startswith("---[")]
    assert headers == [f"---[ {name} ]---" for _, name in MARKERS_5]


def test_runs_tile_the_address_space() -> None:
    # every printed run starts where the previous one ended, from 0 around to 2^64
    for la57, markers in ((False, MARKERS_4), (True, MARKERS_5)):
        text = build_handbuilt(la57=la57).dump(markers)
        runs = [
            ln.split()[0].split("-")
            for ln in text.splitlines()
            if not ln.startswith("---[")
        ]
        assert runs[0][0] == "0x0000000000000000"
        assert runs[-1][1] == "0x0000000000000000"
        for (_, end), (start, _) in itertools.pairwise(runs):
            assert end == start


def test_wx_count_uses_effective_prot_of_every_noted_entry() -> None:
    # linux-mm.md 5.3 step 1 / note_wx(): a finished run counts when its effective
    # prot has RW and not NX.  The effective prot of a non-zero entry comes from its
    # bits whether or not P is set; a none entry's is 0.
    b = BumpTables()
    pte = kernel_pte_table(b)
    b.t.write(pte, 0, 0x0000 | 0x163)  # P RW A D G, executable: W+X
    b.t.write(pte, 1, 0x1000 | 0x162)  # the same without P: RW, no NX
    b.t.write(pte, 2, 0x2000 | PTE_KERNEL)  # NX: fine
    b.t.write(pte, 3, 0x3000 | 0x161)  # read-only executable: fine
    _, wx_pages, first = ptdump(b.t, MARKERS_4)
    assert (wx_pages, first) == (2, PO_4)
