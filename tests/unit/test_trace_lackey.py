"""The lackey parser (C core and reference) and the real lackey traces."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import numpy as np
import pytest

import emu.trace as tr
from emu.ref.trace import parse_lackey
from emu.trace import TRACE_DTYPE, TraceFormatError
from emu.trace import records as rec

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "traces"
R, W, X = 0, 1, 2


def _c_parse():
    try:
        from emu.trace.lackey import parse
    except ImportError as exc:
        if os.environ.get("EMU_REQUIRE_C") == "1":
            raise
        pytest.skip(f"C core not importable: {exc}")
    return parse


@pytest.fixture(params=["c", "ref"])
def parse(request):
    """parse(data, skip_bad=..., icount=...) of the C core or of emu.ref.trace."""
    return _c_parse() if request.param == "c" else parse_lackey


def footer_count(text: bytes, what: str) -> int:
    """A count from lackey's footer, e.g. ``guest instrs``."""
    m = re.search(rb"^==\d+==\s+" + what.encode() + rb":\s+([\d,]+)$", text, re.M)
    assert m is not None, f"no {what!r} in the footer"
    return int(m.group(1).replace(b",", b""))


def read_all(path, **kw) -> np.ndarray:
    return np.concatenate(list(tr.read(path, **kw)))


def test_trace_dtype_mirrors_the_c_struct() -> None:
    _c_parse()
    from emu._ffi import ffi

    assert ffi.sizeof("emu_trace_rec") == TRACE_DTYPE.itemsize == 24
    for name in TRACE_DTYPE.names:
        assert ffi.offsetof("emu_trace_rec", name) == TRACE_DTYPE.fields[name][1]


def test_hand_lackey_parses_to_exact_records(parse) -> None:
    res = parse((DATA / "hand.lackey").read_bytes())
    want = [
        (0x0401AB70, X, 3, 1),
        (0x1FFF000778, W, 8, 1),
        (0x0401AB73, X, 5, 2),
        (0x04A17DE0, R, 8, 2),
        (0x0025747C, R, 1, 2),
        (0x0025747C, W, 1, 2),
        (0x0401AB78, X, 2, 3),
        (0x00400FFC, R, 8, 3),
        (0xFFFFFFFFFF600008, W, 8, 3),
    ]
    got = [
        (int(r["addr"]), int(r["kind"]), int(r["size"]), int(r["icount"]))
        for r in res.records
    ]
    assert got == want
    assert (res.lines, res.skipped, res.bad, res.icount) == (15, 7, 0, 3)
    assert res.consumed == len((DATA / "hand.lackey").read_bytes())
    assert not res.stopped


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"I 0400,4", rec.BAD_KIND),  # one blank after I
        (b"  L 0400,4", rec.BAD_KIND),
        (b" X 0400,4", rec.BAD_KIND),
        (b"hello", rec.BAD_KIND),
        (b"=", rec.BAD_KIND),
        (b"I  ,4", rec.BAD_ADDR),
        (b"I  0x400,4", rec.BAD_ADDR),
        (b"I  04g0,4", rec.BAD_ADDR),
        (b"I  12345678901234567,4", rec.BAD_ADDR),  # 17 digits
        (b"I  0400", rec.BAD_ADDR),
        (b"I  0400;4", rec.BAD_ADDR),
        (b"I  0400,", rec.BAD_SIZE),
        (b"I  0400,x", rec.BAD_SIZE),
        (b"I  0400,4294967296", rec.BAD_SIZE),
        (b"I  0400,12345678901", rec.BAD_SIZE),
        (b"I  0400,4 ", rec.BAD_TRAILING),
        (b"I  0400,4x", rec.BAD_TRAILING),
        (b"I  0400,4\r\r", rec.BAD_TRAILING),
    ],
)
def test_malformed_line_reason(parse, text, reason) -> None:
    data = b"==1== banner\nI  0400,4\n" + text + b"\nI  0404,4\n"
    res = parse(data)
    assert res.stopped
    assert (res.bad_line, res.bad_offset, res.reason) == (3, 23, reason)
    assert len(res.records) == 1
    assert res.consumed == 23
    skipped = parse(data, skip_bad=True)
    assert not skipped.stopped
    assert (skipped.bad, skipped.bad_line, skipped.reason) == (1, 3, reason)
    assert len(skipped.records) == 2


