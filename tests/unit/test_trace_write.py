"""write(), convert() and info(): round trips through every writable format."""

from __future__ import annotations

import io
import pathlib

import numpy as np
import pytest

import emu.trace as tr
from emu.errors import EmuValueError
from emu.trace import TRACE_DTYPE

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "traces"
R, W, X = 0, 1, 2
SUFFIX = {
    "native": ".mmt",
    "native-bin": ".mmb",
    "champsim": ".champsimtrace",
    "champsim-cloudsuite": ".cloudsuite",
    "din": ".din",
    "xdin": ".xdin",
}


def load(path, **kw) -> np.ndarray:
    return tr.load(path, **kw)[0]


def lackey_records() -> np.ndarray:
    return load(DATA / "true.lackey.xz")


def champsim_view(recs: np.ndarray, n_src: int, n_dst: int) -> np.ndarray:
    """What a ChampSim file keeps, in plain Python: per instruction the fetch, then up
    to n_src distinct non-zero read addresses, then up to n_dst write addresses; no
    size; the fetch's asid on the fetch and the first data access's on the rest."""
    rows = []
    instrs = []
    for r in recs.tolist():
        addr, kind, asid = r[0], r[1], r[2]
        if kind == X:
            instrs.append([addr, asid, [], [], None])
        else:
            ins = instrs[-1]
            ins[4] = asid if ins[4] is None else ins[4]
            ops = ins[2] if kind == R else ins[3]
            if addr and addr not in ops:
                ops.append(addr)
    for n, (ip, a0, reads, writes, a1) in enumerate(instrs, start=1):
        a1 = a0 if a1 is None else a1
        rows.append((ip, X, a0, 0, n))
        rows += [(a, R, a1, 0, n) for a in reads[:n_src]]
        rows += [(a, W, a1, 0, n) for a in writes[:n_dst]]
    return np.array(rows, dtype=TRACE_DTYPE)


@pytest.mark.parametrize("fmt", ["native", "native-bin", "xdin"])
@pytest.mark.parametrize("compress", ["", ".gz", ".xz", ".bz2"])
def test_lossless_formats_round_trip_exactly(tmp_path, fmt, compress) -> None:
    want = lackey_records()[:20000]
    p = tmp_path / ("t" + SUFFIX[fmt] + compress)
    assert tr.write(p, [want[:7000], want[7000:]], format=fmt) == len(want)
    reader = tr.read(p)
    assert reader.format == fmt
    got = np.concatenate(list(reader))
    assert np.array_equal(got, want)


def test_din_round_trip_keeps_addresses_and_kinds(tmp_path) -> None:
    want = lackey_records()[:5000]
    p = tmp_path / "t.din"
    tr.write(p, want, format="din")
    got = load(p)
    assert np.array_equal(got["addr"], want["addr"])
    assert np.array_equal(got["kind"], want["kind"])
    assert np.array_equal(got["icount"], want["icount"])
    assert not got["size"].any()


@pytest.mark.parametrize(
    ("fmt", "n_src", "n_dst"), [("champsim", 4, 2), ("champsim-cloudsuite", 4, 4)]
)
def test_champsim_round_trip_keeps_what_champsim_holds(
    tmp_path, fmt, n_src, n_dst, caplog
):
    want = lackey_records()
    start = int(np.flatnonzero(want["kind"][160000:] == X)[0]) + 160000
    want = want[start:]  # holds an xsave-like instruction: 36 reads, 34 writes
    want["icount"] -= want["icount"][0] - 1
    p = tmp_path / ("t" + SUFFIX[fmt] + ".gz")
    # chunks that cut instructions apart
    tr.write(p, [want[:1001], want[1001:1002], want[1002:]], format=fmt)
    got = load(p, format=fmt)
    view = champsim_view(want, n_src, n_dst)
    if fmt == "champsim":
        view["asid"] = 0
    assert np.array_equal(got, view)
    assert "dropped" in caplog.text
    with pytest.raises(EmuValueError, match="more than 4 reads in one instruction"):
        tr.write(p, want, format=fmt, strict=True)


def test_champsim_to_champsim_keeps_every_record(tmp_path) -> None:
    for name, fmt in (
        ("hand.champsim", "champsim"),
        ("hand.cloudsuite", "champsim-cloudsuite"),
    ):
        p = tmp_path / name
        tr.convert(DATA / name, p, to=fmt, format=fmt, strict=True)
        assert np.array_equal(load(p, format=fmt), load(DATA / name, format=fmt))


def test_native_text_keeps_events_in_place(tmp_path) -> None:
    p = tmp_path / "copy.mmt"
    assert tr.convert(DATA / "hand.mmt", p) == 6
    a, ea = tr.load(DATA / "hand.mmt")
    b, eb = tr.load(p)
    assert np.array_equal(a, b)
    strip = [(type(e), e.index, e.to_text()) for e in ea]
    assert [(type(e), e.index, e.to_text()) for e in eb] == strip


def test_explicit_events_split_chunks(tmp_path) -> None:
    recs = load(DATA / "hand.xdin")
    evs = [
        tr.FlushEvent(index=0, scope="all"),
        tr.MapEvent(index=3, addr=0, length=4096),
        tr.FlushEvent(index=5, scope="asid", asid=2),
    ]
    buf = io.BytesIO()
    tr.write(buf, [recs[:2], recs[2:]], events=evs)
    buf.seek(0)
    text = buf.getvalue().decode().splitlines()
    assert text[0] == "#mmulab-trace 1"
    assert text[1] == "#flush all"
    assert text[5] == "#map 0x0 0x1000 0x1000"
    assert text[-1] == "#flush asid 2"
    buf.seek(0)
    got, got_evs = tr.load(buf)
    assert np.array_equal(got, recs)
    assert [e.index for e in got_evs] == [0, 3, 5]


