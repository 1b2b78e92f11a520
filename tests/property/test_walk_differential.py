"""The C walker, its batch form and the reference walker agree; walks obey the SDM.

Differential: random page-table sets (4K/2M/1G leaves, random flag and reserved bits,
raw and aliased entries) and random control state, walked by ``emu.walk`` on one
``emu.PhysMem``, ``emu.ref.walk`` on an ``emu.ref.PhysMem`` and ``emu.walk_batch`` on a
third memory, all built identically.  Every result field and, afterwards, every word of
memory (A/D bits written back) must agree.

Invariants, checked on each implementation against reference/x86-paging.md rather than
against the other implementation: the path is the chain CR3 names (1.4), the walk stops
at the first not-present or reserved entry (1.6), rights are the AND of R/W and U/S and
the OR of XD along the path (2.1, 2.2, 2.3), a translation is the leaf base | offset
(1.7), and A/D bits change exactly as the A-bit policy says (2.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from strategies import (
    HEAVY_EXAMPLES,
    Access,
    Control,
    WalkCase,
    batch_row,
    diff_words,
    format_path,
    format_result,
    path_rights,
    reached_leaf,
    scalar_row,
    walk_cases,
    words_of,
)

import emu
import emu.ref
from emu import arch

# emu.walk before emu.walk_batch, and never `import emu.walk`: loading the submodule
# emu/walk.py rebinds the package attribute emu.walk from the function to the module.
c_walk = emu.walk
if not callable(c_walk):  # already rebound by an earlier importer
    c_walk = c_walk.walk
walk_batch = emu.walk_batch

ADDR = arch.PTE_ADDR_MASK
BITS_29_13 = ((1 << 30) - 1) & ~((1 << 13) - 1)
BITS_20_13 = ((1 << 21) - 1) & ~((1 << 13) - 1)


def _context(case: WalkCase, cr3: int, i: int) -> str:
    a = case.accesses[i]
    return (
        f"access #{i} of {len(case.accesses)}: {a!r}\n"
        f"  control: {case.control!r}\n  cr3={cr3:#x}\n"
        f"  table writes: {list(case.writes)!r}"
    )


def _two_paths(name_a: str, ra: Any, name_b: str, rb: Any) -> str:
    return (
        f"  {name_a}: {format_result(ra)}\n  {name_b}: {format_result(rb)}\n"
        f"  {name_a} path:\n{format_path(ra.path)}\n"
        f"  {name_b} path:\n{format_path(rb.path)}"
    )


def _replay_first_memory_divergence(case: WalkCase) -> str:
    """Replay access by access on fresh memories; describe the first one after which
    the C scalar, reference and batch memories differ."""
    mems = (emu.PhysMem(), emu.ref.PhysMem(), emu.PhysMem())
    cr3 = case.build(mems[0])
    for m in mems[1:]:
        case.build(m)
    kw = case.control.kwargs()
    for i, a in enumerate(case.accesses):
        rc = c_walk(mems[0], a.va, a.kind, cr3=cr3, **a.kwargs(), **kw)
        rr = emu.ref.walk(mems[1], a.va, a.kind, cr3=cr3, **a.kwargs(), **kw)
        walk_batch(
            mems[2],
            np.array([a.va], np.uint64),
            np.array([a.code], np.uint8),
            cr3=cr3,
            **kw,
        )
        wc, wr, wb = (words_of(m) for m in mems)
        if not wc == wr == wb:
            return (
                f"memory first diverges after {_context(case, cr3, i)}\n"
                f"{_two_paths('C', rc, 'ref', rr)}\n"
                f"  C vs ref:\n{diff_words(wc, wr)}\n"
                f"  batch vs ref:\n{diff_words(wb, wr)}"
            )
    return "(replay found no divergence: memory differs only in the full run)"


@settings(max_examples=HEAVY_EXAMPLES)
@given(case=walk_cases(max_writes=8, max_accesses=8))
def test_c_scalar_c_batch_and_ref_walks_agree_on_results_and_memory(
    case: WalkCase,
) -> None:
    c_mem, r_mem, b_mem = emu.PhysMem(), emu.ref.PhysMem(), emu.PhysMem()
    cr3 = case.build(c_mem)
    assert case.build(r_mem) == cr3 == case.build(b_mem)
    built = words_of(r_mem)
    assert words_of(c_mem) == built == words_of(b_mem), "tables built differently"
    kw = case.control.kwargs()
    nxe = case.control.nxe

    c_results, ref_results = [], []
    for i, a in enumerate(case.accesses):
        rc = c_walk(c_mem, a.va, a.kind, cr3=cr3, **a.kwargs(), **kw)
        rr = emu.ref.walk(r_mem, a.va, a.kind, cr3=cr3, **a.kwargs(), **kw)
        assert rc == rr, (
            f"C and ref walks differ at {_context(case, cr3, i)}\n"
            + _two_paths("C", rc, "ref", rr)
        )
        for _, pa, _ in rr.path:  # A/D written back by this access
            assert c_mem.read_u64(pa) == r_mem.read_u64(pa), (
                f"word @{pa:#x} is {c_mem.read_u64(pa):#x} in C but "
                f"{r_mem.read_u64(pa):#x} in ref after {_context(case, cr3, i)}\n"
                + _two_paths("C", rc, "ref", rr)
            )
        c_results.append(rc)
        ref_results.append(rr)

    vas = np.array([a.va for a in case.accesses], dtype=np.uint64)
    codes = np.array([a.code for a in case.accesses], dtype=np.uint8)
    rec = walk_batch(b_mem, vas, codes, cr3=cr3, **kw)
    for i, rr in enumerate(ref_results):
        want = scalar_row(rr)
        got = batch_row(rec, i)
        rights, pkey = path_rights(rr.path, nxe) if reached_leaf(rr) else (0, 0)
        got_rp = (int(rec.rights[i]), int(rec.pkey[i]))
        why = (
            f"walk_batch differs from ref at {_context(case, cr3, i)}\n"
            f"  batch (pa, page_size, cr2, error_code, vector, level) = {got}, "
            f"rights/pkey = {got_rp}\n"
            f"  ref   (pa, page_size, cr2, error_code, vector, level) = {want}, "
            f"rights/pkey from path = {(rights, pkey)}\n"
            f"  C (emu.walk) path:\n{format_path(c_results[i].path)}\n"
            f"  ref path:\n{format_path(rr.path)}"
        )
        assert got == want, why
        assert got_rp == (rights, pkey), why
        assert (rr.vector is None) == rr.ok == (rr.pa is not None)

    wc, wr, wb = words_of(c_mem), words_of(r_mem), words_of(b_mem)
    if not wc == wr == wb:
        raise AssertionError(
            "memory differs after the walks\n"
            f"  C vs ref:\n{diff_words(wc, wr)}\n"
            f"  batch vs ref:\n{diff_words(wb, wr)}\n"
            + _replay_first_memory_divergence(case)
        )


# ---- invariants from first principles (reference/x86-paging.md) ----------------------


def doc_reserved(ctl: Control, level: int, e: int) -> int:
    """Reserved bits of a present entry (x86-paging.md 1.5, 1.6)."""
    m = ((1 << arch.PA_BITS_MAX) - 1) & ~((1 << ctl.maxphyaddr) - 1)  # bits 51:M
    if not ctl.nxe:
        m |= arch.PTE_NX
    if level >= arch.LVL_PML4:
        m |= arch.PTE_PS | (arch.PTE_G if ctl.amd else 0)
    elif level == arch.LVL_PDPT and e & arch.PTE_PS:
        m |= BITS_29_13 if ctl.gbpages else arch.PTE_PS
    elif level == arch.LVL_PD and e & arch.PTE_PS:
        m |= BITS_20_13
    return m


def late_reserved(ctl: Control, level: int, e: int) -> int:
    """The 1 GiB alignment bits the "qemu" policy checks after setting A (2.5)."""
    if ctl.a_policy == "qemu" and level == arch.LVL_PDPT and e & arch.PTE_PS:
        return doc_reserved(ctl, level, e) & BITS_29_13
    return 0


def is_leaf(level: int, e: int) -> bool:
    """A PTE, or a PDE/PDPTE with PS=1."""
    return level == arch.LVL_PT or (
        level in (arch.LVL_PD, arch.LVL_PDPT) and bool(e & arch.PTE_PS)
    )


def doc_refusal(ctl: Control, a: Access, rights: int, pkey: int) -> int:
    """0 if x86-paging.md 2.2/2.3 allow the access, else the P (and PK) error bits."""
    rw, us, xd = bool(rights & 1), bool(rights & 2), bool(rights & 4)
    write, fetch = a.kind == "w", a.kind == "x"
    if a.user:
        refused = not us or (write and not rw) or (fetch and xd)
    elif fetch:
        refused = xd or (ctl.smep and us)
    else:
        smap_gate = us and ctl.smap and not (ctl.ac and not a.implicit)
        refused = smap_gate or (write and not rw and ctl.wp)
    if ctl.pke and us and not fetch:
        ad = ctl.pkru >> (2 * pkey) & 1
        wd = ctl.pkru >> (2 * pkey + 1) & 1
        if ad or (wd and write and (a.user or ctl.wp)):
            return arch.PF_P | arch.PF_PK
    return arch.PF_P if refused else 0


def access_error_bits(ctl: Control, a: Access) -> int:
    """The W, U and I/D bits of the #PF error code (2.4)."""
    ec = arch.PF_W if a.kind == "w" else 0
    ec |= arch.PF_U if a.user else 0
    if a.kind == "x" and (ctl.nxe or ctl.smep):
        ec |= arch.PF_I
    return ec


