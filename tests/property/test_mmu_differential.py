"""The C MMU and the pure-Python RefMMU agree on random programs.

A program is a page-table set (4K/2M/1G leaves with random rights, keys, G/A/D bits and
the odd reserved bit, at table indices drawn from a small alphabet so tables are shared
and neighbouring PML4/PDPT slots are used), a starting PCID (half the programs run with
CR4.PCIDE on from the start, so CR3 writes switch between PCIDs whose entries stay
cached) and a list of segments.  Each segment first
applies one operation to both machines -- a page-table change without a flush, a split
of a large page, INVLPG, a CR3 write (PCIDs, the no-flush bit), INVPCID, a full flush,
a control-bit or PKRU change, a counter reset -- and then runs a seeded numpy access
stream (reads, writes, fetches; user or supervisor; page-straddling sizes; unmapped and
non-canonical addresses; runs of repeats that exercise the C core's L1 shortcut)
through ``run(..., out=...)`` or, for some segments, ``translate``.

After every segment the per-access results, the counters of the run, ``stats``,
``tlb_entries()``, ``psc_entries()`` and every page-table word in memory must be equal.
Configurations: every replacement policy on small geometries (so evictions happen)
in five shapes (Intel-like, AMD-like with ``l2i`` and 1G smashing, store DTLB with a
4K-only L2, no L2, a 16-way L2), and every preset.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import astuple, dataclass
from functools import partial
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import emu
from emu import arch
from emu.cpus import POLICIES, PRESETS, TLBConfig
from emu.errors import EmuError, EmuValueError
from emu.paging import PageTableBuilder
from emu.ref.mmu import RESULT_DTYPE, RefMMU

if os.environ.get("EMU_REQUIRE_C") == "1":
    import emu.mmu as mmu_mod
else:
    mmu_mod = pytest.importorskip("emu.mmu")

CI = os.environ.get("HYPOTHESIS_PROFILE", "dev") == "ci"
EXAMPLES_POLICY = 120 if CI else 30
EXAMPLES_PRESET = 60 if CI else 15

P, RW, US, A, D, G, NX = (
    arch.PTE_P,
    arch.PTE_RW,
    arch.PTE_US,
    arch.PTE_A,
    arch.PTE_D,
    arch.PTE_G,
    arch.PTE_NX,
)
U64 = (1 << 64) - 1
#: table indices per level; 0/1 and 510/511 are neighbours in every table
INDICES = {
    arch.LVL_PML5: (0, 1, 510),
    arch.LVL_PML4: (0, 1, 2, 255, 256, 273, 511),
    arch.LVL_PDPT: (0, 1, 3, 511),
    arch.LVL_PD: (0, 1, 2, 255, 511),
    arch.LVL_PT: (0, 1, 2, 3, 7, 8, 100, 511),
}
LEVEL_OF_SIZE = {
    arch.PAGE_SIZE: arch.LVL_PT,
    arch.PMD_SIZE: arch.LVL_PD,
    arch.PUD_SIZE: arch.LVL_PDPT,
}
CONTROL_BITS = (
    "cr0_wp",
    "cr4_pge",
    "cr4_pcide",
    "cr4_smep",
    "cr4_smap",
    "cr4_pke",
    "efer_nxe",
    "rflags_ac",
    "cr4_la57",
)


def sign_extend(va: int, la57: bool) -> int:
    bits = 57 if la57 else 48
    va &= (1 << bits) - 1
    if va >> (bits - 1):
        va |= U64 ^ ((1 << bits) - 1)
    return va


# ---- configurations ----


def _arr(
    name: str, role: str, sizes: str, entries: int, ways: int, policy: str
) -> dict[str, Any]:
    return {
        "name": name,
        "role": role,
        "sizes": sizes.split("+"),
        "entries": entries,
        "ways": ways,
        "policy": policy,
    }


SHAPES = {
    "intel": lambda p: [
        _arr("I4K", "l1i", "4K", 8, 2, p),
        _arr("I2M", "l1i", "2M", 2, 2, p),
        _arr("D4K", "l1d", "4K", 8, 2, p),
        _arr("D2M1G", "l1d", "2M+1G", 4, 2, p),
        _arr("L2", "l2", "4K+2M", 32, 4, p),
        _arr("L2G", "l2", "1G", 4, 2, p),
    ],
    "amd": lambda p: [
        _arr("I", "l1i", "4K+2M+1G", 4, 4, p),
        _arr("I2", "l2i", "4K+2M", 16, 4, p),
        _arr("D", "l1d", "4K+2M+1G", 8, 8, p),
        _arr("D2", "l2", "4K+2M", 32, 4, p),
    ],
    "store": lambda p: [
        _arr("I", "l1i", "4K", 4, 2, p),
        _arr("S", "l1s", "4K+2M+1G", 4, 4, p),
        _arr("D4K", "l1d", "4K", 8, 2, p),
        _arr("D2M", "l1d", "2M", 4, 4, p),
        _arr("L2", "l2", "4K", 16, 4, p),
    ],
    "flat": lambda p: [
        _arr("I", "l1i", "4K", 4, 2, p),
        _arr("D", "l1d", "4K+2M", 8, 4, p),
    ],
    # a 16-way L2: sets of 8 to 16 ways are compared whole in C (tags_eq_nib)
    "wide": lambda p: [
        _arr("I", "l1i", "4K", 4, 2, p),
        _arr("D", "l1d", "4K+2M+1G", 4, 4, p),
        _arr("L2", "l2", "4K+2M", 32, 16, p),
    ],
}


@st.composite
def small_configs(draw: st.DrawFn, policy: str) -> TLBConfig:
    shape = draw(st.sampled_from(sorted(SHAPES)))
    psc = draw(
        st.sampled_from(
            (
                {"2": [2, 2], "3": [1, 2], "4": [1, 2], "5": [1, 2]},
                {"2": [1, 1], "4": [1, 1]},
                {},
            )
        )
    )
    return TLBConfig.from_dict(
        {
            "name": f"small-{shape}-{policy}",
            "arrays": SHAPES[shape](policy),
            "psc": psc,
            # [4, 2]: LRU by recency order with hints; [1, 20]: by time stamps
            "pte_cache": draw(st.sampled_from(([4, 2], [1, 20], None))),
            "l1_hit": draw(st.integers(0, 2)),
            "l2_hit": draw(st.integers(0, 9)),
            "walk_ref": draw(st.integers(1, 40)),
            "pte_hit": 3,
            "pte_miss": 50,
            "vendor": "amd" if shape == "amd" else "intel",
            "policy_seed": draw(st.sampled_from((0, 1, 12345, (1 << 64) - 1))),
        }
    )


# ---- programs ----


@dataclass(frozen=True)
class Mapping:
    va: int
    pa: int
    size: int
    flags: int
    table_flags: int


@st.composite
def leaf_flags(draw: st.DrawFn) -> int:
    f = P if draw(st.integers(0, 19)) else 0
    for bit, odds in ((RW, 3), (US, 2), (NX, 4), (G, 3), (A, 2), (D, 3)):
        if draw(st.integers(0, odds - 1)) == 0:
            f |= bit
    if draw(st.integers(0, 3)) == 0:
        f |= draw(st.integers(1, 15)) << arch.PTE_PKEY_SHIFT
    if draw(st.integers(0, 29)) == 0:
        f |= 1 << 50  # reserved under MAXPHYADDR 46/48
    return f


@st.composite
def mappings(draw: st.DrawFn, la57: bool) -> Mapping:
    size = draw(
        st.sampled_from((arch.PAGE_SIZE,) * 4 + (arch.PMD_SIZE,) * 2 + (arch.PUD_SIZE,))
    )
    leaf_level = LEVEL_OF_SIZE[size]
    va = 0
    top = arch.LVL_PML5 if la57 else arch.LVL_PML4
    for level in range(top, leaf_level - 1, -1):
        va |= draw(st.sampled_from(INDICES[level])) << (12 + 9 * (level - 1))
    pa = draw(st.integers(1, 200)) * size
    table_flags = P | RW | US
    if draw(st.integers(0, 5)) == 0:
        table_flags = draw(
            st.sampled_from((P | RW, P | US, P | RW | US | NX, P | RW | US | A))
        )
    return Mapping(sign_extend(va, la57), pa, size, draw(leaf_flags()), table_flags)


OP_KINDS = (
    "none",
    "pte",
    "split",
    "invlpg",
    "cr3",
    "invpcid",
    "flush",
    "ctl",
    "pkru",
    "reset",
)


@dataclass(frozen=True)
class Segment:
    op: str
    arg: int  # a random word the operation reads its parameters from
    seed: int
    n: int
    user: bool
    sized: bool
    scalar: bool
    stop_on_fault: bool


@st.composite
def segments(draw: st.DrawFn) -> Segment:
    return Segment(
        op=draw(st.sampled_from(OP_KINDS)),
        arg=draw(st.integers(0, (1 << 64) - 1)),
        seed=draw(st.integers(0, (1 << 32) - 1)),
        n=draw(st.sampled_from((8, 40, 120, 300))),
        user=draw(st.integers(0, 3)) == 0,
        sized=draw(st.booleans()),
        scalar=draw(st.integers(0, 7)) == 0,
        stop_on_fault=draw(st.integers(0, 9)) == 0,
    )


@dataclass(frozen=True)
class Program:
    la57: bool
    a_policy: str
    maps: tuple[Mapping, ...]
    segs: tuple[Segment, ...]
    pcid: int  # 0: CR4.PCIDE stays off at the start; else on, with CR3 naming this PCID


@st.composite
def programs(draw: st.DrawFn) -> Program:
    la57 = draw(st.integers(0, 7)) == 0
    maps = tuple(draw(st.lists(mappings(la57), min_size=1, max_size=20)))
    segs = tuple(draw(st.lists(segments(), min_size=1, max_size=10)))
    a_policy = "qemu" if draw(st.integers(0, 5)) == 0 else "success"
    pcid = draw(st.sampled_from((0, 0, 1, 2)))
    return Program(la57, a_policy, maps, segs, pcid)


# ---- one machine per implementation ----


class Machine:
    def __init__(self, name: str, cfg: TLBConfig, prog: Program) -> None:
        self.name = name
        self.mem = emu.PhysMem()
        self.pt = PageTableBuilder(self.mem, la57=prog.la57)
        for m in prog.maps:
            # a large leaf in the way is refused alike in both machines
            with contextlib.suppress(EmuValueError):
                self.pt.map(m.va, m.pa, m.size, m.flags, m.table_flags)
        cls = mmu_mod.MMU if name == "c" else RefMMU
        self.mmu = cls(self.mem, cfg, a_policy=prog.a_policy)
        if prog.la57:
            self.mmu.cr4_la57 = True
        self.mmu.cr3 = self.pt.cr3
        if prog.pcid:
            self.mmu.cr4_pcide = True
            self.mmu.cr3 = self.pt.cr3 | prog.pcid
        self.last: tuple[int, int, str, int] | None = None

    def apply(self, fn: Any) -> str:
        """Run ``fn(self)``; returns the exception's class name, or "ok"."""
        try:
            fn(self)
        except EmuError as exc:
            return f"{type(exc).__name__}{getattr(exc, 'va', '')}"
        return "ok"

    def snapshot(self) -> dict[str, Any]:
        tables = {pa: self.mem.read_table(pa).tobytes() for pa in self.pt.tables}
        return {
            "stats": self.mmu.stats,
            "tlb": sorted(astuple(e) for e in self.mmu.tlb_entries()),
            "psc": sorted(astuple(e) for e in self.mmu.psc_entries()),
            "tables": tables,
            "control": (
                self.mmu.cr3,
                self.mmu.pkru,
                *(getattr(self.mmu, b) for b in CONTROL_BITS),
            ),
        }


