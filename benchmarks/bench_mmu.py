"""Translations per second of ``MMU.run`` (skylake) against a hand-written C loop.

The pure-Python ``RefMMU`` runs in the same groups; everything is measured in one run.

Streams (reads; 10 M accesses each with the benchmarks enabled):

* ``stride-1g``: a 4 KiB stride over 1 GiB, wrapping (every access a new page);
* ``uniform-4g``: uniformly random addresses over 4 GiB;
* ``hot-1m``: 90 % uniformly in a 1 MiB hot set, 10 % uniformly over 4 GiB;
* ``lackey-ls``: the data addresses (reads and writes, sizes ignored) of the real
  valgrind lackey trace ``tests/data/traces/ls.lackey.xz`` (``/bin/ls /``; 206 k data
  accesses on 137 pages), repeated to 10 M: L1-hit dominated.

The synthetic streams run over 4 GiB mapped with 4 KiB pages (1 M PTEs) from
``BASE_VA``: PageTableBuilder makes the upper levels and one page table per 2 MiB, then
each page table is written whole with ``PhysMem.write_table``.  Every leaf has A and D
set, so the walks write nothing.  The lackey stream maps each touched page with one 4K
leaf.

Groups (compare within a group; accesses/s = ``extra_info["accesses"]`` / time):

* ``mmu-<stream>``: ``c`` is ``mmu.run(vas, kinds)`` (counters only; a fresh TLB each
  round, via ``flush_all`` + ``reset`` in the pedantic setup); ``ref`` is
  ``RefMMU.run`` on the first ``N_REF`` accesses (reported per access).
* The baseline, ``benchmarks/baseline/tlb_baseline.c``, is compiled with ``gcc -O2``
  during the run and reads the same table frames and the same addresses from files:
  a plain 4-level walk and an L1 (64 entries, 4-way) + L2 (1536, 12-way) LRU TLB, no
  PSCs, no rights, no counters.  It runs once before each of mmulab's rounds (in the
  untimed setup, so the two alternate on this shared machine) and the fastest of its
  runs is the baseline rate.  Its L1-miss and walk counts must equal mmulab's (same
  geometry and policy for 4K pages).

A summary table (mmulab's and the baseline's best M/s, the ratio, ref µs/access) is
printed at the end of the module.  The ratio is the median over rounds of mmulab's rate
divided by the rate of the baseline run made just before that round.  Under
``--benchmark-disable`` every body runs once on 50 k accesses (the baseline too, when
gcc exists).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import emu
import emu.trace
from emu import arch
from emu.paging import PageTableBuilder
from emu.ref.mmu import RefMMU

MMU = pytest.importorskip("emu.mmu").MMU  # the compiled core (the skip says why not)

HERE = Path(__file__).parent
BASELINE_SRC = HERE / "baseline" / "tlb_baseline.c"
LACKEY = HERE.parent / "tests" / "data" / "traces" / "ls.lackey.xz"

SEED = 20261130
N_FULL = 10_000_000
N_SMOKE = 50_000
N_REF_FULL = 20_000
N_REF_SMOKE = 2_000
ROUNDS = 5
CPU = "skylake"

TABLE_BASE = 0x100000  # PageTableBuilder's bump allocator: contiguous table frames
BASE_VA = 0x10_0000_0000  # 64 GiB: the synthetic 4 GiB region
BASE_PA = 0x1_0000_0000  # data frames (no contents needed)
SPAN = 4 << 30
HOT = 1 << 20
LEAF = arch.PTE_P | arch.PTE_RW | arch.PTE_US | arch.PTE_A | arch.PTE_D
TABLE = arch.PTE_P | arch.PTE_RW | arch.PTE_US | arch.PTE_A
STREAMS = ("stride-1g", "uniform-4g", "hot-1m", "lackey-ls")


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("benchmark_enable")) or not config.getoption(
        "benchmark_disable"
    )


@dataclass
class Space:
    """One address space: memory, its table frames, and the streams over it."""

    mem: Any
    cr3: int
    tables: list[int]
    streams: dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]] = field(
        default_factory=dict
    )

    def table_bytes(self) -> bytes:
        """Every table frame, in address order from TABLE_BASE (contiguous)."""
        assert self.tables == [TABLE_BASE + 4096 * i for i in range(len(self.tables))]
        return b"".join(self.mem.read_table(pa).tobytes() for pa in self.tables)


def map_4g(mem: Any) -> PageTableBuilder:
    """4 GiB of 4K pages from BASE_VA: one map() per 2 MiB, then whole tables."""
    pt = PageTableBuilder(mem, table_base=TABLE_BASE)
    ptes = LEAF + arch.PAGE_SIZE * np.arange(arch.ENTRIES_PER_TABLE, dtype=np.uint64)
    for r in range(SPAN // arch.PMD_SIZE):
        va = BASE_VA + r * arch.PMD_SIZE
        pa = BASE_PA + r * arch.PMD_SIZE
        first = pt.map(va, pa, flags=LEAF, table_flags=TABLE)
        mem.write_table(first & ~0xFFF, ptes + np.uint64(pa))
    return pt


def synthetic_streams(n: int) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(SEED)
    i = np.arange(n, dtype=np.uint64)
    stride = BASE_VA + (i * np.uint64(arch.PAGE_SIZE)) % np.uint64(1 << 30)
    uniform = BASE_VA + rng.integers(0, SPAN, n, dtype=np.uint64)
    hot = BASE_VA + rng.integers(0, HOT, n, dtype=np.uint64)
    far = BASE_VA + rng.integers(0, SPAN, n, dtype=np.uint64)
    mixed = np.where(rng.random(n) < 0.9, hot, far)
    return {"stride-1g": stride, "uniform-4g": uniform, "hot-1m": mixed}


@pytest.fixture(scope="module")
def sizes(request: pytest.FixtureRequest) -> tuple[int, int]:
    """(accesses per stream, accesses for the ref)."""
    if _enabled(request.config):
        return N_FULL, N_REF_FULL
    return N_SMOKE, N_REF_SMOKE


@pytest.fixture(scope="module")
def synthetic(sizes: tuple[int, int]) -> Space:
    mem = emu.PhysMem()
    pt = map_4g(mem)
    space = Space(mem, pt.cr3, list(pt.tables))
    for name, vas in synthetic_streams(sizes[0]).items():
        space.streams[name] = (vas, np.zeros(vas.size, np.uint8))
    return space


@pytest.fixture(scope="module")
def lackey(sizes: tuple[int, int]) -> Space:
    """The data accesses of a real lackey trace, or a locality-heavy stand-in."""
    mem = emu.PhysMem()
    pt = PageTableBuilder(mem, table_base=TABLE_BASE)
    if LACKEY.exists():
        recs, _ = emu.trace.load(LACKEY)
        data = recs[recs["kind"] != arch.ACC_FETCH]
        vas, kinds = data["addr"].astype(np.uint64), data["kind"].astype(np.uint8)
    else:  # a stack-and-heap-like stand-in: 150 pages, strong reuse
        rng = np.random.default_rng(SEED)
        pages = np.minimum(rng.geometric(0.05, 200_000), 150).astype(np.uint64)
        vas = (
            np.uint64(0x5555_0000_0000)
            + pages * np.uint64(4096)
            + rng.integers(0, 4096, pages.size, dtype=np.uint64)
        )
        kinds = (rng.random(pages.size) < 0.3).astype(np.uint8)
    for k, page in enumerate(np.unique(vas >> np.uint64(12)).tolist()):
        pt.map(page << 12, BASE_PA + k * arch.PAGE_SIZE, flags=LEAF, table_flags=TABLE)
    n = sizes[0]
    space = Space(mem, pt.cr3, list(pt.tables))
    space.streams["lackey-ls"] = (np.resize(vas, n), np.resize(kinds, n))
    return space


@pytest.fixture(scope="module")
def baseline_exe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not found: the C baseline cannot be built")
    out = tmp_path_factory.mktemp("baseline") / "tlb_baseline"
    subprocess.run([gcc, "-O2", "-o", str(out), str(BASELINE_SRC)], check=True)
    return out


@dataclass
class Row:
    """What the summary prints for one stream."""

    accesses: int = 0
    mmu_per_s: float = 0.0
    base_per_s: float | None = None
    ratio: float | None = None  # median over rounds of mmulab / the baseline run before
    ref_us: float | None = None
    l1_miss: float = 0.0
    walks: float = 0.0


RESULTS: dict[str, Row] = {}


@pytest.fixture(scope="module", autouse=True)
def summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the comparison table once the module is done."""
    yield
    if not RESULTS:
        return
    tr = request.config.pluginmanager.getplugin("terminalreporter")
    lines = [
        "",
        f"mmulab MMU.run ({CPU}) vs hand-written C baseline vs RefMMU:",
        f"{'stream':<12} {'accesses':>10} {'L1 miss':>8} {'walks':>7} "
        f"{'mmulab M/s':>11} {'base M/s':>9} {'ratio':>6} {'ref us/acc':>10}",
    ]
    for name in STREAMS:
        r = RESULTS.get(name)
        if r is None:
            continue
        base = f"{r.base_per_s / 1e6:9.1f}" if r.base_per_s else f"{'-':>9}"
        ratio = f"{r.ratio:6.2f}" if r.ratio is not None else f"{'-':>6}"
        ref = f"{r.ref_us:10.1f}" if r.ref_us is not None else f"{'-':>10}"
        lines.append(
            f"{name:<12} {r.accesses:>10} {r.l1_miss:8.1%} {r.walks:7.1%} "
            f"{r.mmu_per_s / 1e6:11.1f} {base} {ratio} {ref}"
        )
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if tr is None or capman is None:
        print("\n".join(lines))
        return
    with capman.global_and_fixture_disabled():
        for line in lines:
            tr.write_line(line)


