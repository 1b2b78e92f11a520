"""End-to-end ``mmulab run-trace`` throughput (accesses/s) against ``xz -dc``.

The issue's target: run-trace on an ``.xz`` lackey trace at least 80 % of the speed of
decompressing the same file alone (``xz -dc``), i.e. limited by decompression.

The input is lackey ``--trace-mem=yes`` text written from a seeded numpy stream into a
temporary directory, in two sizes: 4 M records (56 MB of text) and 16 M (225 MB) with
the benchmarks enabled, 60 k and 120 k under ``--benchmark-disable`` (each body then
runs once, as a smoke test).  The fixed costs of a run (the boot, about 2,000
demand-paging faults) weigh on the small trace; the large one shows the rate a long
trace runs at.  It models a small program (:class:`Program`): 2,000 basic blocks of
1-11 instructions over 96 pages of PIE code at 0x108000 and 160 pages of libraries at
0x4000000 (8-digit addresses), executed in loops (hot blocks more often); 45 % of the
instructions carry a load, store or modify (10:4:1) of 1 to 32 bytes to a stack slot
(6 pages at 0x1fff000000, 10-digit addresses), an array walked with a stride, or a
pointer chase over the heap at 0x4a00000.  Like a real trace it compresses well (``xz
-1``: about 20x) and touches about 2,000 pages, demand-paged during the run; a few
hundred accesses straddle pages.

Groups (accesses/s = ``extra_info["accesses"]`` / mean time):

* ``runtrace-4M``, ``runtrace-16M``: ``run-trace-plain`` (the uncompressed file),
  ``run-trace-xz`` (the same text compressed with ``xz -1``), and in the same run
  ``baseline-xz-dc`` (``xz -dc`` of that file into a pipe, read and discarded) and
  ``baseline-lzma`` (Python's ``lzma`` module).  run-trace decompresses and parses
  on background threads (``emu.trace.ahead``) while the MMU runs, so it can use both
  cores.  ``test_xz_target`` prints run-trace-xz against baseline-xz-dc per size
  (skipped with the benchmarks disabled).
* ``runtrace-parts`` (4M trace): where run-trace's time goes: ``boot`` (the 16G
  machine it builds), ``mmu-feed[1M]`` (the records already in memory fed through
  ``TraceRunner`` in the reader's 1M-record chunks: demand paging and the MMU, no
  reading), ``mmu-feed[16K]`` (the same in 16K chunks: after a fault ``TraceRunner``
  hands the rest of the chunk to ``MMU.run`` again, so this shows the cost that
  grows with the chunk) and ``mmu-run-all-mapped`` (one ``MMU.run`` over every
  record with every page already mapped: the C MMU's own speed).

Every body asserts its result: the accesses counted equal the records written.
"""

from __future__ import annotations

import contextlib
import io
import json
import lzma
import pathlib
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest

pytest.importorskip("emu._core")

import emu.trace as tr
from kernel_model import cli
from kernel_model.machine import Machine
from kernel_model.runtrace import RunConfig, TraceRunner

SEED = 20261130
BLOCK = 1 << 22
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_PREFIX = {
    k: np.frombuffer(p, dtype=np.uint8)
    for k, p in enumerate([b"I  ", b" L ", b" S ", b" M "])
}
#: mean times of this run, for test_xz_target
MEANS: dict[str, float] = {}


def _enabled(config: Any) -> bool:
    opt = config.getoption
    return bool(opt("benchmark_enable", False) or not opt("benchmark_disable", False))


# ---- the trace -----------------------------------------------------------------------


