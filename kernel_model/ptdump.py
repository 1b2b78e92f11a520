"""ptdump: /sys/kernel/debug/page_tables/kernel, byte for byte.

Models arch/x86/mm/dump_pagetables.c with mm/ptdump.c (Linux 7.0) as
reference/linux-mm.md section 5 describes: the walk over [0, half of the top level) and
[GUARD_HOLE_END_ADDR, 2^64), runs of identical entries merged (any flag difference
breaks a run, printed or not), one address marker advanced per break, the size column
with units, the flag columns and the level names.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from kernel_model import pgtable as pt
from kernel_model.pgtable import PageTables

LEVEL_NAMES = ("pgd", "p4d", "pud", "pmd", "pte")
_UNITS = "BKMGTPE"
_NX = pt._PAGE_NX
_FLAG_KEEP = pt._PAGE_USER | pt._PAGE_RW


def format_size(delta: int) -> str:
    """The size column: ``%9lu%c `` with the largest unit dividing ``delta``."""
    unit = 0
    while delta % 1024 == 0 and unit < len(_UNITS) - 1:  # 0 ends at "E", as in Linux
        delta //= 1024
        unit += 1
    return f"{delta:9d}{_UNITS[unit]} "


def format_prot(prot: int, depth: int) -> str:
    """The flag columns of a run (printk_prot()); ``depth`` 0 = pgd .. 4 = pte."""
    if not prot & pt._PAGE_PRESENT:
        return " " * 30
    out = [
        "USR " if prot & pt._PAGE_USER else "    ",
        "RW " if prot & pt._PAGE_RW else "ro ",
        "PWT " if prot & pt._PAGE_PWT else "    ",
        "PCD " if prot & pt._PAGE_PCD else "    ",
        "PSE " if depth <= 3 and prot & pt._PAGE_PSE else "    ",
    ]
    pat = (depth == 4 and prot & pt._PAGE_PAT) or (
        depth in (2, 3) and prot & pt._PAGE_PAT_LARGE
    )
    out.append("PAT " if pat else "    ")
    out.append("GLB " if prot & pt._PAGE_GLOBAL else "    ")
    out.append("NX " if prot & _NX else "x  ")
    return "".join(out)


@dataclass
class _State:
    markers: list[tuple[int, str]]
    lines: list[str] = field(default_factory=list)
    marker: int = -1
    started: bool = False
    start: int = 0
    prot: int = 0
    eff: int = 0
    depth: int = -1
    wx_pages: int = 0
    wx_first: int | None = None


def _note(st: _State, addr: int, depth: int, prot: int, eff: int) -> None:
    if not st.started:
        st.started = True
        st.marker = 0
        st.lines.append(f"---[ {st.markers[0][1]} ]---")
        st.start, st.prot, st.eff, st.depth = addr, prot, eff, depth
        return
    nxt = st.markers[st.marker + 1][0] if st.marker + 1 < len(st.markers) else None
    crossed = nxt is not None and addr >= nxt
    if prot == st.prot and eff == st.eff and depth == st.depth and not crossed:
        return
    _flush_run(st, addr)
    if crossed:
        st.marker += 1
        st.lines.append(f"---[ {st.markers[st.marker][1]} ]---")
    st.start, st.prot, st.eff, st.depth = addr, prot, eff, depth


def _flush_run(st: _State, addr: int) -> None:
    if st.eff & pt._PAGE_RW and not st.eff & _NX:  # effective prot only, as note_wx
        st.wx_pages += (addr - st.start) // pt.PAGE_SIZE
        if st.wx_first is None:
            st.wx_first = st.start
    st.lines.append(
        f"0x{st.start:016x}-0x{addr % (1 << 64):016x}   "
        f"{format_size(addr - st.start)}{format_prot(st.prot, st.depth)}"
        f"{LEVEL_NAMES[st.depth]}"
    )


def _flags_for_compare(entry: int) -> int:
    """note_page()'s ``val & PTE_FLAGS_MASK``.

    Bit 12 is a PFN bit of that mask, so a large leaf's PAT bit (12) neither prints nor
    breaks a run.
    """
    return entry & pt.PTE_FLAGS_MASK


def _is_table(e: int, level: int) -> bool:
    return (
        bool(e & pt._PAGE_PRESENT)
        and level > pt.PG_LEVEL_4K
        and not (level <= pt.PG_LEVEL_1G and e & pt._PAGE_PSE)
    )


def _walk(
    t: PageTables,
    st: _State,
    table: int,
    level: int,
    base: int,
    eff_above: int,
    lo: int,
    hi: int,
    markers: list[int],
    top: bool,
) -> Iterator[tuple[int, int, int, int]]:
    """Yield (addr, depth, prot, eff) notes for the entries of a table in [lo, hi).

    Consecutive entries that cannot break a run (same flags, both leaves or both
    holes) are noted once; entries at a marker address are noted too, since there a
    run breaks whatever the flags.
    """
    # depth as the generic walker counts it: pgd 0 .. pte 4.  With 4-level paging the
    # P4D is folded (PTRS_PER_P4D == 1), so mm/pagewalk.c's real_depth() reports the
    # top level's holes at depth 0: "pgd"
    depth = {5: 0, 4: 0 if top else 1, 3: 2, 2: 3, 1: 4}[level]
    size = pt.page_level_size(level)
    entries = [int(x) for x in t.read_table(table)]
    va_bits = 57 if t.la57 else 48
    sign = ~((1 << va_bits) - 1) & ((1 << 64) - 1)
    addrs = [base + i * size for i in range(pt.PTRS_PER_TABLE)]
    if top:
        addrs = [a | sign if a >> (va_bits - 1) else a for a in addrs]
    i = 0
    while i < pt.PTRS_PER_TABLE:
        a = addrs[i]
        if a + size <= lo or a >= hi:
            i += 1
            continue
        e = entries[i]
        if _is_table(e, level):
            eff = (eff_above & e & _FLAG_KEEP) | ((eff_above | e) & _NX)
            yield from _walk(
                t, st, e & pt.PTE_PFN_MASK, level - 1, a, eff, lo, hi, markers, False
            )
            i += 1
            continue
        key = _flags_for_compare(e) if e else -1
        j = i + 1
        while j < pt.PTRS_PER_TABLE and addrs[j] < hi:
            f = entries[j]
            if _is_table(f, level) or (_flags_for_compare(f) if f else -1) != key:
                break
            j += 1
        if e == 0:
            prot, eff = 0, 0
        else:
            prot = key
            eff = (eff_above & e & _FLAG_KEEP) | ((eff_above | e) & _NX)
        yield a, depth, prot, eff
        # the walker notes every entry, but only one at or past a pending marker can
        # break a run, and each note advances one marker: note those entries
        run_end = addrs[j - 1] + size
        pos = a
        while st.marker + 1 < len(markers):
            want = max(pos + size, markers[st.marker + 1])
            at = a + ((want - a + size - 1) // size) * size
            if at >= run_end:
                break
            yield at, depth, prot, eff
            pos = at
        i = j


def ptdump(
    t: PageTables, markers: list[tuple[int, str]]
) -> tuple[str, int, int | None]:
    """Dump the kernel page tables.

    Args:
        t: the page tables.
        markers: (address, name) section markers in order.

    Returns:
        The text (lines joined by newlines, with a final newline), the number of W+X
        pages found, and the first W+X address (or None).
    """
    st = _State(markers=markers)
    marker_addrs = [m for m, _ in markers]
    half = 1 << (56 if t.la57 else 47)
    guard_hole_end = 0xFF10000000000000 if t.la57 else 0xFFFF880000000000
    for lo, hi in ((0, half), (guard_hole_end, 1 << 64)):
        top_eff = _FLAG_KEEP  # the PGD's own flags start the AND
        for addr, depth, prot, eff in _walk(
            t, st, t.pgd, t.top_level, 0, top_eff, lo, hi, marker_addrs, True
        ):
            _note(st, addr, depth, prot, eff)
    _flush_run(st, 1 << 64)
    # Linux prints the end of the last run as 0x0000000000000000 (2^64 wraps)
    return "\n".join(st.lines) + "\n", st.wx_pages, st.wx_first


def check_wx(wx_pages: int) -> str:
    """ptdump_check_wx()'s closing message (arch/x86/mm/dump_pagetables.c)."""
    if wx_pages:
        return f"x86/mm: Checked W+X mappings: FAILED, {wx_pages} W+X pages found."
    return "x86/mm: Checked W+X mappings: passed, no W+X pages found."