@pytest.mark.parametrize(
    "text",
    [b"", b"\r", b"==12== x", b"--12-- x", b"**12** x", b"SB 04000", b"SB "],
)
def test_valgrind_and_blank_lines_are_skipped(parse, text) -> None:
    res = parse(b"I  0400,4\n" + text + b"\nI  0404,4\n")
    assert (res.skipped, res.bad, len(res.records)) == (1, 0, 2)


def test_edge_values_parse(parse) -> None:
    res = parse(b"I  ffffffffffffffff,4294967295\r\n L 0,0\n S 0000000000000001,00")
    assert res.records["addr"].tolist() == [2**64 - 1, 0, 1]
    assert res.records["size"].tolist() == [2**32 - 1, 0, 0]
    assert res.records["kind"].tolist() == [X, R, W]
    assert res.consumed == 61


def test_icount_carries_in(parse) -> None:
    res = parse(b" L 10,8\nI  20,4\n", icount=41)
    assert res.records["icount"].tolist() == [41, 42]
    assert res.icount == 42


def test_c_leaves_partial_last_line_unless_final() -> None:
    parse = _c_parse()
    data = b"I  0400,4\nI  0404,4\nI  04"
    res = parse(data, final=False)
    assert (res.consumed, res.lines, len(res.records)) == (20, 2, 2)
    res = parse(data, final=True)
    assert res.stopped
    assert res.reason == rec.BAD_ADDR
    res = parse(b"no newline at all", final=False)
    assert (res.consumed, res.lines, res.stopped) == (0, 0, False)


@pytest.mark.parametrize("cap", [2, 3, 5])
def test_c_small_output_array_resumes_without_losing_records(cap) -> None:
    parse = _c_parse()
    data = (DATA / "hand.lackey").read_bytes()
    assert np.array_equal(parse(data, cap=cap).records, parse(data).records)


def test_c_refuses_bad_arguments() -> None:
    _c_parse()
    from emu._ffi import check, ffi, lib
    from emu.errors import EmuValueError

    st = ffi.new("emu_trace_parse_state *")
    out = ffi.new("emu_trace_rec[]", 2)
    buf = ffi.new("uint8_t[]", b"I  0,1\n")
    for args in [
        (ffi.NULL, 4, 0, out, 2, st),  # NULL text with a length
        (buf, 7, 0, ffi.NULL, 2, st),  # NULL output with a capacity
        (buf, 7, 0, out, 2, ffi.NULL),  # no state
        (buf, 7, 0x80, out, 2, st),  # unknown flag
    ]:
        with pytest.raises(EmuValueError, match="invalid argument"):
            check(lib.emu_trace_lackey_parse(*args), "parse")
        b, n, flags, o, cap, s = args
        with pytest.raises(EmuValueError, match="invalid argument"):
            check(lib.emu_trace_text_parse(b, n, rec.TEXT_DIN, flags, o, cap, s), "p")
    for fmt in (0, 5):
        with pytest.raises(EmuValueError, match="invalid argument"):
            check(lib.emu_trace_text_parse(buf, 7, fmt, 0, out, 2, st), "parse")


# ---- reading files -------------------------------------------------------------------


@pytest.mark.parametrize("block", [1, 2, 3, 7, 13, 64, 4096])
@pytest.mark.parametrize("chunk_records", [1, 2, 5, 1000])
def test_block_boundaries_inside_records_do_not_change_records(block, chunk_records):
    want = read_all(DATA / "tiny.lackey")
    chunks = list(
        tr.read(DATA / "tiny.lackey", chunk_records=chunk_records, block_bytes=block)
    )
    assert all(0 < len(c) <= chunk_records for c in chunks)
    assert np.array_equal(np.concatenate(chunks), want)


