"""kernel_model.runtrace: traces through an MMU with demand paging (issue 6, item 3).

The central check is the issue's equivalence test: a trace read as lackey text, the
same trace converted to native binary, and the same records fed as whole arrays into
``MMU.run`` by :func:`drive` (a minimal driver written here, independent of
``TraceRunner``) give identical results, counter for counter.  The small traces are
written by hand in ``tmp_path``; their expected counts are derived in the comments.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest

import emu.trace as tr
from emu.errors import EmuValueError
from emu.mmu import STAT_NAMES
from kernel_model import cli
from kernel_model.machine import Machine
from kernel_model.process import Process
from kernel_model.runtrace import (
    RunConfig,
    RunResult,
    TraceRunner,
    format_report,
    run,
    to_json,
    write_csv,
)

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "traces"
LS = DATA / "ls.lackey.xz"
TRUE = DATA / "true.lackey.xz"
TINY = DATA / "tiny.lackey"
SERIES_KEYS = [
    "accesses",
    "dTLB-load-misses",
    "dTLB-store-misses",
    "iTLB-load-misses",
    "dtlb_load_misses.walk_completed",
    "dtlb_store_misses.walk_completed",
    "itlb_misses.walk_completed",
    "walk_cycles",
    "translation_cycles",
    "page_faults",
]


# ---- the independent driver ----------------------------------------------------------


@dataclasses.dataclass
class Driven:
    """What :func:`drive` measured, in RunResult's terms."""

    stats: dict[str, int]
    records: dict[str, int]
    faults: dict[str, int]
    footprint: dict[str, int]
    snapshots: list[dict[str, int]]
    crossings: int = 0


def drive(records: np.ndarray, cfg: RunConfig, cuts: tuple[int, ...] = ()) -> Driven:
    """Run whole record arrays through ``MMU.run``, demand paging on user faults.

    The same machine and process as run-trace builds; a user page fault on an
    unmapped page (the first page, or the second of a straddling access) is paged in
    and the access retried; any other fault is left as it is.  Counters are reset
    after ``cfg.warmup`` accesses; ``cuts`` (counted accesses) take snapshots.
    """
    m = Machine(ram=cfg.ram, cpu=cfg.cpu, la57=cfg.levels == 5, ncpus=1)
    proc = Process(m, pages=cfg.pages, placement=cfg.placement, seed=cfg.seed)
    mmu = m.mmus[0]
    mmu.write_cr3(proc.cr3)
    mmu.reset()
    vas = np.ascontiguousarray(records["addr"])
    kinds = np.ascontiguousarray(records["kind"])
    sizes = np.ascontiguousarray(records["size"])
    end = len(records)
    if cfg.limit is not None:
        end = min(end, cfg.warmup + cfg.limit)
    warm = min(cfg.warmup, end)

    def mapped(va: int) -> bool:
        return bool(proc.pt.lookup_address(va).entry)

    def span(lo: int, hi: int) -> None:
        i = lo
        while i < hi:
            got = mmu.run(
                vas[i:hi], kinds[i:hi], user=True, sizes=sizes[i:hi], stop_on_fault=True
            )
            i += got["accesses"]
            if not got["page_faults"]:
                continue
            va = int(vas[i - 1])
            straddles = (va & 0xFFF) + int(sizes[i - 1]) > 0x1000
            page = (va | 0xFFF) + 1 if mapped(va) and straddles else va
            if proc.is_user(page) and not mapped(page):
                proc.handle_fault(page)
                i -= 1  # the access again

    span(0, warm)
    mmu.reset()
    snapshots = []
    pos = warm
    for c in cuts:
        span(pos, warm + c)
        pos = warm + c
        s = mmu.stats
        snapshots.append({"accesses": c} | {k: s[k] for k in SERIES_KEYS[1:]})
    span(pos, end)
    counted = kinds[warm:end]
    sz = sizes[warm:end].astype(np.uint64)
    crossings = int(
        np.count_nonzero((sz > 1) & ((vas[warm:end] & np.uint64(0xFFF)) + sz > 4096))
    )
    stats = mmu.stats | {"accesses": len(counted)}
    n = np.bincount(counted, minlength=3)
    return Driven(
        stats=stats,
        records={"read": int(n[0]), "write": int(n[1]), "fetch": int(n[2])},
        faults=dataclasses.asdict(proc.stats) | {"total": proc.stats.total},
        footprint=proc.footprint(),
        snapshots=snapshots,
        crossings=crossings,
    )


