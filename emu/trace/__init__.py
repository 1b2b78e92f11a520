"""Trace readers and writers: lackey, ChampSim, pinatrace, din/xdin, mmulab native.

Every reader yields chunks of :data:`TRACE_DTYPE` records (``addr`` uint64, ``kind``
uint8 0 read / 1 write / 2 fetch, ``asid`` uint16, ``size`` uint32, ``icount`` uint64)
in bounded memory::

    for chunk in emu.trace.read("t.lackey.xz"):
        mmu.run(chunk["addr"], chunk["kind"])

Only the lackey reader needs the compiled core (it parses in C); this package imports
without it.  The native formats are defined in :mod:`emu.trace.native`.
"""

from __future__ import annotations

from emu.trace.detect import FORMATS
from emu.trace.info import TraceInfo, info
from emu.trace.reader import TraceReader, load, read
from emu.trace.records import (
    TRACE_DTYPE,
    FlushEvent,
    MapEvent,
    SetMemoryEvent,
    TraceEvent,
    TraceFormatError,
    TraceStats,
    UnmapEvent,
)
from emu.trace.writer import WRITE_FORMATS, convert, write

__all__ = [
    "FORMATS",
    "TRACE_DTYPE",
    "WRITE_FORMATS",
    "FlushEvent",
    "MapEvent",
    "SetMemoryEvent",
    "TraceEvent",
    "TraceFormatError",
    "TraceInfo",
    "TraceReader",
    "TraceStats",
    "UnmapEvent",
    "convert",
    "info",
    "load",
    "read",
    "write",
]
