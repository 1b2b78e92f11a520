"""``mmulab run-trace``: a traced process's accesses through a CPU's MMU.

The trace is read in chunks (``emu.trace.read``); each chunk goes to ``MMU.run`` in one
C call that stops at the first fault; a user-half fault on an unmapped page is demand
paging (``Process.handle_fault``) and the access is retried, so Python runs once per
fault, never per access.  Native trace events (map, unmap, flush, set_memory) act at
their record positions.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import numpy as np

import emu
import emu.trace
from emu import arch
from emu.errors import EmuValueError
from emu.mmu import MMU_RESULT_DTYPE
from emu.trace.ahead import Ahead
from kernel_model.machine import Machine
from kernel_model.process import Process

VEC_PF = 14
#: the counters of each --interval row and of the CSV output, after "accesses"
SERIES_COUNTERS = (
    "dTLB-load-misses",
    "dTLB-store-misses",
    "iTLB-load-misses",
    "dtlb_load_misses.walk_completed",
    "dtlb_store_misses.walk_completed",
    "itlb_misses.walk_completed",
    "walk_cycles",
    "translation_cycles",
    "page_faults",
)
#: parsed chunks waiting ahead of the MMU, and their records
READ_AHEAD_CHUNKS = 2
CHUNK_RECORDS = 1 << 20


@dataclass
class RunConfig:
    """The resolved configuration, echoed in the JSON output."""

    traces: list[str]
    format: str = "auto"
    cpu: str = "skylake"
    levels: int = 4
    pages: str = "4k"
    placement: str = "buddy"
    ram: str = "16G"
    warmup: int = 0
    limit: int | None = None
    interval: int | None = None
    seed: int = 1
    skip_bad: bool = False


@dataclass
class RunResult:
    """What a run measured."""

    config: RunConfig
    records: dict[str, int] = field(default_factory=dict)
    accesses: int = 0
    instructions: int = 0
    stats: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    footprint: dict[str, int] = field(default_factory=dict)
    crossings: int = 0
    formats: list[str] = field(default_factory=list)
    series: list[dict[str, int]] = field(default_factory=list)


class TraceRunner:
    """Drives trace chunks through one MMU with demand paging.

    Args:
        cfg: the run configuration.
    """

    def __init__(self, cfg: RunConfig) -> None:
        if cfg.levels not in (4, 5):
            raise EmuValueError(f"--levels {cfg.levels}: must be 4 or 5")
        self.cfg = cfg
        self.m = Machine(ram=cfg.ram, cpu=cfg.cpu, la57=cfg.levels == 5, ncpus=1)
        self.proc = Process(
            self.m, pages=cfg.pages, placement=cfg.placement, seed=cfg.seed
        )
        self.mmu = self.m.mmus[0]
        self.mmu.write_cr3(self.proc.cr3)
        self.result = RunResult(config=cfg)
        self.result.records = {"read": 0, "write": 0, "fetch": 0}
        self._seen = 0  # accesses driven so far (warm-up included)
        self._counted_from = cfg.warmup
        self._series_next = cfg.interval
        self._base = self.mmu.stats
        self._fault_base: dict[str, int] = {}
        self._last = np.zeros(1, dtype=MMU_RESULT_DTYPE)  # each run's last result

    # ---- driving ---------------------------------------------------------------------

    def _run_slice(
        self,
        vas: np.ndarray[Any, Any],
        kinds: np.ndarray[Any, Any],
        sizes: np.ndarray[Any, Any],
    ) -> None:
        """All accesses of a slice, handling demand-paging faults."""
        out = self._last
        i = 0
        n = len(vas)
        while i < n:
            done = self.mmu.run_unchecked(
                vas[i:],
                kinds[i:],
                sizes[i:],
                out,
                user=True,
                stop_on_fault=True,
                last_only=True,
            )
            if done == 0:
                break
            last = out[0]
            # demand paging: a not-present fault (error code P=0) on a user address
            if last["vector"] == VEC_PF and not last["error_code"] & arch.PF_P:
                va = int(vas[i + done - 1])
                if last["crossed"] == 2:
                    va = (va | 0xFFF) + 1
                if self.proc.is_user(va):
                    self.proc.handle_fault(va)
                    i += done - 1  # retry the faulting access
                    continue
            i += done

    def feed(self, chunk: np.ndarray[Any, Any]) -> bool:
        """Run one chunk of trace records; returns False once the limit is reached."""
        return self.feed_fields(*split_fields(chunk))

    def feed_fields(
        self,
        vas: np.ndarray[Any, Any],
        kinds: np.ndarray[Any, Any],
        sizes: np.ndarray[Any, Any],
    ) -> bool:
        """:meth:`feed` on a chunk's :func:`split_fields` (contiguous arrays)."""
        if kinds.size and int(kinds.max()) > 2:
            raise EmuValueError(
                f"trace record kind {int(kinds.max())} is not 0, 1 or 2"
            )
        if self.cfg.limit is not None:
            room = self.cfg.warmup + self.cfg.limit - self._seen
            if room <= 0:
                return False
            vas, kinds, sizes = vas[:room], kinds[:room], sizes[:room]
        pos = 0
        while pos < len(vas):
            # cut at the end of the warm-up and at interval boundaries
            cut = len(vas)
            if self._seen < self._counted_from:
                cut = min(cut, pos + self._counted_from - self._seen)
            elif self._series_next is not None:
                cut = min(
                    cut, pos + self._counted_from + self._series_next - self._seen
                )
            sl = slice(pos, max(cut, pos + 1))
            self._run_slice(vas[sl], kinds[sl], sizes[sl])
            counted = self._seen >= self._counted_from
            if counted:
                # an access crosses a page when its size exceeds the room left in it
                left = np.uint32(4096) - (vas[sl].astype(np.uint32) & np.uint32(0xFFF))
                self.result.crossings += int(np.count_nonzero(sizes[sl] > left))
                by_kind = np.bincount(kinds[sl], minlength=3)
                self.result.records["read"] += int(by_kind[0])
                self.result.records["write"] += int(by_kind[1])
                self.result.records["fetch"] += int(by_kind[2])
            self._seen += sl.stop - sl.start
            pos = sl.stop
            if self._seen == self._counted_from and not counted:
                self.mmu.reset()
                self._base = self.mmu.stats
                self._fault_base = asdict(self.proc.stats)
            if (
                counted
                and self._series_next is not None
                and self._seen - self._counted_from >= self._series_next
            ):
                self._snapshot()
                assert self.cfg.interval is not None
                self._series_next += self.cfg.interval
        return self.cfg.limit is None or self._seen < self.cfg.warmup + self.cfg.limit

    def _snapshot(self) -> None:
        s = self.mmu.stats
        row = {"accesses": self._seen - self._counted_from}
        for k in SERIES_COUNTERS:
            row[k] = s[k]
        self.result.series.append(row)

    def apply_event(self, ev: emu.trace.TraceEvent) -> None:
        """A native-trace event: map, unmap, flush or set_memory."""
        if isinstance(ev, emu.trace.MapEvent):
            for va in range(ev.addr & ~0xFFF, ev.addr + ev.length, 4096):
                if not self.proc.pt.lookup_address(va).entry:
                    self.proc.handle_fault(va, count=False)
        elif isinstance(ev, emu.trace.UnmapEvent):
            for b in self.proc.unmap(ev.addr, ev.length):
                self.mmu.invlpg(b)
        elif isinstance(ev, emu.trace.FlushEvent):
            if ev.scope == "va":
                for i in range(ev.npages):
                    self.mmu.invlpg(ev.addr + i * 4096)
            elif ev.scope == "asid":
                self.mmu.write_cr3(self.mmu.cr3)
            else:
                self.mmu.flush_all()
        elif isinstance(ev, emu.trace.SetMemoryEvent):
            fn = getattr(self.m, f"set_memory_{ev.attr}")
            fn(ev.addr, ev.npages)

    def finish(self) -> RunResult:
        """Collect the results."""
        s = self.mmu.stats
        r = self.result
        if self._seen < self._counted_from:  # the warm-up never ended: nothing counted
            self._base = s
            self._fault_base = asdict(self.proc.stats)
        r.stats = {
            k: v - (self._base.get(k, 0) if k != "accesses" else 0)
            for k, v in s.items()
        }
        r.accesses = sum(r.records.values())
        r.stats["accesses"] = r.accesses
        r.instructions = r.records["fetch"]
        faults = {
            k: v - self._fault_base.get(k, 0)
            for k, v in asdict(self.proc.stats).items()
        }
        r.faults = faults | {
            "total": faults["faults_4k"] + faults["faults_2m"] + faults["faults_1g"]
        }
        r.footprint = self.proc.footprint()
        return r