def _cumcount(groups: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements are in its group."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    first = np.r_[True, g[1:] != g[:-1]]
    idx = np.arange(len(g))
    out = np.empty(len(g), np.int64)
    out[order] = idx - np.maximum.accumulate(np.where(first, idx, 0))
    return out


class Program:
    """A made-up program: basic blocks of instructions, each with its data access.

    Args:
        rng: the seeded generator.
        nblocks: basic blocks in the program.
    """

    def __init__(self, rng: np.random.Generator, nblocks: int = 2000) -> None:
        n = rng.integers(1, 12, nblocks)  # instructions per block
        self.n, self.first, self.nblocks = n, np.cumsum(n) - n, nblocks
        total = int(n.sum())
        code = np.concatenate(  # PIE code, then libraries
            [0x108000 + np.arange(96) * 4096, 0x4000000 + np.arange(160) * 4096]
        )
        start = code[rng.integers(0, len(code), nblocks)] + rng.integers(
            0, 3072, nblocks
        )
        self.ilen = rng.integers(1, 8, total)
        block = np.repeat(np.arange(nblocks), n)
        offset = np.cumsum(self.ilen) - self.ilen
        self.pc = start[block] + offset - offset[self.first][block]
        self.has_data = rng.random(total) < 0.45
        self.dkind = rng.choice([1, 2, 3], total, p=[10 / 15, 4 / 15, 1 / 15])
        self.dsize = rng.choice([1, 2, 4, 8, 8, 8, 16, 32], total)
        # data: a stack slot, an array walked with a stride, or a pointer chase
        self.mode = rng.choice([0, 1, 2], total, p=[0.45, 0.45, 0.10])
        self.stack = 0x1FFF000000 + rng.integers(0, 6 * 4096, total)
        self.array = 0x4A00000 + rng.integers(0, 2000, total) * 4096
        self.stride = rng.choice([4, 8, 8, 16, 64], total)

    def run(self, rng: np.random.Generator, nexec: int) -> tuple[np.ndarray, ...]:
        """``nexec`` block executions as lines: (kind 0=I 1=L 2=S 3=M, addr, size)."""
        hot = (self.nblocks * rng.random(nexec // 8 + 1) ** 2).astype(np.int64)
        b = np.repeat(hot, rng.geometric(1 / 8, len(hot)))[:nexec]  # loops
        it = _cumcount(b)  # the iteration each block execution is in
        n = self.n[b]
        rep = np.repeat(np.arange(len(b)), n)
        flat = (
            self.first[b][rep]
            + np.arange(int(n.sum()))
            - np.repeat(np.cumsum(n) - n, n)
        )
        has = self.has_data[flat]
        f = flat[has]
        walk = self.array[f] + (it[rep][has] * self.stride[f]) % (1 << 18)
        addr = np.where(self.mode[f] == 0, self.stack[f], walk)
        chase = self.mode[f] == 2
        addr[chase] = 0x4A00000 + rng.integers(0, 1000 * 4096, int(chase.sum()))
        size = self.dsize[f]
        addr &= ~(np.minimum(size, 8) - 1)  # mostly aligned, as compilers do
        slots = 1 + has.astype(np.int64)  # each instruction's line, then its data line
        pos = np.cumsum(slots) - slots
        m = int(slots.sum())
        kind, where, nbytes = (np.empty(m, np.int64) for _ in range(3))
        kind[pos], where[pos], nbytes[pos] = 0, self.pc[flat], self.ilen[flat]
        dpos = pos[has] + 1
        kind[dpos], where[dpos], nbytes[dpos] = self.dkind[f], addr, size
        return kind, where, nbytes


def _lines(kind: np.ndarray, addr: np.ndarray, size: np.ndarray) -> bytes:
    """Lackey lines: prefix, %08lx address, ',', %lu size, newline (vectorised)."""
    n = len(kind)
    width = np.full(n, 8)
    for bits in range(32, 64, 4):
        width += addr >= (1 << bits)
    two = size >= 10
    length = 3 + width + 1 + 1 + two + 1
    buf = np.zeros((n, 3 + 16 + 4), np.uint8)
    rows = np.arange(n)
    for k, p in _PREFIX.items():
        buf[kind == k, :3] = p
    for j in range(16):
        ok = j < width
        shift = 4 * (width[ok] - 1 - j)
        buf[ok, 3 + j] = _HEX[(addr[ok] >> shift) & 0xF]
    buf[rows, 3 + width] = ord(",")
    buf[rows, 4 + width] = np.where(two, 48 + size // 10, 48 + size)
    buf[two, 5 + width[two]] = 48 + size[two] % 10
    buf[rows, length - 1] = ord("\n")
    return buf[np.arange(buf.shape[1]) < length[:, None]].tobytes()


def generate(path: pathlib.Path, records: int) -> dict[str, int]:
    """Write a lackey trace of about ``records`` records; returns its counts."""
    rng = np.random.default_rng(SEED)
    banner = (
        b"==7== Lackey, an example Valgrind tool\n==7== Command: ./bench\n"
        b"==7== Parent PID: 1\n==7== \n"
    )
    counts = {"records": 0, "fetches": 0, "bytes": 0}
    program = Program(rng)
    with path.open("wb") as f:
        f.write(banner)
        counts["bytes"] += len(banner)
        while counts["records"] < records:
            want = (records - counts["records"]) // 10 + 1  # ~10 records a block
            kind, addr, size = program.run(rng, min(1 << 16, want))
            data = _lines(kind, addr, size)
            f.write(data)
            counts["bytes"] += len(data)
            counts["records"] += len(kind) + int((kind == 3).sum())
            counts["fetches"] += int((kind == 0).sum())
        footer = b"==7== \n==7==   guest instrs:  %d\n" % counts["fetches"]
        f.write(footer)
        counts["bytes"] += len(footer)
    return counts


#: trace sizes: records with the benchmarks enabled, and under --benchmark-disable
SIZES = {"4M": (4_000_000, 60_000), "16M": (16_000_000, 120_000)}
Trace = tuple[str, pathlib.Path, dict[str, int]]
_MADE: dict[str, Trace] = {}


def _trace(size: str, tmp_path_factory: Any, config: Any) -> Trace:
    """The generated lackey text of ``size`` (made once per session)."""
    if size not in _MADE:
        path = tmp_path_factory.mktemp(f"bench_runtrace_{size}") / "gen.lackey"
        n = SIZES[size][0 if _enabled(config) else 1]
        _MADE[size] = (size, path, generate(path, n))
    return _MADE[size]


@pytest.fixture(scope="module", params=list(SIZES))
def plain(tmp_path_factory, request) -> Trace:
    """Each trace size in turn: (size id, path, counts)."""
    return _trace(request.param, tmp_path_factory, request.config)


@pytest.fixture(scope="module")
def plain_4m(tmp_path_factory, request) -> Trace:
    """The 4M trace only (where run-trace's time goes)."""
    return _trace("4M", tmp_path_factory, request.config)


@pytest.fixture(scope="module")
def compressed(plain) -> pathlib.Path:
    if shutil.which("xz") is None:
        pytest.skip("xz is not installed")
    path = plain[1]
    out = path.with_suffix(".lackey.xz")
    if not out.exists():
        subprocess.run(["xz", "-1", "-k", "-f", "-T1", str(path)], check=True)
    return out


# ---- the bodies ----------------------------------------------------------------------


def run_trace(path: pathlib.Path) -> dict[str, Any]:
    """``mmulab run-trace PATH --json``: the whole command, report included."""
    out = path.parent / f"{path.name}.json"
    with contextlib.redirect_stdout(io.StringIO()) as report:
        assert cli.main(["run-trace", str(path), "--json", str(out)]) == 0
    assert "cpu0->cpu0_DTLB TOTAL" in report.getvalue()
    return json.loads(out.read_text())


def _note(benchmark: Any, name: str, counts: dict[str, int]) -> None:
    benchmark.extra_info["accesses"] = counts["records"]
    benchmark.extra_info["mbytes"] = counts["bytes"] / 1e6
    if benchmark.stats is not None:  # None with the benchmarks disabled
        mean = benchmark.stats.stats.mean
        MEANS[name] = mean
        benchmark.extra_info["accesses_per_s"] = counts["records"] / mean


def test_baseline_xz_dc(benchmark, plain, compressed) -> None:
    size, _, counts = plain
    benchmark.group = f"runtrace-{size}"

    def run() -> int:
        with subprocess.Popen(
            ["xz", "-dc", str(compressed)], stdout=subprocess.PIPE
        ) as p:
            assert p.stdout is not None
            total = 0
            while chunk := p.stdout.read(BLOCK):
                total += len(chunk)
        assert p.returncode == 0
        return total

    assert benchmark.pedantic(run, rounds=3, warmup_rounds=1) == counts["bytes"]
    _note(benchmark, f"baseline-xz-dc[{size}]", counts)


def test_baseline_lzma(benchmark, plain, compressed) -> None:
    size, _, counts = plain
    benchmark.group = f"runtrace-{size}"

    def run() -> int:
        total = 0
        with lzma.open(compressed, "rb") as f:
            while chunk := f.read(BLOCK):
                total += len(chunk)
        return total

    assert benchmark.pedantic(run, rounds=3, warmup_rounds=1) == counts["bytes"]
    _note(benchmark, f"baseline-lzma[{size}]", counts)


def test_run_trace_plain(benchmark, plain) -> None:
    size, path, counts = plain
    benchmark.group = f"runtrace-{size}"
    got = benchmark.pedantic(run_trace, args=(path,), rounds=3, warmup_rounds=0)
    assert got["accesses"] == got["stats"]["accesses"] == counts["records"]
    assert got["records"]["fetch"] == counts["fetches"]
    assert got["faults"]["total"] == got["footprint"]["4k"] > 0
    _note(benchmark, f"run-trace-plain[{size}]", counts)


def test_run_trace_xz(benchmark, plain, compressed) -> None:
    size, _, counts = plain
    benchmark.group = f"runtrace-{size}"
    got = benchmark.pedantic(run_trace, args=(compressed,), rounds=3, warmup_rounds=0)
    assert got["accesses"] == counts["records"]
    assert got["records"]["fetch"] == counts["fetches"]
    _note(benchmark, f"run-trace-xz[{size}]", counts)
    xz_dc, ours = (
        MEANS.get(f"baseline-xz-dc[{size}]"),
        MEANS.get(f"run-trace-xz[{size}]"),
    )
    if xz_dc and ours:
        benchmark.extra_info["speed_vs_xz_dc"] = xz_dc / ours


@pytest.mark.benchmark(group="runtrace-parts")
def test_boot(benchmark) -> None:
    m = benchmark.pedantic(lambda: Machine(ram="16G", ncpus=1), rounds=3)
    assert m.system_state == "running"


@pytest.fixture(scope="module")
def records(plain_4m) -> np.ndarray:
    return tr.load(plain_4m[1])[0]


def _feed(runner: TraceRunner, records: np.ndarray, chunk: int) -> TraceRunner:
    for lo in range(0, len(records), chunk):
        runner.feed(records[lo : lo + chunk])
    return runner


@pytest.mark.benchmark(group="runtrace-parts")
@pytest.mark.parametrize("chunk", [1 << 20, 1 << 14], ids=["1M", "16K"])
def test_mmu_feed(benchmark, plain_4m, records, chunk) -> None:
    """Demand paging and the MMU over records in memory, in chunks of ``chunk``.

    1M is the reader's chunk: what run-trace does.  After each fault the rest of the
    chunk is handed to ``MMU.run`` again, so the chunk size shows what a fault costs.
    """
    counts = plain_4m[2]

    def setup() -> tuple[tuple[TraceRunner], dict[str, Any]]:
        return (TraceRunner(RunConfig(traces=["-"])),), {}

    def run(runner: TraceRunner) -> int:
        return _feed(runner, records, chunk).finish().accesses

    assert benchmark.pedantic(run, setup=setup, rounds=3) == counts["records"]
    _note(benchmark, f"mmu-feed-{chunk}", counts)


@pytest.mark.benchmark(group="runtrace-parts")
def test_mmu_run_all_mapped(benchmark, plain_4m, records) -> None:
    """The C MMU alone: one ``MMU.run`` over every record, every page mapped."""
    counts = plain_4m[2]
    runner = _feed(TraceRunner(RunConfig(traces=["-"])), records, 1 << 14)
    vas, kinds, sizes = (
        np.ascontiguousarray(records[f]) for f in ("addr", "kind", "size")
    )

    def run() -> int:
        got = runner.mmu.run(vas, kinds, user=True, sizes=sizes, stop_on_fault=True)
        assert got["page_faults"] == 0
        return got["accesses"]

    assert benchmark.pedantic(run, rounds=3) == counts["records"]
    _note(benchmark, "mmu-run-all-mapped", counts)


def test_xz_target(request) -> None:
    """run-trace on .xz at >= 80 % of the speed of xz -dc alone (issue 6)."""
    if not _enabled(request.config):
        pytest.skip("needs the benchmarks enabled")
    lines = []
    for size in SIZES:
        xz_dc, ours = (
            MEANS.get(f"baseline-xz-dc[{size}]"),
            MEANS.get(f"run-trace-xz[{size}]"),
        )
        if xz_dc and ours:
            lines.append(
                f"{size}: run-trace-xz at {xz_dc / ours:.0%} of the speed of xz -dc "
                f"({ours:.3f} s vs {xz_dc:.3f} s; target 80 %)"
            )
    if not lines:
        pytest.skip("run the runtrace groups first (in this session)")
    print("\n" + "\n".join(lines))
    # a speed target is reported, never asserted (STYLE 2.7): the ratios go into the
    # README's table
