r"""Valgrind lackey ``--trace-mem=yes`` text, parsed in C (``csrc/trace.c``).

Grammar (formats.md 1.2): ``I  <hex>,<dec>`` (fetch), `` L <hex>,<dec>`` (read),
`` S <hex>,<dec>`` (write), `` M <hex>,<dec>`` (a read, then a write).  Addresses are
1 to 16 hex digits, sizes decimal below 2^32; a ``\r`` before the newline is accepted.
Skipped, not malformed: valgrind's own lines (``==pid==``, ``--pid--``, ``**pid**``),
``SB `` superblock lines and blank lines.  Any other line is malformed, so a file in
another format, or program output mixed into the log, is reported (or counted under
``skip_bad``) rather than silently dropped.  ``icount`` counts the ``I`` records, so
the last record's ``icount`` equals lackey's ``guest instrs`` footer count.
``emu.ref.trace`` is the same grammar in plain Python.

Importing this module loads the compiled core.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from emu.trace import records
from emu.trace._cparse import call_parser, iter_c, new_state, parse_call
from emu.trace._stream import Input
from emu.trace._text import ReadContext
from emu.trace.records import TRACE_DTYPE, LackeyParse, TraceArray


def _reason(code: int, line: bytes) -> str:
    return records.LACKEY_REASONS.get(code, f"malformed line (reason {code})")


def parse(
    data: bytes | bytearray | memoryview,
    *,
    final: bool = True,
    skip_bad: bool = False,
    icount: int = 0,
    cap: int | None = None,
) -> LackeyParse:
    """Parse lackey text in one buffer with the C parser (for tests and small inputs).

    Args:
        data: the text.
        final: the text ends the input (a last line without newline counts).
        skip_bad: skip malformed lines instead of stopping at the first.
        icount: fetch records before ``data``.
        cap: record capacity per C call; by default enough for every line.

    Returns:
        What was parsed; with a small ``cap`` parsing resumes until ``data`` is done.
    """
    mv = memoryview(data).cast("B")
    if cap is None:
        cap = 2 * (bytes(mv).count(b"\n") + 1)
    cap = max(cap, 2)
    fn = parse_call(None)
    st = new_state()
    flags = (records.FLAG_FINAL if final else 0) | (
        records.FLAG_SKIP_BAD if skip_bad else 0
    )
    chunks = []
    start = lines = skipped = bad = 0
    first: tuple[int, int, int] | None = None
    stopped = False
    while True:
        out = np.empty(cap, dtype=TRACE_DTYPE)
        st.icount = icount
        call_parser(fn, mv[start:], flags, out, st)
        chunks.append(out[: st.records])
        if st.reason and first is None:
            first = (lines + st.bad_line, start + st.bad_offset, st.reason)
        lines += st.lines
        skipped += st.skipped
        bad += st.bad
        icount = st.icount
        start += st.consumed
        stopped = st.status == records.STATUS_BAD
        if st.status != records.STATUS_FULL:
            break
    bl, bo, reason = first or (0, 0, 0)
    return LackeyParse(
        np.concatenate(chunks),
        start,
        lines,
        skipped,
        bad,
        bl,
        bo,
        reason,
        stopped,
        icount,
    )


def iter_lackey(inp: Input, ctx: ReadContext) -> Iterator[TraceArray]:
    """Yield record chunks of lackey text, read in blocks and parsed in C."""
    return iter_c(inp, ctx, None, _reason)
