"""Opening trace inputs and outputs: paths, ``-``, file objects, gzip/xz/bz2.

Compression is recognised by magic bytes on input (so it works on standard input too)
and chosen by suffix on output, as ChampSim does (formats.md 1.3).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import sys
import zlib
from collections.abc import Iterator
from typing import IO, Any, BinaryIO, TypeAlias, cast

from emu.errors import EmuValueError
from emu.trace.ahead import Ahead
from emu.trace.records import TraceFormatError

Source: TypeAlias = "str | os.PathLike[str] | IO[bytes]"

#: bytes of decompressed input kept for format detection
SNIFF_BYTES = 1 << 16

_MAGICS = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bz2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
COMPRESSION_SUFFIXES = {".gz": "gzip", ".xz": "xz", ".lzma": "xz", ".bz2": "bz2"}
_DECOMPRESS_ERRORS = (EOFError, OSError, lzma.LZMAError, zlib.error, ValueError)


def _read_full(f: Any, n: int) -> bytes:
    """Read ``n`` bytes, fewer only at end of input (pipes return short reads)."""
    parts = []
    while n > 0:
        b = f.read(n)
        if not b:
            break
        if isinstance(b, str):
            raise EmuValueError("open the trace file in binary mode ('rb')")
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


class _Prefixed(io.RawIOBase):
    """A byte stream that first replays ``head``, then continues with ``rest``."""

    def __init__(self, head: bytes, rest: Any) -> None:
        super().__init__()
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        if len(self._head):
            n = min(len(mv), len(self._head))
            mv[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        readinto = getattr(self._rest, "readinto", None)
        if readinto is not None:
            return int(readinto(mv) or 0)
        data = self._rest.read(len(mv))
        mv[: len(data)] = data
        return len(data)


class _XzReader:
    """xz decompression in large steps (what ``lzma.LZMAFile`` does, in 1 MiB reads).

    ``LZMAFile`` feeds its decompressor 8 KiB at a time and takes the GIL back after
    every step; reading the compressed input 1 MiB at a time lets the read-ahead thread
    decompress for milliseconds without the GIL while the main thread runs Python.
    Concatenated streams are read one after the other, and zero bytes after a stream
    are stream padding; anything else after a stream that is not a stream is an error,
    as the ``xz`` command has it (``LZMAFile`` ignores it silently).
    """

    RAW_BLOCK = 1 << 20

    def __init__(self, raw: Any) -> None:
        self._raw = raw
        self._dec = lzma.LZMADecompressor()
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` decompressed bytes (at least one unless at the end)."""
        size = n if n > 0 else 1 << 22
        while not self._eof:
            if self._dec.eof:  # the next concatenated stream, if any
                rest = self._dec.unused_data or self._raw.read(self.RAW_BLOCK)
                while rest and not rest.strip(b"\0"):  # stream padding
                    rest = self._raw.read(self.RAW_BLOCK)
                if not rest:
                    self._eof = True
                    break
                self._dec = lzma.LZMADecompressor()
                out = self._dec.decompress(rest.lstrip(b"\0"), size)
            else:
                data = b""
                if self._dec.needs_input:
                    data = self._raw.read(self.RAW_BLOCK)
                    if not data:
                        raise EOFError(
                            "Compressed file ended before the end-of-stream marker "
                            "was reached"
                        )
                out = self._dec.decompress(data, size)
            if out:
                return out
        return b""


#: decompressed bytes per block read ahead by the background thread
PREFETCH_BLOCK = 1 << 22
#: most blocks waiting in the read-ahead queue (bounds the memory it holds)
PREFETCH_DEPTH = 8


class _ReadAhead:
    """Reads (and so decompresses) ``stream`` on a background thread, in blocks.

    Python's decompressors release the GIL while they work, as do the C parser and the
    MMU, so decompression of the next blocks overlaps the parsing and translation of the
    current one.  A decompression error is raised by :meth:`readinto` when the reader
    reaches it, so every byte before it is handed out first.
    """

    def __init__(self, stream: Any) -> None:
        blocks: Iterator[bytes] = iter(lambda: stream.read(PREFETCH_BLOCK), b"")
        self._blocks = Ahead(blocks, PREFETCH_DEPTH)
        self._cur = memoryview(b"")

    def readinto(self, b: Any) -> int:
        mv = memoryview(b).cast("B")
        if not len(self._cur):
            block = next(self._blocks, b"")
            if not block:
                return 0
            self._cur = memoryview(block)
        n = min(len(mv), len(self._cur))
        mv[:n] = self._cur[:n]
        self._cur = self._cur[n:]
        return n

    def close(self) -> None:
        """Stop the thread and wait for it."""
        self._blocks.close()