def check_walk_invariants(
    ctl: Control,
    cr3: int,
    a: Access,
    r: Any,
    before: dict[int, int],
    after: dict[int, int],
) -> None:
    """Check one walk ``r`` against the SDM rules, given memory before and after."""
    top = arch.LVL_PML5 if ctl.la57 else arch.LVL_PML4
    qemu = ctl.a_policy == "qemu"
    where = (
        f"{a!r} under {ctl!r}, cr3={cr3:#x}\n  result: {format_result(r)}\n"
        f"  path:\n{format_path(r.path)}"
    )

    if not arch.is_canonical(a.va, ctl.la57):  # 1.3: #GP(0), nothing read or written
        gp = (False, arch.VEC_GP, 0, None, 0, ())
        assert (r.ok, r.vector, r.error_code, r.cr2, r.level, r.path) == gp, where
        assert after == before, where
        return

    # 1.4: the path is the chain of tables CR3 names, top down, one entry a level.
    assert r.path, where
    table = cr3 & ADDR
    seen: set[int] = set()
    for k, (level, pa, value) in enumerate(r.path):
        assert level == top - k, where
        assert pa == table + 8 * arch.va_index(a.va, level), where
        old = before.get(pa, 0)
        # a self-referencing entry read again may carry the A bit "qemu" just set
        reread = qemu and pa in seen and value == old | arch.PTE_A
        assert value == old or reread, where
        seen.add(pa)
        if k < len(r.path) - 1:  # 1.6: the walk goes on only through valid tables
            assert value & arch.PTE_P, where
            assert not value & doc_reserved(ctl, level, value), where
            assert not is_leaf(level, value), where
        table = value & ADDR
    level, leaf_pa, e = r.path[-1]
    assert r.level == level, where

    ec = access_error_bits(ctl, a)
    expect: dict[int, int] = dict(before)

    def set_bits(pa: int, b: int) -> None:
        expect[pa] = expect.get(pa, 0) | b

    if qemu:  # A on each non-leaf entry passed (2.5, QEMU column)
        for _, pa, _ in r.path[:-1]:
            set_bits(pa, arch.PTE_A)

    rsvd_fault = (arch.VEC_PF, ec | arch.PF_P | arch.PF_RSVD)
    if not e & arch.PTE_P:
        assert (r.vector, r.error_code, r.cr2) == (arch.VEC_PF, ec, a.va), where
    elif e & (doc_reserved(ctl, level, e) & ~late_reserved(ctl, level, e)):
        assert (r.vector, r.error_code) == rsvd_fault, where
    else:
        assert is_leaf(level, e), where
        if qemu and level == arch.LVL_PDPT:  # quirk: 1 GiB leaf gets A before checks
            set_bits(leaf_pa, arch.PTE_A)
        if e & late_reserved(ctl, level, e):
            assert (r.vector, r.error_code) == rsvd_fault, where
        else:
            # 2.1: R/W and U/S ANDed, XD ORed over every entry used
            rights, pkey = path_rights(r.path, ctl.nxe)
            refusal = doc_refusal(ctl, a, rights, pkey)
            if refusal:
                refused = (False, arch.VEC_PF, ec | refusal, a.va)
                assert (r.ok, r.vector, r.error_code, r.cr2) == refused, where
            else:
                assert r.ok, where
                size = arch.page_size_of_level(level)
                base = e & ADDR & ~(size - 1)  # 1.7: bit 12 is PAT in large leaves
                assert (r.pa, r.page_size) == (base | (a.va & (size - 1)), size), where
                assert (r.vector, r.error_code, r.cr2) == (None, None, None), where
                for _, pa, _ in r.path:  # 2.5: A in every entry used, D in the leaf
                    set_bits(pa, arch.PTE_A)
                if a.kind == "w":
                    set_bits(leaf_pa, arch.PTE_D)
    if not r.ok:
        assert (r.pa, r.page_size, r.cr2) == (None, None, a.va), where
    assert after == expect, (
        f"A/D bits not as policy {ctl.a_policy!r} says for {where}\n"
        f"  after vs expected:\n{diff_words(after, expect)}"
    )


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=walk_cases(max_writes=8, max_accesses=6))
def test_walk_follows_sdm_rights_translation_and_accessed_dirty_rules(
    impl: Any, case: WalkCase
) -> None:
    mem = impl.PhysMem()
    cr3 = case.build(mem)
    kw = case.control.kwargs()
    before = words_of(mem)
    for a in case.accesses:
        r = impl.walk(mem, a.va, a.kind, cr3=cr3, **a.kwargs(), **kw)
        after = words_of(mem)
        check_walk_invariants(case.control, cr3, a, r, before, after)
        before = after


