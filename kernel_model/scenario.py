"""Scenarios: fragment the direct map the way consumers do, then measure what it costs.

A scenario boots a machine, runs a sequence of consumer events under one policy, and
then runs a kernel-style access stream over the direct map through CPU 0's MMU.  The
consumers follow the kernel paths linux-mm.md section 6 describes, reduced to their
effect on the direct map:

* module load (``load_module``): text, rodata and data pages from the module area;
  ``set_memory_rox`` on the text, ``set_memory_ro`` on the rodata, ``set_memory_nx`` on
  the data (module_enable_rox / _ro / _nx). The direct-map aliases become RO.
* BPF program (``load_bpf``): one page from the module area made ROX
  (bpf_jit_binary_lock_ro without bpf_prog_pack).
* secretmem fault (``secretmem_page``): ``set_direct_map_invalid_noflush`` on one page,
  then ``flush_tlb_kernel_range`` of that page (mm/secretmem.c).

Policies (how the pages are placed and what happens afterwards):

* ``linux``: Linux 7.0, pages from anywhere in memory (an aged system scatters free
  pages, modelled as a seeded uniform draw among free pages).
* ``eager-merge``: as ``linux`` with CPA collapsing every range it touched afterwards
  (the unmerged 2022 "merge small mappings whenever possible" RFC).
* ``unmapped-cache``: the pages of all consumers come from a cache of 2 MiB blocks
  taken out of the direct map whole (the idea of Rapoport's 2023 ``__GFP_UNMAPPED``):
  one CPA per block, and later permission changes find the alias already invalid.

The stream (``Workload``) is direct-map accesses with a hot set of pages spread over
RAM; the result reports TLB misses, walks by page size, walk memory references and the
cost model's translation cycles per access.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from emu.errors import EmuMemoryError, EmuValueError
from kernel_model.machine import Machine
from kernel_model.pgtable import PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K

POLICIES = ("pristine", "linux", "eager-merge", "unmapped-cache")


@dataclass(frozen=True)
class Workload:
    """The measured access stream over the direct map.

    Attributes:
        accesses: number of accesses.
        hot_pages: 4K pages in the hot set (spread uniformly over RAM).
        hot_fraction: share of accesses that go to the hot set.
        write_fraction: share of writes.
        seed: RNG seed.
    """

    accesses: int = 2_000_000
    hot_pages: int = 16384
    hot_fraction: float = 0.9
    write_fraction: float = 0.3
    seed: int = 1


@dataclass(frozen=True)
class Events:
    """What fragments the direct map.

    Attributes:
        modules: module loads.
        module_pages: (text, rodata, data) pages per module.
        bpf_progs: JITed BPF programs (one page each).
        secretmem_pages: secretmem pages faulted in.
    """

    modules: int = 32
    module_pages: tuple[int, int, int] = (24, 8, 4)
    bpf_progs: int = 256
    secretmem_pages: int = 128


@dataclass
class Result:
    """One policy's outcome."""

    policy: str
    meminfo: dict[str, int]
    vmstat: dict[str, int]
    table_pages: int
    stats: dict[str, int]
    cpa: dict[str, int] = field(default_factory=dict)

    @property
    def cycles_per_access(self) -> float:
        """Translation cycles per access of the stream."""
        return self.stats["translation_cycles"] / max(self.stats["accesses"], 1)


class PagePlacer:
    """Where consumer pages come from under a policy.

    Args:
        machine: the machine.
        policy: a name from POLICIES.
        rng: the random generator for the aged-system placement.
    """

    def __init__(self, machine: Machine, policy: str, rng: np.random.Generator) -> None:
        self.m = machine
        self.policy = policy
        self.rng = rng
        self.cache: list[int] = []  # unmapped-cache: free pfns of removed blocks
        self._ram = np.array(
            [
                (r.start >> 12, r.end >> 12)
                for r in machine.ram_ranges()
                if r.end > 1 << 32
            ],
            dtype=np.int64,
        )
        if not len(self._ram):
            self._ram = np.array(
                [(r.start >> 12, r.end >> 12) for r in machine.ram_ranges()],
                dtype=np.int64,
            )

    def _random_free_pfn(self, order: int = 0) -> int:
        sizes = self._ram[:, 1] - self._ram[:, 0]
        for _ in range(10_000):
            k = int(self.rng.choice(len(sizes), p=sizes / sizes.sum()))
            lo, hi = int(self._ram[k, 0]), int(self._ram[k, 1])
            pfn = int(self.rng.integers(lo, hi - (1 << order)))
            pfn &= ~((1 << order) - 1)
            if all(self.m.page_alloc.is_free(p) for p in (pfn, pfn + (1 << order) - 1)):
                try:
                    self.m.page_alloc.reserve(pfn, 1 << order, "scenario")
                except EmuValueError:
                    continue
                return pfn
        raise EmuMemoryError("no free page found for the scenario")

    def page(self) -> int:
        """One page frame for a consumer."""
        if self.policy != "unmapped-cache":
            return self._random_free_pfn()
        if not self.cache:
            base = self._random_free_pfn(order=9)
            # the whole 2M block leaves the direct map at once: no split below 2M
            self.m.set_direct_map_valid_noflush(base, 512, False)
            va = self.m.va(base << 12)
            self.m.cpa.flush_tlb_kernel_range(va, va + (2 << 20))
            self.cache = list(range(base + 511, base - 1, -1))
        return self.cache.pop()


