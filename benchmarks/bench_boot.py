"""Boot time and simulated memory of modelled machines.

Groups (compare within a group):

* ``boot-direct-map``: ``Machine(..., rodata=False)``: E820, buddy allocator, kernel
  page tables, the direct map and the high kernel map (the state of issue 4).  The
  DirectMap counts are asserted exactly (derivations in tests/golden/README.md).
* ``boot-full``: the default ``Machine(...)``, which also runs kfence_init,
  free_initmem and mark_rodata_ro; their splits move counted bytes between levels, so
  the DirectMap kB total is asserted.

Each benchmark stores the host memory of the simulated RAM (``bytes_used``), the
frames that exist and the page-table pages in ``extra_info``: data frames are never
written, so a 1 TiB machine costs its page tables only.  Under
``--benchmark-disable`` every body runs once (about 5 s in all).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from kernel_model import Machine

G = 1 << 30


@dataclass(frozen=True)
class Case:
    """A machine to boot and its hand-derived boot-time direct_pages_count."""

    name: str
    kw: dict[str, Any] = field(hash=False)
    counts: tuple[int, int, int]  # 4K, 2M, 1G pages counted at boot
    gbpages: bool = True

    @property
    def meminfo(self) -> str:
        k4, m2, g1 = self.counts
        text = f"DirectMap4k:    {k4 << 2:8d} kB\nDirectMap2M:    {m2 << 11:8d} kB\n"
        return text + (f"DirectMap1G:    {g1 << 20:8d} kB\n" if self.gbpages else "")

    @property
    def total_kb(self) -> int:
        k4, m2, g1 = self.counts
        return (k4 << 2) + (m2 << 11) + (g1 << 20)


CASES = [
    # RAM [0, 0x9fc00), [1M, 3G), [4G, 17G): 4K = ISA 256 + [1M, 2M) 256; 2M = [2M, 1G);
    # 1G = 15 leaves + [16G, 17G) counted by all 3 top-down windows
    Case("16G", {"ram": "16G"}, (512, 511, 17)),
    # above 4G up to 1025G: 1023 leaves, [1024G, 1025G) visited by 3 windows
    Case("1T", {"ram": "1T"}, (512, 511, 1025)),
    # 2M leaves [2M, 3G) 1535 + [4G, 65G) 31232; window edges are 2M-aligned
    Case(
        "64G-nogbpages",
        {"ram": "64G", "gbpages": False},
        (512, 32767, 0),
        gbpages=False,
    ),
    # every page 4K: ISA 256 + [1M, 3G) 786176 + [4G, 5G) 262144
    Case(
        "4G-debug-pagealloc",
        {"ram": "4G", "debug_pagealloc": True},
        (1048576, 0, 0),
        gbpages=False,
    ),
]


def record(benchmark: Any, m: Machine) -> None:
    benchmark.extra_info["bytes_used"] = m.mem.bytes_used
    benchmark.extra_info["frames"] = m.mem.frame_count
    benchmark.extra_info["table_pages"] = len(m.pt.tables)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_boot_direct_map(benchmark: Any, case: Case) -> None:
    benchmark.group = "boot-direct-map"
    m = benchmark.pedantic(
        lambda: Machine(rodata=False, **case.kw), rounds=3, iterations=1
    )
    record(benchmark, m)
    assert m.direct.direct_pages_count[1:4] == list(case.counts)
    assert m.meminfo() == case.meminfo
    assert m.mem.frame_count == len(m.pt.tables)  # only page tables cost memory
    assert m.mem.bytes_used < (64 << 20)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_boot_full(benchmark: Any, case: Case) -> None:
    benchmark.group = "boot-full"
    m = benchmark.pedantic(lambda: Machine(**case.kw), rounds=3, iterations=1)
    record(benchmark, m)
    kb = [int(line.split()[1]) for line in m.meminfo().splitlines()]
    assert sum(kb) == case.total_kb
    assert m.vmstat().split()[1::2] == ["0", "0", "0", "0"]  # splits before RUNNING