Fields = tuple["np.ndarray[Any, Any]", "np.ndarray[Any, Any]", "np.ndarray[Any, Any]"]
Prepared = tuple[list[emu.trace.TraceEvent], Fields]


def split_fields(chunk: np.ndarray[Any, Any]) -> Fields:
    """The contiguous address, kind and size arrays ``MMU.run`` takes."""
    return (
        np.ascontiguousarray(chunk["addr"], dtype=np.uint64),
        np.ascontiguousarray(chunk["kind"], dtype=np.uint8),
        np.ascontiguousarray(chunk["size"], dtype=np.uint32),
    )


class _FieldRing:
    """A few preallocated (address, kind, size) array sets, handed out in turn.

    The reading thread copies each chunk's fields into the next set; with ``sets`` at
    least the chunks waiting in the queue plus two (the one the MMU runs, the one being
    filled), a set is reused only after the MMU is done with it.
    """

    def __init__(self, sets: int, cap: int) -> None:
        self._sets = [
            (
                np.empty(cap, np.uint64),
                np.empty(cap, np.uint8),
                np.empty(cap, np.uint32),
            )
            for _ in range(sets)
        ]
        self._k = 0

    def split(self, chunk: np.ndarray[Any, Any]) -> Fields:
        vas, kinds, sizes = self._sets[self._k % len(self._sets)]
        self._k += 1
        n = len(chunk)
        if n > len(vas):
            return split_fields(chunk)
        np.copyto(vas[:n], chunk["addr"])
        np.copyto(kinds[:n], chunk["kind"])
        np.copyto(sizes[:n], chunk["size"])
        return vas[:n], kinds[:n], sizes[:n]


