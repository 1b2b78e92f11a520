"""``emu.trace.info``: what ``mmulab info TRACE`` prints, computed chunk by chunk."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from emu import arch
from emu.trace._stream import Source
from emu.trace.reader import read
from emu.trace.records import KIND_NAMES, TraceArray

_U64 = np.uint64


@dataclasses.dataclass(frozen=True)
class TraceInfo:
    """Counts and footprint of a trace.

    Attributes:
        name: the input's name.
        format: the format read.
        records: accesses (an M record counts twice).
        counts: accesses by kind: ``{"read": n, "write": n, "fetch": n}``.
        instructions: fetch records (0 when the format has none).
        pages_4k: distinct 4 KiB pages touched (both pages of a straddling access).
        pages_2m: distinct 2 MiB regions touched.
        crossing_4k: accesses with ``addr % 4096 + size > 4096``.
        crossing_2m: accesses that straddle a 2 MiB boundary.
        events: events in the trace (native text).
        bad_lines: malformed lines skipped (``skip_bad``).
        min_addr: lowest address accessed (0 for an empty trace).
        max_addr: highest address accessed (0 for an empty trace).
    """

    name: str
    format: str
    records: int
    counts: dict[str, int]
    instructions: int
    pages_4k: int
    pages_2m: int
    crossing_4k: int
    crossing_2m: int
    events: int
    bad_lines: int
    min_addr: int
    max_addr: int


class _PageSet:
    """Distinct page numbers, merged in batches so memory follows the footprint."""

    def __init__(self) -> None:
        self._merged: np.ndarray[Any, np.dtype[np.uint64]] = np.empty(0, dtype=_U64)
        self._batch: list[np.ndarray[Any, np.dtype[np.uint64]]] = []
        self._batch_len = 0

    def add(self, pages: np.ndarray[Any, np.dtype[np.uint64]]) -> None:
        u = np.unique(pages)
        self._batch.append(u)
        self._batch_len += len(u)
        if self._batch_len > max(len(self._merged), 1 << 20):
            self._merge()

    def _merge(self) -> None:
        self._merged = np.unique(np.concatenate([self._merged, *self._batch]))
        self._batch = []
        self._batch_len = 0

    def pages(self) -> np.ndarray[Any, np.dtype[np.uint64]]:
        self._merge()
        return self._merged


def _crossing(addr: np.ndarray[Any, Any], size: np.ndarray[Any, Any], page: int) -> int:
    off = (addr & _U64(page - 1)) + size.astype(_U64)
    return int(np.count_nonzero(off > _U64(page)))


def info(
    path_or_file: Source,
    format: str = "auto",
    skip_bad: bool = False,
    *,
    chunk_records: int = 1 << 20,
) -> TraceInfo:
    """Count a trace's accesses and measure its footprint, in bounded memory.

    Args:
        path_or_file: as for ``emu.trace.read``.
        format: as for ``emu.trace.read``.
        skip_bad: as for ``emu.trace.read``.
        chunk_records: records per chunk read.

    Returns:
        The counts; accesses without a size (size 0) touch one page and never cross.
    """
    reader = read(path_or_file, format, chunk_records, skip_bad)
    counts = dict.fromkeys(KIND_NAMES.values(), 0)
    pages = _PageSet()
    cross4 = cross2 = 0
    lo, hi = None, None
    chunk: TraceArray
    for chunk in reader:
        if not len(chunk):
            continue
        addr = chunk["addr"]
        size = chunk["size"]
        kinds = np.bincount(chunk["kind"], minlength=3)
        for k, name in KIND_NAMES.items():
            counts[name] += int(kinds[k])
        last = addr + (np.maximum(size, 1).astype(_U64) - _U64(1))  # wraps at 2^64
        pages.add(
            np.concatenate(
                [addr >> _U64(arch.PAGE_SHIFT), last >> _U64(arch.PAGE_SHIFT)]
            )
        )
        cross4 += _crossing(addr, size, arch.PAGE_SIZE)
        cross2 += _crossing(addr, size, arch.PMD_SIZE)
        cmin, cmax = int(addr.min()), int(addr.max())
        lo = cmin if lo is None else min(lo, cmin)
        hi = cmax if hi is None else max(hi, cmax)
    p4 = pages.pages()
    p2 = np.unique(p4 >> _U64(9))
    return TraceInfo(
        name=reader.name,
        format=reader.format,
        records=reader.stats.records,
        counts=counts,
        instructions=reader.stats.instructions,
        pages_4k=len(p4),
        pages_2m=len(p2),
        crossing_4k=cross4,
        crossing_2m=cross2,
        events=len(reader.events),
        bad_lines=reader.stats.bad_lines,
        min_addr=lo or 0,
        max_addr=hi or 0,
    )
