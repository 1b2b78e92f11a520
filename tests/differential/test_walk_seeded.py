"""Seeded differential: ``emu.walk_batch`` against ``emu.ref.walk`` on 100k accesses.

Each case builds page tables from a fixed numpy seed (a direct map of 1G, 2M and 4K
pages, a user region, 2M kernel text, then random raw entries layered on top, all with
random flags and the odd reserved bit) identically in an ``emu.PhysMem`` and an
``emu.ref.PhysMem``, draws 100,000 accesses (mostly into the mapped regions, some into
the raw entries, some random, some non-canonical; reads, writes and fetches;
supervisor, implicit and user) and walks them in order through ``emu.walk_batch`` and
through ``emu.ref.walk`` in a loop.  The two result arrays must be equal byte for byte,
and so must every word of memory afterwards (A/D bits).

The inputs are generated here from fixed seeds rather than stored in ``tests/data``:
the seed reproduces them exactly and there is no binary file to regenerate.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
from strategies import (
    decode_write,
    diff_words,
    format_path,
    format_result,
    level_span,
    path_rights,
    reached_leaf,
    words_of,
)

import emu
import emu.ref
from emu import arch
from emu.errors import EmuValueError
from emu.paging import PageTableBuilder

# emu.walk before emu.walk_batch, and never `import emu.walk`: loading the submodule
# emu/walk.py rebinds the package attribute emu.walk from the function to the module.
c_walk = emu.walk
if not callable(c_walk):  # already rebound by an earlier importer
    c_walk = c_walk.walk
walk_batch = emu.walk_batch

N_ACCESSES = 100_000
N_RAW_WRITES = 64
KINDS = "rwx"
GIB = 1 << 30
U64 = (1 << 64) - 1
_LEVEL_OF_SIZE = {
    arch.PAGE_SIZE: arch.LVL_PT,
    arch.PMD_SIZE: arch.LVL_PD,
    arch.PUD_SIZE: arch.LVL_PDPT,
}


@dataclass(frozen=True)
class SeededCase:
    """A seed, the paging depth and the control state the walks run under."""

    seed: int
    la57: bool
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def control(self) -> dict[str, Any]:
        """The control keywords of the walks (``la57`` included)."""
        return {"la57": self.la57, **self.settings}


#: Two cases of 100k accesses keep the file under ~12 s (emu.ref.walk runs ~30k walks
#: a second); between them they flip every control keyword from its default.
CASES = [
    pytest.param(
        SeededCase(
            1,
            False,
            {
                "smep": True,
                "smap": True,
                "pke": True,
                "pkru": 0x6A5C3F90,
                "maxphyaddr": 39,
                "amd": True,
            },
        ),
        id="seed1-4level",
    ),
    pytest.param(
        SeededCase(
            2,
            True,
            {
                "a_policy": "qemu",
                "nxe": False,
                "wp": False,
                "gbpages": False,
                "maxphyaddr": 46,
                "pke": True,
                "pkru": 0x55555554,
                "smap": True,
                "ac": True,
            },
        ),
        id="seed2-la57-qemu-nonxe-no1g",
    ),
]


@dataclass(frozen=True)
class Region:
    """``npages`` leaves of ``size`` bytes mapping ``va`` onwards to ``pa`` onwards."""

    va: int
    pa: int
    size: int
    npages: int
    user: bool


def regions_for(la57: bool) -> list[Region]:
    """Direct map (1G, then 2M, then 4K pages), a user region and 2M kernel text."""
    direct = 0xFF11_0000_0000_0000 if la57 else 0xFFFF_8880_0000_0000
    user = 0x00FF_7F00_0000_0000 if la57 else 0x0000_7F00_0000_0000
    text = 0xFFFF_FFFF_8000_0000
    return [
        Region(direct, 0, arch.PUD_SIZE, 4, False),
        Region(direct + 4 * GIB, 16 * GIB, arch.PMD_SIZE, 512, False),
        Region(direct + 5 * GIB, 24 * GIB, arch.PAGE_SIZE, 2048, False),
        Region(user, 32 * GIB, arch.PAGE_SIZE, 1024, True),
        Region(text, 40 * GIB, arch.PMD_SIZE, 16, False),
    ]


def leaf_flags(rng: np.random.Generator, reg: Region) -> int:
    """Random leaf flags: mostly present and writable; NX, A, D, G, PAT, keys; one
    time in a hundred a bit reserved under some MAXPHYADDR or for alignment."""
    u = rng.random(10)
    f = 0 if u[0] < 0.02 else arch.PTE_P
    f |= arch.PTE_RW if u[1] < 0.8 else 0
    f |= arch.PTE_US if reg.user or u[2] < 0.05 else 0
    f |= arch.PTE_A if u[3] < 0.5 else 0
    f |= arch.PTE_D if u[4] < 0.3 else 0
    f |= arch.PTE_G if not reg.user and u[5] < 0.5 else 0
    f |= arch.PTE_NX if u[6] < 0.3 else 0
    pat = arch.PTE_PAT if reg.size == arch.PAGE_SIZE else arch.PTE_PAT_LARGE
    f |= pat if u[7] < 0.1 else 0
    f |= int(rng.integers(0, 4)) << 3  # PWT, PCD
    f |= int(rng.integers(0, 16)) << arch.PTE_PKEY_SHIFT
    if u[8] < 0.01:
        align = {arch.PUD_SIZE: 30, arch.PMD_SIZE: 21}.get(reg.size, 13)
        f |= 1 << int(rng.choice([*range(39, 52), *range(13, align)]))
    return f


def build_case(mem: Any, case: SeededCase) -> tuple[int, list[Region], list[Any]]:
    """Build the seeded tables into ``mem``; returns CR3, regions and raw writes.

    Deterministic in ``case.seed``, so every memory gets the same tables.
    """
    rng = np.random.default_rng([case.seed, 0])
    regions = regions_for(case.la57)
    b = PageTableBuilder(mem, la57=case.la57)
    for reg in regions:
        # U/S=0 in a kernel region's tables makes it supervisor whatever the leaf says
        us = arch.PTE_US if reg.user or rng.random() < 0.5 else 0
        table_flags = arch.PTE_P | arch.PTE_RW | us
        for i in range(reg.npages):
            b.map(
                reg.va + i * reg.size,
                reg.pa + i * reg.size,
                reg.size,
                leaf_flags(rng, reg),
                table_flags,
            )
    # Raw entries layered on top: leaves with odd flags, pointers into the first table
    # frames (aliasing, loops), holes, reserved bits.  Half replace a leaf of a region;
    # the rest go where strategies.decode_write puts them.  They are applied lowest
    # level first, so no write goes down through a pointer another one planted.
    writes = []
    for _ in range(N_RAW_WRITES):
        w = decode_write(int.from_bytes(rng.bytes(32), "little"), case.la57)
        if rng.random() < 0.5:
            reg = regions[int(rng.integers(0, len(regions)))]
            va = reg.va + int(rng.integers(0, reg.npages)) * reg.size
            w = replace(w, va=va, level=_LEVEL_OF_SIZE[reg.size])
        writes.append(w)
    for w in sorted(writes, key=lambda w: w.level):
        with contextlib.suppress(EmuValueError):  # a large leaf in the way
            b.set_entry(w.va, w.level, w.value, table_flags=w.table_flags)
    return b.cr3, regions, writes


def make_accesses(
    case: SeededCase, regions: list[Region], writes: list[Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``N_ACCESSES`` addresses and access codes, deterministic in ``case.seed``.

    70% inside a mapped region, 12% inside a raw entry's range, 12% random canonical,
    6% non-canonical; kinds uniform; 60% supervisor, 10% implicit, 30% user.
    """
    rng = np.random.default_rng([case.seed, 1])
    n = N_ACCESSES
    rnd = rng.integers(0, U64, size=n, dtype=np.uint64, endpoint=True)
    cat = rng.choice(4, size=n, p=[0.70, 0.12, 0.12, 0.06])

    r_idx = rng.integers(0, len(regions), size=n)
    r_va = np.array([r.va for r in regions], dtype=np.uint64)[r_idx]
    r_size = np.array([r.size for r in regions], dtype=np.uint64)[r_idx]
    r_pages = np.array([r.npages for r in regions], dtype=np.uint64)[r_idx]
    page = (rng.random(n) * r_pages).astype(np.uint64)
    in_region = r_va + page * r_size + rnd % r_size

    w_idx = rng.integers(0, len(writes), size=n)
    w_mask = np.array([level_span(w.level) - 1 for w in writes], dtype=np.uint64)[w_idx]
    w_va = np.array([w.va for w in writes], dtype=np.uint64)[w_idx]
    in_write = (w_va & ~w_mask) | (rnd & w_mask)

    bits = 57 if case.la57 else 48
    low = rnd & np.uint64((1 << bits) - 1)
    sign = (low >> np.uint64(bits - 1)) * np.uint64(U64 ^ ((1 << bits) - 1))
    canonical = low | sign
    flip = rng.integers(bits, 64, size=n).astype(np.uint64)
    non_canonical = canonical ^ (np.uint64(1) << flip)

    vas = np.select(
        [cat == 0, cat == 1, cat == 2], [in_region, in_write, canonical], non_canonical
    ).astype(np.uint64)
    kinds = rng.integers(0, 3, size=n, dtype=np.uint8)
    mods = rng.choice(
        np.array([0, arch.ACC_IMPLICIT, arch.ACC_USER], dtype=np.uint8),
        size=n,
        p=[0.6, 0.1, 0.3],
    )
    return vas, (kinds | mods).astype(np.uint8)