def _walk_all(
    mem: Any, walker: Any, cr3: int, ctl: Control, accs: Sequence[Access]
) -> list[Any]:
    return [
        walker(mem, a.va, a.kind, cr3=cr3, **a.kwargs(), **ctl.kwargs()) for a in accs
    ]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=walk_cases(max_writes=6, max_accesses=4))
def test_granting_more_rights_in_any_entry_never_turns_a_success_into_a_fault(
    impl: Any, case: WalkCase
) -> None:
    """Rights combine monotonically (2.1): setting R/W and clearing XD in every entry
    only widens what the AND of R/W and the OR of XD let through, so every translation
    that succeeded still succeeds, to the same address.  (U/S is left alone: setting
    it can bring SMAP, SMEP or protection keys into play.)"""
    ctl = case.control
    mem = impl.PhysMem()
    cr3 = case.build(mem)
    results = _walk_all(mem, impl.walk, cr3, ctl, case.accesses)
    widened = impl.PhysMem()
    cr3w = case.build(widened)
    for pa, v in words_of(widened).items():
        if v & arch.PTE_P:
            widened.write_u64(pa, (v | arch.PTE_RW) & ~arch.PTE_NX)
    again = _walk_all(widened, impl.walk, cr3w, ctl, case.accesses)
    for a, r, w in zip(case.accesses, results, again, strict=True):
        if r.ok:
            why = (
                f"{a!r} under {ctl!r}: ok {format_result(r)} before widening, "
                f"{format_result(w)} after\n  path before:\n{format_path(r.path)}\n"
                f"  path after:\n{format_path(w.path)}"
            )
            assert w.ok, why
            assert w.pa == r.pa, why