def _prepared(reader: emu.trace.TraceReader) -> Iterator[Prepared]:
    """The reader's events and chunk fields, ready for ``TraceRunner.feed_fields``."""
    ring = _FieldRing(READ_AHEAD_CHUNKS + 2, CHUNK_RECORDS)
    with reader:
        for events, chunk in reader.iter_with_events():
            yield events, ring.split(chunk)


def _open(cfg: RunConfig, path: str) -> tuple[str, Ahead[Prepared]]:
    """Open ``path`` and start reading and parsing it ahead, on its own thread."""
    reader = emu.trace.read(
        path,
        format=cfg.format,
        chunk_records=CHUNK_RECORDS,
        skip_bad=cfg.skip_bad,
        reuse_chunks=2,  # each chunk is copied out by _FieldRing before the next
    )
    return reader.format, Ahead(_prepared(reader), depth=READ_AHEAD_CHUNKS)


def run(cfg: RunConfig, progress: TextIO | None = None) -> RunResult:
    """Run every trace of ``cfg`` in order through one machine.

    Reading, decompressing and parsing run ahead on background threads (they release
    the GIL in C, as the MMU does), so with two cores the MMU translates one chunk while
    the next is being decompressed and parsed.  The first trace is opened before the
    machine boots, so its decompression overlaps the boot.
    """
    first = _open(cfg, cfg.traces[0])
    try:
        runner = TraceRunner(cfg)
    except BaseException:
        first[1].close()
        raise
    going = True
    for k, path in enumerate(cfg.traces):
        fmt, ahead = first if k == 0 else _open(cfg, path)
        with ahead:
            runner.result.formats.append(fmt)
            for events, fields in ahead:
                for ev in events:
                    runner.apply_event(ev)
                if len(fields[0]) and not runner.feed_fields(*fields):
                    going = False
                    break
                if progress is not None:
                    progress.write(f"\r{runner._seen:,} accesses")
                    progress.flush()
        if not going:
            break
    if progress is not None:
        progress.write("\n")
    return runner.finish()


