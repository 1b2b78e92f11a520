"""Shared machinery of the text readers parsed in Python (pinatrace, din, native)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator

import numpy as np

from emu.trace._stream import Input
from emu.trace.records import (
    TRACE_DTYPE,
    TraceArray,
    TraceEvent,
    TraceFormatError,
    TraceStats,
    fill_icount,
)

#: a longer line means the input is not a text trace (lackey lines are ~20 bytes)
MAX_LINE_BYTES = 1 << 20

U64_MAX = (1 << 64) - 1


class LineError(Exception):
    """Raised by a line parser; the reader turns it into an error or a skip."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class ReadContext:
    """What a format reader needs besides its input, and what it reports back.

    Attributes:
        name: the input's name, for errors.
        chunk_records: most records per yielded chunk (at least 2).
        skip_bad: count and skip malformed lines instead of raising.
        block_bytes: bytes read from the input per call.
        stats: counters of the current pass.
        events: events met so far (native text only), in trace order.
        page_size_hint: page size a native binary header names (0: none).
        reuse_chunks: 0, or how many record arrays the C-parsed readers cycle through
            (see :func:`emu.trace.read`).
    """

    name: str
    chunk_records: int
    skip_bad: bool
    block_bytes: int
    stats: TraceStats = dataclasses.field(default_factory=TraceStats)
    events: list[TraceEvent] = dataclasses.field(default_factory=list)
    page_size_hint: int = 0
    reuse_chunks: int = 0

    def record_arrays(self) -> Iterator[TraceArray]:
        """Record arrays of ``chunk_records`` (at least 2) for a reader to fill.

        Fresh arrays, or with ``reuse_chunks`` the same few in turn (allocated as first
        needed): a consumer that is done with each chunk before taking the next few
        saves the page faults of fresh memory on every chunk.
        """
        cap = max(self.chunk_records, 2)
        ring: list[TraceArray] = []
        k = 0
        while True:
            if not self.reuse_chunks:
                yield np.empty(cap, dtype=TRACE_DTYPE)
                continue
            if len(ring) < self.reuse_chunks:
                ring.append(np.empty(cap, dtype=TRACE_DTYPE))
            yield ring[k % len(ring)]
            k += 1


def iter_lines(inp: Input, ctx: ReadContext) -> Iterator[tuple[int, int, bytes]]:
    """Yield (1-based line number, byte offset, line without its newline).

    ``ctx.stats.lines`` counts a line once the consumer has handled it.
    """
    carry = b""
    offset = 0
    lineno = 0
    while True:
        data = inp.read(ctx.block_bytes)
        if not data:
            break
        buf = carry + data if carry else data
        lines = buf.split(b"\n")
        carry = lines.pop()
        for line in lines:
            lineno += 1
            yield lineno, offset, line
            ctx.stats.lines += 1
            offset += len(line) + 1
        if len(carry) > MAX_LINE_BYTES:
            raise TraceFormatError(
                ctx.name,
                f"no line break within {MAX_LINE_BYTES} bytes: not a text trace",
                line=lineno + 1,
                offset=offset,
            )
    if carry:
        yield lineno + 1, offset, carry
        ctx.stats.lines += 1


