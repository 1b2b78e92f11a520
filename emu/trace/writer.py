"""``emu.trace.write`` and ``emu.trace.convert`` (what ``mmulab convert`` calls)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from emu.errors import EmuValueError
from emu.trace._stream import Output, Source
from emu.trace._text import LineError
from emu.trace.reader import TraceReader, read
from emu.trace.records import TRACE_DTYPE, TraceArray, TraceEvent

log = logging.getLogger(__name__)

#: formats :func:`write` produces
WRITE_FORMATS = (
    "native",
    "native-bin",
    "champsim",
    "champsim-cloudsuite",
    "din",
    "xdin",
)


def _as_records(chunk: Any) -> TraceArray:
    """``chunk`` as :data:`TRACE_DTYPE` (other structured arrays need addr and kind)."""
    arr = np.asarray(chunk)
    if arr.dtype == TRACE_DTYPE:
        return arr
    names = arr.dtype.names or ()
    if arr.ndim != 1 or "addr" not in names or "kind" not in names:
        raise EmuValueError(
            f"chunks must be 1-D structured arrays with 'addr' and 'kind' fields, got "
            f"{arr.dtype} of shape {arr.shape}"
        )
    out = np.zeros(len(arr), dtype=TRACE_DTYPE)
    for f in TRACE_DTYPE.names or ():
        if f in names:
            out[f] = arr[f]
    return out


def _pairs(
    chunks: Iterable[Any], events: Sequence[TraceEvent] | None
) -> Iterator[tuple[list[TraceEvent], TraceArray]]:
    """(events before, records) pairs, chunks split so each event falls between them."""
    if events is None and isinstance(chunks, TraceReader):
        yield from chunks.iter_with_events()
        return
    pending = sorted(events or (), key=lambda e: e.index)
    i = 0
    done = 0
    for raw in [chunks] if isinstance(chunks, np.ndarray) else chunks:
        chunk = _as_records(raw)
        start = 0
        while i < len(pending) and pending[i].index < done + len(chunk):
            cut = max(pending[i].index - done, start)
            if cut > start:
                yield [], chunk[start:cut]
                start = cut
            evs = []
            while i < len(pending) and pending[i].index <= done + start:
                evs.append(pending[i])
                i += 1
            yield evs, chunk[start:start]
        yield [], chunk[start:]
        done += len(chunk)
    if i < len(pending):
        yield list(pending[i:]), np.empty(0, dtype=TRACE_DTYPE)


def write(
    path_or_file: Source,
    chunks: Iterable[Any] | TraceArray,
    format: str = "native",
    *,
    events: Sequence[TraceEvent] | None = None,
    page_size_hint: int = 0,
    strict: bool = False,
) -> int:
    """Write records (and events) as a trace file.

    Args:
        path_or_file: a path (``.gz``/``.xz``/``.bz2`` compress), ``"-"`` for standard
            output, or a binary file object.
        chunks: an iterable of :data:`TRACE_DTYPE` arrays, one such array, or a
            :class:`TraceReader` (whose events are then written too).
        format: one of :data:`WRITE_FORMATS`.  ``native`` keeps everything; the others
            lose what they cannot hold: ``native-bin`` the events, ``champsim`` sizes
            and ASIDs (and orders each instruction's reads before its writes),
            ``champsim-cloudsuite`` sizes, ``din`` sizes and ASIDs, ``xdin`` ASIDs.
            ``icount`` is never stored: readers derive it from the fetch records.
        events: events to interleave (native text only), placed by their ``index``.
        page_size_hint: page size named in a native binary header (4K, 2M, 1G, or 0).
        strict: raise instead of dropping what ChampSim has no room for (operands
            beyond 4 reads / 2 writes, 4 / 4 in cloudsuite, and data address 0);
            without it the drops are counted in a logged warning.

    Returns:
        The number of records written.

    Raises:
        EmuValueError: an unknown format, records the format cannot represent (naming
            the record), or events for a format without events.  A file this call
            created is removed again.
    """
    if format not in WRITE_FORMATS:
        raise EmuValueError(f"cannot write format {format!r}; one of {WRITE_FORMATS}")
    out = Output(path_or_file)
    created = isinstance(path_or_file, str | os.PathLike) and out.name != "<stdout>"
    try:
        n = _write(out, chunks, format, events, page_size_hint, strict)
    except BaseException:
        out.close()
        if created:
            with contextlib.suppress(OSError):
                os.unlink(out.name)
        raise
    out.close()
    return n


def _write(
    out: Output,
    chunks: Iterable[Any] | TraceArray,
    fmt: str,
    events: Sequence[TraceEvent] | None,
    page_size_hint: int,
    strict: bool,
) -> int:
    from emu.trace import champsim, din, native

    n = 0
    packer = None
    try:
        if fmt == "native":
            out.write(native.text_header())
        elif fmt == "native-bin":
            out.write(native.bin_header(page_size_hint))
        elif fmt.startswith("champsim"):
            packer = champsim.ChampSimWriter(fmt == "champsim-cloudsuite", strict)
        for evs, chunk in _pairs(chunks, events):
            if evs:
                if fmt != "native":
                    raise EmuValueError(
                        f"format {fmt} cannot hold events ({evs[0].to_text()!r} before "
                        f"record {evs[0].index}); write native text"
                    )
                out.write("".join(e.to_text() + "\n" for e in evs).encode())
            if not len(chunk):
                continue
            if fmt == "native":
                out.write(native.format_text(chunk))
            elif fmt == "native-bin":
                bad = np.flatnonzero(chunk["kind"] > 2)
                if len(bad):
                    raise LineError(
                        f"record {n + int(bad[0])} has kind {chunk['kind'][bad[0]]}"
                    )
                out.write(native.to_bin(chunk))
            elif packer is not None:
                out.write(packer.add(chunk))
            else:
                out.write(din.format_din(chunk, extended=fmt == "xdin"))
            n += len(chunk)
        if packer is not None:
            out.write(packer.finish())
            if packer.dropped:
                log.warning(
                    "%s: dropped %d accesses ChampSim has no room for (the first is "
                    "record %d); strict=True refuses them",
                    out.name,
                    packer.dropped,
                    packer.first_dropped,
                )
    except LineError as exc:
        raise EmuValueError(f"{out.name}: {exc.reason}") from None
    return n


def convert(
    src: Source,
    dst: Source,
    to: str = "native",
    *,
    format: str = "auto",
    skip_bad: bool = False,
    strict: bool = False,
) -> int:
    """Convert a trace between formats, streaming (``mmulab convert IN OUT --to F``).

    Args:
        src: the input, as for :func:`read`.
        dst: the output, as for :func:`write`.
        to: the output format, one of :data:`WRITE_FORMATS`.
        format: the input format (``"auto"`` detects it).
        skip_bad: skip malformed input lines instead of failing.
        strict: as for :func:`write`.

    Returns:
        The number of records written.
    """
    with read(src, format, skip_bad=skip_bad) as reader:
        return write(dst, reader, to, strict=strict)