def _pct(a: int, b: int) -> str:
    return f"{100.0 * a / b:6.2f}%" if b else "      -"


def format_report(r: RunResult) -> str:
    """The human report: perf-style counters, ChampSim-style TLB lines, walks."""
    s = r.stats
    cfg = r.config
    out: list[str] = []
    fmts = ", ".join(r.formats) or cfg.format
    out.append(f"mmulab run-trace: {', '.join(cfg.traces)} ({fmts})")
    out.append(
        f"machine: {cfg.ram} RAM, {cfg.cpu}, {cfg.levels}-level paging, pages "
        f"{cfg.pages}, placement {cfg.placement}, seed {cfg.seed}"
    )
    out.append(
        f"records: {r.records['read']:,} reads, {r.records['write']:,} writes, "
        f"{r.records['fetch']:,} fetches (M counts as a read and a write); "
        f"warm-up {cfg.warmup:,}"
    )
    out.append(
        f"footprint: {r.footprint['4k']:,} 4K, {r.footprint['2m']:,} 2M, "
        f"{r.footprint['1g']:,} 1G pages mapped; {r.crossings:,} page-crossing "
        f"accesses; {r.faults['total']:,} demand-paging faults"
    )
    out.append("")

    def perf(value: int, name: str, note: str = "") -> None:
        out.append(f"{value:>15,}      {name:<38}{note}")

    perf(s["dTLB-loads"], "dTLB-loads")
    perf(
        s["dTLB-load-misses"],
        "dTLB-load-misses",
        f"#{_pct(s['dTLB-load-misses'], s['dTLB-loads'])} of all dTLB cache accesses",
    )
    perf(s["dTLB-stores"], "dTLB-stores")
    perf(
        s["dTLB-store-misses"],
        "dTLB-store-misses",
        f"#{_pct(s['dTLB-store-misses'], s['dTLB-stores'])} of all dTLB cache accesses",
    )
    perf(s["iTLB-loads"], "iTLB-loads")
    perf(
        s["iTLB-load-misses"],
        "iTLB-load-misses",
        f"#{_pct(s['iTLB-load-misses'], s['iTLB-loads'])} of all iTLB cache accesses",
    )
    for side in ("dtlb_load_misses", "dtlb_store_misses", "itlb_misses"):
        for ev in (
            "stlb_hit",
            "miss_causes_a_walk",
            "walk_completed",
            "walk_completed_4k",
            "walk_completed_2m_4m",
            "walk_completed_1g",
        ):
            perf(s[f"{side}.{ev}"], f"{side}.{ev}")
    out.append("")

    def champsim(name: str, kind: str, access: int, miss: int) -> None:
        out.append(
            f"cpu0->cpu0_{name} {kind:<12s} ACCESS: {access:10d} HIT: "
            f"{access - miss:10d} MISS: {miss:10d} MSHR_MERGE: {0:10d}"
        )

    loads, stores, fetches = s["dTLB-loads"], s["dTLB-stores"], s["iTLB-loads"]
    lmiss, smiss, imiss = (
        s["dTLB-load-misses"],
        s["dTLB-store-misses"],
        s["iTLB-load-misses"],
    )
    champsim("DTLB", "TOTAL", loads + stores, lmiss + smiss)
    champsim("DTLB", "LOAD", loads, lmiss)
    champsim("DTLB", "RFO", stores, smiss)
    champsim("ITLB", "TOTAL", fetches, imiss)
    champsim("ITLB", "LOAD", fetches, imiss)
    l2_walks = {
        k: s[f"{k}.miss_causes_a_walk"]
        for k in ("dtlb_load_misses", "dtlb_store_misses", "itlb_misses")
    }
    champsim("STLB", "TOTAL", lmiss + smiss + imiss, sum(l2_walks.values()))
    champsim(
        "STLB",
        "LOAD",
        lmiss + imiss,
        l2_walks["dtlb_load_misses"] + l2_walks["itlb_misses"],
    )
    champsim("STLB", "RFO", smiss, l2_walks["dtlb_store_misses"])
    out.append("")
    walks = sum(l2_walks.values())
    refs = {lv: s[f"walk_ref.{lv}"] for lv in ("pml5", "pml4", "pdpt", "pd", "pt")}
    out.append(
        f"walks: {walks:,} (+{s['dirty_bit_walks']:,} to set D); walk memory "
        f"references: "
        + ", ".join(f"{k} {v:,}" for k, v in refs.items() if k != "pml5" or v)
    )
    out.append(
        "paging-structure cache hits: "
        + ", ".join(
            f"{k} {s[f'psc_hit.{k}']:,}" for k in ("pml5", "pml4", "pdpt", "pd")
        )
        + f"; misses {s['psc_miss']:,}"
    )
    acc = max(s["accesses"], 1)
    out.append(
        f"walk cycles: {s['walk_cycles']:,}; translation cycles: "
        f"{s['translation_cycles']:,} ({s['translation_cycles'] / acc:.3f} per "
        "access)"
    )
    if r.instructions:
        k = r.instructions / 1000.0
        out.append(
            f"MPKI ({r.instructions:,} instructions = fetch records): "
            f"dTLB {(lmiss + smiss) / k:.3f}, iTLB {imiss / k:.3f}, "
            f"STLB {walks / k:.3f}"
        )
    out.append(
        f"page faults: {s['page_faults']:,} (demand paging {r.faults['total']:,}: "
        f"4K {r.faults['faults_4k']:,}, 2M {r.faults['faults_2m']:,}, "
        f"1G {r.faults['faults_1g']:,}, huge-page fallbacks "
        f"{r.faults['fallbacks']:,})"
    )
    return "\n".join(out) + "\n"