@pytest.mark.parametrize("fmt", ["native-bin", "champsim", "din", "xdin"])
def test_events_cannot_go_to_formats_without_events(tmp_path, fmt) -> None:
    p = tmp_path / "out"
    with pytest.raises(EmuValueError, match="cannot hold events"):
        tr.convert(DATA / "hand.mmt", p, to=fmt)
    assert not p.exists()  # the partial output is removed


def test_champsim_writer_refuses_or_drops_what_it_cannot_represent(tmp_path) -> None:
    def recs(*rows):
        out = np.zeros(len(rows), dtype=TRACE_DTYPE)
        for i, (a, k) in enumerate(rows):
            out[i]["addr"], out[i]["kind"] = a, k
        return out

    p = tmp_path / "x.champsim"
    with pytest.raises(EmuValueError, match="record 0: an access before the first"):
        tr.write(p, recs((0x10, R), (0x20, X)), format="champsim")
    cases = [
        (
            recs((0x20, X), *[(0x10 * i, R) for i in range(1, 6)]),
            "record 5: more than 4 reads",
        ),
        (
            recs((0x20, X), (0x10, W), (0x18, W), (0x20, W)),
            "record 3: more than 2 writes",
        ),
        (recs((0x20, X), (0, R)), "record 1: a data access at address 0"),
    ]
    for arr, match in cases:
        with pytest.raises(EmuValueError, match=match):
            tr.write(p, arr, format="champsim", strict=True)
        tr.write(p, arr, format="champsim")
        assert len(load(p, format="champsim")) == len(arr) - 1
    # the same address twice is one operand, as ChampSim's tracer records it
    tr.write(
        p,
        recs((0x20, X), (0x10, R), (0x10, R), (0x10, W)),
        format="champsim",
        strict=True,
    )
    assert load(p, format="champsim")["kind"].tolist() == [X, R, W]
    arr = recs((0x20, X), (0x10, R), (0x18, W))
    arr["asid"] = [1, 2, 3]
    with pytest.raises(
        EmuValueError, match="record 2: data accesses of one instruction"
    ):
        tr.write(tmp_path / "x.cs", arr, format="champsim-cloudsuite")
    arr["asid"] = [1, 300, 300]
    with pytest.raises(EmuValueError, match="asid 300 above 255"):
        tr.write(tmp_path / "x.cs", arr, format="champsim-cloudsuite")


def test_write_accepts_plain_structured_arrays(tmp_path) -> None:
    arr = np.zeros(3, dtype=[("addr", "<u8"), ("kind", "u1"), ("size", "<u4")])
    arr["addr"] = [0x1000, 0x2000, 0x3000]
    arr["kind"] = [X, R, W]
    arr["size"] = [4, 8, 8]
    p = tmp_path / "t.mmb"
    tr.write(p, arr, format="native-bin", page_size_hint=4096)
    got = load(p)
    assert got["addr"].tolist() == [0x1000, 0x2000, 0x3000]
    assert got["icount"].tolist() == [1, 1, 1]
    with pytest.raises(EmuValueError, match="'addr' and 'kind'"):
        tr.write(p, np.zeros(3), format="native-bin")
    with pytest.raises(EmuValueError, match="cannot write format 'lackey'"):
        tr.write(p, arr, format="lackey")


def test_writing_to_stdout(capsysbinary) -> None:
    tr.write("-", load(DATA / "hand.din"), format="din")
    assert capsysbinary.readouterr().out.decode().splitlines()[:2] == [
        "2 401000",
        "0 7ffd8a1b2c30",
    ]


def test_info_counts_footprint_and_page_crossings() -> None:
    arr = np.zeros(6, dtype=TRACE_DTYPE)
    arr["addr"] = [0x1000, 0x1FFC, 0x1FFC, 0x3FF000, 0x1FFFFC, 0x5000]
    arr["kind"] = [X, R, W, R, W, R]
    arr["size"] = [4, 8, 8, 4, 8, 0]
    buf = io.BytesIO()
    tr.write(buf, arr, format="native-bin")
    buf.seek(0)
    info = tr.info(buf)
    assert info.format == "native-bin"
    assert info.counts == {"read": 3, "write": 2, "fetch": 1}
    assert info.records == 6
    assert info.instructions == 1
    # 4K pages 1, 1-2 (straddle), 0x3ff, 0x1ff-0x200 (straddles 2M too), 5
    assert info.pages_4k == 6
    assert info.pages_2m == 2  # 2 MiB regions 0 and 1
    assert info.crossing_4k == 3
    assert info.crossing_2m == 1
    assert (info.min_addr, info.max_addr) == (0x1000, 0x3FF000)


def test_info_of_real_trace_streams_in_chunks() -> None:
    small = tr.info(DATA / "true.lackey.xz", chunk_records=997)
    big = tr.info(DATA / "true.lackey.xz")
    assert small == big
    assert big.counts == {"read": 29403, "write": 11770, "fetch": 127771}
    assert big.crossing_4k == 133
