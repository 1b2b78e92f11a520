"""Every trace reader against hand-written records; detection; compression; errors."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pathlib
import struct
import sys

import numpy as np
import pytest

import emu.trace as tr
from emu.errors import EmuValueError
from emu.trace import TRACE_DTYPE, TraceFormatError

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "traces"
R, W, X = 0, 1, 2


def recs(*rows: tuple[int, ...]) -> np.ndarray:
    """Records from (addr, kind, size, icount[, asid]) rows."""
    out = np.zeros(len(rows), dtype=TRACE_DTYPE)
    for i, row in enumerate(rows):
        out[i]["addr"], out[i]["kind"], out[i]["size"], out[i]["icount"] = row[:4]
        out[i]["asid"] = row[4] if len(row) > 4 else 0
    return out


def assert_records(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == TRACE_DTYPE
    for f in TRACE_DTYPE.names:
        np.testing.assert_array_equal(got[f], want[f], err_msg=f)


# ---- hand-written binary files ------------------------------------------------------

CHAMPSIM_FMT = "<QBB2B4B2Q4Q"  # input_instr, 64 bytes
CLOUDSUITE_FMT = "<QBB4B4B6x4Q4Q2B6x"  # cloudsuite_instr, 96 bytes
NATIVE_HEADER_FMT = "<8sHHHBB"
NATIVE_RECORD_FMT = "<QIBBH"


def hand_binaries() -> dict[str, bytes]:
    """The bytes of hand.champsim, hand.cloudsuite and hand.mmb, field by field."""
    champsim = b"".join(
        [
            struct.pack(
                CHAMPSIM_FMT,
                0x401000,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0x7FFD8A1B2C30,
                0,
                0,
                0,
            ),
            struct.pack(
                CHAMPSIM_FMT,
                0x401004,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0x601040,
                0,
                0x601040,
                0x601048,
                0,
                0,
            ),
            struct.pack(
                CHAMPSIM_FMT,
                0x401008,
                1,
                1,
                26,
                0,
                26,
                25,
                0,
                0,
                0,
                0,
                0,
                0x601050,
                0,
                0,
            ),
        ]
    )
    cloudsuite = b"".join(
        [
            struct.pack(
                CLOUDSUITE_FMT,
                0x401000,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0x7FFD00000010,
                0x7FFD00000000,
                0,
                0,
                0,
                5,
                7,
            ),
            struct.pack(
                CLOUDSUITE_FMT,
                0x401004,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                5,
                5,
            ),
        ]
    )
    mmb = struct.pack(NATIVE_HEADER_FMT, b"\x89mmulab\n", 1, 16, 0, 21, 0) + b"".join(
        [
            struct.pack(NATIVE_RECORD_FMT, 0x401000, 4, X, 0, 0),
            struct.pack(NATIVE_RECORD_FMT, 0x7FFD8A1B2C30, 8, R, 0, 3),
            struct.pack(NATIVE_RECORD_FMT, 0x601040, 4, W, 0, 0),
        ]
    )
    return {"hand.champsim": champsim, "hand.cloudsuite": cloudsuite, "hand.mmb": mmb}


HAND = {
    "hand.lackey": (
        "lackey",
        recs(
            (0x0401AB70, X, 3, 1),
            (0x1FFF000778, W, 8, 1),
            (0x0401AB73, X, 5, 2),
            (0x04A17DE0, R, 8, 2),
            (0x0025747C, R, 1, 2),
            (0x0025747C, W, 1, 2),
            (0x0401AB78, X, 2, 3),
            (0x00400FFC, R, 8, 3),
            (0xFFFFFFFFFF600008, W, 8, 3),
        ),
    ),
    "hand.pinatrace": (
        "pinatrace",
        recs(
            (0x7FFD8A1B2C30, R, 0, 0),
            (0x7FFD8A1B2C28, W, 0, 0),
            (0x601040, R, 4, 0),
            (0, W, 0, 0),
        ),
    ),
    "hand.din": (
        "din",
        recs(
            (0x401000, X, 0, 1),
            (0x7FFD8A1B2C30, R, 0, 1),
            (0x7FFD8A1B2C28, W, 0, 1),
            (0x601040, R, 0, 1),
            (0x401004, X, 0, 2),
        ),
    ),
    "hand.xdin": (
        "xdin",
        recs(
            (0x401000, X, 4, 1),
            (0x7FFD8A1B2C30, R, 8, 1),
            (0x7FFD8A1B2C28, W, 8, 1),
            (0x601040, R, 4, 1),
            (0x401004, X, 2, 2),
        ),
    ),
    "hand.mmt": (
        "native",
        recs(
            (0x401000, X, 4, 1),
            (0x7FFD8A1B2C30, R, 8, 1),
            (0x7FFD8A1B2C28, W, 8, 1, 3),
            (0x601040, R, 4, 1),
            (0x601040, W, 4, 1),
            (0x601048, R, 0, 1),
        ),
    ),
    "hand.champsim": (
        "champsim",
        recs(
            (0x401000, X, 0, 1),
            (0x7FFD8A1B2C30, R, 0, 1),
            (0x401004, X, 0, 2),
            (0x601040, R, 0, 2),
            (0x601048, R, 0, 2),
            (0x601040, W, 0, 2),
            (0x401008, X, 0, 3),
            (0x601050, R, 0, 3),
        ),
    ),
    "hand.cloudsuite": (
        "champsim-cloudsuite",
        recs(
            (0x401000, X, 0, 1, 5),
            (0x7FFD00000000, R, 0, 1, 7),
            (0x7FFD00000010, W, 0, 1, 7),
            (0x401004, X, 0, 2, 5),
        ),
    ),
    "hand.mmb": (
        "native-bin",
        recs((0x401000, X, 4, 1), (0x7FFD8A1B2C30, R, 8, 1, 3), (0x601040, W, 4, 1)),
    ),
}


def test_hand_binary_files_match_their_field_values() -> None:
    for name, data in hand_binaries().items():
        assert (DATA / name).read_bytes() == data, name


@pytest.mark.parametrize("name", sorted(HAND))
def test_reader_gives_exact_records_for_hand_written_file(name: str) -> None:
    fmt, want = HAND[name]
    reader = tr.read(DATA / name)
    assert reader.format == fmt
    assert_records(np.concatenate(list(reader)), want)
    assert reader.stats.records == len(want)
    assert reader.stats.instructions == int(want["icount"][-1])


@pytest.mark.parametrize("name", sorted(HAND))
@pytest.mark.parametrize("chunk_records", [1, 2, 3])
def test_tiny_chunks_and_reads_give_the_same_records(
    name: str, chunk_records: int
) -> None:
    fmt, want = HAND[name]
    for block in (1, 5, 7, 16, 64):
        chunks = list(tr.read(DATA / name, fmt, chunk_records, block_bytes=block))
        assert all(0 < len(c) <= chunk_records for c in chunks)
        assert_records(np.concatenate(chunks), want)


@pytest.mark.parametrize("name", sorted(HAND))
@pytest.mark.parametrize("opener", [gzip.compress, lzma.compress, bz2.compress])
def test_compressed_input_gives_identical_records(name, opener, tmp_path) -> None:
    suffix = {gzip.compress: ".gz", lzma.compress: ".xz", bz2.compress: ".bz2"}[opener]
    plain, _ = tr.load(DATA / name)
    packed = tmp_path / (name + suffix)
    packed.write_bytes(opener((DATA / name).read_bytes()))
    reader = tr.read(packed)
    assert reader.format == HAND[name][0]
    assert reader.compression in ("gzip", "xz", "bz2")
    assert_records(np.concatenate(list(reader)), plain)
    # detection needs no suffix: the magic bytes say it is compressed
    anon = tmp_path / "anonymous"
    anon.write_bytes(packed.read_bytes())
    assert_records(tr.load(anon)[0], plain)


def test_dinero_cache_control_records_are_counted_not_returned() -> None:
    for name in ("hand.din", "hand.xdin"):
        reader = tr.read(DATA / name)
        list(reader)
        assert reader.stats.ignored == 2


def test_native_text_events_sit_at_chunk_boundaries() -> None:
    reader = tr.read(DATA / "hand.mmt", chunk_records=100)
    pairs = list(reader.iter_with_events())
    starts, done = [], 0
    for evs, chunk in pairs:
        assert all(e.index == done for e in evs)
        starts.append((done, [type(e).__name__ for e in evs]))
        done += len(chunk)
    assert starts == [
        (0, []),
        (2, ["MapEvent"]),
        (5, ["FlushEvent", "SetMemoryEvent"]),
        (6, ["UnmapEvent", "FlushEvent"]),
    ]
    assert reader.events == [
        tr.MapEvent(
            index=2, line=5, addr=0x7F0000000000, length=2 << 20, page_size=2 << 20
        ),
        tr.FlushEvent(index=5, line=8, scope="va", addr=0x601000, npages=2),
        tr.SetMemoryEvent(
            index=5, line=9, attr="ro", addr=0xFFFF888000200000, npages=16
        ),
        tr.UnmapEvent(index=6, line=11, addr=0x7F0000000000, length=0x200000),
        tr.FlushEvent(index=6, line=12, scope="all"),
    ]


def test_native_binary_header_page_size_hint_is_exposed() -> None:
    reader = tr.read(DATA / "hand.mmb")
    list(reader)
    assert reader.page_size_hint == 2 << 20


# ---- sources ------------------------------------------------------------------------


def test_file_object_and_bytesio_are_read_once() -> None:
    data = (DATA / "hand.xdin").read_bytes()
    reader = tr.read(io.BytesIO(data))
    assert reader.name == "<stream>"
    assert_records(np.concatenate(list(reader)), HAND["hand.xdin"][1])
    with pytest.raises(EmuValueError, match="only once"):
        list(reader)


def test_path_reader_can_be_iterated_twice() -> None:
    reader = tr.read(DATA / "hand.din")
    first = np.concatenate(list(reader))
    assert_records(np.concatenate(list(reader)), first)


def test_dash_reads_standard_input(monkeypatch) -> None:
    data = gzip.compress((DATA / "hand.lackey").read_bytes())
    fake = type("Stdin", (), {"buffer": io.BytesIO(data)})()
    monkeypatch.setattr(sys, "stdin", fake)
    reader = tr.read("-")
    assert reader.name == "<stdin>"
    assert reader.format == "lackey"
    assert_records(np.concatenate(list(reader)), HAND["hand.lackey"][1])


def test_text_mode_file_is_refused() -> None:
    with (
        open(DATA / "hand.din", encoding="ascii") as f,
        pytest.raises(EmuValueError, match="binary mode"),
    ):
        tr.read(f)


def test_missing_file_names_the_path(tmp_path) -> None:
    with pytest.raises(EmuValueError, match=r"nope\.lackey: cannot open"):
        tr.read(tmp_path / "nope.lackey")


def test_empty_input_has_no_records(tmp_path) -> None:
    p = tmp_path / "empty.lackey"
    p.write_bytes(b"")
    reader = tr.read(p)
    assert reader.format == "lackey"
    assert list(reader) == []


# ---- detection ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "name", "fmt"),
    [
        (b"==1== Lackey\nI  0400,4\n", "x", "lackey"),
        (b" L 0400,4\n S 0400,4\n", "x", "lackey"),
        (b"#mmulab-trace 1\n", "x", "native"),
        (b"R 1000 8\nW 0x2000\n", "x", "native"),
        (b"0x401000: R 0x601040\n#eof\n", "x", "pinatrace"),
        (b"2 401000\n0 601040\n", "x", "din"),
        (b"i 401000 4\nr 601040 8\n", "x", "xdin"),
        (b"# only a comment\n", "t.din.gz", "din"),
        (b"\x89mmulab\n\x01\x00\x10\x00\x00\x00\x00\x00", "x", "native-bin"),
    ],
)
def test_format_is_detected_from_content_then_suffix(head, name, fmt) -> None:
    from emu.trace.detect import detect

    assert detect(head, name) == fmt


def test_champsim_layouts_are_told_apart_by_plausibility() -> None:
    from emu.trace.detect import detect

    bins = hand_binaries()
    assert detect(bins["hand.champsim"], "x") == "champsim"
    assert detect(bins["hand.cloudsuite"], "x") == "champsim-cloudsuite"
    assert (
        detect(bins["hand.cloudsuite"], "y.champsimtrace.xz") == "champsim-cloudsuite"
    )


def test_undetectable_input_asks_for_format() -> None:
    from emu.trace.detect import detect

    with pytest.raises(TraceFormatError, match="pass format="):
        detect(b"hello world\n", "notes.txt")
    with pytest.raises(TraceFormatError, match="unknown format"):
        detect(bytes(range(256)) * 2, "blob")


def test_unknown_format_name_is_refused() -> None:
    with pytest.raises(EmuValueError, match="unknown trace format 'perf'"):
        tr.read(DATA / "hand.din", format="perf")


@pytest.mark.parametrize("value", [0, -1, True, 1.5])
def test_bad_chunk_records_is_refused(value) -> None:
    with pytest.raises(EmuValueError, match="chunk_records"):
        tr.read(DATA / "hand.din", chunk_records=value)


# ---- malformed input: every error names the file and the line or byte offset --------


def _write(tmp_path, name: str, data: bytes) -> pathlib.Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


@pytest.mark.parametrize(
    ("fmt", "text", "line", "offset", "match"),
    [
        ("pinatrace", b"0x1: R 0x2\n0x1 R 0x2\n", 2, 11, "expected '<ip>: R\\|W"),
        ("pinatrace", b"0x1: X 0x2\n", 1, 0, "pinatrace"),
        ("pinatrace", b"0x1: R 0x2 99999999999\n", 1, 0, "above 2\\^32-1"),
        ("din", b"0 1000\n7 2000\n", 2, 7, "unknown din label 0x7"),
        ("din", b"0 1000\n0 zz\n", 2, 7, "LABEL ADDRESS"),
        ("din", b"0\n", 1, 0, "LABEL ADDRESS"),
        ("din", b"0 1" + b"0" * 17 + b"\n", 1, 0, "wider than 64 bits"),
        ("xdin", b"r 1000 4\nq 1000 4\n", 2, 9, "TYPE ADDRESS SIZE"),
        ("xdin", b"r 1000\n", 1, 0, "TYPE ADDRESS SIZE"),
        ("xdin", b"r 1000 100000000\n", 1, 0, "above 2\\^32-1"),
        ("native", b"R 1000 8\nQ 1000\n", 2, 9, "unknown op 'Q'"),
        ("native", b"R\n", 1, 0, "missing address"),
        ("native", b"R 1000 eight\n", 1, 0, "bad size"),
        ("native", b"R 1000 4294967296\n", 1, 0, "above 4294967295"),
        ("native", b"R 10000000000000000\n", 1, 0, "1-16 hex digits"),
        ("native", b"R 1000 8 cpu=1\n", 1, 0, "unexpected field 'cpu=1'"),
        ("native", b"R 1000 8 asid=65536\n", 1, 0, "asid 65536"),
        ("native", b"R 1000\n#flsh all\n", 2, 7, "unknown directive #flsh"),
        ("native", b"#map 1000\n", 1, 0, "usage: #map"),
        ("native", b"#map 1000 4096 3M\n", 1, 0, "not 4K, 2M or 1G"),
        ("native", b"#flush some\n", 1, 0, "usage: #flush"),
        ("native", b"#set_memory rox 1000 1\n", 1, 0, "attribute 'rox'"),
        ("native", b"R 1\n#mmulab-trace 1\n", 2, 4, "header"),
        ("native", b"#mmulab-trace 2\n", 1, 0, "header"),
    ],
)
def test_malformed_text_line_names_file_line_and_offset(
    tmp_path, fmt, text, line, offset, match
) -> None:
    p = _write(tmp_path, "bad.trace", text)
    with pytest.raises(TraceFormatError, match=match) as info:
        list(tr.read(p, format=fmt))
    err = info.value
    assert (err.path, err.line, err.offset) == (str(p), line, offset)
    assert f"bad.trace: line {line}: byte {offset}:" in str(err)


@pytest.mark.parametrize("fmt", ["pinatrace", "din", "xdin", "native"])
def test_skip_bad_counts_malformed_lines_and_keeps_the_rest(
    tmp_path, fmt, caplog
) -> None:
    good = {
        "pinatrace": b"0x1: R 0x10\n",
        "din": b"0 10\n",
        "xdin": b"r 10 4\n",
        "native": b"R 10 4\n",
    }[fmt]
    p = _write(tmp_path, "mixed", good + b"garbage here\n" + good + b"@@\n" + good)
    with pytest.raises(TraceFormatError):
        list(tr.read(p, format=fmt))
    reader = tr.read(p, format=fmt, skip_bad=True)
    assert len(np.concatenate(list(reader))) == 3
    assert reader.stats.bad_lines == 2
    assert reader.stats.first_bad is not None
    assert reader.stats.first_bad[:2] == (2, len(good))
    assert "skipped 2 malformed lines" in caplog.text


def test_truncated_champsim_record_is_reported_after_the_whole_ones(tmp_path) -> None:
    data = hand_binaries()["hand.champsim"]
    p = _write(tmp_path, "cut.champsim", data[:-10])
    reader = tr.read(p, format="champsim")
    got = []
    with pytest.raises(
        TraceFormatError, match="54 bytes into a 64-byte record"
    ) as info:
        got.extend(reader)
    assert info.value.offset == 128
    assert_records(np.concatenate(got), HAND["hand.champsim"][1][:6])


def test_truncated_cloudsuite_record_is_reported(tmp_path) -> None:
    p = _write(tmp_path, "cut", hand_binaries()["hand.cloudsuite"][:100])
    with pytest.raises(TraceFormatError, match="4 bytes into a 96-byte") as info:
        list(tr.read(p, format="champsim-cloudsuite"))
    assert info.value.offset == 96


def test_truncated_native_binary_record_and_header_are_reported(tmp_path) -> None:
    data = hand_binaries()["hand.mmb"]
    p = _write(tmp_path, "cut.mmb", data[:-3])
    with pytest.raises(TraceFormatError, match="13 bytes into a 16-byte") as info:
        list(tr.read(p))
    assert info.value.offset == 16 + 2 * 16
    p = _write(tmp_path, "hdr.mmb", data[:11])
    with pytest.raises(TraceFormatError, match="truncated native binary header"):
        list(tr.read(p))


@pytest.mark.parametrize(
    ("patch_at", "value", "match", "offset"),
    [
        (8, b"\x02\x00", "version 2", 8),
        (10, b"\x18\x00", "record size 24", 10),
        (12, b"\x01\x00", "unknown header flags", 12),
        (14, b"\x0d", "page-size shift 13", 14),
        (16 + 16 + 12, b"\x05", "record 1: kind 5", 32),
        (16 + 32 + 13, b"\x01", "record 2: record flags", 48),
    ],
)
def test_bad_native_binary_fields_are_reported(
    tmp_path, patch_at, value, match, offset
):
    data = bytearray(hand_binaries()["hand.mmb"])
    data[patch_at : patch_at + len(value)] = value
    p = _write(tmp_path, "bad.mmb", bytes(data))
    with pytest.raises(TraceFormatError, match=match) as info:
        list(tr.read(p))
    assert info.value.offset == offset


def test_forced_native_binary_without_magic_is_refused(tmp_path) -> None:
    p = _write(tmp_path, "x", b"R 1000\n" * 4)
    with pytest.raises(TraceFormatError, match="bad magic"):
        list(tr.read(p, format="native-bin"))


def test_corrupt_compressed_input_is_reported(tmp_path) -> None:
    data = gzip.compress((DATA / "hand.din").read_bytes() * 50)
    p = _write(tmp_path, "cut.din.gz", data[: len(data) // 2])
    with pytest.raises(TraceFormatError, match="gzip stream is corrupt or truncated"):
        list(tr.read(p))


def test_zstd_input_gets_a_clear_message(tmp_path) -> None:
    p = _write(tmp_path, "t.zst", b"\x28\xb5\x2f\xfd" + bytes(20))
    with pytest.raises(TraceFormatError, match="zstd -dc"):
        tr.read(p)


def test_text_without_line_breaks_is_not_a_text_trace(tmp_path) -> None:
    p = _write(tmp_path, "long.din", b"0 " + b"1" * (1 << 21))
    with pytest.raises(TraceFormatError, match="no line break within"):
        list(tr.read(p, format="din"))


@pytest.mark.parametrize(
    ("name", "reader"),
    [
        ("hand.din", "din.iter_din_py"),
        ("hand.xdin", "din.iter_xdin_py"),
        ("hand.pinatrace", "pinatrace.iter_pinatrace_py"),
        ("hand.mmt", "native.iter_native_text_py"),
    ],
)
def test_python_reference_readers_give_the_same_exact_records(name, reader) -> None:
    import importlib

    from emu.trace._stream import Input
    from emu.trace._text import ReadContext

    module, fn = reader.split(".")
    iterate = getattr(importlib.import_module(f"emu.trace.{module}"), fn)
    ctx = ReadContext(name, 1 << 20, False, 1 << 16)
    with open(DATA / name, "rb") as f:
        got = np.concatenate(list(iterate(Input(f), ctx)))
    assert_records(got, HAND[name][1])
    c_reader = tr.read(DATA / name)
    list(c_reader)
    assert ctx.stats == c_reader.stats
    assert ctx.events == c_reader.events