class Bits:
    def __init__(self, word: int) -> None:
        self.word = word

    def take(self, n: int) -> int:
        v = self.word & ((1 << n) - 1)
        self.word >>= n
        return v


def _some_va(bits: Bits, maps: tuple[Mapping, ...], la57: bool) -> int:
    kind = bits.take(3)
    m = maps[bits.take(5) % len(maps)]
    if kind == 0:
        return bits.take(16) << 48 | 0x0000_8000_0000_0000  # non-canonical (4-level)
    if kind == 1:
        return sign_extend(bits.take(48) << 9, la57)
    return (m.va + (bits.take(18) << 12) % m.size + bits.take(12)) & U64


def make_op(seg: Segment, maps: tuple[Mapping, ...], la57: bool) -> Any:
    """The operation of a segment, as a function of a Machine (same for both)."""
    b = Bits(seg.arg)
    op = seg.op
    if op == "pte":
        m = maps[b.take(5) % len(maps)]
        level = LEVEL_OF_SIZE[m.size]
        choice = b.take(2)  # 0: new rights, 1-2: new frame too, 3: not present
        flags = (P | RW | US | A | D, P | A, P | US | NX, P | RW)[b.take(2)]
        new_pa = m.pa if choice == 0 else m.pa + m.size * (1 + b.take(3))
        ps = arch.PTE_PS if level != arch.LVL_PT else 0
        value = 0 if choice == 3 else new_pa | flags | ps

        def pte(x: Machine) -> None:
            x.pt.set_entry(m.va, level, value, table_flags=P | RW | US)

        return pte
    if op == "split":
        m = maps[b.take(5) % len(maps)]
        level = LEVEL_OF_SIZE[m.size]
        pages = [b.take(9) for _ in range(3)]

        def split(x: Machine) -> None:
            if level == arch.LVL_PT:
                return
            x.pt.set_entry(m.va, level, 0)
            for k in pages:
                x.pt.map(
                    m.va + k * arch.PAGE_SIZE,
                    m.pa + (k + 7) * arch.PAGE_SIZE,
                    flags=P | RW | US,
                )

        return split
    if op == "invlpg":
        va = _some_va(b, maps, la57)
        return lambda x: x.mmu.invlpg(va)
    if op == "cr3":
        pcid = (0, 1, 2, 3, 0xFFF)[b.take(3) % 5]
        value = pcid | (b.take(2) == 0) << 63
        if b.take(4) == 0:
            value |= 1 << 47  # reserved under MAXPHYADDR 46
        return lambda x: x.mmu.write_cr3(x.pt.cr3 | value)
    if op == "invpcid":
        kind = (0, 0, 1, 2, 3, 4)[b.take(3) % 6]
        pcid = (0, 1, 2, 3, 0x1000)[b.take(3) % 5]
        va = _some_va(b, maps, la57)
        return lambda x: x.mmu.invpcid(kind, pcid, va)
    if op == "flush":
        glob = bool(b.take(1))
        return lambda x: x.mmu.flush_all(glob)
    if op == "ctl":
        name = CONTROL_BITS[
            b.take(4) % (len(CONTROL_BITS) - (0 if b.take(3) == 0 else 1))
        ]
        value = bool(b.take(1))
        return lambda x: setattr(x.mmu, name, value)
    if op == "pkru":
        value = (0, 0x55555554, 0xAAAAAAA8, seg.arg & 0xFFFFFFFF)[b.take(2)]
        return lambda x: setattr(x.mmu, "pkru", value)
    if op == "reset":
        return lambda x: x.mmu.reset()
    return lambda x: None


