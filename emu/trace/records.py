"""The record type every trace reader yields, trace events, and trace errors.

Pure numpy: importable without the compiled core (``emu.ref.trace`` uses it).  The
C twin of :data:`TRACE_DTYPE` is ``emu_trace_rec`` in ``csrc/emu_api.h``;
``emu.trace.lackey`` checks the two field by field when it first loads the core.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, TypeAlias

import numpy as np

from emu import arch
from emu.errors import EmuValueError

#: One access: virtual address, kind (``arch.ACC_READ``/``WRITE``/``FETCH``),
#: address-space id (0 where the format has none), size in bytes (0 where the format
#: has none) and ``icount``, the fetch records seen so far, this access's instruction
#: included (0 before the first fetch, and everywhere in a format without fetch
#: records).  Aligned as C aligns it: the byte at offset 9 is padding, 24 bytes in all.
TRACE_DTYPE: np.dtype[Any] = np.dtype(
    [
        ("addr", np.uint64),
        ("kind", np.uint8),
        ("asid", np.uint16),
        ("size", np.uint32),
        ("icount", np.uint64),
    ],
    align=True,  # as C lays it out; numpy keeps aligned structs through concatenate
)

TraceArray: TypeAlias = np.ndarray[Any, np.dtype[Any]]

KIND_NAMES = {arch.ACC_READ: "read", arch.ACC_WRITE: "write", arch.ACC_FETCH: "fetch"}

# C parser flags, statuses, malformed-line reasons and text formats: twins of
# EMU_TRACE_* (checked when emu.trace._cparse loads the core).
FLAG_FINAL = 0x1
FLAG_SKIP_BAD = 0x2
STATUS_END = 0
STATUS_FULL = 1
STATUS_BAD = 2
STATUS_DIRECTIVE = 3
BAD_KIND = 1
BAD_ADDR = 2
BAD_SIZE = 3
BAD_TRAILING = 4
BAD_SYNTAX = 5
TEXT_DIN = 1
TEXT_XDIN = 2
TEXT_PINATRACE = 3
TEXT_NATIVE = 4

LACKEY_REASONS = {
    BAD_KIND: "not a lackey record ('I  ', ' L ', ' S ' or ' M ') nor a valgrind line",
    BAD_ADDR: "bad address (expected 1 to 16 hex digits, then ',')",
    BAD_SIZE: "bad size (expected a decimal number below 2^32)",
    BAD_TRAILING: "unexpected characters after the size",
}


def empty(n: int = 0) -> TraceArray:
    """Return a zeroed record array of ``n`` records."""
    return np.zeros(n, dtype=TRACE_DTYPE)


def fill_icount(chunk: TraceArray, start: int) -> int:
    """Set ``chunk["icount"]`` to ``start`` plus the running count of fetch records.

    Args:
        chunk: records, modified in place.
        start: fetch records seen before the chunk.

    Returns:
        The fetch records seen after the chunk.
    """
    fetches = np.cumsum(chunk["kind"] == arch.ACC_FETCH, dtype=np.uint64)
    chunk["icount"] = fetches + np.uint64(start)
    return start + (int(fetches[-1]) if len(fetches) else 0)


class TraceFormatError(EmuValueError):
    """A trace that is not in the format it was read as.

    Attributes:
        path: the input's name (``"<stdin>"`` for standard input).
        line: 1-based line of a text format, else None.
        offset: byte offset in the (decompressed) input, when known.
        reason: what is wrong.
    """

    def __init__(
        self,
        path: str,
        reason: str,
        *,
        line: int | None = None,
        offset: int | None = None,
        text: bytes | None = None,
    ) -> None:
        where = [path]
        if line is not None:
            where.append(f"line {line}")
        if offset is not None:
            where.append(f"byte {offset}")
        msg = f"{': '.join(where)}: {reason}"
        if text is not None:
            msg += f": {text[:80]!r}"
        super().__init__(msg)
        self.path = path
        self.line = line
        self.offset = offset
        self.reason = reason


@dataclasses.dataclass(frozen=True, kw_only=True)
class TraceEvent(abc.ABC):
    """Something a trace says happens between two accesses (native text format only).

    Attributes:
        index: the records of the trace before the event: it acts before record
            ``index`` (equal to the record count when it follows the last record).
        line: the 1-based line it was read from (0 when built by hand).
    """

    index: int
    line: int = 0

    @abc.abstractmethod
    def to_text(self) -> str:
        """The event as a native text line (without the newline)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MapEvent(TraceEvent):
    """``#map ADDR LEN [PAGESIZE]``: [addr, addr+length) becomes mapped.

    Attributes:
        addr: first virtual address.
        length: bytes mapped.
        page_size: page size the mapping asks for (4096 when not given).
    """

    addr: int
    length: int
    page_size: int = arch.PAGE_SIZE

    def to_text(self) -> str:
        """The event as a native text line."""
        return f"#map {self.addr:#x} {self.length:#x} {self.page_size:#x}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnmapEvent(TraceEvent):
    """``#unmap ADDR LEN``: [addr, addr+length) is unmapped.

    Attributes:
        addr: first virtual address.
        length: bytes unmapped.
    """

    addr: int
    length: int

    def to_text(self) -> str:
        """The event as a native text line."""
        return f"#unmap {self.addr:#x} {self.length:#x}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlushEvent(TraceEvent):
    """``#flush all``, ``#flush asid N`` or ``#flush va ADDR [NPAGES]``: a TLB flush.

    Attributes:
        scope: ``"all"``, ``"asid"`` or ``"va"``.
        asid: the address space flushed (scope ``"asid"``).
        addr: first address flushed (scope ``"va"``).
        npages: 4 KiB pages flushed from ``addr`` (scope ``"va"``).
    """

    scope: str
    asid: int = 0
    addr: int = 0
    npages: int = 0

    def to_text(self) -> str:
        """The event as a native text line."""
        if self.scope == "asid":
            return f"#flush asid {self.asid}"
        if self.scope == "va":
            return f"#flush va {self.addr:#x} {self.npages}"
        return "#flush all"