class Builder:
    """Collects records parsed one by one and hands them out as full chunks."""

    def __init__(self, ctx: ReadContext) -> None:
        self._ctx = ctx
        self.addr: list[int] = []
        self.kind: list[int] = []
        self.size: list[int] = []
        self.asid: list[int] = []

    def add(self, addr: int, kind: int, size: int = 0, asid: int = 0) -> None:
        """Append one record."""
        self.addr.append(addr)
        self.kind.append(kind)
        self.size.append(size)
        self.asid.append(asid)

    def __len__(self) -> int:
        return len(self.addr)

    def full(self) -> bool:
        """Whether a chunk's worth of records is waiting."""
        return len(self.addr) >= self._ctx.chunk_records

    def chunks(self) -> Iterator[TraceArray]:
        """Hand out the waiting records in chunks of at most ``chunk_records``."""
        yield from split_chunk(self.take(), self._ctx.chunk_records)

    def take(self) -> TraceArray:
        """Return the waiting records as a chunk (icount filled) and forget them."""
        n = len(self.addr)
        chunk = np.empty(n, dtype=TRACE_DTYPE)
        chunk["addr"] = np.array(self.addr, dtype=np.uint64)
        chunk["kind"] = np.array(self.kind, dtype=np.uint8)
        chunk["size"] = np.array(self.size, dtype=np.uint32)
        chunk["asid"] = np.array(self.asid, dtype=np.uint16)
        stats = self._ctx.stats
        stats.instructions = fill_icount(chunk, stats.instructions)
        stats.records += n
        self.addr, self.kind, self.size, self.asid = [], [], [], []
        return chunk


_HEX_DIGITS = re.compile(rb"[0-9a-fA-F]+")
_DEC_DIGITS = re.compile(rb"[0-9]+")


def strip_cr(line: bytes) -> bytes:
    """The line without one trailing carriage return (CRLF files)."""
    return line[:-1] if line.endswith(b"\r") else line


def is_blank_or_comment(line: bytes) -> bool:
    """Whether only whitespace precedes the line's end or a ``#``."""
    s = line.lstrip()
    return not s or s.startswith(b"#")


def parse_hex(tok: bytes, what: str) -> int:
    """A whole word: optional ``0x``, then 1 to 16 hex digits."""
    t = tok[2:] if tok[:2] in (b"0x", b"0X") else tok
    if len(t) > 16 or not _HEX_DIGITS.fullmatch(t):
        shown = tok.decode(errors="replace")
        raise LineError(f"bad {what} {shown!r} (expected 1-16 hex digits)")
    return int(t, 16)


_UNITS = {b"k": 1 << 10, b"m": 1 << 20, b"g": 1 << 30}


def parse_number(
    tok: bytes, what: str, limit: int = U64_MAX, units: bool = False
) -> int:
    """A whole word: decimal, or ``0x`` and hex; optionally a K/M/G (binary) suffix."""
    t = tok
    scale = 1
    if units and t[-1:].lower() in _UNITS:
        scale = _UNITS[t[-1:].lower()]
        t = t[:-1]
    if t[:2] in (b"0x", b"0X") and _HEX_DIGITS.fullmatch(t[2:]):
        v = int(t[2:], 16)
    elif _DEC_DIGITS.fullmatch(t):
        v = int(t)
    else:
        raise LineError(f"bad {what} {tok.decode(errors='replace')!r}")
    v *= scale
    if v > limit:
        raise LineError(f"{what} {v} is above {limit}")
    return v


def handle_bad(
    ctx: ReadContext, exc: LineError, lineno: int, offset: int, line: bytes
) -> None:
    """Raise the error for a malformed line, or count it under ``skip_bad``."""
    if not ctx.skip_bad:
        raise TraceFormatError(
            ctx.name, exc.reason, line=lineno, offset=offset, text=line
        )
    ctx.stats.note_bad(lineno, offset, exc.reason)


def split_chunk(recs: TraceArray, n: int) -> Iterator[TraceArray]:
    """``recs`` in pieces of at most ``n`` records."""
    if len(recs) <= n:
        yield recs
        return
    for i in range(0, len(recs), n):
        yield recs[i : i + n]


def reason_of(parse: Callable[[bytes, Builder], object], line: bytes) -> str:
    """Why the Python line parser ``parse`` refuses ``line`` (the C parser did)."""
    scratch = Builder(ReadContext("", 1 << 30, False, 1))
    try:
        parse(line, scratch)
    except LineError as exc:
        return exc.reason
    return "malformed line (refused by the C parser, accepted by the Python reference)"
