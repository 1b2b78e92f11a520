"""The ``mmulab`` command (also ``python -m kernel_model``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from emu.errors import EmuError

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[
    str, tuple[str, Callable[[argparse.ArgumentParser], None], Handler]
] = {}


def command(
    name: str, help_text: str, args: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Handler], Handler]:
    """Register a subcommand."""

    def deco(fn: Handler) -> Handler:
        _COMMANDS[name] = (help_text, args, fn)
        return fn

    return deco


def machine_args(p: argparse.ArgumentParser) -> None:
    """Options that describe the machine to boot."""
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ram", help="RAM size for a PC-like layout, e.g. 16G (default)")
    src.add_argument(
        "--e820",
        "--memmap",
        dest="memmap",
        metavar="FILE",
        help="a /sys/firmware/memmap dump",
    )
    src.add_argument("--dmesg", metavar="FILE", help="a boot log with BIOS-e820 lines")
    src.add_argument("--iomem", metavar="FILE", help="a /proc/iomem copy")
    p.add_argument("--no-gbpages", action="store_true", help="no 1G direct-map pages")
    p.add_argument("--la57", action="store_true", help="5-level paging")
    p.add_argument("--pti", action="store_true", help="page-table isolation (no G)")
    p.add_argument("--kaslr-seed", type=int, default=None, help="randomise the layout")
    p.add_argument("--debug-pagealloc", action="store_true", help="4K direct map")
    p.add_argument("--cpu", default="skylake", help="CPU preset (emu.cpus)")
    p.add_argument("--ncpus", type=int, default=2, help="modelled CPUs")


def boot_machine(a: argparse.Namespace):  # type: ignore[no-untyped-def]
    """Boot a Machine from parsed machine_args."""
    from kernel_model.machine import Machine

    return Machine(
        ram=a.ram,
        memmap=a.memmap,
        dmesg=a.dmesg,
        iomem=a.iomem,
        gbpages=not a.no_gbpages,
        la57=a.la57,
        pti=a.pti,
        kaslr_seed=a.kaslr_seed,
        debug_pagealloc=a.debug_pagealloc,
        cpu=a.cpu,
        ncpus=a.ncpus,
    )


@command(
    "boot",
    "boot a modelled machine; print the boot summary and meminfo lines",
    machine_args,
)
def _boot(a: argparse.Namespace) -> int:
    m = boot_machine(a)
    sys.stdout.write(m.boot_summary())
    sys.stdout.write(m.meminfo())
    sys.stdout.write(m.vmstat())
    return 0


def _ptdump_args(p: argparse.ArgumentParser) -> None:
    machine_args(p)
    p.add_argument(
        "--section", help='only this marker\'s section, e.g. "Low Kernel Mapping"'
    )


@command(
    "ptdump",
    "print /sys/kernel/debug/page_tables/kernel of the modelled machine",
    _ptdump_args,
)
def _ptdump(a: argparse.Namespace) -> int:
    m = boot_machine(a)
    sys.stdout.write(m.ptdump(a.section))
    return 0


@command(
    "meminfo", "print the DirectMap lines of /proc/meminfo after boot", machine_args
)
def _meminfo(a: argparse.Namespace) -> int:
    m = boot_machine(a)
    sys.stdout.write(m.meminfo())
    return 0


def _compare_args(p: argparse.ArgumentParser) -> None:
    from kernel_model import scenario as sc

    w, ev = sc.Workload(), sc.Events()
    p.add_argument("--ram", default="16G", help="RAM of the modelled machine (16G)")
    p.add_argument("--cpu", default="skylake", help="CPU preset (skylake)")
    p.add_argument("--accesses", type=int, default=w.accesses, help="stream length")
    p.add_argument("--hot-pages", type=int, default=w.hot_pages, help="hot-set pages")
    p.add_argument("--modules", type=int, default=ev.modules, help="module loads")
    p.add_argument("--bpf", type=int, default=ev.bpf_progs, help="BPF programs")
    p.add_argument(
        "--secretmem", type=int, default=ev.secretmem_pages, help="secretmem pages"
    )
    p.add_argument(
        "--policies",
        default=",".join(sc.POLICIES),
        help="comma-separated: " + ", ".join(sc.POLICIES),
    )
    p.add_argument("--seed", type=int, default=w.seed, help="RNG seed")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")


@command(
    "compare",
    "the main job: translation cost of the direct map, pristine vs "
    "fragmented by consumers vs mitigated",
    _compare_args,
)
def _compare(a: argparse.Namespace) -> int:
    import json

    from kernel_model import scenario as sc

    policies = tuple(p.strip() for p in a.policies.split(",") if p.strip())
    bad = [p for p in policies if p not in sc.POLICIES]
    if bad:
        raise EmuError(f"unknown policies {bad}; choose from {', '.join(sc.POLICIES)}")
    ev = sc.Events(modules=a.modules, bpf_progs=a.bpf, secretmem_pages=a.secretmem)
    w = sc.Workload(accesses=a.accesses, hot_pages=a.hot_pages, seed=a.seed)
    results = sc.compare(a.ram, a.cpu, ev, w, policies)
    sys.stdout.write(sc.format_table(results, a.ram, a.cpu, ev, w))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(sc.results_json(results, a.ram, a.cpu, ev, w), f, indent=2)
    return 0


def _run_trace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "traces", nargs="+", metavar="TRACE", help="trace files ('-' = stdin)"
    )
    p.add_argument("--format", default="auto", help="trace format (default: detect)")
    p.add_argument("--cpu", default="skylake", help="CPU preset")
    p.add_argument(
        "--levels", type=int, default=4, choices=(4, 5), help="paging levels"
    )
    p.add_argument(
        "--thp",
        default="never",
        choices=("never", "always", "1g"),
        help="page-size policy of the demand-paging handler",
    )
    p.add_argument(
        "--placement",
        default="buddy",
        choices=("buddy", "random"),
        help="where faulted-in frames come from",
    )
    p.add_argument("--ram", default="16G", help="RAM of the modelled machine")
    p.add_argument("--warmup", type=int, default=0, help="accesses run before counting")
    p.add_argument("--limit", type=int, default=None, help="accesses counted at most")
    p.add_argument(
        "--interval",
        type=int,
        default=None,
        help="record a time series every N accesses",
    )
    p.add_argument("--seed", type=int, default=1, help="seed (random placement)")
    p.add_argument("--skip-bad", action="store_true", help="skip malformed records")
    p.add_argument("--json", metavar="FILE", help="write the results as JSON")
    p.add_argument("--csv", metavar="FILE", help="write the time series as CSV")
    p.add_argument("--quiet", action="store_true", help="no progress on a terminal")


@command(
    "run-trace",
    "run traced accesses through a CPU's MMU with demand paging",
    _run_trace_args,
)
def _run_trace(a: argparse.Namespace) -> int:
    from kernel_model.runtrace import main_run_trace

    return main_run_trace(a)


def _info_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("trace", help="trace file ('-' = stdin)")
    p.add_argument("--format", default="auto", help="trace format (default: detect)")


@command("info", "counts, footprint and page-crossing accesses of a trace", _info_args)
def _info(a: argparse.Namespace) -> int:
    import emu.trace

    t = emu.trace.info(a.trace, format=a.format)
    c = t.counts
    sys.stdout.write(
        f"{t.name}: {t.format}\n"
        f"accesses: {t.records:,} ({c.get('read', 0):,} reads, {c.get('write', 0):,} "
        f"writes, {c.get('fetch', 0):,} fetches); instructions: {t.instructions:,}\n"
        f"footprint: {t.pages_4k:,} distinct 4K pages, "
        f"{t.pages_2m:,} distinct 2M regions\n"
        f"page-crossing accesses: {t.crossing_4k:,} (4K), {t.crossing_2m:,} (2M)\n"
        f"address range: {t.min_addr:#x}-{t.max_addr:#x}\n"
    )
    return 0


def _convert_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="trace file ('-' = stdin)")
    p.add_argument("output", help="file to write")
    p.add_argument("--format", default="auto", help="input format (default: detect)")
    p.add_argument("--to", required=True, help="native | native-bin | champsim | din")


@command("convert", "convert a trace to another format", _convert_args)
def _convert(a: argparse.Namespace) -> int:
    import emu.trace

    emu.trace.convert(a.input, a.output, to=a.to, format=a.format)
    return 0


def _validate_args(p: argparse.ArgumentParser) -> None:
    machine_args(p)
    p.add_argument(
        "--cpa-test",
        action="store_true",
        help="also run the CPA self-test (arch/x86/mm/pat/cpa-test.c)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the CPA self-test")
    p.add_argument(
        "--sample",
        type=int,
        default=None,
        help="pages per region checked through the MMUs (default: all)",
    )


@command(
    "validate",
    "check the split/merge invariants of a booted machine "
    "(optionally after the CPA self-test)",
    _validate_args,
)
def _validate(a: argparse.Namespace) -> int:
    from kernel_model.validate import validate_command

    m = boot_machine(a)
    text, ok = validate_command(
        m, cpa_selftest=a.cpa_test, seed=a.seed, sample=a.sample
    )
    sys.stdout.write(text)
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    p = argparse.ArgumentParser(
        prog="mmulab",
        description="x86-64 address-translation laboratory: TLB/MMU models and a "
        "model of Linux's direct map",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (help_text, args, _) in _COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        args(sp)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mmulab`` console script."""
    p = build_parser()
    a = p.parse_args(argv)
    try:
        return _COMMANDS[a.command][2](a)
    except EmuError as exc:
        print(f"mmulab {a.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # pragma: no cover - `mmulab ptdump | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
