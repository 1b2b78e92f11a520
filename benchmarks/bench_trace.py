"""Lackey text parsing throughput (MB/s): the C parser against baselines, same input.

The input is lackey ``--trace-mem=yes`` text generated from a fixed seed into a
temporary directory: 64 MiB with the benchmarks enabled, 4 MiB under
``--benchmark-disable`` (every body then runs once, as a smoke test).  Lines mix like a
real trace (70 % ``I``; the rest `` L``, `` S``, `` M`` as 10:4:1; 8-digit code,
10-digit stack and 9-digit heap addresses), between a valgrind banner and footer.

Groups (MB/s = ``extra_info["mbytes"]`` / mean time):

* ``lackey-parse``: ``c-parser`` is ``emu_trace_lackey_parse`` alone over the text in
  memory, writing into one reused record array: the parser's own speed (target:
  500 MB/s).  Baselines in the same run: ``baseline-read-file`` reads the file in
  4 MiB blocks (the I/O floor of any reader) and ``baseline-count-lines`` counts the
  newlines with ``bytes.count`` (one memchr-class pass over every byte).
  ``reader-file`` is ``emu.trace.read`` on the file: blocks, carried partial lines,
  and fresh chunk arrays (``fresh-arrays``) or two reused ones (``reuse-2``, what
  run-trace uses).
* ``lackey-xz``: the same text compressed with ``xz -1``: ``reader-xz`` is
  ``emu.trace.read`` on it (decompression by Python's ``lzma``, then parsing), against
  ``baseline-lzma`` (decompression alone, same module) and ``baseline-xz-dc`` (the
  ``xz -dc`` command into a pipe), for the "at decompression speed" goal.
* ``lackey-ref``: ``c-parser`` vs the pure-Python ``emu.ref.trace`` on 1 MiB.

Every body asserts its result.
"""

from __future__ import annotations

import lzma
import pathlib
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest

import emu.trace as tr
from emu.ref.trace import parse_lackey
from emu.trace import TRACE_DTYPE
from emu.trace import records as rec

pytest.importorskip("emu._core")
from emu._ffi import check, ffi, from_array, lib

SEED = 20261130
BLOCK = 1 << 22
CAP = 1 << 20


def _line_pool(rng: np.random.Generator) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """Distinct lackey lines, each line's records (M counts 2) and fetches."""
    lines: list[bytes] = []
    recs: list[int] = []
    fetch: list[int] = []
    code = 0x04000000 + rng.integers(0, 1 << 20, 4096)
    for pc in code:
        lines.append(b"I  %08x,%d\n" % (pc, rng.integers(1, 16)))
        recs.append(1)
        fetch.append(1)
    stack = 0x1FFF000000 + rng.integers(0, 1 << 16, 2048) * 8
    heap = 0x004A00000 + rng.integers(0, 1 << 24, 2048) * 4
    for kind, weight in ((b"L", 10), (b"S", 4), (b"M", 1)):
        for _ in range(weight):
            for addr in rng.choice(np.concatenate([stack, heap]), 200):
                size = rng.choice([1, 2, 4, 8, 8, 8, 16, 32])
                lines.append(b" %s %08x,%d\n" % (kind, addr, size))
                recs.append(2 if kind == b"M" else 1)
                fetch.append(0)
    return lines, np.array(recs), np.array(fetch)


def generate(path: pathlib.Path, mbytes: int) -> dict[str, int]:
    """Write ``mbytes`` MiB of lackey text; returns its record and fetch counts."""
    rng = np.random.default_rng(SEED)
    lines, recs, fetch = _line_pool(rng)
    is_fetch = fetch.astype(bool)
    n_code, n_data = int(is_fetch.sum()), int((~is_fetch).sum())
    banner = b"==7== Lackey, an example Valgrind tool\n==7== Command: ./bench\n==7== \n"
    counts = {"records": 0, "fetches": 0, "bytes": len(banner)}
    pool = np.array(lines, dtype=object)
    with path.open("wb") as f:
        f.write(banner)
        while counts["bytes"] < mbytes << 20:
            n = 1 << 16
            # 70 % fetches, the rest data lines in the pool's L/S/M proportions
            pick = np.where(
                rng.random(n) < 0.7,
                rng.integers(0, n_code, n),
                n_code + rng.integers(0, n_data, n),
            )
            data = b"".join(pool[pick].tolist())
            f.write(data)
            counts["bytes"] += len(data)
            counts["records"] += int(recs[pick].sum())
            counts["fetches"] += int(fetch[pick].sum())
        footer = b"==7== \n==7==   guest instrs:  %d\n" % counts["fetches"]
        f.write(footer)
        counts["bytes"] += len(footer)
    return counts


@pytest.fixture(scope="module")
def text_file(tmp_path_factory, request) -> tuple[pathlib.Path, dict[str, int]]:
    opt = request.config.getoption
    enabled = opt("benchmark_enable", False) or not opt("benchmark_disable", False)
    path = tmp_path_factory.mktemp("bench_trace") / "gen.lackey"
    return path, generate(path, 64 if enabled else 4)


@pytest.fixture(scope="module")
def text(text_file) -> bytes:
    return text_file[0].read_bytes()


