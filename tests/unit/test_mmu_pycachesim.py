"""A single-level LRU TLB gives pycachesim's hit/miss sequence (an outside oracle).

pycachesim 0.3.1 (test-only dependency) simulates a set-associative LRU cache; with a
line size of 4096 bytes its lines are our 4 KiB pages and its set index
(``addr // 4096 % sets``) is the TLB's (``(va >> 12) & (sets - 1)``).  The MMU under
test has one 4K-only LRU L1 DTLB, a tiny L1 ITLB that is never used, no L2 TLB (an L1
miss goes straight to the walker) and no PSCs; every page is mapped with A and D set.
Each read is an L1 hit (``hit == 1``) or a walk (``hit == 3``), and the sequence of
per-access ``hit`` codes must equal pycachesim's sequence of misses, on random and
locality-heavy streams, for the C core and the reference.

The streams are reads only: pycachesim 0.3.1 does not refresh the LRU order on a store
that hits (and counts it in neither HIT nor MISS), which the last test shows, while a
TLB write hit is a use like any other.  Addresses stay below 2^31 (pycachesim#15).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import emu
import emu.ref
from emu import arch
from emu.paging import PageTableBuilder
from emu.ref.mmu import RESULT_DTYPE, RefMMU

cachesim = pytest.importorskip(
    "cachesim",
    reason="pycachesim 0.3.1 is the test-only oracle: pip install pycachesim==0.3.1",
)

BASE_VA = 0x1000_0000
EXAMPLES = 300 if os.environ.get("HYPOTHESIS_PROFILE", "dev") == "ci" else 60
HIT_L1, HIT_WALK = 1, 3


def oracle_misses(
    sets: int, ways: int, vas: np.ndarray[Any, Any], kinds: np.ndarray[Any, Any]
) -> list[bool]:
    """pycachesim's miss sequence for the stream (loads and stores)."""
    mem = cachesim.MainMemory()
    l1 = cachesim.Cache("L1", sets, ways, arch.PAGE_SIZE, "LRU")
    mem.load_to(l1)
    mem.store_from(l1)
    sim = cachesim.CacheSimulator(l1, mem)
    out = []
    misses = 0
    for va, kind in zip(vas.tolist(), kinds.tolist(), strict=True):
        (sim.store if kind == arch.ACC_WRITE else sim.load)(va, 1)
        now = l1.stats()["MISS_count"]
        out.append(now > misses)
        misses = now
    return out


def make_mmu(impl: str, sets: int, ways: int, npages: int) -> Any:
    cfg = {
        "name": f"lru-{sets}x{ways}",
        "arrays": [
            {"name": "ITLB", "role": "l1i", "sizes": ["4K"], "entries": 2, "ways": 2},
            {
                "name": "DTLB",
                "role": "l1d",
                "sizes": ["4K"],
                "entries": sets * ways,
                "ways": ways,
                "policy": "lru",
            },
        ],
        "psc": {},
        "pte_cache": None,
    }
    mem = emu.PhysMem() if impl == "c" else emu.ref.PhysMem()
    pt = PageTableBuilder(mem)
    flags = arch.PTE_P | arch.PTE_RW | arch.PTE_A | arch.PTE_D
    for k in range(npages):
        pt.map(
            BASE_VA + k * arch.PAGE_SIZE, 0x4000_0000 + k * arch.PAGE_SIZE, flags=flags
        )
    if impl == "c":
        mmu_mod = pytest.importorskip("emu.mmu")
        mmu = mmu_mod.MMU(mem, cfg)
    else:
        mmu = RefMMU(mem, cfg)
    mmu.cr3 = pt.cr3
    return mmu


def stream(
    seed: int, npages: int, n: int, hot: int
) -> tuple[np.ndarray[Any, Any], ...]:
    """Reads of uniform pages mixed with a hot set and repeats."""
    rng = np.random.default_rng(seed)
    pages = rng.integers(0, npages, n)
    hot_pages = rng.integers(0, max(1, min(hot, npages)), n)
    pages = np.where(rng.random(n) < 0.6, hot_pages, pages)
    repeat = rng.random(n) < 0.2
    for i in np.flatnonzero(repeat):
        if i:
            pages[i] = pages[i - 1]
    vas = (
        BASE_VA + pages * arch.PAGE_SIZE + rng.integers(0, arch.PAGE_SIZE, n)
    ).astype(np.uint64)
    return vas, np.zeros(n, dtype=np.uint8)


@pytest.mark.parametrize("impl", ["c", "ref"])
@settings(max_examples=EXAMPLES)
@given(
    sets=st.sampled_from([1, 2, 4, 8, 16]),
    ways=st.sampled_from([1, 2, 3, 4, 8, 12]),
    spread=st.sampled_from([0.5, 1.0, 2.0, 4.0]),
    hot=st.integers(1, 32),
    seed=st.integers(0, 2**32 - 1),
)
def test_lru_dtlb_hit_sequence_equals_pycachesim(
    impl: str, sets: int, ways: int, spread: float, hot: int, seed: int
) -> None:
    npages = max(1, int(sets * ways * spread))
    n = 400
    vas, kinds = stream(seed, npages, n, hot)
    mmu = make_mmu(impl, sets, ways, npages)
    out = np.zeros(n, dtype=RESULT_DTYPE)
    counters = mmu.run(vas, kinds, out=out)
    assert set(out["hit"].tolist()) <= {HIT_L1, HIT_WALK}
    ours = (out["hit"] == HIT_WALK).tolist()
    theirs = oracle_misses(sets, ways, vas, kinds)
    if ours != theirs:
        i = next(k for k, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        raise AssertionError(
            f"access {i} (page {(int(vas[i]) - BASE_VA) >> 12}, kind {kinds[i]}): "
            f"mmulab miss={ours[i]}, pycachesim miss={theirs[i]}"
        )
    assert counters["dtlb_load_misses.miss_causes_a_walk"] == sum(theirs)
    assert counters["dTLB-load-misses"] == sum(theirs)


def test_oracle_sees_a_conflict_miss() -> None:
    """The oracle itself: 3 pages in one set of a 2-way cache thrash."""
    vas = np.array([BASE_VA + k * 4 * arch.PAGE_SIZE for k in (0, 1, 2, 0)], np.uint64)
    assert oracle_misses(4, 2, vas, np.zeros(4, np.uint8)) == [True, True, True, True]


def test_pycachesim_store_hit_does_not_refresh_lru() -> None:
    """Why the streams are reads only: in pycachesim 0.3.1 page 0, stored to after
    page 1 was loaded, is still the LRU way when page 2 arrives."""
    vas = np.array([k * arch.PAGE_SIZE for k in (0, 1, 0, 2, 0)], np.uint64)
    kinds = np.array([0, 0, 1, 0, 0], np.uint8)
    assert oracle_misses(1, 2, vas, kinds) == [True, True, False, True, True]
