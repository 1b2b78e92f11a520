r"""Dinero's text formats: traditional ``din`` and Dinero IV's extended din (``xdin``).

As Dinero IV reads them (``dinfmt.c``, ``xdinfmt.c``):

- din (``-informat d``): ``LABEL ADDRESS [ignored...]``, both hex with optional ``0x``.
  Labels: 0 read, 1 write, 2 instruction fetch, 3 miscellaneous (taken as a read),
  4 copy-back and 5 invalidate (cache control: counted in ``stats.ignored``, no
  record).  There is no size: ``size`` is 0 and the address is kept whole (Dinero
  itself masks it to a 4-byte word).
- xdin (``-informat D``): ``TYPE ADDRESS SIZE [ignored...]``, type one of ``r w i m c
  v`` (either case; ``m`` a read, ``c``/``v`` ignored), address and size hex with
  optional ``0x``.

Exactly: a line is skipped when only whitespace precedes its end or a ``#`` (blank and
comment lines, which Dinero itself rejects); otherwise one trailing ``\r`` is dropped
and the line must match ``[ \t]* LABEL [ \t]+ ADDRESS ([ \t] anything)?`` (din) or
``[ \t]* TYPE [ \t]+ ADDRESS [ \t]+ SIZE ([ \t] anything)?`` (xdin), a number being
``(0x|0X)? hexdigit+`` with the prefix taken only before a digit.  The address must
fit 64 bits (leading zeros allowed), an xdin size 32.  ``icount`` counts the fetches.
``csrc/trace.c`` parses this in C; the functions here are its reference and give the
error messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import numpy as np

from emu import arch
from emu.trace import records
from emu.trace._stream import Input
from emu.trace._text import (
    Builder,
    LineError,
    ReadContext,
    handle_bad,
    is_blank_or_comment,
    iter_lines,
    reason_of,
    strip_cr,
)
from emu.trace.records import TraceArray

_HEX = rb"(?:0[xX])?([0-9a-fA-F]+)"
_DIN = re.compile(rb"[ \t]*" + _HEX + rb"[ \t]+" + _HEX + rb"(?:[ \t].*)?", re.DOTALL)
_XDIN = re.compile(
    rb"[ \t]*([rwimcvRWIMCV])[ \t]+" + _HEX + rb"[ \t]+" + _HEX + rb"(?:[ \t].*)?",
    re.DOTALL,
)
_IGNORED = -1
_DIN_LABELS = {
    0: arch.ACC_READ,
    1: arch.ACC_WRITE,
    2: arch.ACC_FETCH,
    3: arch.ACC_READ,  # D4XMISC: like a read
    4: _IGNORED,  # D4XCOPYB: copy-back
    5: _IGNORED,  # D4XINVAL: invalidate
}
_XDIN_TYPES = {
    b"r": arch.ACC_READ,
    b"w": arch.ACC_WRITE,
    b"i": arch.ACC_FETCH,
    b"m": arch.ACC_READ,
    b"c": _IGNORED,
    b"v": _IGNORED,
}
#: label of each access kind when writing din, and type letter when writing xdin
DIN_LABEL_OF_KIND = {arch.ACC_READ: 0, arch.ACC_WRITE: 1, arch.ACC_FETCH: 2}
XDIN_TYPE_OF_KIND = {arch.ACC_READ: "r", arch.ACC_WRITE: "w", arch.ACC_FETCH: "i"}


def _hex(digits: bytes, what: str) -> int:
    v = int(digits, 16)
    if v >> 64:
        raise LineError(f"{what} 0x{v:x} is wider than 64 bits")
    return v


def parse_din_line(line: bytes, out: Builder) -> int:
    """Parse one din line into ``out``: 1 record, 0 skipped line, -1 ignored record.

    The reference of ``csrc/trace.c``'s din grammar, and its error messages.

    Raises:
        LineError: the line is malformed.
    """
    if is_blank_or_comment(line):
        return 0
    m = _DIN.fullmatch(strip_cr(line))
    if m is None:
        raise LineError("expected 'LABEL ADDRESS' in hex (din)")
    label = int(m.group(1), 16)
    kind = _DIN_LABELS.get(label)
    if kind is None:
        raise LineError(f"unknown din label {label:#x} (0-5)")
    addr = _hex(m.group(2), "address")
    if kind == _IGNORED:
        return -1
    out.add(addr, kind)
    return 1


def parse_xdin_line(line: bytes, out: Builder) -> int:
    """Parse one extended-din line into ``out``: 1 record, 0 skipped, -1 ignored.

    The reference of ``csrc/trace.c``'s xdin grammar, and its error messages.

    Raises:
        LineError: the line is malformed.
    """
    if is_blank_or_comment(line):
        return 0
    m = _XDIN.fullmatch(strip_cr(line))
    if m is None:
        raise LineError(
            "expected 'TYPE ADDRESS SIZE' (xdin: type r/w/i/m/c/v, hex numbers)"
        )
    kind = _XDIN_TYPES[m.group(1).lower()]
    addr = _hex(m.group(2), "address")
    size = _hex(m.group(3), "size")
    if size > 0xFFFF_FFFF:
        raise LineError(f"size {size:#x} is above 2^32-1")
    if kind == _IGNORED:
        return -1
    out.add(addr, kind, size)
    return 1


def _iter_py(inp: Input, ctx: ReadContext, extended: bool) -> Iterator[TraceArray]:
    parse = parse_xdin_line if extended else parse_din_line
    out = Builder(ctx)
    for lineno, offset, line in iter_lines(inp, ctx):
        try:
            r = parse(line, out)
        except LineError as exc:
            if not ctx.skip_bad and len(out):
                yield from out.chunks()  # the records before the bad line first
            handle_bad(ctx, exc, lineno, offset, line)
            continue
        if r == 0:
            ctx.stats.skipped_lines += 1
        elif r < 0:
            ctx.stats.ignored += 1
        elif out.full():
            yield from out.chunks()
    if len(out):
        yield from out.chunks()


def iter_din_py(inp: Input, ctx: ReadContext) -> Iterator[TraceArray]:
    """Yield record chunks of a din file, parsed in Python (the reference)."""
    return _iter_py(inp, ctx, extended=False)


def iter_xdin_py(inp: Input, ctx: ReadContext) -> Iterator[TraceArray]:
    """Yield record chunks of an xdin file, parsed in Python (the reference)."""
    return _iter_py(inp, ctx, extended=True)


def _iter_c(inp: Input, ctx: ReadContext, extended: bool) -> Iterator[TraceArray]:
    from emu.trace._cparse import iter_c

    parse = parse_xdin_line if extended else parse_din_line
    fmt = records.TEXT_XDIN if extended else records.TEXT_DIN
    return iter_c(inp, ctx, fmt, lambda _code, line: reason_of(parse, line))


def iter_din(inp: Input, ctx: ReadContext) -> Iterator[TraceArray]:
    """Yield record chunks of a traditional din file (parsed in C)."""
    return _iter_c(inp, ctx, extended=False)


def iter_xdin(inp: Input, ctx: ReadContext) -> Iterator[TraceArray]:
    """Yield record chunks of an extended din file (parsed in C)."""
    return _iter_c(inp, ctx, extended=True)


def format_din(chunk: TraceArray, extended: bool) -> bytes:
    """The chunk as din (``LABEL ADDRESS``) or xdin (``TYPE ADDRESS SIZE``) lines."""
    kinds = chunk["kind"]
    if kinds.size and int(kinds.max()) > arch.ACC_FETCH:
        bad = int(np.flatnonzero(kinds > arch.ACC_FETCH)[0])
        raise LineError(f"record {bad} has kind {int(kinds[bad])}")
    addrs: Iterable[int] = chunk["addr"].tolist()
    if extended:
        letters = [XDIN_TYPE_OF_KIND[k] for k in kinds.tolist()]
        sizes = chunk["size"].tolist()
        text = "".join(
            f"{t} {a:x} {s:x}\n" for t, a, s in zip(letters, addrs, sizes, strict=True)
        )
    else:
        labels = [DIN_LABEL_OF_KIND[k] for k in kinds.tolist()]
        text = "".join(f"{lab} {a:x}\n" for lab, a in zip(labels, addrs, strict=True))
    return text.encode()