def to_json(r: RunResult) -> dict[str, Any]:
    """The --json object: records, accesses, stats, config (and more)."""
    return {
        "records": r.records,
        "accesses": r.accesses,
        "instructions": r.instructions,
        "stats": r.stats,
        "faults": r.faults,
        "footprint": r.footprint,
        "config": asdict(r.config) | {"formats": r.formats},
        "series": r.series,
    }


def write_csv(r: RunResult, f: TextIO) -> None:
    """The time series (or one total row) as CSV."""
    rows = r.series or [
        {
            "accesses": r.accesses,
            **{k: r.stats[k] for k in SERIES_COUNTERS},
        }
    ]
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)


def main_run_trace(a: Any) -> int:
    """The CLI handler (arguments from kernel_model.cli)."""
    cfg = RunConfig(
        traces=list(a.traces),
        format=a.format,
        cpu=a.cpu,
        levels=a.levels,
        pages={"never": "4k", "always": "thp"}.get(a.thp, a.thp),
        placement=a.placement,
        ram=a.ram,
        warmup=a.warmup,
        limit=a.limit,
        interval=a.interval,
        seed=a.seed,
        skip_bad=a.skip_bad,
    )
    progress = sys.stderr if sys.stderr.isatty() and not a.quiet else None
    r = run(cfg, progress)
    sys.stdout.write(format_report(r))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(to_json(r), f, indent=2)
    if a.csv:
        with open(a.csv, "w", newline="") as f:
            write_csv(r, f)
    return 0