def c_parse_all(data: bytes, out: np.ndarray) -> tuple[int, int]:
    """``emu_trace_lackey_parse`` over ``data`` in memory, reusing ``out``."""
    st = ffi.new("emu_trace_parse_state *")
    src = ffi.from_buffer("uint8_t[]", data)
    dst = from_array("emu_trace_rec[]", out, writable=True)
    start = records = 0
    while True:
        check(
            lib.emu_trace_lackey_parse(
                src + start, len(data) - start, rec.FLAG_FINAL, dst, len(out), st
            ),
            "emu_trace_lackey_parse",
        )
        records += st.records
        start += st.consumed
        if st.status != rec.STATUS_FULL:
            assert st.status == rec.STATUS_END
            assert st.bad == 0
            return records, st.icount


def _info(benchmark: Any, nbytes: int) -> None:
    benchmark.extra_info["mbytes"] = nbytes / 1e6


@pytest.mark.benchmark(group="lackey-parse")
def test_c_parser(benchmark, text, text_file) -> None:
    counts = text_file[1]
    out = np.empty(CAP, dtype=TRACE_DTYPE)
    _info(benchmark, len(text))
    records, fetches = benchmark.pedantic(
        c_parse_all, args=(text, out), rounds=5, warmup_rounds=1
    )
    assert (records, fetches) == (counts["records"], counts["fetches"])


@pytest.mark.benchmark(group="lackey-parse")
@pytest.mark.parametrize("reuse", [0, 2], ids=["fresh-arrays", "reuse-2"])
def test_reader_file(benchmark, text_file, reuse) -> None:
    path, counts = text_file

    def run() -> tuple[int, int]:
        reader = tr.read(path, "lackey", block_bytes=BLOCK, reuse_chunks=reuse)
        n = sum(len(c) for c in reader)
        return n, reader.stats.instructions

    _info(benchmark, counts["bytes"])
    assert benchmark.pedantic(run, rounds=5, warmup_rounds=1) == (
        counts["records"],
        counts["fetches"],
    )


@pytest.mark.benchmark(group="lackey-parse")
def test_baseline_read_file(benchmark, text_file) -> None:
    path, counts = text_file

    def run() -> int:
        buf = bytearray(BLOCK)
        total = 0
        with path.open("rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
        return total

    _info(benchmark, counts["bytes"])
    assert benchmark.pedantic(run, rounds=5, warmup_rounds=1) == counts["bytes"]


@pytest.mark.benchmark(group="lackey-parse")
def test_baseline_count_lines(benchmark, text) -> None:
    _info(benchmark, len(text))
    lines = benchmark.pedantic(text.count, args=(b"\n",), rounds=5, warmup_rounds=1)
    assert lines == text.count(b"\n")


@pytest.fixture(scope="module")
def one_mib(text, request) -> bytes:
    """The first MiB of the text (128 KiB under --benchmark-disable)."""
    opt = request.config.getoption
    enabled = opt("benchmark_enable", False) or not opt("benchmark_disable", False)
    cut = text.index(b"\n", (1 << 20) if enabled else (1 << 17)) + 1
    return text[:cut]


@pytest.mark.benchmark(group="lackey-ref")
def test_ref_c_parser(benchmark, one_mib) -> None:
    out = np.empty(CAP, dtype=TRACE_DTYPE)
    _info(benchmark, len(one_mib))
    records, _ = benchmark.pedantic(c_parse_all, args=(one_mib, out), rounds=5)
    assert records == len(parse_lackey(one_mib).records)


@pytest.mark.benchmark(group="lackey-ref")
def test_ref_python_parser(benchmark, one_mib) -> None:
    _info(benchmark, len(one_mib))
    res = benchmark.pedantic(parse_lackey, args=(one_mib,), rounds=1)
    assert not res.stopped
    assert res.bad == 0


@pytest.fixture(scope="module")
def xz_file(text_file) -> pathlib.Path:
    if shutil.which("xz") is None:
        pytest.skip("xz is not installed")
    path = text_file[0]
    subprocess.run(["xz", "-1", "-k", "-f", "-T1", str(path)], check=True)
    return path.with_suffix(".lackey.xz")


@pytest.mark.benchmark(group="lackey-xz")
def test_reader_xz(benchmark, xz_file, text_file) -> None:
    counts = text_file[1]

    def run() -> int:
        return sum(len(c) for c in tr.read(xz_file, block_bytes=BLOCK))

    _info(benchmark, counts["bytes"])
    assert benchmark.pedantic(run, rounds=3, warmup_rounds=1) == counts["records"]


@pytest.mark.benchmark(group="lackey-xz")
def test_baseline_lzma(benchmark, xz_file, text_file) -> None:
    counts = text_file[1]

    def run() -> int:
        total = 0
        with lzma.open(xz_file, "rb") as f:
            while chunk := f.read(BLOCK):
                total += len(chunk)
        return total

    _info(benchmark, counts["bytes"])
    assert benchmark.pedantic(run, rounds=3, warmup_rounds=1) == counts["bytes"]


@pytest.mark.benchmark(group="lackey-xz")
def test_baseline_xz_dc(benchmark, xz_file, text_file) -> None:
    counts = text_file[1]

    def run() -> int:
        with subprocess.Popen(["xz", "-dc", str(xz_file)], stdout=subprocess.PIPE) as p:
            assert p.stdout is not None
            total = 0
            while chunk := p.stdout.read(BLOCK):
                total += len(chunk)
        return total

    _info(benchmark, counts["bytes"])
    assert benchmark.pedantic(run, rounds=3, warmup_rounds=1) == counts["bytes"]
