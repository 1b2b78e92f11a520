"""``mmulab info``, ``mmulab convert`` and ``mmulab run-trace`` through cli.main.

Expected outputs are spelt out: derived by hand from the hand-written sample files
(their records are listed in tests/data/traces/README.md), or, for the real
``tiny.lackey``, computed here by an independent regex reading of lackey's grammar
(reference/formats.md 1.2).
"""

from __future__ import annotations

import io
import json
import pathlib
import re
import struct
import types

import pytest

import emu.trace as tr
from kernel_model import cli

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "traces"
TINY = DATA / "tiny.lackey"
LACKEY_LINE = re.compile(r"^(I | [LSM]) ([0-9a-f]+),([0-9]+)$")


def mmulab(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the command; returns (exit code, stdout, stderr)."""
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def info_text(
    name: str,
    fmt: str,
    counts: tuple[int, int, int],
    instructions: int,
    pages: tuple[int, int],
    crossing: tuple[int, int],
    span: tuple[int, int],
) -> str:
    r, w, x = counts
    return (
        f"{name}: {fmt}\n"
        f"accesses: {r + w + x:,} ({r:,} reads, {w:,} writes, {x:,} fetches); "
        f"instructions: {instructions:,}\n"
        f"footprint: {pages[0]:,} distinct 4K pages, {pages[1]:,} distinct 2M regions\n"
        f"page-crossing accesses: {crossing[0]:,} (4K), {crossing[1]:,} (2M)\n"
        f"address range: {span[0]:#x}-{span[1]:#x}\n"
    )


# ---- info ----------------------------------------------------------------------------


def lackey_by_hand(text: str) -> tuple[list[tuple[str, int, int]], int]:
    """(kind, addr, size) accesses (M: a read and a write) and the valgrind lines."""
    acc = []
    other = 0
    for line in text.splitlines():
        m = LACKEY_LINE.match(line)
        if m is None:
            assert line.startswith("==") or not line.strip()
            other += 1
            continue
        op, addr, size = m.group(1).strip(), int(m.group(2), 16), int(m.group(3))
        kinds = {"I": ["fetch"], "L": ["read"], "S": ["write"], "M": ["read", "write"]}
        acc += [(k, addr, size) for k in kinds[op]]
    return acc, other


def test_info_on_tiny_lackey_is_exact(capsys) -> None:
    acc, _ = lackey_by_hand(TINY.read_text())
    pages = set()
    cross4 = cross2 = 0
    for _, a, s in acc:
        last = a + max(s, 1) - 1
        pages |= {a >> 12, last >> 12}
        cross4 += a >> 12 != last >> 12
        cross2 += a >> 21 != last >> 21
    counts = tuple(
        sum(k == want for k, _, _ in acc) for want in ("read", "write", "fetch")
    )
    assert counts == (32, 16, 103)  # README.md's table
    assert cross4 == 12  # 4 M records (8 accesses) and 4 loads straddle
    want = info_text(
        str(TINY),
        "lackey",
        counts,
        103,
        (len(pages), len({p >> 9 for p in pages})),
        (cross4, cross2),
        (min(a for _, a, _ in acc), max(a for _, a, _ in acc)),
    )
    assert mmulab(capsys, "info", TINY) == (0, want, "")
    assert want.splitlines()[2:] == [
        "footprint: 6 distinct 4K pages, 1 distinct 2M regions",
        "page-crossing accesses: 12 (4K), 0 (2M)",
        "address range: 0x401000-0x407bfc",
    ]


HAND_INFO = {
    # I 0401ab70,3 / S 1fff000778,8 / I 0401ab73,5 / L 04a17de0,8 / M 0025747c,1 /
    # I 0401ab78,2 / L 00400ffc,8 (straddles 0x400000|0x401000) / S ffffffffff600008,8
    "hand.lackey": (
        "lackey",
        (3, 3, 3),
        3,
        (7, 6),
        (1, 0),
        (0x25747C, 0xFFFFFFFFFF600008),
    ),
    # X 401000 4 / R 7ffd8a1b2c30 8 / W 7ffd8a1b2c28 8 / M 601040 4 / R 601048
    "hand.mmt": ("native", (3, 2, 1), 1, (3, 3), (0, 0), (0x401000, 0x7FFD8A1B2C30)),
    # 2 401000 / 0 7ffd8a1b2c30 / 1 7ffd8a1b2c28 / 3 601040 (unknown: a read) /
    # 4, 5 (cache control: no access) / 2 401004
    "hand.din": ("din", (2, 1, 2), 2, (3, 3), (0, 0), (0x401000, 0x7FFD8A1B2C30)),
    # i 401000 4 / r 7ffd8a1b2c30 8 / w 7ffd8a1b2c28 8 / m 601040 4 (miscellaneous:
    # a read) / c, v (no access) / I 401004 2
    "hand.xdin": ("xdin", (2, 1, 2), 2, (3, 3), (0, 0), (0x401000, 0x7FFD8A1B2C30)),
    # R 7ffd8a1b2c30 / W 7ffd8a1b2c28 / R 601040 4 / W (nil)
    "hand.pinatrace": ("pinatrace", (2, 2, 0), 0, (3, 3), (0, 0), (0, 0x7FFD8A1B2C30)),
}


@pytest.mark.parametrize("name", sorted(HAND_INFO))
def test_info_on_hand_written_files_is_exact(capsys, name) -> None:
    fmt, counts, instrs, pages, cross, span = HAND_INFO[name]
    want = info_text(str(DATA / name), fmt, counts, instrs, pages, cross, span)
    assert mmulab(capsys, "info", DATA / name) == (0, want, "")


def test_info_reads_standard_input(capsys, monkeypatch) -> None:
    monkeypatch.setattr(
        "sys.stdin", types.SimpleNamespace(buffer=io.BytesIO(TINY.read_bytes()))
    )
    rc, out, _ = mmulab(capsys, "info", "-")
    assert rc == 0
    assert out.splitlines()[:2] == [
        "<stdin>: lackey",
        "accesses: 151 (32 reads, 16 writes, 103 fetches); instructions: 103",
    ]


def test_info_on_compressed_trace_counts_as_uncompressed(capsys, tmp_path) -> None:
    rc, out, _ = mmulab(capsys, "info", DATA / "true.lackey.xz")
    assert rc == 0
    assert out.splitlines()[1] == (
        "accesses: 168,944 (29,403 reads, 11,770 writes, 127,771 fetches); "
        "instructions: 127,771"
    )


def test_info_with_format_override(capsys, tmp_path) -> None:
    path = tmp_path / "trace.txt"
    path.write_text("0 1000\n2 2000\n")
    rc, out, _ = mmulab(capsys, "info", path, "--format", "din")
    assert rc == 0
    assert out == info_text(
        str(path), "din", (1, 0, 1), 1, (2, 1), (0, 0), (0x1000, 0x2000)
    )


def test_info_on_a_bad_file_exits_2_naming_file_and_line(capsys, tmp_path) -> None:
    path = tmp_path / "bad.lackey"
    path.write_text("==1== x\nI  00401000,5\n L 00401000,8x\n")
    rc, out, err = mmulab(capsys, "info", path)
    assert (rc, out) == (2, "")
    assert err.startswith(f"mmulab info: error: {path}: line 3: ")


def test_info_on_unknown_format_name_exits_2(capsys) -> None:
    rc, _, err = mmulab(capsys, "info", TINY, "--format", "valgrind")
    assert rc == 2
    assert "unknown trace format 'valgrind'" in err


# ---- convert -------------------------------------------------------------------------

HAND_LACKEY_NATIVE = """\
#mmulab-trace 1
X 0x401ab70 3
W 0x1fff000778 8
X 0x401ab73 5
R 0x4a17de0 8
R 0x25747c 1
W 0x25747c 1
X 0x401ab78 2
R 0x400ffc 8
W 0xffffffffff600008 8
"""


def test_convert_lackey_to_native_text_is_exact(capsys, tmp_path) -> None:
    out = tmp_path / "hand.mmt"
    assert mmulab(capsys, "convert", DATA / "hand.lackey", out, "--to", "native") == (
        0,
        "",
        "",
    )
    assert out.read_text() == HAND_LACKEY_NATIVE


def test_convert_native_text_keeps_events_in_place(capsys, tmp_path) -> None:
    out = tmp_path / "copy.mmt"
    assert mmulab(capsys, "convert", DATA / "hand.mmt", out, "--to", "native")[0] == 0
    assert out.read_text() == (
        "#mmulab-trace 1\n"
        "X 0x401000 4\n"
        "R 0x7ffd8a1b2c30 8\n"
        "#map 0x7f0000000000 0x200000 0x200000\n"
        "W 0x7ffd8a1b2c28 8 asid=3\n"
        "R 0x601040 4\n"
        "W 0x601040 4\n"
        "#flush va 0x601000 2\n"
        "#set_memory ro 0xffff888000200000 16\n"
        "R 0x601048\n"
        "#unmap 0x7f0000000000 0x200000\n"
        "#flush all\n"
    )


def native_bin(records: list[tuple[int, int, int, int]]) -> bytes:
    """Header (formats: magic, version 1, 16-byte records, no hint) + records."""
    head = b"\x89mmulab\n" + struct.pack("<HHHBB", 1, 16, 0, 0, 0)
    return head + b"".join(
        struct.pack("<QIBBH", addr, size, kind, 0, asid)
        for addr, size, kind, asid in records
    )


def test_convert_lackey_to_native_binary_is_exact(capsys, tmp_path) -> None:
    out = tmp_path / "hand.mmb"
    rc, _, _ = mmulab(
        capsys, "convert", DATA / "hand.lackey", out, "--to", "native-bin"
    )
    assert rc == 0
    r, w, x = 0, 1, 2
    assert out.read_bytes() == native_bin(
        [
            (0x401AB70, 3, x, 0),
            (0x1FFF000778, 8, w, 0),
            (0x401AB73, 5, x, 0),
            (0x4A17DE0, 8, r, 0),
            (0x25747C, 1, r, 0),
            (0x25747C, 1, w, 0),
            (0x401AB78, 2, x, 0),
            (0x400FFC, 8, r, 0),
            (0xFFFFFFFFFF600008, 8, w, 0),
        ]
    )


def test_convert_lackey_to_din_is_exact(capsys, tmp_path) -> None:
    out = tmp_path / "hand.din"
    assert mmulab(capsys, "convert", DATA / "hand.lackey", out, "--to", "din")[0] == 0
    assert out.read_text() == (
        "2 401ab70\n1 1fff000778\n2 401ab73\n0 4a17de0\n0 25747c\n1 25747c\n"
        "2 401ab78\n0 400ffc\n1 ffffffffff600008\n"
    )


def test_convert_lackey_to_champsim_packs_one_record_per_instruction(
    capsys, tmp_path
) -> None:
    out = tmp_path / "hand.champsim"
    rc, _, _ = mmulab(capsys, "convert", DATA / "hand.lackey", out, "--to", "champsim")
    assert rc == 0

    def instr(ip: int, stores: list[int], loads: list[int]) -> bytes:
        # input_instr: ip, is_branch, branch_taken, 2 + 4 register bytes, 2 + 4 u64
        return struct.pack(
            "<QBB6x2Q4Q", ip, 0, 0, *[*stores, 0, 0][:2], *[*loads, 0, 0, 0, 0][:4]
        )

    assert out.read_bytes() == (
        instr(0x401AB70, [0x1FFF000778], [])
        + instr(0x401AB73, [0x25747C], [0x4A17DE0, 0x25747C])
        + instr(0x401AB78, [0xFFFFFFFFFF600008], [0x400FFC])
    )


def test_convert_then_read_back_gives_the_same_records(capsys, tmp_path) -> None:
    want, _ = tr.load(TINY)
    for to, name in (
        ("native", "t.mmt.xz"),
        ("native-bin", "t.mmb.gz"),
        ("xdin", "t.xdin"),
    ):
        out = tmp_path / name
        assert mmulab(capsys, "convert", TINY, out, "--to", to)[0] == 0
        got, _ = tr.load(out)
        for field in ("addr", "kind", "size", "icount"):
            assert (got[field] == want[field]).all(), (to, field)


def test_convert_events_to_native_binary_exits_2_and_leaves_no_file(
    capsys, tmp_path
) -> None:
    out = tmp_path / "hand.mmb"
    rc, _, err = mmulab(capsys, "convert", DATA / "hand.mmt", out, "--to", "native-bin")
    assert rc == 2
    assert "cannot hold events" in err
    assert not out.exists()


def test_convert_to_an_unknown_format_exits_2(capsys, tmp_path) -> None:
    rc, _, err = mmulab(capsys, "convert", TINY, tmp_path / "x", "--to", "perf")
    assert rc == 2
    assert "cannot write format 'perf'" in err


def test_convert_needs_to(capsys, tmp_path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["convert", str(TINY), str(tmp_path / "x")])
    assert exc.value.code == 2
    assert "--to" in capsys.readouterr().err


# ---- run-trace -----------------------------------------------------------------------


def test_run_trace_prints_the_report_on_stdout_only(capsys) -> None:
    rc, out, err = mmulab(capsys, "run-trace", TINY, "--ram", "1G", "--cpu", "zen4")
    assert (rc, err) == (0, "")  # no progress line: stderr is not a terminal
    lines = out.splitlines()
    assert lines[0] == f"mmulab run-trace: {TINY} (lackey)"
    assert lines[1] == (
        "machine: 1G RAM, zen4, 4-level paging, pages 4k, placement buddy, seed 1"
    )
    assert lines[2] == (
        "records: 32 reads, 16 writes, 103 fetches (M counts as a read and a write); "
        "warm-up 0"
    )
    assert lines[3].startswith("footprint: 6 4K, 0 2M, 0 1G pages mapped; ")
    assert lines[3].endswith("; 6 demand-paging faults")
    assert any(
        line.startswith("cpu0->cpu0_DTLB TOTAL        ACCESS: ") for line in lines
    )
    assert any(
        line.startswith("MPKI (103 instructions = fetch records): ") for line in lines
    )
    assert lines[-1] == (
        "page faults: 6 (demand paging 6: 4K 6, 2M 0, 1G 0, huge-page fallbacks 0)"
    )


def test_run_trace_reads_standard_input(capsys, monkeypatch, tmp_path) -> None:
    out = tmp_path / "r.json"
    stdin = types.SimpleNamespace(buffer=io.BytesIO(TINY.read_bytes()))
    monkeypatch.setattr("sys.stdin", stdin)
    rc, text, _ = mmulab(capsys, "run-trace", "-", "--ram", "1G", "--json", out)
    assert rc == 0
    assert text.splitlines()[0] == "mmulab run-trace: - (lackey)"
    got = json.loads(out.read_text())
    assert got["records"] == {"read": 32, "write": 16, "fetch": 103}
    assert got["config"]["traces"] == ["-"]


def test_run_trace_thp_and_format_options(capsys, tmp_path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("0 600000\n1 7ff000\n2 401000\n")  # din, no suffix it knows
    rc, out, _ = mmulab(
        capsys, "run-trace", path, "--format", "din", "--thp", "always", "--ram", "1G"
    )
    assert rc == 0
    assert f"mmulab run-trace: {path} (din)" in out
    # 0x600000 and 0x7ff000 share one 2M region; 0x401000 is in the one below
    assert "footprint: 0 4K, 2 2M, 0 1G pages mapped;" in out
    assert "pages thp" in out