def walk_one(
    walker: Any, mem: Any, va: int, code: int, cr3: int, control: dict[str, Any]
) -> Any:
    """``emu.walk`` or ``emu.ref.walk`` for one batch access code."""
    return walker(
        mem,
        va,
        KINDS[code & arch.ACC_KIND_MASK],
        cr3=cr3,
        user=bool(code & arch.ACC_USER),
        implicit=bool(code & arch.ACC_IMPLICIT),
        **control,
    )


def ref_records(
    mem: Any,
    vas: np.ndarray[Any, Any],
    codes: np.ndarray[Any, Any],
    cr3: int,
    control: dict[str, Any],
    dtype: np.dtype[Any],
) -> np.ndarray[Any, Any]:
    """The reference walks, in order, as ``walk_batch`` records.

    ``rights``/``pkey`` are the AND/OR of the path and the leaf's key when the walk
    reached a leaf (success or a rights/key fault), else 0, as csrc/emu_api.h reports.
    """
    nxe = control.get("nxe", True)
    cols: dict[str, list[int]] = {name: [] for name in dtype.names or ()}
    for va, code in zip(vas.tolist(), codes.tolist(), strict=True):
        r = walk_one(emu.ref.walk, mem, va, code, cr3, control)
        rights, pkey = path_rights(r.path, nxe) if reached_leaf(r) else (0, 0)
        for name, value in (
            ("pa", r.pa),
            ("page_size", r.page_size),
            ("cr2", r.cr2),
            ("error_code", r.error_code),
            ("vector", r.vector),
            ("level", r.level),
            ("rights", rights),
            ("pkey", pkey),
        ):
            cols[name].append(value or 0)
    out = np.zeros(len(vas), dtype=dtype)
    for name, values in cols.items():
        out[name] = values
    return out