@dataclasses.dataclass(frozen=True, kw_only=True)
class SetMemoryEvent(TraceEvent):
    """``#set_memory ro|rw|x|nx|np|p ADDR NPAGES``: a kernel ``set_memory_*`` call.

    Attributes:
        attr: ``"ro"``, ``"rw"``, ``"x"``, ``"nx"``, ``"np"`` or ``"p"``
            (``set_memory_ro`` ... ``set_memory_p``).
        addr: first virtual address.
        npages: 4 KiB pages changed.
    """

    attr: str
    addr: int
    npages: int

    def to_text(self) -> str:
        """The event as a native text line."""
        return f"#set_memory {self.attr} {self.addr:#x} {self.npages}"


@dataclasses.dataclass
class TraceStats:
    """What one pass over a trace saw.

    Attributes:
        records: records yielded.
        lines: lines read (text formats).
        skipped_lines: comment, header and blank lines (lackey: valgrind's lines).
        bad_lines: malformed lines skipped under ``skip_bad``.
        first_bad: (line, byte offset, reason) of the first malformed line skipped.
        ignored: records that are no memory access (Dinero copy-back/invalidate).
        instructions: fetch records seen (what ``icount`` reaches).
    """

    records: int = 0
    lines: int = 0
    skipped_lines: int = 0
    bad_lines: int = 0
    first_bad: tuple[int, int, str] | None = None
    ignored: int = 0
    instructions: int = 0

    def note_bad(self, line: int, offset: int, reason: str) -> None:
        """Count one skipped malformed line, remembering the first."""
        self.bad_lines += 1
        if self.first_bad is None:
            self.first_bad = (line, offset, reason)


@dataclasses.dataclass
class LackeyParse:
    """The result of parsing one buffer of lackey text.

    Both ``emu.trace.lackey.parse`` (C) and ``emu.ref.trace.parse_lackey`` return it.

    Attributes:
        records: the records, :data:`TRACE_DTYPE`.
        consumed: bytes of whole lines consumed.
        lines: lines consumed.
        skipped: valgrind, superblock and blank lines among them.
        bad: malformed lines skipped (``skip_bad``).
        bad_line: 1-based line of the first malformed line met (0: none).
        bad_offset: its byte offset.
        reason: its ``records.BAD_*`` code (0: none).
        stopped: whether parsing stopped at that line (``skip_bad`` false).
        icount: fetch records after the consumed lines.
    """

    records: TraceArray
    consumed: int
    lines: int
    skipped: int
    bad: int
    bad_line: int
    bad_offset: int
    reason: int
    stopped: bool
    icount: int
