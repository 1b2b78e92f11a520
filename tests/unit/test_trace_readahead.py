"""Compressed input decompressed ahead on a thread: same bytes, same errors, clean stop.

Inputs here are larger than the 64 KiB sniffed for format detection, so the read-ahead
thread (``emu.trace._stream._ReadAhead``) really runs; small ones never start it.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

import emu.trace as tr
from emu.errors import EmuValueError
from emu.ref.trace import parse_lackey
from emu.trace import TraceFormatError, _stream
from emu.trace.ahead import THREAD_NAME, Ahead

COMPRESS = {
    "xz": lambda b: lzma.compress(b, preset=1),
    "gz": lambda b: gzip.compress(b, compresslevel=1),
    "bz2": lambda b: bz2.compress(b, compresslevel=1),
}


def lackey_text(n: int, seed: int = 7) -> bytes:
    rng = np.random.default_rng(seed)
    kinds = rng.choice([b"I ", b" L", b" S", b" M"], n)
    addrs = rng.integers(0x1000, 1 << 40, n)
    sizes = rng.integers(1, 33, n)
    return b"".join(
        b"%s %x,%d\n" % (k, a, s) for k, a, s in zip(kinds, addrs, sizes, strict=True)
    )


@pytest.fixture(scope="module")
def text() -> bytes:
    return lackey_text(60_000)  # about 1.3 MB: the thread runs for several blocks


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 64 KiB and a 2-deep queue: many hand-overs, a full queue often."""
    monkeypatch.setattr(_stream, "PREFETCH_BLOCK", 1 << 16)
    monkeypatch.setattr(_stream, "PREFETCH_DEPTH", 2)
    monkeypatch.setattr(_stream._XzReader, "RAW_BLOCK", 4096)


def read_all(src) -> np.ndarray:
    return np.concatenate(list(tr.read(src, "lackey", block_bytes=1 << 15)))


def threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_compressed_input_gives_the_plain_records(
    tmp_path, text, suffix, small_blocks
) -> None:
    plain = tmp_path / "t.lackey"
    plain.write_bytes(text)
    packed = tmp_path / f"t.lackey.{suffix}"
    packed.write_bytes(COMPRESS[suffix](text))
    want = read_all(plain)
    assert len(want) == len(parse_lackey(text).records)
    np.testing.assert_array_equal(read_all(packed), want)
    with packed.open("rb") as f:  # a file object, read ahead the same way
        np.testing.assert_array_equal(read_all(f), want)
    assert not threads()