def _space(name: str, request: pytest.FixtureRequest) -> Space:
    return request.getfixturevalue("lackey" if name == "lackey-ls" else "synthetic")


class Baseline:
    """The C baseline over one stream: its input files, written once, and its runs."""

    def __init__(self, exe: Path, space: Space, name: str, tmp: Path) -> None:
        self.exe = exe
        self.tables = tmp / "tables.bin"
        self.stream = tmp / f"{name}.u64"
        self.tables.write_bytes(space.table_bytes())
        space.streams[name][0].astype("<u8").tofile(self.stream)
        self.runs: list[dict[str, float]] = []

    def run(self) -> None:
        """One run of the loop (its report: accesses, seconds, rates, counts)."""
        argv = [self.exe, self.tables, hex(TABLE_BASE), self.stream, "1"]
        out = subprocess.run(
            [str(a) for a in argv], check=True, capture_output=True, text=True
        ).stdout
        pairs = (kv.split("=") for kv in out.split())
        self.runs.append({k: float(v) for k, v in pairs})

    def best(self) -> dict[str, float]:
        return max(self.runs, key=lambda r: r["accesses_per_s"])

    def close(self) -> None:
        self.stream.unlink()


@pytest.mark.parametrize("name", STREAMS)
def test_mmu_run(
    benchmark: Any,
    request: pytest.FixtureRequest,
    name: str,
    sizes: tuple[int, int],
    tmp_path: Path,
) -> None:
    benchmark.group = f"mmu-{name}"
    benchmark.name = f"c[{name}]"
    space = _space(name, request)
    vas, kinds = space.streams[name]
    mmu = MMU(space.mem, CPU)
    mmu.cr3 = space.cr3
    mmu.run(vas[:1000], kinds[:1000])  # warm the host caches and code paths

    # The baseline runs once before each round (in the untimed setup), so the two
    # alternate and see the same moments of this shared machine's load.
    base = None
    if shutil.which("gcc") is not None:
        base = Baseline(request.getfixturevalue("baseline_exe"), space, name, tmp_path)

    def fresh() -> None:
        if base is not None:
            base.run()
        mmu.flush_all()
        mmu.reset()

    t0 = time.perf_counter()
    counters = benchmark.pedantic(
        mmu.run,
        args=(vas, kinds),
        setup=fresh,
        rounds=ROUNDS if not benchmark.disabled else 1,
        iterations=1,
    )
    elapsed = time.perf_counter() - t0
    if benchmark.disabled:  # setup ran the baseline, untimed; time the run alone
        fresh()
        t0 = time.perf_counter()
        mmu.run(vas, kinds)
        elapsed = time.perf_counter() - t0
    n = vas.size
    assert counters["accesses"] == n
    loads, stores = counters["dTLB-loads"], counters["dTLB-stores"]
    assert loads + stores == n
    misses = counters["dTLB-load-misses"] + counters["dTLB-store-misses"]
    walks = (
        counters["dtlb_load_misses.miss_causes_a_walk"]
        + counters["dtlb_store_misses.miss_causes_a_walk"]
    )
    assert walks > 0
    assert counters["page_faults"] == 0
    assert counters["dirty_bit_walks"] == 0
    if benchmark.disabled or benchmark.stats is None:
        seconds = elapsed
    else:
        seconds = benchmark.stats.stats.min
    row = RESULTS.setdefault(name, Row())
    row.accesses, row.mmu_per_s = n, n / seconds
    row.l1_miss, row.walks = misses / n, walks / n
    benchmark.extra_info.update(
        accesses=n, l1_misses=misses, walks=walks, accesses_per_s=row.mmu_per_s
    )

    if base is None:
        return
    base.close()
    best = base.best()
    for b in base.runs:
        assert b["accesses"] == n
        # same geometry, same LRU, 4K pages only: the same hits and misses
        assert (b["l1_misses"], b["walks"]) == (misses, walks)
    row.base_per_s = best["accesses_per_s"]
    # each round against the baseline run just before it (the same moment's load)
    times = [seconds] if benchmark.disabled or benchmark.stats is None else None
    if times is None:
        times = list(benchmark.stats.stats.data)
    pairs = zip(times, base.runs[-len(times) :], strict=True)
    row.ratio = statistics.median(n / t / b["accesses_per_s"] for t, b in pairs)
    benchmark.extra_info.update(baseline_per_s=row.base_per_s, ratio=row.ratio)


