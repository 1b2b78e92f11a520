"""``emu.trace.read``: one entry point for every trace format, streaming in chunks."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from types import TracebackType

import numpy as np

from emu.errors import EmuValueError
from emu.trace._stream import Input, Source
from emu.trace._text import ReadContext
from emu.trace.detect import FORMATS, detect
from emu.trace.records import TRACE_DTYPE, TraceArray, TraceEvent, TraceStats

log = logging.getLogger(__name__)

ReaderFn = Callable[[Input, ReadContext], Iterator[TraceArray]]


def _reader_for(fmt: str) -> ReaderFn:
    """The chunk generator of ``fmt`` (lackey loads the compiled core)."""
    if fmt == "lackey":
        from emu.trace.lackey import iter_lackey

        return iter_lackey
    if fmt in ("champsim", "champsim-cloudsuite"):
        from emu.trace.champsim import iter_champsim, iter_cloudsuite

        return iter_champsim if fmt == "champsim" else iter_cloudsuite
    if fmt == "pinatrace":
        from emu.trace.pinatrace import iter_pinatrace

        return iter_pinatrace
    if fmt in ("din", "xdin"):
        from emu.trace.din import iter_din, iter_xdin

        return iter_din if fmt == "din" else iter_xdin
    from emu.trace.native import iter_native_bin, iter_native_text

    return iter_native_text if fmt == "native" else iter_native_bin


class TraceReader:
    """A trace opened for reading; iterate it for chunks of :data:`TRACE_DTYPE` records.

    The input is opened and its format detected when the reader is made, so a missing
    file or an unknown format is reported at once.  Iterating reads the trace in chunks
    of at most ``chunk_records`` records, in bounded memory.  A path can be iterated
    again (it is reopened); standard input and file objects only once.

    Attributes:
        name: the input's name (``"<stdin>"`` for ``-``).
        format: the format read, one of ``emu.trace.FORMATS``.
        compression: ``"gzip"``, ``"xz"``, ``"bz2"`` or None.
        stats: counts of the current (or last) pass: records, lines, skipped and
            malformed lines, instructions.
        events: the events met so far in the current pass (native text), in order.
        page_size_hint: page size named by a native binary header, else 0.
    """

    def __init__(
        self,
        path_or_file: Source,
        format: str = "auto",
        chunk_records: int = 1 << 20,
        skip_bad: bool = False,
        *,
        block_bytes: int = 1 << 22,
        reuse_chunks: int = 0,
    ) -> None:
        if format != "auto" and format not in FORMATS:
            raise EmuValueError(f"unknown trace format {format!r}; one of {FORMATS}")
        for value, what in (
            (chunk_records, "chunk_records"),
            (block_bytes, "block_bytes"),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise EmuValueError(f"{what} must be a positive integer, got {value!r}")
        if (
            isinstance(reuse_chunks, bool)
            or not isinstance(reuse_chunks, int)
            or reuse_chunks < 0
        ):
            raise EmuValueError(
                f"reuse_chunks must be a non-negative integer, got {reuse_chunks!r}"
            )
        self._reuse_chunks = reuse_chunks
        self._src = path_or_file
        self._reopenable = (
            isinstance(path_or_file, str | os.PathLike) and path_or_file != "-"
        )
        self._chunk_records = chunk_records
        self._skip_bad = skip_bad
        self._block_bytes = block_bytes
        self._input: Input | None = Input(path_or_file)
        self.name = self._input.name
        self.compression = self._input.compression
        self.format = (
            detect(self._input.head, self.name) if format == "auto" else format
        )
        self._reader = _reader_for(self.format)
        self._passes = 0
        self._ctx = self._new_context()

    def _new_context(self) -> ReadContext:
        return ReadContext(
            self.name,
            self._chunk_records,
            self._skip_bad,
            self._block_bytes,
            reuse_chunks=self._reuse_chunks,
        )

    @property
    def stats(self) -> TraceStats:
        """Counts of the current (or last) pass."""
        return self._ctx.stats

    @property
    def events(self) -> list[TraceEvent]:
        """Events met so far in the current (or last) pass."""
        return self._ctx.events

    @property
    def page_size_hint(self) -> int:
        """Page size a native binary header names; 0 for none or another format."""
        return self._ctx.page_size_hint

    def __iter__(self) -> Iterator[TraceArray]:
        if self._passes:
            if not self._reopenable:
                raise EmuValueError(f"{self.name}: a stream can be read only once")
            self._input = Input(self._src)
        inp = self._input
        if inp is None:
            raise EmuValueError(f"{self.name}: the reader is closed")
        self._passes += 1
        self._ctx = ctx = self._new_context()
        try:
            yield from self._reader(inp, ctx)
        finally:
            inp.close()
            self._input = None
        if ctx.stats.bad_lines:
            line, offset, reason = ctx.stats.first_bad or (0, 0, "")
            log.warning(
                "%s: skipped %d malformed lines; the first, line %d (byte %d): %s",
                self.name,
                ctx.stats.bad_lines,
                line,
                offset,
                reason,
            )

    def iter_with_events(self) -> Iterator[tuple[list[TraceEvent], TraceArray]]:
        """Yield ``(events, chunk)``: the events that act just before ``chunk``.

        Every event falls on a chunk boundary, so a consumer applies ``events`` and
        then runs ``chunk``.  Events after the last record come with an empty chunk.
        """
        done = 0
        for chunk in self:
            evs = self.events[done:]
            done += len(evs)
            yield evs, chunk
        if len(self.events) > done:
            yield self.events[done:], np.empty(0, dtype=TRACE_DTYPE)

    def close(self) -> None:
        """Close the input if this reader opened it."""
        if self._input is not None:
            self._input.close()
            self._input = None

    def __enter__(self) -> TraceReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def read(
    path_or_file: Source,
    format: str = "auto",
    chunk_records: int = 1 << 20,
    skip_bad: bool = False,
    *,
    block_bytes: int = 1 << 22,
    reuse_chunks: int = 0,
) -> TraceReader:
    """Open a trace for reading in chunks of :data:`TRACE_DTYPE` records.

    ``for chunk in emu.trace.read(path): chunk["addr"], chunk["kind"], chunk["size"]``.

    Args:
        path_or_file: a path (``.gz``, ``.xz``, ``.bz2`` are decompressed, recognised by
            magic), ``"-"`` for standard input, or a binary file object.
        format: ``"auto"`` (magic bytes, then content, then suffix) or one of
            ``emu.trace.FORMATS``: lackey, champsim, champsim-cloudsuite, pinatrace,
            din, xdin, native, native-bin.
        chunk_records: most records per chunk.
        skip_bad: count malformed lines (``reader.stats.bad_lines``, and a logged
            warning) instead of raising.  Binary formats have no lines to skip.
        block_bytes: bytes read from the input per call.
        reuse_chunks: 0 (every chunk a fresh array), or R > 0: the text readers
            parsed in C (lackey, din, xdin, pinatrace, native) cycle through R record
            arrays, so a chunk's memory is overwritten by the chunk R after it.  For
            consumers that are done with each chunk before taking the next R - 1: it
            saves the page faults of fresh memory (about a third of the parsing time of
            a long trace).

    Returns:
        The reader: iterate it for chunks; ``.events``, ``.stats`` and ``.format``
        describe the pass.

    Raises:
        EmuValueError: the input cannot be opened or an argument is wrong.
        TraceFormatError: the format cannot be detected; during iteration, a malformed
            record (naming the input, the line or byte offset, and what is wrong) or a
            truncated binary record.
    """
    return TraceReader(
        path_or_file,
        format,
        chunk_records,
        skip_bad,
        block_bytes=block_bytes,
        reuse_chunks=reuse_chunks,
    )


def load(
    path_or_file: Source,
    format: str = "auto",
    skip_bad: bool = False,
) -> tuple[TraceArray, list[TraceEvent]]:
    """Read a whole (small) trace into one array.

    Args:
        path_or_file: as for :func:`read`.
        format: as for :func:`read`.
        skip_bad: as for :func:`read`.

    Returns:
        All records and all events.
    """
    reader = read(path_or_file, format, skip_bad=skip_bad)
    chunks = list(reader)
    records = np.concatenate(chunks) if chunks else np.empty(0, dtype=TRACE_DTYPE)
    return records, list(reader.events)