def make_stream(
    seg: Segment, maps: tuple[Mapping, ...], la57: bool
) -> tuple[np.ndarray[Any, Any], ...]:
    """Addresses, kinds and sizes of a segment: mostly inside mapped leaves (a few
    pages of each, skewed to the first mappings), repeats, unmapped and
    non-canonical addresses."""
    rng = np.random.default_rng(seg.seed)
    n = seg.n
    bases = np.array([m.va for m in maps], dtype=np.uint64)
    spans = np.array(
        [
            min(m.size, 64 * arch.PAGE_SIZE) if i % 2 else m.size
            for i, m in enumerate(maps)
        ],
        dtype=np.uint64,
    )
    which = np.minimum(rng.geometric(0.3, n) - 1, len(maps) - 1)
    offs = rng.integers(0, 1 << 62, n, dtype=np.uint64) % spans[which]
    vas = bases[which] + offs
    pick = rng.random(n)
    unmapped = np.array(
        [
            sign_extend(int(v), la57)
            for v in rng.integers(0, 1 << 47, n, dtype=np.uint64)
        ],
        dtype=np.uint64,
    )
    vas = np.where(pick < 0.06, unmapped, vas)
    low_bits = 56 if la57 else 47  # bit low_bits set, bits above it clear
    noncanon = rng.integers(0, 1 << low_bits, n, dtype=np.uint64) | np.uint64(
        1 << low_bits
    )
    vas = np.where((pick >= 0.06) & (pick < 0.08), noncanon, vas)
    kinds = rng.choice(np.array([0, 1, 2], np.uint8), n, p=[0.5, 0.3, 0.2])
    rep = rng.random(n) < 0.35  # repeat the previous access (same page, same kind)
    for i in np.flatnonzero(rep):
        if i:
            vas[i] = (vas[i - 1] & ~np.uint64(0xFFF)) | np.uint64(rng.integers(0, 4096))
            kinds[i] = kinds[i - 1]
    sizes = rng.choice(np.array([1, 2, 4, 8, 16, 64, 4096, 0], np.uint32), n)
    edge = rng.random(n) < 0.3
    vas = np.where(edge & seg.sized, vas | np.uint64(0xFF8), vas)
    return vas.astype(np.uint64), kinds, sizes