def test_concatenated_padded_xz_streams_are_read_one_after_another(
    tmp_path, text, small_blocks
) -> None:
    half = text.index(b"\n", len(text) // 2) + 1
    p = tmp_path / "two.lackey.xz"
    pad = bytes(8)  # stream padding: a multiple of 4 zero bytes
    p.write_bytes(lzma.compress(text[:half]) + pad + lzma.compress(text[half:]) + pad)
    plain = tmp_path / "t.lackey"
    plain.write_bytes(text)
    np.testing.assert_array_equal(read_all(p), read_all(plain))


def test_garbage_after_the_last_xz_stream_is_an_error_after_the_stream(
    tmp_path, text
) -> None:
    # LZMAFile would ignore it silently
    p = tmp_path / "tail.lackey.xz"
    p.write_bytes(lzma.compress(text) + b"not an xz stream" * 10)
    inp = _stream.Input(p)
    with pytest.raises(TraceFormatError, match="xz stream is corrupt") as e:
        inp.read(len(text) + 100)
    inp.close()
    assert e.value.offset == len(text)
    if shutil.which("xz") is not None:  # the xz command refuses it the same way
        out = subprocess.run(["xz", "-dc", str(p)], capture_output=True, check=False)
        assert (out.returncode, out.stdout) == (1, text)


def test_truncated_xz_is_an_error_after_every_whole_block(
    tmp_path, text, small_blocks
) -> None:
    packed = lzma.compress(text, preset=1)
    p = tmp_path / "cut.lackey.xz"
    p.write_bytes(packed[: len(packed) * 3 // 4])
    inp = _stream.Input(p)
    got = bytearray()
    buf = bytearray(1 << 14)

    def drain() -> None:
        while n := inp.readinto(memoryview(buf)):
            got.extend(buf[:n])

    with pytest.raises(
        TraceFormatError, match="xz stream is corrupt or truncated"
    ) as e:
        drain()
    inp.close()
    assert e.value.offset == len(got)  # what came before is all there
    assert len(got) > len(text) // 2
    assert text.startswith(bytes(got))
    assert "end-of-stream marker" in str(e.value)


def test_corrupt_gzip_names_the_input_and_offset(tmp_path, text, small_blocks) -> None:
    packed = bytearray(gzip.compress(text, compresslevel=1))
    packed[len(packed) // 2] ^= 0xFF
    p = tmp_path / "bad.lackey.gz"
    p.write_bytes(bytes(packed))
    with pytest.raises(TraceFormatError, match="gzip stream is corrupt") as e:
        read_all(p)
    assert str(p) in str(e.value)
    assert e.value.offset is not None
    assert e.value.offset >= _stream.SNIFF_BYTES


def test_abandoned_reader_stops_its_thread(tmp_path, text, small_blocks) -> None:
    p = tmp_path / "t.lackey.xz"
    p.write_bytes(lzma.compress(text * 3, preset=1))
    reader = tr.read(p, "lackey", chunk_records=1000, block_bytes=1 << 14)
    it = iter(reader)
    next(it)
    time.sleep(0.05)  # let the thread fill the queue and block on it
    assert len(threads()) == 1
    it.close()  # the generator's finally closes the input
    assert not threads()
    reader.close()


def test_reader_closed_before_iterating_stops_its_thread(tmp_path, text) -> None:
    p = tmp_path / "t.lackey.xz"
    p.write_bytes(lzma.compress(text, preset=1))
    with tr.read(p) as reader:
        assert reader.format == "lackey"
        assert len(threads()) == 1  # started at open: decompression runs ahead
    assert not threads()


def test_small_input_needs_no_thread(tmp_path) -> None:
    p = tmp_path / "s.lackey.xz"
    p.write_bytes(lzma.compress(b"I  1000,4\n L 2000,8\n"))
    reader = tr.read(p)
    assert not threads()
    assert len(np.concatenate(list(reader))) == 2


# ---- the mechanism ----------------------------------------------------------------


def test_ahead_gives_items_in_order_then_the_error() -> None:
    def gen():
        yield from range(100)
        raise ValueError("item 100 is bad")

    got: list[int] = []
    with Ahead(gen(), depth=3) as ahead:
        with pytest.raises(ValueError, match="item 100 is bad"):
            got.extend(ahead)
        assert next(ahead, None) is None  # finished after the error
    assert got == list(range(100))


def test_ahead_close_midway_runs_the_generators_finally() -> None:
    closed = threading.Event()

    def gen():
        try:
            yield from range(1000)
        finally:
            closed.set()

    ahead = Ahead(gen(), depth=2)
    assert [next(ahead) for _ in range(5)] == [0, 1, 2, 3, 4]
    ahead.close()
    assert closed.is_set()
    assert not threads()
    assert next(ahead, None) is None


def test_ahead_holds_at_most_depth_items() -> None:
    made = []

    def gen():
        for i in range(50):
            made.append(i)
            yield i

    with Ahead(gen(), depth=4) as ahead:
        assert next(ahead) == 0
        time.sleep(0.1)
        assert len(made) <= 1 + 4 + 1  # taken, queued, and one waiting to be queued


def test_ahead_refuses_a_depth_below_one() -> None:
    with pytest.raises(ValueError, match="depth must be at least 1"):
        Ahead(iter([]), depth=0)


# ---- reused record arrays -----------------------------------------------------------


def test_reused_record_arrays_give_the_same_records_and_cycle(tmp_path, text) -> None:
    p = tmp_path / "t.lackey"
    p.write_bytes(text)
    want = np.concatenate(list(tr.read(p, chunk_records=7000)))
    got, bases = [], []
    for chunk in tr.read(p, chunk_records=7000, reuse_chunks=2):
        got.append(chunk.copy())  # a consumer done with it before the next
        bases.append(chunk.base if chunk.base is not None else chunk)
    np.testing.assert_array_equal(np.concatenate(got), want)
    assert len(bases) > 3
    assert bases[0] is bases[2]  # two arrays in turn
    assert bases[1] is bases[3]
    assert bases[0] is not bases[1]


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_reuse_chunks_must_be_a_non_negative_integer(tmp_path, bad) -> None:
    p = tmp_path / "t.lackey"
    p.write_bytes(b"I  1000,4\n")
    with pytest.raises(EmuValueError, match="reuse_chunks must be a non-negative"):
        tr.read(p, reuse_chunks=bad)
