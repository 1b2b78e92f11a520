r"""Reference lackey parser: the grammar of ``csrc/trace.c``, written plainly in Python.

Never used for speed; the fuzz tests compare the C parser with it on random and mutated
input.  The rules (formats.md 1.2):

- the input is split at ``\n``; a last piece without ``\n`` is a line too;
- ``I  ADDR,SIZE`` is a fetch, `` L `` a read, `` S `` a write, `` M `` a read then a
  write; ADDR is 1 to 16 hex digits (either case), SIZE 1 to 10 decimal digits below
  2^32, and one ``\r`` may end the line;
- lines starting ``==``, ``--``, ``**`` or ``SB ``, and blank lines (nothing or a lone
  ``\r``), are skipped;
- anything else is malformed.

Never imports the compiled core.
"""

from __future__ import annotations

import numpy as np

from emu import arch
from emu.trace.records import (
    BAD_ADDR,
    BAD_KIND,
    BAD_SIZE,
    BAD_TRAILING,
    TRACE_DTYPE,
    LackeyParse,
)

_PREFIXES = {
    b"I  ": (arch.ACC_FETCH,),
    b" L ": (arch.ACC_READ,),
    b" S ": (arch.ACC_WRITE,),
    b" M ": (arch.ACC_READ, arch.ACC_WRITE),
}
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_DEC_DIGITS = b"0123456789"


def _run(s: bytes, digits: bytes) -> int:
    """Length of the leading run of ``s`` made of ``digits``."""
    n = 0
    while n < len(s) and s[n] in digits:
        n += 1
    return n


def _is_valgrind_line(line: bytes) -> bool:
    return (
        line in (b"", b"\r") or line[:2] in (b"==", b"--", b"**") or line[:3] == b"SB "
    )


def parse_line(line: bytes) -> tuple[tuple[int, ...], int, int] | int:
    r"""Parse one line (without its ``\n``).

    Returns:
        ``(kinds, addr, size)`` for a record, 0 for a skipped line, or the
        ``records.BAD_*`` reason of a malformed line.
    """
    kinds = _PREFIXES.get(line[:3])
    if kinds is None:
        return 0 if _is_valgrind_line(line) else BAD_KIND
    body = line[3:]
    if body.endswith(b"\r"):
        body = body[:-1]
    n = _run(body, _HEX_DIGITS)
    if n == 0 or n > 16 or body[n : n + 1] != b",":
        return BAD_ADDR
    addr = int(body[:n], 16)
    rest = body[n + 1 :]
    m = _run(rest, _DEC_DIGITS)
    if m == 0 or m > 10 or int(rest[:m]) > 0xFFFF_FFFF:
        return BAD_SIZE
    if rest[m:]:
        return BAD_TRAILING
    return kinds, addr, int(rest[:m])


def parse_lackey(
    data: bytes, *, skip_bad: bool = False, icount: int = 0
) -> LackeyParse:
    """Parse a whole lackey text (the end of ``data`` ends the input).

    Args:
        data: the text.
        skip_bad: skip malformed lines instead of stopping at the first.
        icount: fetch records before ``data``.

    Returns:
        The same fields ``emu.trace.lackey.parse`` returns.
    """
    rows: list[tuple[int, int, int, int]] = []
    lines = skipped = bad = 0
    first: tuple[int, int, int] | None = None
    stopped = False
    offset = 0
    pieces = data.split(b"\n")
    if pieces[-1] == b"":
        pieces.pop()  # data ended with a newline: no further line
    for piece in pieces:
        length = len(piece) + (1 if offset + len(piece) < len(data) else 0)
        parsed = parse_line(piece)
        if isinstance(parsed, tuple):
            kinds, addr, size = parsed
            if kinds[0] == arch.ACC_FETCH:
                icount += 1
            for kind in kinds:
                rows.append((addr, kind, size, icount))
        elif parsed == 0:
            skipped += 1
        else:
            if first is None:
                first = (lines + 1, offset, parsed)
            if not skip_bad:
                stopped = True
                break
            bad += 1
        lines += 1
        offset += length
    records = np.zeros(len(rows), dtype=TRACE_DTYPE)
    if rows:
        cols = list(zip(*rows, strict=True))
        records["addr"] = np.array(cols[0], dtype=np.uint64)
        records["kind"] = cols[1]
        records["size"] = cols[2]
        records["icount"] = np.array(cols[3], dtype=np.uint64)
    line, off, reason = first or (0, 0, 0)
    return LackeyParse(
        records, offset, lines, skipped, bad, line, off, reason, stopped, icount
    )