def _describe(cfg: TLBConfig, prog: Program, i: int, seg: Segment) -> str:
    return (
        f"config {cfg.name} ({cfg.to_dict()})\nla57={prog.la57} "
        f"a_policy={prog.a_policy}\nmaps={list(prog.maps)}\n"
        f"segment #{i}: {seg}"
    )


def run_program(cfg: TLBConfig, prog: Program) -> None:
    c = Machine("c", cfg, prog)
    r = Machine("ref", cfg, prog)
    assert c.snapshot() == r.snapshot()
    for i, seg in enumerate(prog.segs):
        where = _describe(cfg, prog, i, seg)
        op = make_op(seg, prog.maps, prog.la57)
        oc, orf = c.apply(op), r.apply(op)
        assert oc == orf, f"operation {seg.op}: C {oc}, ref {orf}\n{where}"
        vas, kinds, sizes = make_stream(seg, prog.maps, prog.la57)
        if seg.scalar:
            for j, (va, k, sz) in enumerate(
                zip(vas.tolist(), kinds.tolist(), sizes.tolist(), strict=True)
            ):
                acc = "rwx"[k]
                one = partial(_translate, va=va, acc=acc, size=sz, user=seg.user)
                tc, tr = c.apply(one), r.apply(one)
                assert tc == tr, (
                    f"access {j} {va:#x} {acc} size {sz}: C {tc}, ref {tr}\n{where}"
                )
                assert c.last == r.last, (
                    f"access {j} {va:#x} {acc} size {sz}: C {c.last}, ref {r.last}\n"
                    f"{where}"
                )
        else:
            out_c = np.zeros(vas.size, dtype=mmu_mod.MMU_RESULT_DTYPE)
            out_r = np.zeros(vas.size, dtype=RESULT_DTYPE)
            kw = {
                "sizes": sizes if seg.sized else None,
                "out": None,
                "stop_on_fault": seg.stop_on_fault,
            }
            rc = c.mmu.run(vas, kinds, seg.user, **{**kw, "out": out_c})
            rr = r.mmu.run(vas, kinds, seg.user, **{**kw, "out": out_r})
            bad = np.flatnonzero(out_c != out_r)
            assert bad.size == 0, (
                f"first diverging access {bad[0]}: va={int(vas[bad[0]]):#x} "
                f"kind={int(kinds[bad[0]])} size={int(sizes[bad[0]])}\n"
                f"  C   {out_c[bad[0]]}\n  ref {out_r[bad[0]]}\n{where}"
            )
            assert rc == rr, {k: (rc[k], rr[k]) for k in rc if rc[k] != rr.get(k)}
        sc, sr = c.snapshot(), r.snapshot()
        for key in sc:
            if sc[key] != sr[key]:
                if key in ("tlb", "psc"):
                    detail = (
                        f"C only {sorted(set(sc[key]) - set(sr[key]))}\n"
                        f"ref only {sorted(set(sr[key]) - set(sc[key]))}"
                    )
                elif key == "stats":
                    detail = str(
                        {
                            k: (sc[key][k], sr[key][k])
                            for k in sc[key]
                            if sc[key][k] != sr[key][k]
                        }
                    )
                else:
                    detail = "differs"
                raise AssertionError(f"after segment {i}: {key}: {detail}\n{where}")