class Input:
    """A trace input opened for reading: decompressed, with its first bytes sniffed.

    A compressed input is decompressed ahead on a background thread (``_ReadAhead``),
    started as soon as the input is opened.

    Attributes:
        name: the path, ``"<stdin>"``, or the file object's name.
        compression: ``"gzip"``, ``"xz"``, ``"bz2"`` or None.
        head: the first (up to 64 KiB) decompressed bytes, for format detection.
        offset: decompressed bytes handed out so far.
    """

    def __init__(self, src: Source) -> None:
        self._owned: IO[bytes] | None = None
        self._ahead: _ReadAhead | None = None
        if isinstance(src, str) and src == "-":
            raw: Any = sys.stdin.buffer
            self.name = "<stdin>"
        elif isinstance(src, str | os.PathLike):
            self.name = os.fspath(src)
            try:
                raw = self._owned = open(self.name, "rb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise EmuValueError(
                    f"{self.name}: cannot open: {exc.strerror}"
                ) from exc
        elif hasattr(src, "read"):
            raw = src
            name = getattr(src, "name", None)
            self.name = name if isinstance(name, str) else "<stream>"
        else:
            raise EmuValueError(
                "a trace is a path, '-' or a binary file object, not "
                f"{type(src).__name__}"
            )
        try:
            self._open(raw)
        except BaseException:
            self.close()
            raise

    def _open(self, raw: Any) -> None:
        """Sniff the compression and the head; start decompressing ahead."""
        try:
            magic = _read_full(raw, 6)
        except EmuValueError as exc:
            raise EmuValueError(f"{self.name}: {exc}") from None
        self.compression: str | None = None
        for prefix, kind in _MAGICS:
            if magic.startswith(prefix):
                self.compression = kind
        stream: Any = _Prefixed(magic, raw)
        if self.compression == "zstd":
            raise TraceFormatError(
                self.name,
                "zstd-compressed input is not supported; decompress it: "
                "zstd -dc FILE | mmulab ... -",
            )
        if self.compression == "gzip":
            stream = gzip.GzipFile(fileobj=stream, mode="rb")
        elif self.compression == "xz":
            stream = _XzReader(stream)
        elif self.compression == "bz2":
            stream = bz2.BZ2File(stream, mode="rb")
        self._stream = stream
        self.offset = 0
        self.head = b""
        self.head = self._guarded(lambda: _read_full(stream, SNIFF_BYTES))
        if self.compression is not None and len(self.head) == SNIFF_BYTES:
            stream = self._ahead = _ReadAhead(stream)
        self._stream = _Prefixed(self.head, stream)

    def _guarded(self, fn: Any) -> bytes:
        try:
            data: bytes = fn()
        except _DECOMPRESS_ERRORS as exc:
            raise TraceFormatError(
                self.name,
                f"{self.compression or 'input'} stream is corrupt or truncated ({exc})",
                offset=self.offset,
            ) from exc
        return data

    def readinto(self, buf: memoryview) -> int:
        """Read decompressed bytes into ``buf``; 0 only at end of input."""
        try:
            n = int(self._stream.readinto(buf))
        except _DECOMPRESS_ERRORS as exc:
            raise TraceFormatError(
                self.name,
                f"{self.compression or 'input'} stream is corrupt or truncated ({exc})",
                offset=self.offset,
            ) from exc
        self.offset += n
        return n

    def read(self, n: int) -> bytes:
        """Read ``n`` decompressed bytes (fewer only at the end of the input)."""
        buf = bytearray(n)
        mv = memoryview(buf)
        got = 0
        while got < n:
            k = self.readinto(mv[got:])
            if k == 0:
                break
            got += k
        return bytes(buf[:got])

    def close(self) -> None:
        """Close what this object opened (never standard input or a caller's file)."""
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None
        if self._owned is not None:
            self._owned.close()
            self._owned = None


class Output:
    """A trace output: a path (compressed by suffix), ``-`` or a binary file object."""

    def __init__(self, dst: Source) -> None:
        self._owned: list[Any] = []
        if isinstance(dst, str) and dst == "-":
            self.name = "<stdout>"
            self.stream: BinaryIO = sys.stdout.buffer
        elif isinstance(dst, str | os.PathLike):
            self.name = os.fspath(dst)
            low = self.name.lower()
            comp = next(
                (c for s, c in COMPRESSION_SUFFIXES.items() if low.endswith(s)), None
            )
            try:
                f: Any = open(self.name, "wb")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise EmuValueError(
                    f"{self.name}: cannot create: {exc.strerror}"
                ) from exc
            self._owned.append(f)
            if comp == "gzip":
                f = gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6)
            elif comp == "xz":
                f = lzma.LZMAFile(f, mode="wb", preset=6)  # noqa: SIM115 - closed by close()
            elif comp == "bz2":
                f = bz2.BZ2File(f, mode="wb")
            if comp is not None:
                self._owned.append(f)
            self.stream = f
        elif hasattr(dst, "write"):
            name = getattr(dst, "name", None)
            self.name = name if isinstance(name, str) else "<stream>"
            self.stream = cast("BinaryIO", dst)
        else:
            raise EmuValueError(
                f"a trace output is a path, '-' or a binary file object, not "
                f"{type(dst).__name__}"
            )

    def write(self, data: bytes | memoryview) -> None:
        """Write ``data``."""
        self.stream.write(data)

    def close(self) -> None:
        """Flush; close what this object opened, innermost (compressor) first."""
        for f in reversed(self._owned):
            f.close()
        if not self._owned:
            self.stream.flush()
        self._owned = []
