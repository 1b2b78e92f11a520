r"""Pin's ``pinatrace`` output (ManualExamples/pinatrace.cpp, formats.md 1.5).

One line per executed memory operand: ``<ip>: R|W <ea>``, both printed with C ``%p``
(``0x``-prefixed hex, ``(nil)`` for zero).  A read-modify-write gives an R line, then a
W line.  Forks append fields: when the first word after the address is all digits it
is the size, anything else is ignored.  There are no fetch records, so ``icount``
stays 0; the ip is not kept.

Exactly: a line is skipped when only whitespace precedes its end or a ``#`` (the
``#eof`` sentinel); otherwise one trailing ``\r`` is dropped and the line must match
``[ \t]* PTR : [ \t]+ (R|W) [ \t]+ PTR ([ \t] anything)?`` with PTR ``0x`` (or ``0X``)
and 1 to 16 hex digits, or ``(nil)``; a size must be below 2^32.  ``csrc/trace.c``
parses this in C; :func:`parse_line` is its reference and gives the error messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

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

_PTR = rb"(0[xX][0-9a-fA-F]{1,16}|\(nil\))"
_LINE = re.compile(
    rb"[ \t]*" + _PTR + rb":[ \t]+([RW])[ \t]+" + _PTR + rb"((?:[ \t].*)?)", re.DOTALL
)
_KIND = {b"R": arch.ACC_READ, b"W": arch.ACC_WRITE}


def _addr(tok: bytes) -> int:
    return 0 if tok == b"(nil)" else int(tok[2:], 16)


def parse_line(line: bytes, out: Builder) -> bool:
    """Parse one line into ``out``; False for a comment or blank line.

    Raises:
        LineError: the line is malformed.
    """
    if is_blank_or_comment(line):
        return False
    m = _LINE.fullmatch(strip_cr(line))
    if m is None:
        raise LineError("expected '<ip>: R|W <address> [size]' (pinatrace)")
    words = m.group(4).split()
    size = int(words[0]) if words and words[0].isdigit() else 0
    if size > 0xFFFF_FFFF:
        raise LineError(f"size {size} is above 2^32-1")
    out.add(_addr(m.group(3)), _KIND[m.group(2)], size)
    return True


def iter_pinatrace_py(inp: Input, ctx: ReadContext) -> Iterator[TraceArray]:
    """Yield record chunks of a pinatrace file, parsed in Python (the reference)."""
    out = Builder(ctx)
    for lineno, offset, line in iter_lines(inp, ctx):
        try:
            if not parse_line(line, out):
                ctx.stats.skipped_lines += 1
        except LineError as exc:
            if not ctx.skip_bad and len(out):
                yield from out.chunks()  # the records before the bad line first
            handle_bad(ctx, exc, lineno, offset, line)
        if out.full():
            yield from out.chunks()
    if len(out):
        yield from out.chunks()


def iter_pinatrace(inp: Input, ctx: ReadContext) -> Iterator[TraceArray]:
    """Yield record chunks of a pinatrace file (parsed in C)."""
    from emu.trace._cparse import iter_c

    return iter_c(
        inp, ctx, records.TEXT_PINATRACE, lambda _c, line: reason_of(parse_line, line)
    )