@pytest.mark.parametrize("name", ["tiny.lackey", "true.lackey.xz", "ls.lackey.xz"])
def test_real_trace_matches_lackey_footer(name) -> None:
    reader = tr.read(DATA / name)
    chunks = list(reader)
    recs = np.concatenate(chunks)
    import lzma

    raw = (DATA / name).read_bytes()
    text = lzma.decompress(raw) if name.endswith(".xz") else raw
    instrs = footer_count(text, "guest instrs")
    assert int(np.count_nonzero(recs["kind"] == X)) == instrs
    assert int(recs["icount"][-1]) == reader.stats.instructions == instrs
    # every line is a record or valgrind's own
    assert reader.stats.bad_lines == 0
    n_m = text.count(b"\n M ")
    assert (
        len(recs)
        == text.count(b"\nI  ") + text.count(b"\n L ") + text.count(b"\n S ") + 2 * n_m
    )
    assert reader.stats.lines == text.count(b"\n")


def test_tiny_trace_counts_match_the_program() -> None:
    info = tr.info(DATA / "tiny.lackey")
    assert info.counts == {"read": 32, "write": 16, "fetch": 103}
    assert info.instructions == 103
    # 4 read-modify-writes and their 4 reloads straddle a page: 4 * (2 + 1) accesses
    assert info.crossing_4k == 12


def test_true_trace_matches_c_reference_parser() -> None:
    import lzma

    text = lzma.decompress((DATA / "true.lackey.xz").read_bytes())
    ref = parse_lackey(text)
    assert np.array_equal(read_all(DATA / "true.lackey.xz"), ref.records)


def test_malformed_lackey_line_error_names_file_line_and_offset(tmp_path) -> None:
    good = (DATA / "tiny.lackey").read_bytes()
    lines = good.split(b"\n")
    lines[100] = b" L 04zz,8"
    p = tmp_path / "bad.lackey"
    p.write_bytes(b"\n".join(lines))
    offset = sum(len(x) + 1 for x in lines[:100])
    for block in (1 << 22, 37):
        with pytest.raises(TraceFormatError) as info:
            list(tr.read(p, block_bytes=block))
        err = info.value
        assert (err.line, err.offset) == (101, offset)
        assert f"bad.lackey: line 101: byte {offset}: bad address" in str(err)
        assert "' L 04zz,8'" in str(err)
    reader = tr.read(p, skip_bad=True, block_bytes=37)
    assert len(np.concatenate(list(reader))) == 150
    assert reader.stats.bad_lines == 1
    assert reader.stats.first_bad == (101, offset, rec.LACKEY_REASONS[rec.BAD_ADDR])


def test_crlf_lackey_text_parses_like_lf() -> None:
    text = (DATA / "tiny.lackey").read_bytes()
    import io

    crlf = read_all(io.BytesIO(text.replace(b"\n", b"\r\n")), format="lackey")
    assert np.array_equal(crlf, read_all(DATA / "tiny.lackey"))


def test_lackey_without_line_breaks_is_rejected(tmp_path) -> None:
    p = tmp_path / "flat.lackey"
    p.write_bytes(b"I  " + b"0" * (3 << 20))
    with pytest.raises(TraceFormatError, match="no line break"):
        list(tr.read(p, format="lackey", block_bytes=1 << 20))


@pytest.mark.skipif(
    shutil.which("valgrind") is None, reason="valgrind is not installed"
)
def test_regenerated_lackey_trace_matches_footer(tmp_path) -> None:
    log = tmp_path / "true.lackey"
    subprocess.run(
        [
            "valgrind",
            "--tool=lackey",
            "--trace-mem=yes",
            f"--log-file={log}",
            "/bin/true",
        ],
        check=True,
        capture_output=True,
        timeout=120,
        # the sanitizer CI step preloads ASan into pytest; valgrind must not get it
        env={k: v for k, v in os.environ.items() if k != "LD_PRELOAD"},
    )
    text = log.read_bytes()
    reader = tr.read(log)
    assert reader.format == "lackey"
    recs = np.concatenate(list(reader))
    assert reader.stats.bad_lines == 0
    assert reader.stats.instructions == footer_count(text, "guest instrs")
    assert int(np.count_nonzero(recs["kind"] == X)) == footer_count(
        text, "guest instrs"
    )
