"""Page-walk throughput: ``emu.walk_batch`` vs Python loops over ``emu.walk`` and
``emu.ref.walk``.

Tables are warm: every entry already has A=1 (reads then write nothing) and the
calibration rounds bring the tables into the host caches.  Addresses are random pages
in random order (fixed seed) with random offsets.

Groups (compare within a group):

* ``walk-<table>``: the three walkers on the same ``N_LOOP`` addresses; the mean
  times are directly comparable, walks/s = ``N_LOOP`` / mean.
* ``walk-batch-bulk``: ``walk_batch`` alone on ``N_BULK`` addresses, for the
  walks-per-second figure of the C core (walks/s = ``N_BULK`` / mean).

Each benchmark stores ``walks_per_call`` in ``extra_info``.  Under
``--benchmark-disable`` every body runs once on the same inputs (a few seconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import emu
import emu.ref
from emu import arch
from emu.paging import PageTableBuilder

# emu.walk before emu.walk_batch, and never `import emu.walk`: loading the submodule
# emu/walk.py rebinds the package attribute emu.walk from the function to the module.
c_walk = emu.walk
if not callable(c_walk):  # already rebound by an earlier importer
    c_walk = c_walk.walk
walk_batch = emu.walk_batch

DIRECT_MAP = 0xFFFF_8880_0000_0000  # VA of PA 0, as Linux's direct map
N_LOOP = 4096  # addresses per call in the scalar-vs-batch-vs-ref groups
N_BULK = 1 << 20  # addresses per call for the batch throughput figure
WARM = arch.PTE_A  # A already set everywhere: a read walk writes nothing
LEAF = arch.PTE_P | arch.PTE_RW | arch.PTE_G | arch.PTE_NX | WARM
TABLE = arch.PTE_P | arch.PTE_RW | WARM


@dataclass(frozen=True)
class TableSpec:
    """Leaves of each size mapped back to back from ``DIRECT_MAP`` (and PA 0)."""

    name: str
    pages: tuple[tuple[int, int], ...]  # (page size, count), in address order


TABLES = {
    "4k-1MiB": TableSpec("4k-1MiB", ((arch.PAGE_SIZE, 256),)),
    "4k-64MiB": TableSpec("4k-64MiB", ((arch.PAGE_SIZE, 16384),)),
    # 4 GiB in 1G pages, 512 MiB in 2M pages, 16 MiB in 4K pages
    "mixed": TableSpec(
        "mixed",
        ((arch.PUD_SIZE, 4), (arch.PMD_SIZE, 256), (arch.PAGE_SIZE, 4096)),
    ),
}


@dataclass
class Machine:
    """One table built identically into a C and a reference memory, plus inputs."""

    name: str
    c_mem: Any
    ref_mem: Any
    cr3: int
    vas: np.ndarray[Any, np.dtype[np.uint64]]  # N_BULK random addresses

    def expected_pa(self, n: int) -> np.ndarray[Any, np.dtype[np.uint64]]:
        """The PA every one of the first ``n`` addresses must translate to."""
        return self.vas[:n] - np.uint64(DIRECT_MAP)


def build(spec: TableSpec, seed: int = 2023) -> Machine:
    """Map ``spec`` into both memories and draw ``N_BULK`` addresses: a page size
    chosen uniformly, then a page of that size, then an offset in it."""
    c_mem, ref_mem = emu.PhysMem(), emu.ref.PhysMem()
    starts = []  # (first VA, page size, count) of each run
    va = DIRECT_MAP
    for size, count in spec.pages:
        starts.append((va, size, count))
        va += size * count
    for mem in (c_mem, ref_mem):
        b = PageTableBuilder(mem)
        for first, size, count in starts:
            for i in range(count):
                va = first + i * size
                b.map(va, va - DIRECT_MAP, size, LEAF, TABLE)
    rng = np.random.default_rng(seed)
    kind = rng.integers(0, len(starts), N_BULK)
    base = np.array([s[0] for s in starts], dtype=np.uint64)[kind]
    size = np.array([s[1] for s in starts], dtype=np.uint64)[kind]
    count = np.array([s[2] for s in starts], dtype=np.uint64)[kind]
    page = (rng.random(N_BULK) * count).astype(np.uint64)
    offset = rng.integers(0, 1 << 62, N_BULK, dtype=np.uint64) % size
    vas = base + page * size + offset
    m = Machine(spec.name, c_mem, ref_mem, b.cr3, vas)
    rec = walk_batch(c_mem, vas, "r", cr3=m.cr3)  # warm the host caches
    assert (rec.vector == 0).all()
    return m


@pytest.fixture(scope="module", params=list(TABLES))
def machine(request: pytest.FixtureRequest) -> Machine:
    """A warm table of each kind (built once per module)."""
    return build(TABLES[request.param])


def _check(pas: Any, m: Machine, n: int) -> None:
    assert np.array_equal(np.asarray(pas, dtype=np.uint64), m.expected_pa(n))


def test_walk_batch(benchmark: Any, machine: Machine) -> None:
    benchmark.group = f"walk-{machine.name}"
    benchmark.extra_info["walks_per_call"] = N_LOOP
    vas = machine.vas[:N_LOOP].copy()
    rec = benchmark(walk_batch, machine.c_mem, vas, "r", cr3=machine.cr3)
    assert (rec.vector == 0).all()
    _check(rec.pa, machine, N_LOOP)


def test_walk_scalar_loop(benchmark: Any, machine: Machine) -> None:
    benchmark.group = f"walk-{machine.name}"
    benchmark.extra_info["walks_per_call"] = N_LOOP
    vas = machine.vas[:N_LOOP].tolist()
    mem, cr3 = machine.c_mem, machine.cr3

    def loop() -> list[Any]:
        return [c_walk(mem, va, "r", cr3=cr3) for va in vas]

    results = benchmark(loop)
    assert all(r.ok for r in results)
    _check([r.pa for r in results], machine, N_LOOP)


def test_walk_ref_loop(benchmark: Any, machine: Machine) -> None:
    benchmark.group = f"walk-{machine.name}"
    benchmark.extra_info["walks_per_call"] = N_LOOP
    vas = machine.vas[:N_LOOP].tolist()
    mem, cr3 = machine.ref_mem, machine.cr3

    def loop() -> list[Any]:
        return [emu.ref.walk(mem, va, "r", cr3=cr3) for va in vas]

    results = benchmark(loop)
    assert all(r.ok for r in results)
    _check([r.pa for r in results], machine, N_LOOP)


def test_walk_batch_bulk(benchmark: Any, machine: Machine) -> None:
    benchmark.group = "walk-batch-bulk"
    benchmark.extra_info["walks_per_call"] = N_BULK
    rec = benchmark(walk_batch, machine.c_mem, machine.vas, "r", cr3=machine.cr3)
    assert (rec.vector == 0).all()
    _check(rec.pa, machine, N_BULK)
