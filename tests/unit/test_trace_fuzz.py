"""Fuzz the C lackey parser against emu.ref.trace on random and mutated text.

The C parser must never crash or read out of bounds (run under an EMU_SANITIZE=1 build
to check the latter), and must agree with the reference on every field.
"""

from __future__ import annotations

import io
import os
import pathlib

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import emu.trace as tr
from emu.ref.trace import parse_lackey
from emu.trace import TraceFormatError

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "traces"

try:
    from emu.trace.lackey import parse as c_parse
except ImportError as exc:  # pragma: no cover - only without a build
    if os.environ.get("EMU_REQUIRE_C") == "1":
        raise
    pytestmark = pytest.mark.skip(reason=f"C core not importable: {exc}")

PIECES = [
    b"I  ",
    b" L ",
    b" S ",
    b" M ",
    b"0401ab70",
    b"1fff000778",
    b"ffffffffffffffff",
    b"00000000000000000",
    b",",
    b"8",
    b"16",
    b"4294967295",
    b"4294967296",
    b"12345678901",
    b"\n",
    b"\r",
    b"\r\n",
    b"==1== banner",
    b"--1-- x",
    b"**1** x",
    b"SB 0400",
    b" ",
    b"I",
    b"=",
    b"S",
    b"g",
    b"0",
    b"x",
    b"\x00",
    b"\xff",
]
TEXT = (DATA / "tiny.lackey").read_bytes()


def same(c, ref) -> None:
    assert np.array_equal(c.records, ref.records)
    for f in (
        "consumed",
        "lines",
        "skipped",
        "bad",
        "bad_line",
        "bad_offset",
        "reason",
        "stopped",
        "icount",
    ):
        assert getattr(c, f) == getattr(ref, f), f


#: the default (dev) profile's 200 examples, halved: eight properties share the budget
FAST = (
    settings(max_examples=100)
    if os.environ.get("HYPOTHESIS_PROFILE", "dev") == "dev"
    else settings()
)

lackeyish = st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join)


@st.composite
def mutated(draw) -> bytes:
    """A slice of a real trace with a few bytes replaced, inserted or deleted."""
    start = draw(st.integers(0, len(TEXT) - 1))
    data = bytearray(TEXT[start : start + draw(st.integers(0, 400))])
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.sampled_from(b"0123456789abcdefgILSMx, \r\n=\x00\xff"))
        if op == "insert" or not data:
            data[pos:pos] = bytes([byte])
        elif op == "replace":
            data[min(pos, len(data) - 1)] = byte
        else:
            del data[min(pos, len(data) - 1)]
    return bytes(data)


@st.composite
def record_lines(draw) -> bytes:
    """Lines shaped like records, with digit runs of every length around the limits
    (1-20 address digits, 0-12 size digits), so the C fast path and its fallbacks
    both run; now and then a byte is corrupted."""
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        prefix = draw(st.sampled_from([b"I  ", b" L ", b" S ", b" M "]))
        addr = draw(st.text("0123456789abcdefABCDEF", min_size=1, max_size=20))
        size = draw(st.text("0123456789", max_size=12))
        end = draw(st.sampled_from([b"\n", b"\n", b"\r\n", b"\r", b" \n"]))
        line = bytearray(prefix + addr.encode() + b"," + size.encode() + end)
        if draw(st.integers(0, 9)) == 0:
            line[draw(st.integers(0, len(line) - 1))] = draw(st.integers(0, 255))
        lines.append(bytes(line))
    return b"".join(lines) + draw(st.sampled_from([b"", b"I  0401", b"==1== end\n"]))


inputs = st.one_of(st.binary(max_size=200), lackeyish, mutated(), record_lines())


@FAST
@given(data=inputs, skip_bad=st.booleans(), icount=st.integers(0, 2**40))
def test_c_parser_equals_reference(data, skip_bad, icount) -> None:
    same(
        c_parse(data, skip_bad=skip_bad, icount=icount),
        parse_lackey(data, skip_bad=skip_bad, icount=icount),
    )


@FAST
@given(data=inputs, cap=st.integers(2, 5))
def test_c_parser_with_tiny_output_equals_reference(data, cap) -> None:
    same(c_parse(data, skip_bad=True, cap=cap), parse_lackey(data, skip_bad=True))


@FAST
@given(data=inputs)
def test_c_parser_leaves_the_partial_last_line(data) -> None:
    cut = data.rfind(b"\n") + 1
    c = c_parse(data, final=False, skip_bad=True)
    same(c, parse_lackey(data[:cut], skip_bad=True))