def assert_same(r: RunResult, d: Driven) -> None:
    assert r.stats == d.stats
    assert r.records == d.records
    assert r.accesses == sum(d.records.values())
    assert r.faults == d.faults
    assert r.footprint == d.footprint
    assert r.instructions == d.records["fetch"]
    assert r.crossings == d.crossings  # accesses, not lookups (retries excluded)


def assert_results_equal(a: RunResult, b: RunResult) -> None:
    for f in ("records", "accesses", "instructions", "stats", "faults", "footprint"):
        assert getattr(a, f) == getattr(b, f), f
    assert a.crossings == b.crossings
    assert a.series == b.series


@pytest.fixture(scope="module")
def ls_records() -> np.ndarray:
    records, events = tr.load(LS)
    assert events == []
    return records


@pytest.fixture(scope="module")
def true_records() -> np.ndarray:
    return tr.load(TRUE)[0]


@pytest.fixture(scope="module")
def true_lackey() -> RunResult:
    return run(RunConfig(traces=[str(TRUE)]))


@pytest.fixture(scope="module")
def ls_lackey() -> RunResult:
    return run(RunConfig(traces=[str(LS)]))


def write_trace(tmp_path: pathlib.Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---- the equivalence test ----------------------------------------------------


def test_lackey_native_binary_and_arrays_give_identical_results(
    ls_lackey, ls_records, tmp_path
) -> None:
    binary = tmp_path / "ls.mmb"
    assert tr.convert(LS, binary, to="native-bin") == len(ls_records) == 776_250
    from_binary = run(RunConfig(traces=[str(binary)]))
    assert ls_lackey.formats == ["lackey"]
    assert from_binary.formats == ["native-bin"]
    assert_results_equal(ls_lackey, from_binary)
    assert_same(ls_lackey, drive(ls_records, RunConfig(traces=[])))
    # the trace's own counts (tests/data/traces/README.md)
    assert ls_lackey.records == {"read": 144_031, "write": 61_925, "fetch": 570_294}
    assert ls_lackey.footprint == {"4k": 268, "2m": 0, "1g": 0}  # info: 268 pages
    assert ls_lackey.faults["total"] == ls_lackey.stats["page_faults"] == 268


def test_native_text_conversion_gives_identical_results(true_lackey, tmp_path) -> None:
    text = tmp_path / "true.mmt.gz"
    tr.convert(TRUE, text, to="native")
    from_text = run(RunConfig(traces=[str(text)]))
    assert from_text.formats == ["native"]
    assert_results_equal(true_lackey, from_text)


@pytest.mark.parametrize(
    "over",
    [
        {"cpu": "champsim-default", "levels": 5, "pages": "thp"},
        {"cpu": "zen4", "ram": "4G", "placement": "random", "seed": 3},
        {"pages": "1g", "placement": "random", "seed": 2},
    ],
    ids=["champsim-la57-thp", "zen4-random", "1g-random"],
)
def test_every_config_matches_the_array_driver(true_records, over) -> None:
    cfg = RunConfig(traces=[str(TRUE)], **over)
    assert_same(run(cfg), drive(true_records, cfg))


def test_chunk_boundaries_do_not_change_results(true_lackey, true_records) -> None:
    whole = true_lackey
    runner = TraceRunner(RunConfig(traces=[str(TRUE)]))
    for lo in range(0, len(true_records), 997):  # cuts land inside fault retries
        assert runner.feed(true_records[lo : lo + 997])
    assert_results_equal(whole, runner.finish())


def test_several_traces_run_in_order_through_one_machine() -> None:
    both = run(RunConfig(traces=[str(TINY), str(DATA / "hand.lackey")], ram="1G"))
    records = np.concatenate([tr.load(TINY)[0], tr.load(DATA / "hand.lackey")[0]])
    assert_same(both, drive(records, RunConfig(traces=[], ram="1G")))
    assert both.formats == ["lackey", "lackey"]
    # tiny's 6 pages and hand's 6: the straddling load of hand touches tiny's 0x401
    assert both.faults["total"] == 6 + 6 - 1


# ---- warm-up, limit, interval --------------------------------------------------------


def test_warmup_and_limit_count_exactly_limit_accesses(true_records) -> None:
    cfg = RunConfig(traces=[str(TRUE)], warmup=40_001, limit=80_000)
    r = run(cfg)
    assert r.accesses == r.stats["accesses"] == sum(r.records.values()) == 80_000
    d = drive(true_records, cfg)
    assert r.stats == d.stats  # warm-up excluded: counters reset after 40,001
    assert r.records == d.records
    assert r.footprint == d.footprint


def test_warmup_excludes_its_accesses_from_the_stats(true_lackey, true_records) -> None:
    full = true_lackey
    warm = run(RunConfig(traces=[str(TRUE)], warmup=50_000))
    assert warm.accesses == len(true_records) - 50_000
    kinds = np.bincount(true_records["kind"][50_000:], minlength=3)
    assert warm.records == dict(
        zip(("read", "write", "fetch"), kinds.tolist(), strict=True)
    )
    assert warm.stats["page_faults"] < full.stats["page_faults"]
    assert warm.stats["dTLB-loads"] < full.stats["dTLB-loads"]


@pytest.mark.parametrize(
    "warmup",
    [
        151,
        152,
        10**6,
    ],
    ids=["whole-trace", "one-more", "longer"],
)
def test_warmup_covering_the_whole_trace_counts_nothing(warmup) -> None:
    r = run(RunConfig(traces=[str(TINY)], ram="1G", warmup=warmup))
    assert r.accesses == 0
    assert r.records == {"read": 0, "write": 0, "fetch": 0}
    assert r.stats["dTLB-loads"] == r.stats["iTLB-loads"] == 0
    assert r.stats["page_faults"] == 0


def test_limit_beyond_the_trace_counts_the_whole_trace(true_records) -> None:
    r = run(RunConfig(traces=[str(TRUE)], limit=10**9))
    assert r.accesses == len(true_records) == 168_944


def test_limit_stops_across_several_traces(true_records) -> None:
    r = run(RunConfig(traces=[str(TRUE), str(LS)], limit=len(true_records) + 10))
    assert r.accesses == len(true_records) + 10
    assert r.formats == ["lackey", "lackey"]


def test_interval_writes_one_row_per_window(true_records) -> None:
    cfg = RunConfig(traces=[str(TRUE)], interval=20_000)
    r = run(cfg)
    rows = len(true_records) // 20_000
    assert [row["accesses"] for row in r.series] == [
        20_000 * (k + 1) for k in range(rows)
    ]
    for a, b in zip(r.series, r.series[1:], strict=False):
        assert all(b[k] >= a[k] for k in SERIES_KEYS)
    assert list(r.series[0]) == SERIES_KEYS
    cuts = tuple(row["accesses"] for row in r.series)
    assert r.series == drive(true_records, cfg, cuts).snapshots


def test_interval_counts_from_the_end_of_the_warmup(true_records) -> None:
    cfg = RunConfig(traces=[str(TRUE)], warmup=5_000, interval=30_000, limit=100_000)
    r = run(cfg)
    assert [row["accesses"] for row in r.series] == [30_000, 60_000, 90_000]
    assert r.series == drive(true_records, cfg, (30_000, 60_000, 90_000)).snapshots


# ---- JSON and CSV --------------------------------------------------------------------


def test_json_has_records_accesses_stats_and_the_resolved_config(tmp_path) -> None:
    out = tmp_path / "r.json"
    argv = [
        "run-trace",
        str(TINY),
        "--thp",
        "always",
        "--seed",
        "9",
        "--json",
        str(out),
    ]
    assert cli.main(argv) == 0
    got = json.loads(out.read_text())
    assert {"records", "accesses", "stats", "config"} <= set(got)
    assert got["config"] == {
        "traces": [str(TINY)],
        "format": "auto",
        "cpu": "skylake",
        "levels": 4,
        "pages": "thp",  # --thp always, resolved
        "placement": "buddy",
        "ram": "16G",
        "warmup": 0,
        "limit": None,
        "interval": None,
        "seed": 9,
        "skip_bad": False,
        "formats": ["lackey"],
    }
    assert got["records"] == {"read": 32, "write": 16, "fetch": 103}
    assert got["accesses"] == 151 == got["stats"]["accesses"]
    assert got["footprint"] == {"4k": 0, "2m": 1, "1g": 0}
    cfg = RunConfig(traces=[str(TINY)], pages="thp", seed=9)
    assert got == json.loads(json.dumps(to_json(run(cfg))))


def test_csv_has_the_header_and_one_row_per_interval(tmp_path) -> None:
    out = tmp_path / "r.csv"
    argv = ["run-trace", str(TRUE), "--interval", "50000", "--csv", str(out)]
    assert cli.main(argv) == 0
    lines = out.read_text().splitlines()
    assert lines[0] == ",".join(SERIES_KEYS)
    assert [int(x.split(",")[0]) for x in lines[1:]] == [50_000, 100_000, 150_000]


def test_csv_without_interval_is_one_total_row(tmp_path) -> None:
    r = run(RunConfig(traces=[str(TINY)]))
    path = tmp_path / "t.csv"
    with path.open("w", newline="") as f:
        write_csv(r, f)
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(SERIES_KEYS)
    assert lines[1:] == [",".join(str(r.stats[k]) for k in SERIES_KEYS)]


# ---- native text events --------------------------------------------------------------

EVENTS = """\
#mmulab-trace 1
R 10000 8
R 10000 8
#flush va 0x10000 1
R 10000 8
#unmap 0x10000 0x1000
R 10000 8
#flush all
R 10000 8
"""
# 1st R: not present -> #PF, paged in, retried: a walk.   2nd R: L1 hit.
# flush va: 3rd R walks.   unmap (+ its INVLPG): 4th R faults again, then walks.
# flush all: 5th R walks.  Loads 5 + 2 retries = 7, one hit, 6 misses, all of them
# STLB misses: 2 faulting walks + 4 completed.


def test_native_events_act_at_their_record_positions(tmp_path) -> None:
    r = run(RunConfig(traces=[write_trace(tmp_path, "ev.mmt", EVENTS)], ram="1G"))
    s = r.stats
    assert r.records == {"read": 5, "write": 0, "fetch": 0}
    assert s["dTLB-loads"] == 7
    assert s["dTLB-load-misses"] == 6
    assert s["dtlb_load_misses.stlb_hit"] == 0
    assert s["dtlb_load_misses.miss_causes_a_walk"] == 6
    assert s["dtlb_load_misses.walk_completed"] == 4
    assert s["page_faults"] == 2
    assert s["invlpg"] == 2  # the flush va and the unmap
    assert s["tlb_flushes"] == 1
    assert r.faults["total"] == r.faults["faults_4k"] == 2
    assert r.footprint == {"4k": 1, "2m": 0, "1g": 0}


def test_native_event_order_matters(tmp_path) -> None:
    before = "R 10000 8\n#flush all\nR 10000 8\n"  # the flush comes between
    after = "R 10000 8\nR 10000 8\n#flush all\n"  # the flush comes last
    a = run(RunConfig(traces=[write_trace(tmp_path, "a.mmt", before)], ram="1G"))
    b = run(RunConfig(traces=[write_trace(tmp_path, "b.mmt", after)], ram="1G"))
    assert a.stats["dTLB-load-misses"] == 3  # faulting try, retry, after the flush
    assert b.stats["dTLB-load-misses"] == 2  # the second read hits
    assert a.stats["tlb_flushes"] == b.stats["tlb_flushes"] == 1


def test_map_event_pages_in_ahead_of_the_accesses(tmp_path) -> None:
    text = "W 7f0000002000 8\n#map 0x7f0000000000 0x3000\nR 7f0000000008 8\n"
    r = run(RunConfig(traces=[write_trace(tmp_path, "m.mmt", text)], ram="1G"))
    assert r.stats["page_faults"] == 1  # only the write before the map faults
    assert r.faults["total"] == 1  # the write's page; #map pages are not faults
    assert r.footprint["4k"] == 3
    assert r.stats["dtlb_store_misses.walk_completed"] == 1
    assert r.stats["dtlb_load_misses.walk_completed"] == 1  # mapped, not yet cached


@pytest.mark.parametrize("after", [False, True], ids=["between", "after"])
def test_set_memory_event_acts_at_its_position(tmp_path, after) -> None:
    # splitting the 2M direct-map page makes CPA flush every TLB (cpa_flush)
    ev = "#set_memory ro 0xffff888000200000 16\n"
    text = "R 10000 8\n" + ("R 10000 8\n" + ev if after else ev + "R 10000 8\n")
    r = run(RunConfig(traces=[write_trace(tmp_path, "s.mmt", text)], ram="1G"))
    assert r.stats["tlb_flushes"] == 1
    assert r.stats["dTLB-load-misses"] == (2 if after else 3)


def test_hand_written_native_trace_runs(tmp_path) -> None:
    r = run(RunConfig(traces=[str(DATA / "hand.mmt")], ram="1G"))
    # X 401000, R 7ffd8a1b2c30, W 7ffd8a1b2c28, M 601040 (R+W), R 601048;
    # #map 2M pages in 512 pages, #unmap drops them again
    assert r.records == {"read": 3, "write": 2, "fetch": 1}
    assert r.footprint == {"4k": 3, "2m": 0, "1g": 0}
    assert r.stats["page_faults"] == 3
    assert r.faults["total"] == 3  # the 512 pages of the #map are mapped, not faulted


# ---- page-straddling accesses, kernel addresses --------------------------------------


def test_straddling_access_translates_both_pages(tmp_path) -> None:
    r = run(RunConfig(traces=[write_trace(tmp_path, "x.mmt", "R 10ffc 8\n")], ram="1G"))
    assert r.records == {"read": 1, "write": 0, "fetch": 0}
    assert r.faults["total"] == r.stats["page_faults"] == 2  # 0x10000, then 0x11000
    assert r.footprint == {"4k": 2, "2m": 0, "1g": 0}
    assert r.stats["dtlb_load_misses.walk_completed"] == 2  # each page walked once


def test_straddling_access_counts_one_page_crossing(tmp_path) -> None:
    r = run(RunConfig(traces=[write_trace(tmp_path, "x.mmt", "R 10ffc 8\n")], ram="1G"))
    assert r.crossings == 1  # the access
    assert r.stats["page_crossings"] == 3  # its lookups: fault, fault, success


def test_straddle_without_size_or_inside_a_page_is_one_page(tmp_path) -> None:
    text = "R 10ffc\nR 20ff8 8\nR 30fff 1\n"  # no size; ends at the edge; one byte
    r = run(RunConfig(traces=[write_trace(tmp_path, "n.mmt", text)], ram="1G"))
    assert r.footprint["4k"] == 3
    assert r.stats["page_crossings"] == 0


def test_kernel_address_faults_once_and_is_not_paged_in() -> None:
    r = run(RunConfig(traces=[str(DATA / "hand.lackey")], ram="1G"))
    # user pages 0x401a, 0x1fff000, 0x4a17, 0x257, and 0x400 + 0x401 (the straddling
    # load): 6 demand faults; the store to 0xffffffffff600008 faults once more
    assert r.faults["total"] == 6
    assert r.footprint["4k"] == 6
    assert r.stats["page_faults"] == 7


# ---- the report ----------------------------------------------------------------------


def test_report_has_perf_names_and_champsim_lines_in_their_exact_format(
    tmp_path,
) -> None:
    r = run(RunConfig(traces=[write_trace(tmp_path, "ev.mmt", EVENTS)], ram="1G"))
    lines = [line.rstrip() for line in format_report(r).splitlines()]
    for want in [
        "              7      dTLB-loads",
        "              6      dTLB-load-misses"
        "                      # 85.71% of all dTLB cache accesses",
        "              0      dTLB-stores",
        "              0      dTLB-store-misses"
        "                     #      - of all dTLB cache accesses",
        "              0      iTLB-loads",
        "              6      dtlb_load_misses.miss_causes_a_walk",
        "              4      dtlb_load_misses.walk_completed",
        "              4      dtlb_load_misses.walk_completed_4k",
        "cpu0->cpu0_DTLB TOTAL        ACCESS:          7 HIT:          1 MISS:   "
        "       6 MSHR_MERGE:          0",
        "cpu0->cpu0_DTLB LOAD         ACCESS:          7 HIT:          1 MISS:   "
        "       6 MSHR_MERGE:          0",
        "cpu0->cpu0_DTLB RFO          ACCESS:          0 HIT:          0 MISS:   "
        "       0 MSHR_MERGE:          0",
        "cpu0->cpu0_ITLB TOTAL        ACCESS:          0 HIT:          0 MISS:   "
        "       0 MSHR_MERGE:          0",
        "cpu0->cpu0_STLB TOTAL        ACCESS:          6 HIT:          0 MISS:   "
        "       6 MSHR_MERGE:          0",
        "cpu0->cpu0_STLB LOAD         ACCESS:          6 HIT:          0 MISS:   "
        "       6 MSHR_MERGE:          0",
        "page faults: 2 (demand paging 2: 4K 2, 2M 0, 1G 0, huge-page fallbacks 0)",
    ]:
        assert want in lines
    assert not any(line.startswith("MPKI") for line in lines)  # no fetch records


def test_champsim_lines_follow_plain_printer_format(ls_lackey) -> None:
    fmt = "cpu{}->{} {:<12s} ACCESS: {:10d} HIT: {:10d} MISS: {:10d} MSHR_MERGE: {:10d}"
    s = ls_lackey.stats
    loads, lmiss = s["dTLB-loads"], s["dTLB-load-misses"]
    stores, smiss = s["dTLB-stores"], s["dTLB-store-misses"]
    text = format_report(ls_lackey)
    for name, kind, access, miss in [
        ("DTLB", "TOTAL", loads + stores, lmiss + smiss),
        ("DTLB", "LOAD", loads, lmiss),
        ("DTLB", "RFO", stores, smiss),
        ("ITLB", "TOTAL", s["iTLB-loads"], s["iTLB-load-misses"]),
    ]:
        line = fmt.format(0, f"cpu0_{name}", kind, access, access - miss, miss, 0)
        assert line + "\n" in text


def test_mpki_line_present_when_instruction_counts_are_known() -> None:
    r = run(RunConfig(traces=[str(TINY)]))
    s = r.stats
    assert r.instructions == 103
    k = 103 / 1000
    walks = sum(
        s[f"{side}.miss_causes_a_walk"]
        for side in ("dtlb_load_misses", "dtlb_store_misses", "itlb_misses")
    )
    want = (
        f"MPKI (103 instructions = fetch records): "
        f"dTLB {(s['dTLB-load-misses'] + s['dTLB-store-misses']) / k:.3f}, "
        f"iTLB {s['iTLB-load-misses'] / k:.3f}, STLB {walks / k:.3f}"
    )
    assert want in format_report(r).splitlines()


def test_report_header_names_the_trace_format_and_machine() -> None:
    r = run(RunConfig(traces=[str(TINY)], levels=5, pages="thp", seed=4))
    head = format_report(r).splitlines()[:4]
    assert head[0] == f"mmulab run-trace: {TINY} (lackey)"
    assert head[1] == (
        "machine: 16G RAM, skylake, 5-level paging, pages thp, placement buddy, seed 4"
    )
    assert head[2] == (
        "records: 32 reads, 16 writes, 103 fetches (M counts as a read and a write); "
        "warm-up 0"
    )
    # tiny's 6 pages all lie in the 2M region at 0x400000: one huge page
    assert head[3].startswith("footprint: 0 4K, 1 2M, 0 1G pages mapped; ")
    assert head[3].endswith("; 1 demand-paging faults")


# ---- paging levels -------------------------------------------------------------------


def test_five_level_paging_walks_the_pml5() -> None:
    four = run(RunConfig(traces=[str(TINY)], ram="1G"))
    five = run(RunConfig(traces=[str(TINY)], ram="1G", levels=5))
    assert four.stats["walk_ref.pml5"] == 0
    assert five.stats["walk_ref.pml5"] > 0
    for f in ("records", "faults", "footprint"):
        assert getattr(four, f) == getattr(five, f)
    assert "5-level paging" in format_report(five)
    assert "pml5" in format_report(five).split("walk memory references: ")[1]


def test_levels_other_than_4_or_5_are_refused(capsys) -> None:
    with pytest.raises(ValueError, match="levels 3"):
        TraceRunner(RunConfig(traces=[str(TINY)], levels=3))
    with pytest.raises(SystemExit) as exc:
        cli.main(["run-trace", str(TINY), "--levels", "3"])
    assert exc.value.code == 2
    assert "--levels" in capsys.readouterr().err


# ---- bad input -----------------------------------------------------------------------


def test_bad_trace_exits_2_naming_the_file_and_line(tmp_path, capsys) -> None:
    bad = write_trace(tmp_path, "bad.lackey", "==1== x\nI  00401000,5\n L 0040zz00,8\n")
    assert cli.main(["run-trace", bad]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"mmulab run-trace: error: {bad}: line 3: ")
    assert "bad address" in err
    assert out == ""


def test_skip_bad_runs_the_good_records(tmp_path, capsys) -> None:
    bad = write_trace(tmp_path, "bad.lackey", "==1== x\nI  00401000,5\n L 0040zz00,8\n")
    assert cli.main(["run-trace", bad, "--skip-bad", "--ram", "1G"]) == 0
    out = capsys.readouterr().out
    assert "records: 0 reads, 0 writes, 1 fetches" in out


def test_missing_trace_exits_2(tmp_path, capsys) -> None:
    missing = str(tmp_path / "nope.lackey")
    assert cli.main(["run-trace", missing]) == 2
    assert missing in capsys.readouterr().err


def test_stats_carry_every_mmu_counter(ls_lackey) -> None:
    assert sorted(ls_lackey.stats) == sorted(STAT_NAMES)


# ---- reading ahead on threads -------------------------------------------------------


def _ahead_threads() -> list[str]:
    import threading

    from emu.trace.ahead import THREAD_NAME

    return [t.name for t in threading.enumerate() if t.name == THREAD_NAME]


def test_no_reading_thread_outlives_a_run(tmp_path, true_records) -> None:
    run(RunConfig(traces=[str(TRUE)], limit=1000))  # stops early: threads stopped
    assert not _ahead_threads()
    bad = write_trace(tmp_path, "bad.lackey", "I  00401000,5\n" * 10 + " L zz,8\n")
    with pytest.raises(tr.TraceFormatError, match="line 11"):
        run(RunConfig(traces=[bad], ram="1G"))
    assert not _ahead_threads()
    with pytest.raises(EmuValueError, match="size '1Q'"):  # the boot fails
        run(RunConfig(traces=[str(TRUE)], ram="1Q"))
    assert not _ahead_threads()
