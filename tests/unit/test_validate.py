"""The validator (issue 5 item 8) and the CPA self-test port (item 9).

The validator must pass on every boot layout and after correct call sequences, and it
must fail, naming the address, on deliberately broken machines: that is what shows it
can fail at all.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emu.mmu import TLBEntry
from kernel_model import cpa_test
from kernel_model import pgtable as pt
from kernel_model.machine import Machine
from kernel_model.validate import (
    BIT_NX,
    BIT_P,
    BIT_RW,
    Validator,
    Violation,
    describe_bits,
    format_violations,
    validate_command,
)

DMESG = Path(__file__).resolve().parents[1] / "data" / "machine" / "dmesg"
GB = 1 << 30
MB2 = 1 << 21

LAYOUTS = {
    "4G": {"ram": "4G"},
    "16G": {"ram": "16G"},
    "dmesg": {"dmesg": DMESG},
    "nogbpages": {"ram": "4G", "gbpages": False},
    "pti": {"ram": "4G", "pti": True},
    "la57": {"ram": "4G", "la57": True},
    "kaslr": {"ram": "4G", "kaslr_seed": 7},
    "nokfence": {"ram": "4G", "kfence": False},
}


def boot(**kw: object) -> tuple[Machine, Validator]:
    cfg: dict[str, object] = {"ram": "4G", "ncpus": 2}
    cfg.update(kw)
    m = Machine(**cfg)  # type: ignore[arg-type]
    return m, Validator(m)


def kinds(vs: list[Violation]) -> set[str]:
    return {v.kind for v in vs}


def ok(v: Validator, sample: int | None = 4096) -> None:
    vs = v.check(tlb=True, sample=sample)
    assert vs == [], format_violations(vs) + "\n".join(v.log)


# ---- after boot ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_validator_passes_right_after_boot(layout: str) -> None:
    m = Machine(ncpus=2, **LAYOUTS[layout])  # type: ignore[arg-type]
    v = Validator(m)
    big = m.e820.total_ram_bytes() > 8 * GB
    ok(v, sample=65536 if big else None)


def test_boot_intent_follows_mark_rodata_ro_rules() -> None:
    m, v = boot()
    s = m.sym

    def bits(va: int) -> int:
        got = v.expected(va)
        assert got is not None
        return got[1] & (BIT_P | BIT_RW | BIT_NX)

    p, rw, nx = BIT_P, BIT_RW, BIT_NX
    text_end = -(-s.etext // 4096) * 4096
    assert bits(s.text) == p  # text: RO, executable
    assert bits(text_end - 4096) == p
    assert bits(text_end) == p | rw | nx  # the text/rodata gap, freed
    assert bits(s.start_rodata) == p | nx  # rodata: RO NX
    assert bits(s.end_rodata - 1) == p | nx
    assert bits(-(-s.end_rodata // 4096) * 4096) == p | rw | nx  # rodata/data gap
    assert bits(s.sdata) == p | rw | nx  # data, bss, brk: RW NX
    assert bits(s.bss_start) == p | rw | nx
    assert bits(s.init_begin) == p | rw | nx  # freed initmem
    # the direct-map alias of text and rodata is read-only, of the rest writable
    assert bits(m.va(s.pa_text)) == p | nx
    assert bits(m.va(s.pa_start_rodata)) == p | nx
    assert bits(m.va(s.pa(s.sdata))) == p | rw | nx
    assert bits(m.va(s.pa(text_end))) == p | rw | nx
    assert bits(m.va(64 * GB // 16)) == p | rw | nx  # ordinary RAM (4 GiB)
    assert v.expected(m.va(0xC000_0000)) is None  # the PCI hole maps nothing
    assert describe_bits(p | nx) == "P NX"


def test_boot_intent_with_pti_unmaps_freed_high_map_gaps() -> None:
    m, v = boot(pti=True)
    got = v.expected(m.sym.init_begin)
    assert got is not None
    assert got[1] & BIT_P == 0  # set_memory_np_noalias on the high map
    alias = v.expected(m.va(m.sym.pa(m.sym.init_begin)))
    assert alias is not None
    assert alias[1] & BIT_P  # the direct map keeps the freed pages


def test_count_baseline_is_only_boot_double_counting() -> None:
    _, v = boot()
    # update_page_count() counts leaves a later window keeps again: only an excess
    assert all(x >= 0 for x in v.count_baseline)
    assert v.count_baseline[pt.PG_LEVEL_4K] == 0  # high-map splits are not excess


# ---- correct sequences pass ----------------------------------------------------------


def test_validator_passes_after_direct_map_split_and_restore() -> None:
    m, v = boot()
    a = m.va(2 * GB) + 0x5000
    assert v.set_memory_ro(a, 3) == 0  # 1G -> 2M -> 4K, the worked example of 2.7
    ok(v)
    assert v.set_memory_rw(a, 3) == 0
    assert v.set_memory_nx(a, 600) == 0
    assert v.set_memory_np(m.va(GB), 512) == 0  # a whole 2M in place
    assert v.set_memory_p(m.va(GB), 512) == 0
    assert v.set_memory_4k(m.va(GB) + 7 * MB2, 3) == 0
    assert v.set_memory_nonglobal(m.va(GB) + 9 * MB2, 600) == 0
    assert v.set_memory_global(m.va(GB) + 9 * MB2, 600) == 0
    ok(v)


def test_validator_passes_after_vmalloc_alias_sequence() -> None:
    _, v = boot()
    area = v.vmalloc(5 * 4096)
    assert v.set_memory_ro(area.addr, 5) == 0  # the direct-map alias follows
    ok(v)
    assert v.set_memory_x(area.addr, 2) == 0  # the alias stays NX
    assert v.set_memory_rox(area.addr, 5) == 0
    ok(v)
    assert v.set_memory_nx(area.addr, 5) == 0
    assert v.set_memory_rw(area.addr, 5) == 0
    v.vfree(area.addr)
    ok(v)


def test_validator_passes_on_huge_vmalloc_and_high_map() -> None:
    m, v = boot()
    huge = v.vmalloc(4 << 20, huge=True, module=True)
    assert v.set_memory_ro(huge.addr + 0x3000, 2) == 0  # splits the area's 2M leaf
    assert v.set_memory_nx(m.sym.text, 10) == 0  # text NX is a static protection
    assert v.set_memory_rw(m.sym.start_rodata, 10) == 0  # rodata RO as well
    assert v.set_memory_rw(m.va(m.sym.pa_start_rodata), 10) == 0  # ... on every alias
    ok(v)
    exp = v.expected(m.sym.text)
    assert exp is not None
    assert not exp[1] & BIT_NX
    v.vfree(huge.addr)
    ok(v)


def test_validator_passes_on_holes_efault_and_array_modes() -> None:
    m, v = boot()
    assert v.set_memory_ro(m.va(0xC000_0000) - 0x2000, 4) == 0  # into the PCI hole
    assert v.set_memory_ro(m.layout.vmalloc_start + (1 << 40), 1) == -14
    a = m.va(GB) + 0x5000
    assert (
        v.change_page_attr_set(
            [a, a + 0x1000, a + 0x2000], 3, pt._PAGE_CPA_TEST, array=True
        )
        == 0
    )
    assert v.change_page_attr_set_pages([0x50000, 0x50001], pt._PAGE_CPA_TEST) == 0
    assert v.change_page_attr_clear(a, 3, pt._PAGE_CPA_TEST) == 0
    ok(v)


def test_high_map_tail_is_its_own_alias() -> None:
    # [_brk_end, roundup(_brk_end, 2M)) is outside [_text, _brk_end) but its frames
    # are the image's: the high-map alias walk revisits the same page, NX masked
    m, v = boot()
    tail = -(-m.sym.brk_end // 4096) * 4096 + 0x1C000
    assert v.change_page_attr_clear(tail, 168, pt._PAGE_RW | pt._PAGE_NX) == 0
    got = v.expected(tail)
    assert got is not None
    assert got[1] & (BIT_RW | BIT_NX) == 0
    ok(v)


def test_noflush_changes_are_exempt_until_the_next_full_flush() -> None:
    m, v = boot()
    pfn = 0x12345
    for pfn_i in (pfn, pfn + 1):
        v.set_memory_4k(m.va(pfn_i << 12), 1)
    m.mmus[1].translate(m.va(pfn << 12), "w")  # CPU 1 caches RW
    assert v.set_direct_map_invalid_noflush(pfn) == 0
    assert v.check(tlb=True) == []  # the caller flushes later: not a violation yet
    m.cpus.flush_all()
    assert v.set_direct_map_default_noflush(pfn) == 0
    ok(v)


def test_validator_passes_after_enomem_injection() -> None:
    m, v = boot()
    a = m.va(2 * GB) + 100 * MB2 + 0x3000
    before = len(m.pt.tables)
    m.cpa.fail_table_allocs = 1
    assert v.set_memory_ro(a, 2) == -12
    m.cpa.fail_table_allocs = 0
    assert len(m.pt.tables) == before
    ok(v)
    assert v.set_memory_ro(a, 2) == 0
    ok(v)


@pytest.mark.parametrize("merge", ["linux", "eager"])
def test_validator_passes_after_collapse(merge: str) -> None:
    m, v = boot(merge=merge)
    area = v.vmalloc(2 << 20, huge=True, module=True)
    assert v.set_memory_rw(area.addr + 0x1000, 1) == 0  # split the area's 2M leaf
    assert v.set_memory_rox(area.addr, 512) == 0  # and merge it back (section 3)
    ok(v)
    look = m.pt.lookup_address(area.addr)
    assert look.level == pt.PG_LEVEL_2M


# ---- broken machines fail ------------------------------------------------------------


@pytest.mark.parametrize("gaps", [False, True])
def test_skipped_split_flush_leaves_a_stale_writable_entry(gaps: bool) -> None:
    # An end-of-CPA INVLPG drops every entry covering the page (all sizes), so a
    # missing split flush is visible where the end flush does not reach: here the
    # second address of a CPA_ARRAY call, in another 1G page.  Even with 7.0's
    # array-mode gap allowed, a page that needed a split was flushed by it.
    m = Machine(ram="4G", ncpus=2)
    v = Validator(m, linux_flush_gaps=gaps)
    m.cpa.skip_split_flush = True
    b1 = m.va(GB) + 3 * MB2 + 0x5000
    b2 = m.va(2 * GB) + 9 * MB2 + 0x7000
    m.mmus[1].translate(b2, "w")  # CPU 1 caches the 1G page writable
    assert v.change_page_attr_clear([b1, b2], 2, pt._PAGE_RW, array=True) == 0
    vs = v.check(tlb=True)
    assert kinds(vs) == {"tlb"}
    assert all(x.address == b2 & ~0xFFF for x in vs)
    assert vs[0].expected == "read-only"
    assert vs[0].actual == "writable"
    assert "CPU 1" in vs[0].message


def test_same_sequence_with_the_split_flush_is_coherent() -> None:
    m, v = boot()
    b1 = m.va(GB) + 3 * MB2 + 0x5000
    b2 = m.va(2 * GB) + 9 * MB2 + 0x7000
    m.mmus[1].translate(b2, "w")
    assert v.change_page_attr_clear([b1, b2], 2, pt._PAGE_RW, array=True) == 0
    ok(v)


def test_skipped_alias_leaves_the_direct_map_writable() -> None:
    m, v = boot()
    m.cpa.skip_alias = True
    area = v.vmalloc(3 * 4096)
    assert v.set_memory_ro(area.addr, 3) == 0
    vs = v.check(tlb=True)
    assert kinds(vs) == {"permission"}
    alias = m.va(area.pages[0] << 12)
    assert vs[0].address == alias
    assert vs[0].expected == "P NX G"
    assert vs[0].actual == "P RW NX G"


def test_corrupted_pte_frame_is_a_translation_violation() -> None:
    m, v = boot()
    a = m.va(GB) + 3 * MB2 + 0x5000
    v.set_memory_ro(a, 1)
    look = m.pt.lookup_address(a)
    assert look.entry is not None
    assert look.entry_pa is not None
    m.mem.write_u64(look.entry_pa, look.entry ^ (1 << 20))
    vs = v.check()
    assert kinds(vs) == {"translation"}
    assert {x.address for x in vs} == {a & ~0xFFF}
    assert vs[0].expected == hex(m.pa(a & ~0xFFF))
    assert vs[0].actual == hex(m.pa(a & ~0xFFF) ^ (1 << 20))
    assert any("CPU 1" in x.message for x in vs)  # the MMUs see it too


def test_corrupted_permission_is_a_permission_violation() -> None:
    m, v = boot()
    a = m.va(GB) + 3 * MB2 + 0x5000
    v.set_memory_4k(a, 1)
    look = m.pt.lookup_address(a)
    assert look.entry is not None
    assert look.entry_pa is not None
    m.mem.write_u64(look.entry_pa, look.entry & ~pt._PAGE_NX)  # made executable
    vs = v.check()
    assert kinds(vs) == {"permission", "wx"}
    perm = next(x for x in vs if x.kind == "permission")
    assert perm.address == a & ~0xFFF
    assert (
        "x86/mm: Checked W+X mappings: FAILED, 1 W+X pages found."
        in next(x for x in vs if x.kind == "wx").message
    )


def test_stale_tlb_entry_after_an_unflushed_pte_write() -> None:
    m, v = boot()
    a = m.va(GB) + 3 * MB2 + 0x5000
    v.set_memory_4k(a, 1)
    m.mmus[0].translate(a, "w")
    look = m.pt.lookup_address(a)
    assert look.entry is not None
    assert look.entry_pa is not None
    m.mem.write_u64(look.entry_pa, look.entry & ~pt._PAGE_PRESENT)  # no flush
    vs = [x for x in v.check(tlb=True) if x.kind == "tlb"]
    assert vs
    assert vs[0].address == a & ~0xFFF
    assert vs[0].expected == "present"


def test_leaked_table_page_is_reported() -> None:
    m, v = boot()
    leaked = m.pt.alloc_table()  # allocated from the buddy, referenced by nothing
    vs = v.check()
    assert kinds(vs) == {"table"}
    assert vs[0].address == leaked
    assert vs[0].actual == "unreferenced"


def test_freed_table_page_still_referenced_is_reported() -> None:
    m, v = boot()
    table = max(m.pt.tables)
    m.page_alloc.free_pages(table >> 12, 0)
    vs = v.check()
    assert kinds(vs) == {"table"}
    assert vs[0].address == table
    assert vs[0].expected == "allocated"
    assert vs[0].actual == "free"


def test_wrong_direct_pages_count_is_reported() -> None:
    m, v = boot()
    m.direct.direct_pages_count[pt.PG_LEVEL_2M] += 1
    vs = v.check()
    assert kinds(vs) == {"count"}
    assert vs[0].address == pt.PG_LEVEL_2M
    assert vs[0].actual == vs[0].expected + 1  # type: ignore[operator]


def test_wx_pages_are_reported_in_linux_words() -> None:
    m, v = boot()
    a = m.va(GB) + 0x5000
    assert v.set_memory_x(a, 2) == 0  # a direct-map primary: NX really goes
    vs = v.check()
    assert kinds(vs) == {"wx"}
    assert vs[0].address == a
    assert v.wx_message() == "x86/mm: Checked W+X mappings: FAILED, 2 W+X pages found."
    assert v.expected_wx_pages() == v.wx_pages() == 2
    assert v.set_memory_nx(a, 2) == 0
    assert v.wx_message() == "x86/mm: Checked W+X mappings: passed, no W+X pages found."


def test_two_page_sizes_with_different_attributes_are_reported() -> None:
    def entry(va: int, size: int, rw: bool) -> TLBEntry:
        return TLBEntry(
            "STLB", va, va - 0x1000_0000, size, size, 0, rw, False, True, 0, True, False
        )

    big = entry(0x20_0000_0000, MB2, True)
    same = entry(0x20_0000_3000, 4096, True)
    other = entry(0x20_0000_5000, 4096, False)
    assert Validator._check_two_sizes(0, [big, same]) == []
    vs = Validator._check_two_sizes(0, [big, same, other])
    assert len(vs) == 1
    assert vs[0].address == other.va
    assert "RW" in str(vs[0].expected)
    assert "RO" in str(vs[0].actual)


def test_vmalloc_huge_over_pte_table_leaks_it() -> None:
    _, v = boot()
    area = v.vmalloc(4096)
    v.vfree(area.addr)
    huge = v.vmalloc(2 << 20, huge=True)  # the same address: the PTE table is left
    assert huge.addr == area.addr
    ok(v)


# ---- Linux 7.0's documented flush gaps (findings, reported) --------------------------


def test_array_mode_flushes_only_first_address_range_in_7_0() -> None:
    # 2.8: cpa_flush() flushes [first, first + numpages) even for CPA_ARRAY, so a
    # scattered address that needed no split keeps its stale entry.
    for gaps in (False, True):
        m = Machine(ram="4G", ncpus=2)
        v = Validator(m, linux_flush_gaps=gaps)
        b1 = m.va(GB) + 3 * MB2 + 0x5000
        b2 = m.va(2 * GB) + 9 * MB2 + 0x7000
        v.set_memory_4k(b1, 1)
        v.set_memory_4k(b2, 1)
        m.mmus[1].translate(b2, "w")
        assert v.change_page_attr_clear([b1, b2], 2, pt._PAGE_RW, array=True) == 0
        vs = v.check(tlb=True)
        if gaps:
            assert vs == []
        else:
            assert kinds(vs) == {"tlb"}
            assert {x.address for x in vs} == {b2 & ~0xFFF}


def test_alias_only_change_is_not_flushed_in_7_0() -> None:
    # 2.9: alias_cpa is a copy, so a change of the alias alone sets no CPA_FLUSHTLB
    # and nothing is flushed.
    for gaps in (False, True):
        m = Machine(ram="4G", ncpus=2)
        v = Validator(m, linux_flush_gaps=gaps)
        area = v.vmalloc(4096)
        pfn = area.pages[0]
        v.set_memory_ro(area.addr, 1)
        v.set_pages_rw(pfn, 1)
        m.mmus[1].translate(m.va(pfn << 12), "w")
        assert v.set_memory_ro(area.addr, 1) == 0
        vs = v.check(tlb=True)
        if gaps:
            assert vs == []
        else:
            assert kinds(vs) == {"tlb"}
            assert {x.address for x in vs} == {m.va(pfn << 12)}


# ---- the CPA self-test ---------------------------------------------------------------

SPLIT_LINE = re.compile(
    r"^ 4k \d+ large \d+ gb \d+ x \d+\[[0-9a-f]+-[0-9a-f]+\] miss \d+$"
)


def test_cpa_self_test_passes_and_prints_split_summaries() -> None:
    m = Machine(ram="4G", ncpus=2)
    r = cpa_test.run(m, seed=1)
    assert r.passed, r.text() + format_violations(r.violations) + "\n".join(r.extra)
    assert r.lines[0] == "CPA self-test:"
    assert [bool(SPLIT_LINE.match(x)) for x in r.lines[1:4]] == [True] * 3
    assert r.lines[-1] == "ok."
    assert r.failed == 0
    assert min(r.tests) > 50  # every address mode ran
    sa, sb, sc = r.states
    assert sb.spg > sa.spg
    assert (sc.spg, sc.lpg, sc.gpg) == (sb.spg, sb.lpg, sb.gpg)  # clear never merges
    assert sa.missed == 262144  # the PCI hole below 4G
    assert r.violations == []


def test_cpa_self_test_is_deterministic_per_seed() -> None:
    r1 = cpa_test.run(Machine(ram="4G", ncpus=1), seed=5, ntest=40, validate=False)
    r2 = cpa_test.run(Machine(ram="4G", ncpus=1), seed=5, ntest=40, validate=False)
    assert r1.lines == r2.lines
    assert r1.passed


def test_cpa_self_test_through_a_validator_keeps_its_flat_model() -> None:
    _, v = boot()
    r = cpa_test.run(v, seed=3, ntest=60)
    assert r.passed, format_violations(r.violations)
    assert any("change_page_attr_set" in x for x in v.log)
    ok(v)


def test_validate_command_prints_linux_lines_and_the_verdict() -> None:
    text, passed = validate_command(
        Machine(ram="4G", ncpus=2), cpa_selftest=True, seed=3, sample=4096
    )
    assert passed
    lines = text.splitlines()
    assert lines[0] == "x86/mm: Checked W+X mappings: passed, no W+X pages found."
    assert lines[1] == "validator: 0 violations"
    assert "CPA self-test:" in lines
    assert "ok." in lines
    assert lines[-1] == "validator after the self-test: 0 violations"
