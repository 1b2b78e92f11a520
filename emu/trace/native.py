r"""mmulab's own trace formats: native text (with events) and native binary.

Native text (``.mmt``; formats.md 1.10), one item per line::

    #mmulab-trace 1                  header (optional when reading; always written)
    R 7ff000010 8                    a read of 8 bytes at 0x7ff000010
    W 0x7ff000010 8 asid=3           a write, in address space 3
    X 401000 4                       an instruction fetch (icount counts these)
    M 601040 4                       a read, then a write, of the same bytes
    R 601048                         no size: size 0
    #map 0x7f0000000000 2M 2M        event: [addr, addr+len) mapped with 2 MiB pages
    #unmap 0x7f0000000000 0x200000   event: [addr, addr+len) unmapped
    #flush all                       event: flush every TLB entry
    #flush asid 3                    event: flush one address space
    #flush va 0x601000 4             event: flush 4 pages from an address
    #set_memory ro 0xffff888000200000 16   event: set_memory_ro(addr, 16)
    # any comment                    comment: '#' not followed by a letter or '_'

Exactly: a line is split into words at whitespace.  No word, or a first word that is
``#`` not followed by a letter or ``_``: a comment, skipped.  ``#`` and a letter: a
directive (an event, or the header).  Otherwise a record: the op word (one letter),
the address (optional ``0x``, then 1 to 16 hex digits), then optionally a size (a
decimal or ``0x`` hex number below 2^32) and any number of ``asid=N`` words (N below
2^16; the last counts).  ``csrc/trace.c`` parses record lines in C; the functions
here are its reference, give its error messages and parse the directives.

In events, ADDR is hex (optional ``0x``); LEN, PAGESIZE, NPAGES and N are decimal or
``0x`` hex, LEN and PAGESIZE also with a K/M/G suffix (binary units); PAGESIZE (4K, 2M
or 1G) defaults to 4K, NPAGES of ``#flush va`` to 1; ``set_memory`` takes ``ro rw x nx
np p``.  An unknown directive is an error, so a misspelt event is never silently a
comment.  The header, when present, must be the first line.

An event is recorded with ``index`` = the number of records before it; the reader ends
a chunk at every event, so each event falls on a chunk boundary
(``TraceReader.iter_with_events`` hands them out with the chunk they precede).

Native binary (``.mmb``), little-endian, for ``numpy.frombuffer``:

=======  =====  ==============================================================
offset   bytes  header field
=======  =====  ==============================================================
0        8      magic ``89 6d 6d 75 6c 61 62 0a`` (``"\x89mmulab\n"``)
8        2      version: 1
10       2      record size in bytes: 16
12       2      flags: 0 (a reader refuses bits it does not know)
14       1      page-size hint as a shift (12, 21, 30), 0 for none
15       1      reserved, 0
=======  =====  ==============================================================

then 16-byte records ``u64 addr | u32 size | u8 kind | u8 flags (0) | u16 asid``.
``icount`` is not stored: readers derive it from the fetch records, as every reader
does.  Events cannot be stored in native binary.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import numpy as np

from emu import arch
from emu.trace import records
from emu.trace._stream import Input
from emu.trace._text import (
    Builder,
    LineError,
    ReadContext,
    handle_bad,
    iter_lines,
    parse_hex,
    parse_number,
    reason_of,
)
from emu.trace.detect import NATIVE_MAGIC, NATIVE_TEXT_HEADER
from emu.trace.records import (
    TRACE_DTYPE,
    FlushEvent,
    MapEvent,
    SetMemoryEvent,
    TraceArray,
    TraceEvent,
    TraceFormatError,
    UnmapEvent,
    fill_icount,
)

TEXT_VERSION = 1
BIN_VERSION = 1

#: the on-disk record of native binary
NATIVE_RECORD_DTYPE: np.dtype[Any] = np.dtype(
    [("addr", "<u8"), ("size", "<u4"), ("kind", "u1"), ("flags", "u1"), ("asid", "<u2")]
)
NATIVE_HEADER_DTYPE: np.dtype[Any] = np.dtype(
    [
        ("magic", "S8"),
        ("version", "<u2"),
        ("record_bytes", "<u2"),
        ("flags", "<u2"),
        ("page_shift", "u1"),
        ("reserved", "u1"),
    ]
)
HEADER_BYTES = NATIVE_HEADER_DTYPE.itemsize

_OPS = {
    b"R": (arch.ACC_READ,),
    b"W": (arch.ACC_WRITE,),
    b"X": (arch.ACC_FETCH,),
    b"M": (arch.ACC_READ, arch.ACC_WRITE),
}
_OP_OF_KIND = {arch.ACC_READ: "R", arch.ACC_WRITE: "W", arch.ACC_FETCH: "X"}
SET_MEMORY_ATTRS = ("ro", "rw", "x", "nx", "np", "p")
_DIRECTIVE = re.compile(rb"#([A-Za-z_][A-Za-z0-9_-]*)")
_U32 = 0xFFFF_FFFF


def _event(words: list[bytes], index: int, lineno: int) -> TraceEvent:
    name = words[0][1:].decode()
    args = words[1:]

    def nargs(lo: int, hi: int, usage: str) -> None:
        if not lo <= len(args) <= hi:
            raise LineError(f"usage: {usage}")

    if name == "map":
        nargs(2, 3, "#map ADDR LEN [PAGESIZE]")
        page = parse_number(args[2], "page size", units=True) if len(args) > 2 else 4096
        if page not in (arch.PAGE_SIZE, arch.PMD_SIZE, arch.PUD_SIZE):
            raise LineError(f"page size {page} is not 4K, 2M or 1G")
        return MapEvent(
            index=index,
            line=lineno,
            addr=parse_hex(args[0], "address"),
            length=parse_number(args[1], "length", units=True),
            page_size=page,
        )
    if name == "unmap":
        nargs(2, 2, "#unmap ADDR LEN")
        return UnmapEvent(
            index=index,
            line=lineno,
            addr=parse_hex(args[0], "address"),
            length=parse_number(args[1], "length", units=True),
        )
    if name == "flush":
        usage = "#flush all | #flush asid N | #flush va ADDR [NPAGES]"
        nargs(1, 3, usage)
        scope = args[0].decode(errors="replace")
        if scope == "all" and len(args) == 1:
            return FlushEvent(index=index, line=lineno, scope="all")
        if scope == "asid" and len(args) == 2:
            asid = parse_number(args[1], "asid", limit=0xFFFF)
            return FlushEvent(index=index, line=lineno, scope="asid", asid=asid)
        if scope == "va" and len(args) in (2, 3):
            npages = parse_number(args[2], "npages") if len(args) == 3 else 1
            return FlushEvent(
                index=index,
                line=lineno,
                scope="va",
                addr=parse_hex(args[1], "address"),
                npages=npages,
            )
        raise LineError(f"usage: {usage}")
    if name == "set_memory":
        nargs(3, 3, "#set_memory ro|rw|x|nx|np|p ADDR NPAGES")
        attr = args[0].decode(errors="replace")
        if attr not in SET_MEMORY_ATTRS:
            raise LineError(
                f"set_memory attribute {attr!r} is not one of {SET_MEMORY_ATTRS}"
            )
        return SetMemoryEvent(
            index=index,
            line=lineno,
            attr=attr,
            addr=parse_hex(args[1], "address"),
            npages=parse_number(args[2], "npages"),
        )
    raise LineError(
        f"unknown directive #{name} (events: #map #unmap #flush #set_memory; "
        "a comment is '#' followed by a blank)"
    )


def _record(words: list[bytes], out: Builder) -> None:
    ops = _OPS.get(words[0])
    if ops is None:
        raise LineError(f"unknown op {words[0].decode(errors='replace')!r} (R W X M)")
    if len(words) < 2:
        raise LineError("missing address")
    addr = parse_hex(words[1], "address")
    size = 0
    asid = 0
    rest = words[2:]
    if rest and b"=" not in rest[0]:
        size = parse_number(rest[0], "size", limit=_U32)
        rest = rest[1:]
    for field in rest:
        key, eq, val = field.partition(b"=")
        if key != b"asid" or not eq:
            raise LineError(
                f"unexpected field {field.decode(errors='replace')!r} (only asid=N)"
            )
        asid = parse_number(val, "asid", limit=0xFFFF)
    for kind in ops:
        out.add(addr, kind, size, asid)


def parse_record_line(line: bytes, out: Builder) -> None:
    """Parse one record line into ``out`` (the reference of ``csrc/trace.c``).

    Raises:
        LineError: the line is malformed.
    """
    _record(line.split(), out)


def parse_directive_line(ctx: ReadContext, line: bytes, lineno: int) -> bool:
    """Handle a ``#``-letter line: the header, or an event appended to ``ctx.events``.

    Returns:
        True for an event, False for the header.

    Raises:
        LineError: a bad header, an unknown directive or bad event arguments.
    """
    words = line.split()
    if words[0].startswith(NATIVE_TEXT_HEADER):
        if lineno != 1 or len(words) != 2 or words[1] != b"%d" % TEXT_VERSION:
            raise LineError(
                f"expected the header '#mmulab-trace {TEXT_VERSION}' on the first line"
            )
        return False
    ctx.events.append(_event(words, ctx.stats.records, lineno))
    return True


def iter_native_text_py(inp: Input, ctx: ReadContext) -> Iterator[TraceArray]:
    """Yield record chunks of a native text trace, parsed in Python (the reference)."""
    out = Builder(ctx)
    for lineno, offset, line in iter_lines(inp, ctx):
        words = line.split()
        try:
            if not words or (words[0][:1] == b"#" and not _DIRECTIVE.match(words[0])):
                ctx.stats.skipped_lines += 1
                continue
            if _DIRECTIVE.match(words[0]):
                if len(out):
                    yield from out.chunks()  # the event falls on a chunk boundary
                if not parse_directive_line(ctx, line, lineno):
                    ctx.stats.skipped_lines += 1
                continue
            _record(words, out)
        except LineError as exc:
            if not ctx.skip_bad and len(out):
                yield from out.chunks()  # the records before the bad line first
            handle_bad(ctx, exc, lineno, offset, line)
            continue
        if out.full():
            yield from out.chunks()
    if len(out):
        yield from out.chunks()


def iter_native_text(inp: Input, ctx: ReadContext) -> Iterator[TraceArray]:
    """Yield record chunks of a native text trace, ending a chunk at every event.

    Records are parsed in C; directive lines (events, the header) in Python.
    """
    from emu.trace._cparse import iter_c

    def directive(line: bytes, lineno: int, offset: int) -> None:
        try:
            if not parse_directive_line(ctx, line, lineno):
                ctx.stats.skipped_lines += 1
        except LineError as exc:
            handle_bad(ctx, exc, lineno, offset, line)

    return iter_c(
        inp,
        ctx,
        records.TEXT_NATIVE,
        lambda _code, line: reason_of(parse_record_line, line),
        directive,
    )


def format_text(chunk: TraceArray) -> bytes:
    """The chunk as native text record lines."""
    kinds = chunk["kind"].tolist()
    try:
        ops = [_OP_OF_KIND[k] for k in kinds]
    except KeyError as exc:
        raise LineError(f"record of kind {exc.args[0]}") from None
    lines = []
    for op, a, s, asid in zip(
        ops,
        chunk["addr"].tolist(),
        chunk["size"].tolist(),
        chunk["asid"].tolist(),
        strict=True,
    ):
        line = f"{op} {a:#x} {s}" if s else f"{op} {a:#x}"
        lines.append(f"{line} asid={asid}\n" if asid else line + "\n")
    return "".join(lines).encode()


def text_header() -> bytes:
    """The first line of a native text trace."""
    return NATIVE_TEXT_HEADER + b" %d\n" % TEXT_VERSION


def bin_header(page_size_hint: int = 0) -> bytes:
    """The 16-byte native binary header."""
    shift = 0
    if page_size_hint:
        if page_size_hint not in (arch.PAGE_SIZE, arch.PMD_SIZE, arch.PUD_SIZE):
            raise LineError(f"page size hint {page_size_hint} is not 4K, 2M or 1G")
        shift = page_size_hint.bit_length() - 1
    hdr = np.zeros(1, dtype=NATIVE_HEADER_DTYPE)
    hdr["magic"] = NATIVE_MAGIC
    hdr["version"] = BIN_VERSION
    hdr["record_bytes"] = NATIVE_RECORD_DTYPE.itemsize
    hdr["page_shift"] = shift
    return hdr.tobytes()


def to_bin(chunk: TraceArray) -> bytes:
    """The chunk as native binary records."""
    out = np.zeros(len(chunk), dtype=NATIVE_RECORD_DTYPE)
    for f in ("addr", "size", "kind", "asid"):
        out[f] = chunk[f]
    return out.tobytes()


def iter_native_bin(inp: Input, ctx: ReadContext) -> Iterator[TraceArray]:
    """Yield record chunks of a native binary trace."""
    head = inp.read(HEADER_BYTES)
    if len(head) < HEADER_BYTES:
        raise TraceFormatError(
            ctx.name,
            f"truncated native binary header ({len(head)} of {HEADER_BYTES} bytes)",
            offset=0,
        )
    hdr = np.frombuffer(head, dtype=NATIVE_HEADER_DTYPE)[0]
    if bytes(hdr["magic"]) != NATIVE_MAGIC:
        raise TraceFormatError(
            ctx.name, "not an mmulab native binary trace (bad magic)", offset=0
        )
    if int(hdr["version"]) != BIN_VERSION:
        raise TraceFormatError(
            ctx.name,
            f"native binary version {int(hdr['version'])} (this reader knows "
            f"{BIN_VERSION})",
            offset=8,
        )
    rb = NATIVE_RECORD_DTYPE.itemsize
    if int(hdr["record_bytes"]) != rb:
        raise TraceFormatError(
            ctx.name,
            f"record size {int(hdr['record_bytes'])} (version 1 has {rb})",
            offset=10,
        )
    if int(hdr["flags"]):
        raise TraceFormatError(
            ctx.name, f"unknown header flags {int(hdr['flags']):#x}", offset=12
        )
    shift = int(hdr["page_shift"])
    if shift not in (0, 12, 21, 30):
        raise TraceFormatError(
            ctx.name, f"page-size shift {shift} (0, 12, 21 or 30)", offset=14
        )
    ctx.page_size_hint = 1 << shift if shift else 0
    offset = HEADER_BYTES
    while True:
        data = inp.read(ctx.chunk_records * rb)
        if not data:
            return
        whole = len(data) - len(data) % rb
        recs = np.frombuffer(data, dtype=NATIVE_RECORD_DTYPE, count=whole // rb)
        bad = np.flatnonzero((recs["kind"] > arch.ACC_FETCH) | (recs["flags"] != 0))
        if len(bad):
            i = int(bad[0])
            what = (
                f"kind {int(recs['kind'][i])} (0 read, 1 write, 2 fetch)"
                if recs["kind"][i] > arch.ACC_FETCH
                else f"record flags {int(recs['flags'][i]):#x} (must be 0)"
            )
            raise TraceFormatError(
                ctx.name,
                f"record {ctx.stats.records + i}: {what}",
                offset=offset + i * rb,
            )
        if whole:
            chunk = np.empty(len(recs), dtype=TRACE_DTYPE)
            for f in ("addr", "size", "kind", "asid"):
                chunk[f] = recs[f]
            ctx.stats.instructions = fill_icount(chunk, ctx.stats.instructions)
            ctx.stats.records += len(chunk)
            yield chunk
        if whole < len(data):
            raise TraceFormatError(
                ctx.name,
                f"truncated record: the input ends {len(data) - whole} bytes into a "
                f"{rb}-byte record",
                offset=offset + whole,
            )
        offset += whole