@FAST
@given(
    data=inputs,
    block=st.integers(1, 64),
    chunk=st.integers(1, 8),
    skip_bad=st.booleans(),
)
def test_streamed_reader_equals_reference(data, block, chunk, skip_bad) -> None:
    assume(
        not data.startswith((b"\x1f\x8b", b"\xfd7zXZ\x00", b"BZh", b"\x28\xb5\x2f\xfd"))
    )
    ref = parse_lackey(data, skip_bad=skip_bad)
    reader = tr.read(io.BytesIO(data), "lackey", chunk, skip_bad, block_bytes=block)
    got = []
    if ref.stopped:
        with pytest.raises(TraceFormatError) as info:
            got.extend(reader)
        assert (info.value.line, info.value.offset) == (ref.bad_line, ref.bad_offset)
    else:
        got.extend(reader)
        assert reader.stats.bad_lines == ref.bad
        assert reader.stats.lines == ref.lines
    assert all(0 < len(c) <= chunk for c in got)
    recs = np.concatenate(got) if got else ref.records[:0]
    assert np.array_equal(recs, ref.records[: len(recs)])
    if not ref.stopped:
        assert len(recs) == len(ref.records)


# ---- din, xdin, pinatrace, native: the C parser against the Python line parsers ------

TEXT_PIECES = {
    "din": [b"0", b"1", b"2", b"3", b"4", b"5", b"7", b"0x", b"0X", b"a", b"ff",
            b"7ffd8a1b2c30", b"10000000000000000", b"000000000000000000001"],
    "xdin": [b"r", b"w", b"i", b"m", b"c", b"v", b"R", b"I", b"q", b"0x", b"8",
             b"100000000", b"ffffffff", b"7ffd8a1b2c30", b"10000000000000000"],
    "pinatrace": [b"0x401000", b"0X7f", b"(nil)", b":", b"R", b"W", b"X", b"0x",
                  b"0x12345678901234567", b"8", b"4294967296", b"tid=3", b"#eof"],
    "native": [b"R", b"W", b"X", b"M", b"Q", b"0x", b"1000", b"ffffffffffffffff",
               b"12345678901234567", b"8", b"0x10", b"4294967296", b"asid=", b"asid=3",
               b"asid=0x10000", b"cpu=1", b"=", b"#", b"#map 0x1000 4K",
               b"#flush all", b"#flush va 1000 2", b"#set_memory ro 1000 1",
               b"#bogus", b"#mmulab-trace 1", b"#mmulab-trace 2", b"# c"],
}  # fmt: skip
COMMON = [b" ", b"\t", b"  ", b"\n", b"\r", b"\r\n", b"\v", b"#", b"_", b"g", b"\x00"]


def text_inputs(fmt: str):
    words = st.sampled_from(TEXT_PIECES[fmt] + COMMON)
    return st.one_of(
        st.lists(words, max_size=40).map(b"".join),
        st.lists(
            st.lists(st.sampled_from(TEXT_PIECES[fmt]), max_size=5).map(b" ".join),
            max_size=12,
        ).map(b"\n".join),
        st.binary(max_size=80),
    )


def run(fn, data: bytes, skip_bad: bool, chunk: int, block: int):
    from emu.trace._stream import Input
    from emu.trace._text import ReadContext

    ctx = ReadContext("<fuzz>", chunk, skip_bad, block)
    got, err = [], None
    try:  # random bytes can start like gzip/xz/bz2: both sides then fail alike
        got.extend(fn(Input(io.BytesIO(data)), ctx))
    except TraceFormatError as exc:
        err = str(exc)
    recs = np.concatenate(got) if got else np.zeros(0, dtype=tr.TRACE_DTYPE)
    assert all(0 < len(c) <= chunk for c in got)
    return recs, ctx.stats, ctx.events, err


def _readers(fmt: str):
    from emu.trace import din, native, pinatrace

    return {
        "din": (din.iter_din, din.iter_din_py),
        "xdin": (din.iter_xdin, din.iter_xdin_py),
        "pinatrace": (pinatrace.iter_pinatrace, pinatrace.iter_pinatrace_py),
        "native": (native.iter_native_text, native.iter_native_text_py),
    }[fmt]


@pytest.mark.parametrize("fmt", sorted(TEXT_PIECES))
def test_c_text_parser_equals_python_reference(fmt) -> None:
    c_fn, py_fn = _readers(fmt)

    @FAST
    @given(data=text_inputs(fmt), skip_bad=st.booleans(), chunk=st.integers(1, 6),
           block=st.integers(1, 40))  # fmt: skip
    def check(data, skip_bad, chunk, block) -> None:
        c = run(c_fn, data, skip_bad, chunk, block)
        py = run(py_fn, data, skip_bad, 1 << 20, 1 << 16)
        assert np.array_equal(c[0], py[0])
        assert c[1] == py[1]
        assert c[2] == py[2]
        assert c[3] == py[3]

    check()
