"""The read loop around the C text parsers (``csrc/trace.c``).

Reads the input in blocks, lends each block and a record array to C, carries a partial
last line to the next block, and turns what C reports (a full array, a malformed line, a
native directive line) into chunks, errors and events.  Line numbers and offsets count
from the start of the (decompressed) input.

Importing this module loads the compiled core and checks :data:`TRACE_DTYPE` against
``emu_trace_rec`` and the ``records`` constants against their ``EMU_TRACE_*`` twins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from emu._ffi import check, ffi, from_array, lib, register_dtype
from emu.trace import records
from emu.trace._stream import Input
from emu.trace._text import MAX_LINE_BYTES, ReadContext, split_chunk
from emu.trace.records import TRACE_DTYPE, TraceArray, TraceFormatError

register_dtype("emu_trace_rec", TRACE_DTYPE)

_TWINS = {
    "FLAG_FINAL": "EMU_TRACE_FINAL",
    "FLAG_SKIP_BAD": "EMU_TRACE_SKIP_BAD",
    "STATUS_END": "EMU_TRACE_END",
    "STATUS_FULL": "EMU_TRACE_FULL",
    "STATUS_BAD": "EMU_TRACE_BAD",
    "STATUS_DIRECTIVE": "EMU_TRACE_DIRECTIVE",
    "BAD_KIND": "EMU_TRACE_BAD_KIND",
    "BAD_ADDR": "EMU_TRACE_BAD_ADDR",
    "BAD_SIZE": "EMU_TRACE_BAD_SIZE",
    "BAD_TRAILING": "EMU_TRACE_BAD_TRAILING",
    "BAD_SYNTAX": "EMU_TRACE_BAD_SYNTAX",
    "TEXT_DIN": "EMU_TRACE_DIN",
    "TEXT_XDIN": "EMU_TRACE_XDIN",
    "TEXT_PINATRACE": "EMU_TRACE_PINATRACE",
    "TEXT_NATIVE": "EMU_TRACE_NATIVE",
}
for _py, _c in _TWINS.items():
    if getattr(records, _py) != getattr(lib, _c):
        raise ImportError(
            f"emu.trace.records.{_py}={getattr(records, _py)} but C "
            f"{_c}={getattr(lib, _c)}"
        )

#: reason(code, line) -> what is wrong with a malformed line
ReasonFn = Callable[[int, bytes], str]
#: directive(line, line number, byte offset) -> handles a native '#'-directive line
DirectiveFn = Callable[[bytes, int, int], None]


def parse_call(text_format: int | None) -> Callable[..., int]:
    """The C entry point: lackey (``None``) or ``emu_trace_text_parse`` of a format."""
    if text_format is None:
        lackey: Callable[..., int] = lib.emu_trace_lackey_parse
        return lackey
    text: Callable[..., int] = lib.emu_trace_text_parse

    def call(buf: Any, n: int, flags: int, out: Any, cap: int, st: Any) -> int:
        return text(buf, n, text_format, flags, out, cap, st)

    return call


def new_state() -> Any:
    """A fresh ``emu_trace_parse_state`` (cdata)."""
    return ffi.new("emu_trace_parse_state *")


def call_parser(
    fn: Callable[..., int],
    data: memoryview,
    flags: int,
    out: np.ndarray[Any, Any],
    st: Any,
) -> None:
    """One C call over ``data`` into ``out``; progress lands in ``st``."""
    src = ffi.from_buffer("uint8_t[]", data) if len(data) else ffi.NULL
    dst = from_array("emu_trace_rec[]", out, writable=True)
    check(fn(src, len(data), flags, dst, len(out), st), "trace parse")


def iter_c(
    inp: Input,
    ctx: ReadContext,
    text_format: int | None,
    reason: ReasonFn,
    directive: DirectiveFn | None = None,
) -> Iterator[TraceArray]:
    """Yield record chunks of a text trace parsed in C.

    Args:
        inp: the opened input.
        ctx: chunk size, ``skip_bad``, block size and the pass's counters and events.
        text_format: ``records.TEXT_*``, or None for lackey.
        reason: the message for a malformed line.
        directive: handles a native directive line (events, the header).
    """
    fn = parse_call(text_format)
    stats = ctx.stats
    cap = max(ctx.chunk_records, 2)
    buf = bytearray(ctx.block_bytes + MAX_LINE_BYTES)
    mv = memoryview(buf)
    st = new_state()
    arrays = ctx.record_arrays()
    out: np.ndarray[Any, Any] = next(arrays)
    pos = 0  # records in out
    carry = 0  # bytes of a partial line at the start of buf
    base_offset = 0  # input offset of buf[0]
    base_line = 0  # lines before the current position
    skip = records.FLAG_SKIP_BAD if ctx.skip_bad else 0

    def line_at(start: int, end: int) -> tuple[bytes, int]:
        nl = buf.find(b"\n", start, end)
        stop = nl if nl >= 0 else end
        return bytes(mv[start:stop]), stop + 1 if nl >= 0 else end

    while True:
        got = inp.readinto(mv[carry : carry + ctx.block_bytes])
        final = got == 0
        end = carry + got
        start = 0
        while start < end:
            st.icount = stats.instructions
            flags = skip | (records.FLAG_FINAL if final else 0)
            call_parser(fn, mv[start:end], flags, out[pos:], st)
            error = None
            if st.reason:
                line = base_line + st.bad_line
                offset = base_offset + start + st.bad_offset
                text = line_at(start + st.bad_offset, end)[0]
                why = reason(st.reason, text)
                if st.status == records.STATUS_BAD:
                    error = TraceFormatError(
                        ctx.name, why, line=line, offset=offset, text=text
                    )
                elif stats.first_bad is None:
                    stats.first_bad = (line, offset, why)
            pos += st.records
            stats.records += st.records
            stats.instructions = st.icount
            stats.lines += st.lines
            stats.skipped_lines += st.skipped
            stats.bad_lines += st.bad
            stats.ignored += st.ignored
            base_line += st.lines
            start += st.consumed
            if error is not None:
                if pos:  # the records before the bad line first
                    yield from split_chunk(out[:pos], ctx.chunk_records)
                raise error
            if st.status == records.STATUS_DIRECTIVE and directive is not None:
                if pos:  # an event falls on a chunk boundary
                    yield from split_chunk(out[:pos], ctx.chunk_records)
                    out = next(arrays)
                    pos = 0
                text, after = line_at(start, end)
                directive(text, base_line + 1, base_offset + start)
                base_line += 1
                stats.lines += 1
                start = after
                continue
            if st.status == records.STATUS_FULL or pos == cap:
                yield from split_chunk(out[:pos], ctx.chunk_records)
                out = next(arrays)
                pos = 0
            elif st.status == records.STATUS_END:
                break
        if final:
            break
        carry = end - start
        if carry > MAX_LINE_BYTES:
            raise TraceFormatError(
                ctx.name,
                f"no line break within {MAX_LINE_BYTES} bytes: not a text trace",
                line=base_line + 1,
                offset=base_offset + start,
            )
        mv[:carry] = bytes(mv[start:end])  # a partial line: small
        base_offset += start
    if pos:
        yield from split_chunk(out[:pos], ctx.chunk_records)