def _record(x: Any) -> str:
    return " ".join(f"{name}={int(x[name]):#x}" for name in x.dtype.names)


def _describe_access(case: SeededCase, i: int, va: int, code: int, cr3: int) -> str:
    mods = [
        m
        for m, bit in (("user", arch.ACC_USER), ("implicit", arch.ACC_IMPLICIT))
        if code & bit
    ]
    return (
        f"access #{i}: va={va:#x} {KINDS[code & arch.ACC_KIND_MASK]!r} {mods} "
        f"(seed {case.seed}, cr3={cr3:#x}, control={case.control})"
    )


def _paths_at(case: SeededCase, vas: Any, codes: Any, i: int) -> str:
    """Both walk paths of access ``i``, replayed on fresh memories: accesses before
    it through ``walk_batch`` / ``emu.ref.walk``, then access ``i`` through
    ``emu.walk`` (which reports its path) and ``emu.ref.walk``."""
    c_mem, r_mem = emu.PhysMem(), emu.ref.PhysMem()
    cr3 = build_case(c_mem, case)[0]
    build_case(r_mem, case)
    walk_batch(c_mem, vas[:i], codes[:i], cr3=cr3, **case.control)
    for va, code in zip(vas[:i].tolist(), codes[:i].tolist(), strict=True):
        walk_one(emu.ref.walk, r_mem, va, code, cr3, case.control)
    va, code = int(vas[i]), int(codes[i])
    rc = walk_one(c_walk, c_mem, va, code, cr3, case.control)
    rr = walk_one(emu.ref.walk, r_mem, va, code, cr3, case.control)
    return (
        f"  C (emu.walk): {format_result(rc)}\n  ref:          {format_result(rr)}\n"
        f"  C path:\n{format_path(rc.path)}\n  ref path:\n{format_path(rr.path)}"
    )