def _translate(x: Machine, va: int, acc: str, size: int, user: bool) -> None:
    x.last = None
    t = x.mmu.translate(va, acc, user=user, size=size)
    x.last = (t.pa, t.page_size, t.level_hit, t.cycles)


@pytest.mark.parametrize("policy", POLICIES)
@settings(max_examples=EXAMPLES_POLICY)
@given(data=st.data())
def test_c_equals_ref_on_small_geometries(policy: str, data: st.DataObject) -> None:
    cfg = data.draw(small_configs(policy), label="config")
    prog = data.draw(programs(), label="program")
    run_program(cfg, prog)


@pytest.mark.parametrize("name", sorted(PRESETS))
@settings(max_examples=EXAMPLES_PRESET)
@given(prog=programs())
def test_c_equals_ref_on_presets(name: str, prog: Program) -> None:
    run_program(PRESETS[name], prog)


def test_long_seeded_stream_per_policy_matches() -> None:
    """One long locality-heavy stream per policy on the smallest shape: thousands of
    evictions, compared access by access."""
    for policy in POLICIES:
        cfg = TLBConfig.from_dict(
            {
                "name": "long",
                "arrays": SHAPES["store"](policy),
                "psc": {"2": [2, 2], "3": [1, 2], "4": [1, 2]},
                "pte_cache": [4, 2],
                "policy_seed": 7,
            }
        )
        big = Mapping(0x40_0000_0000, 1 << 30, arch.PUD_SIZE, P | RW, P | RW | US)
        maps = (
            *(
                Mapping(
                    0x1000_0000 + k * arch.PMD_SIZE,
                    (k + 1) * arch.PMD_SIZE,
                    arch.PMD_SIZE,
                    P | RW | US | A | (D if k % 2 else 0),
                    P | RW | US,
                )
                for k in range(6)
            ),
            big,
        )
        seg = Segment("none", 0, 99, 3000, False, True, False, False)
        run_program(cfg, Program(False, "success", maps, (seg,), 0))