def _map_pages(m: Machine, pfns: list[int]) -> int:
    """vmap() the given pages into the module area; returns the address."""
    area = m.vmalloc.vmap(pfns, module=True)
    return area.addr


def load_module(
    m: Machine, place: PagePlacer, text: int, rodata: int, data: int
) -> None:
    """A module load's direct-map effect (module_enable_rox/_ro/_nx)."""
    pfns = [place.page() for _ in range(text + rodata + data)]
    addr = _map_pages(m, pfns)
    m.set_memory_rox(addr, text)
    m.set_memory_ro(addr + text * 4096, rodata)
    m.set_memory_nx(addr + (text + rodata) * 4096, data)


def load_bpf(m: Machine, place: PagePlacer) -> None:
    """A JITed BPF program without bpf_prog_pack: one page made ROX."""
    addr = _map_pages(m, [place.page()])
    m.set_memory_rox(addr, 1)


def secretmem_page(m: Machine, place: PagePlacer) -> None:
    """A secretmem fault: the page leaves the direct map, one-page flush."""
    pfn = place.page()
    if place.policy == "unmapped-cache":
        return  # already out of the direct map
    m.set_direct_map_invalid_noflush(pfn)
    va = m.va(pfn << 12)
    m.cpa.flush_tlb_kernel_range(va, va + 4096)


def run_events(m: Machine, policy: str, events: Events, seed: int) -> None:
    """Apply the events under ``policy`` (interleaved as they would arrive)."""
    if policy == "pristine":
        return
    rng = np.random.default_rng(seed)
    place = PagePlacer(m, policy, rng)
    kinds = (
        ["module"] * events.modules
        + ["bpf"] * events.bpf_progs
        + ["secret"] * events.secretmem_pages
    )
    order = rng.permutation(len(kinds))
    for i in order:
        kind = kinds[int(i)]
        if kind == "module":
            load_module(m, place, *events.module_pages)
        elif kind == "bpf":
            load_bpf(m, place)
        else:
            secretmem_page(m, place)