@pytest.mark.parametrize("name", STREAMS)
def test_ref_run(
    benchmark: Any,
    request: pytest.FixtureRequest,
    name: str,
    sizes: tuple[int, int],
) -> None:
    benchmark.group = f"mmu-{name}"
    benchmark.name = f"ref[{name}]"
    space = _space(name, request)
    n = sizes[1]
    vas, kinds = space.streams[name][0][:n], space.streams[name][1][:n]
    ref = RefMMU(space.mem, CPU)
    ref.cr3 = space.cr3

    def fresh() -> None:
        ref.flush_all()
        ref.reset()

    t0 = time.perf_counter()
    counters = benchmark.pedantic(
        ref.run, args=(vas, kinds), setup=fresh, rounds=1, iterations=1
    )
    elapsed = time.perf_counter() - t0
    assert counters["accesses"] == n
    c = MMU(space.mem, CPU)
    c.cr3 = space.cr3
    assert counters == c.run(vas, kinds)  # the same counters as the C core
    seconds = (
        elapsed
        if benchmark.disabled or benchmark.stats is None
        else (benchmark.stats.stats.min)
    )
    RESULTS.setdefault(name, Row()).ref_us = seconds / n * 1e6
    benchmark.extra_info.update(accesses=n, us_per_access=seconds / n * 1e6)