def _first_memory_divergence(case: SeededCase, vas: Any, codes: Any) -> str:
    """Replay with ``emu.walk`` and ``emu.ref.walk`` side by side; the first access
    after which the entries it read differ between the two memories."""
    c_mem, r_mem = emu.PhysMem(), emu.ref.PhysMem()
    cr3 = build_case(c_mem, case)[0]
    build_case(r_mem, case)
    for i, (va, code) in enumerate(zip(vas.tolist(), codes.tolist(), strict=True)):
        rc = walk_one(c_walk, c_mem, va, code, cr3, case.control)
        rr = walk_one(emu.ref.walk, r_mem, va, code, cr3, case.control)
        if any(c_mem.read_u64(pa) != r_mem.read_u64(pa) for _, pa, _ in rr.path):
            where = _describe_access(case, i, va, code, cr3)
            return (
                f"memory first diverges after {where}\n"
                f"  C: {format_result(rc)}\n  ref: {format_result(rr)}\n"
                f"  C path:\n{format_path(rc.path)}\n"
                f"  ref path:\n{format_path(rr.path)}"
            )
    return "(scalar replay found no diverging entry)"


@pytest.mark.parametrize("case", CASES)
def test_walk_batch_matches_ref_walk_byte_for_byte_on_seeded_tables(
    case: SeededCase,
) -> None:
    c_mem, r_mem = emu.PhysMem(), emu.ref.PhysMem()
    cr3, regions, writes = build_case(c_mem, case)
    assert build_case(r_mem, case)[0] == cr3
    assert words_of(c_mem) == words_of(r_mem), "seeded tables built differently"
    vas, codes = make_accesses(case, regions, writes)

    got = walk_batch(c_mem, vas, codes, cr3=cr3, **case.control)
    want = ref_records(r_mem, vas, codes, cr3, case.control, got.dtype)

    if got.tobytes() != want.tobytes():
        i = int(np.flatnonzero(np.asarray(got) != want)[0])
        pytest.fail(
            f"walk_batch and emu.ref.walk first differ at "
            f"{_describe_access(case, i, int(vas[i]), int(codes[i]), cr3)}\n"
            f"  batch: {_record(got[i])}\n  ref:   {_record(want[i])}\n"
            + _paths_at(case, vas, codes, i)
        )
    wc, wr = words_of(c_mem), words_of(r_mem)
    if wc != wr:
        pytest.fail(
            "memory differs after the walks (C vs ref):\n"
            f"{diff_words(wc, wr)}\n" + _first_memory_divergence(case, vas, codes)
        )

    # the seeded inputs must exercise successes and every kind of fault
    vec, ec = want["vector"], want["error_code"]
    pf = vec == arch.VEC_PF
    share = {
        "ok": np.mean(vec == arch.VEC_NONE),
        "#GP": np.mean(vec == arch.VEC_GP),
        "not present": np.mean(pf & ((ec & arch.PF_P) == 0)),
        "reserved": np.mean(pf & ((ec & arch.PF_RSVD) != 0)),
        "rights": np.mean(pf & ((ec & arch.PF_P) != 0) & ((ec & arch.PF_RSVD) == 0)),
    }
    assert share["ok"] > 0.15, share
    assert min(share.values()) > 0.01, share