def stream(
    m: Machine, w: Workload
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The direct-map access stream (addresses and kinds), vectorised."""
    rng = np.random.default_rng(w.seed)
    ram = [
        (r.start >> 12, r.end >> 12)
        for r in m.ram_ranges()
        if r.end - r.start >= 1 << 21
    ]
    sizes = np.array([e - s for s, e in ram], dtype=np.float64)
    starts = np.array([s for s, _ in ram], dtype=np.int64)

    def pfns(n: int) -> np.ndarray[Any, Any]:
        k = rng.choice(len(ram), size=n, p=sizes / sizes.sum())
        off = (rng.random(n) * sizes[k]).astype(np.int64)
        return starts[k] + off

    hot = pfns(w.hot_pages)
    n_hot = int(w.accesses * w.hot_fraction)
    page = np.concatenate(
        [hot[rng.integers(0, len(hot), n_hot)], pfns(w.accesses - n_hot)]
    )
    rng.shuffle(page)
    offset = rng.integers(0, 512, w.accesses, dtype=np.int64) * 8
    vas = (
        np.uint64(m.layout.page_offset)
        + (page.astype(np.uint64) << np.uint64(12))
        + offset.astype(np.uint64)
    )
    kinds = (rng.random(w.accesses) < w.write_fraction).astype(np.uint8)
    return vas, kinds


def run_policy(
    policy: str, ram: str, cpu: str, events: Events, w: Workload, ncpus: int = 2
) -> Result:
    """Boot, fragment under ``policy``, measure the stream on CPU 0."""
    if policy not in POLICIES:
        raise EmuValueError(f"policy {policy!r} not in {POLICIES}")
    m = Machine(
        ram=ram,
        cpu=cpu,
        ncpus=ncpus,
        merge="eager" if policy == "eager-merge" else "linux",
    )
    run_events(m, policy, events, w.seed)
    vas, kinds = stream(m, w)
    mmu = m.mmus[0]
    mmu.flush_all()
    mmu.reset()
    warm = min(len(vas) // 10, 200_000)
    mmu.run(vas[:warm], kinds[:warm])  # warm the TLBs and caches
    stats = mmu.run(vas[warm:], kinds[warm:])
    count = m.direct.direct_pages_count
    meminfo = {
        "DirectMap4k": count[PG_LEVEL_4K] * 4,
        "DirectMap2M": count[PG_LEVEL_2M] * 2048,
        "DirectMap1G": count[PG_LEVEL_1G] * 1048576,
    }
    s = m.cpa.stats
    cpa = {
        "splits_2m": s.splits[PG_LEVEL_2M],
        "splits_1g": s.splits[PG_LEVEL_1G],
        "collapses_2m": s.collapses[PG_LEVEL_2M],
        "collapses_1g": s.collapses[PG_LEVEL_1G],
        "split_flushes": s.split_flushes,
        "full_flushes": s.full_flushes,
        "ranged_flushes": s.ranged_flushes,
        "ipis": m.cpus.ipis,
    }
    return Result(policy, meminfo, dict(m.vm_events), len(m.pt.tables), stats, cpa)


def compare(
    ram: str = "16G",
    cpu: str = "skylake",
    events: Events | None = None,
    workload: Workload | None = None,
    policies: tuple[str, ...] = POLICIES,
) -> list[Result]:
    """Run every policy on the same scenario and stream."""
    ev = events or Events()
    w = workload or Workload()
    return [run_policy(p, ram, cpu, ev, w) for p in policies]


_LEVELS = ("pml5", "pml4", "pdpt", "pd", "pt")


def _both(r: Result, event: str) -> int:
    """A dtlb event summed over loads and stores."""
    return r.stats[f"dtlb_load_misses.{event}"] + r.stats[f"dtlb_store_misses.{event}"]


def format_table(
    results: list[Result], ram: str, cpu: str, events: Events, w: Workload
) -> str:
    """The comparison as a text table."""
    head = (
        f"mmulab compare: {ram} RAM, {cpu}, {w.accesses} direct-map accesses "
        f"({w.hot_fraction:.0%} in {w.hot_pages} hot pages, {w.write_fraction:.0%} "
        f"writes), seed {w.seed}\n"
        f"events: {events.modules} module loads {events.module_pages}, "
        f"{events.bpf_progs} BPF programs, {events.secretmem_pages} secretmem pages\n"
    )
    base = results[0]
    rows: list[tuple[str, list[str]]] = []

    def add(label: str, fn: Any) -> None:
        rows.append((label, [fn(r) for r in results]))

    add("DirectMap4k kB", lambda r: f"{r.meminfo['DirectMap4k']}")
    add("DirectMap2M kB", lambda r: f"{r.meminfo['DirectMap2M']}")
    add("DirectMap1G kB", lambda r: f"{r.meminfo['DirectMap1G']}")
    add(
        "2M / 1G splits",
        lambda r: f"{r.cpa.get('splits_2m', 0)} / {r.cpa.get('splits_1g', 0)}",
    )
    add(
        "2M / 1G collapses",
        lambda r: f"{r.cpa.get('collapses_2m', 0)} / {r.cpa.get('collapses_1g', 0)}",
    )
    add("page-table pages", lambda r: f"{r.table_pages}")
    add(
        "global flushes",
        lambda r: f"{r.cpa.get('split_flushes', 0) + r.cpa.get('full_flushes', 0)}",
    )
    add("dTLB-load-misses", lambda r: f"{r.stats['dTLB-load-misses']}")
    add("dTLB-store-misses", lambda r: f"{r.stats['dTLB-store-misses']}")
    add(
        "STLB hits",
        lambda r: f"{_both(r, 'stlb_hit')}",
    )
    for size, key in (("4k", "4k"), ("2m", "2m_4m"), ("1g", "1g")):
        add(
            f"walks completed {size}",
            lambda r, key=key: f"{_both(r, f'walk_completed_{key}')}",
        )
    add(
        "walk memory refs",
        lambda r: f"{sum(r.stats[f'walk_ref.{lv}'] for lv in _LEVELS)}",
    )
    add("cycles / access", lambda r: f"{r.cycles_per_access:.3f}")
    add(
        "vs pristine",
        lambda r: f"{r.cycles_per_access / max(base.cycles_per_access, 1e-9):.3f}x",
    )
    width = max(len(lbl) for lbl, _ in rows) + 2
    colw = max(16, *(len(r.policy) + 2 for r in results))
    out = [head, " " * width + "".join(f"{r.policy:>{colw}}" for r in results)]
    for lbl, vals in rows:
        out.append(f"{lbl:<{width}}" + "".join(f"{v:>{colw}}" for v in vals))
    return "\n".join(out) + "\n"


def results_json(
    results: list[Result], ram: str, cpu: str, events: Events, w: Workload
) -> dict[str, Any]:
    """The comparison as a JSON-ready dict."""
    return {
        "config": {
            "ram": ram,
            "cpu": cpu,
            "events": asdict(events),
            "workload": asdict(w),
        },
        "results": [
            {
                "policy": r.policy,
                "meminfo": r.meminfo,
                "vmstat": r.vmstat,
                "table_pages": r.table_pages,
                "cpa": r.cpa,
                "stats": r.stats,
                "cycles_per_access": r.cycles_per_access,
            }
            for r in results
        ],
    }
