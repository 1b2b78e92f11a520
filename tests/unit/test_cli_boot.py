"""``mmulab boot | ptdump | meminfo`` through ``kernel_model.cli.main``.

The CLI boots with the default configuration, i.e. it finishes the boot (kfence pool,
free_initmem, mark_rodata_ro).  The parts of the output that do not depend on those
CPA splits are checked exactly against hand-derived text (``tests/golden``); for the
rest the invariants the splits keep are checked: a split moves one page's bytes to the
level below, so the DirectMap kB total stays the boot-time total, and splits before
SYSTEM_RUNNING count no vm event (linux-mm.md 1.7).
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from kernel_model import Machine
from kernel_model.cli import main

TESTS = Path(__file__).resolve().parents[1]
DATA = TESTS / "data" / "machine"
GOLDEN = TESTS / "golden"
NP = " " * 30


def golden(name: str) -> str:
    return (GOLDEN / name).read_text()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def direct_map_kb(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(DirectMap(?:4k|2M|1G)):    ([ \d]{8,}) kB", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def test_boot_64g_prints_summary_meminfo_vmstat(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = run(capsys, "boot", "--ram", "64G")
    assert (rc, err) == (0, "")
    lines = out.splitlines(keepends=True)
    head = golden("boot_summary_64g_head.txt")
    n = head.count("\n")
    assert "".join(lines[:n]) == head
    assert re.fullmatch(
        r"page tables: (\d+) pages \((\d+) kB\), simulated memory \d+ kB\n", lines[n]
    )
    tables, kb = map(int, re.findall(r"\d+", lines[n])[:2])
    assert kb == 4 * tables
    meminfo = "".join(lines[n + 1 : n + 4])
    kbs = direct_map_kb(meminfo)
    assert list(kbs) == ["DirectMap4k", "DirectMap2M", "DirectMap1G"]
    # boot: 512 x 4K + 511 x 2M + 65 x 1G (63 leaves, [64G, 65G) counted by 3 windows)
    assert sum(kbs.values()) == 512 * 4 + 511 * 2048 + 65 * 1048576 == 69206016
    assert "".join(lines[n + 4 :]) == golden("vmstat_boot.txt")


def test_meminfo_from_captured_dmesg(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = run(capsys, "meminfo", "--dmesg", str(DATA / "dmesg"))
    assert (rc, err) == (0, "")
    kbs = direct_map_kb(out)
    assert out.count("\n") == 3
    assert len(kbs) == 3
    real = direct_map_kb((DATA / "meminfo").read_text())
    # 25 x 1G + 511 x 2M + 512 x 4K counted at boot = 26 GiB, the same total as the
    # real machine's DirectMap lines (its splits moved bytes between levels only)
    assert sum(kbs.values()) == sum(real.values()) == 27262976
    # the kfence pool at the top of RAM splits the 1G page [24G, 25G) once; nothing
    # else touches a 1G page (the image lies in the 2M-mapped first gigabyte)
    assert kbs["DirectMap1G"] == real["DirectMap1G"] == 24 * 1048576


def test_ptdump_8g_low_kernel_mapping_section(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, err = run(
        capsys, "ptdump", "--ram", "8G", "--section", "Low Kernel Mapping"
    )
    assert (rc, err) == (0, "")
    assert out == Machine(ram="8G").ptdump("Low Kernel Mapping")
    lines = out.splitlines()
    assert lines[0] == "---[ Low Kernel Mapping ]---"
    assert lines[1] == (
        "0xffff888000000000-0xffff888000200000           2M"
        "     RW                 GLB NX pte"
    )
    # the gigabytes [1G, 3G) and the PCI hole are not touched by the end of boot
    assert (
        "0xffff888040000000-0xffff8880c0000000           2G"
        "     RW         PSE     GLB NX pud"
    ) in lines
    assert f"0xffff8880c0000000-0xffff888100000000           1G {NP}pud" in lines
    assert f"0xffff888240000000-0xffff890000000000         503G {NP}pud" in lines
    # runs tile [PAGE_OFFSET, vmalloc start)
    spans = [ln.split()[0].split("-") for ln in lines[1:]]
    assert spans[0][0] == "0xffff888000000000"
    assert spans[-1][1] == "0xffffc90000000000"
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


def test_ptdump_8g_section_ends_with_top_level_hole_named_pgd(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rc, out, _ = run(capsys, "ptdump", "--ram", "8G", "--section", "Low Kernel Mapping")
    assert rc == 0
    assert out.splitlines()[-1] == (
        f"0xffff890000000000-0xffffc90000000000          64T {NP}pgd"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["ptdump", "--ram", "8G", "--section", "Nowhere"],
            "mmulab ptdump: error: no ptdump section 'Nowhere'",
        ),
        (["boot", "--ram", "12Q"], "mmulab boot: error: size '12Q'"),
        (["boot", "--ram", "1M"], "mmulab boot: error: RAM size '1M'"),
        (
            ["meminfo", "--iomem", "/nonexistent/iomem"],
            "mmulab meminfo: error: /nonexistent/iomem: cannot read",
        ),
    ],
)
def test_bad_input_exits_2_with_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    rc, out, err = run(capsys, *argv)
    assert (rc, out) == (2, "")
    assert err.startswith(message)
    assert err.endswith("\n")
    assert err.count("\n") == 1


def test_malformed_dmesg_exits_2_naming_the_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "dmesg"
    bad.write_text(
        "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable\n"
        "BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usabel\n"
    )
    rc, out, err = run(capsys, "boot", "--dmesg", str(bad))
    assert (rc, out) == (2, "")
    assert err.startswith(
        "mmulab boot: error: dmesg line 2: unknown E820 type 'usabel'"
    )


def test_conflicting_sources_are_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["boot", "--ram", "8G", "--dmesg", str(DATA / "dmesg")])
    assert exc.value.code == 2
    assert "not allowed with argument --ram" in capsys.readouterr().err
