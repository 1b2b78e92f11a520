"""ChampSim binary traces: ``input_instr`` (64 bytes), ``cloudsuite_instr`` (96 bytes).

Layouts from ``ChampSim/inc/trace_instruction.h`` (formats.md 1.3): little-endian
records back to back, no header.  Each instruction becomes its ``ip`` as a fetch,
then its non-zero ``source_memory`` entries as reads, then its non-zero
``destination_memory`` entries as writes, in array order, as ChampSim's
``ooo_model_instr`` keeps them.  No
size is recorded (``size`` is 0).  Cloudsuite records carry ``asid[2]``: the fetch gets
``asid[0]`` and the data accesses ``asid[1]`` (ChampSim copies both onto the
instruction; which side uses which is our reading of the two-entry array).

Reading and writing are vectorised with numpy structured dtypes: no per-record Python.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from emu import arch
from emu.errors import EmuValueError
from emu.trace._stream import Input
from emu.trace._text import ReadContext, split_chunk
from emu.trace.records import TRACE_DTYPE, TraceArray, TraceFormatError, fill_icount

#: ``struct input_instr``: 64 bytes, no padding
INPUT_INSTR_DTYPE: np.dtype[Any] = np.dtype(
    [
        ("ip", "<u8"),
        ("is_branch", "u1"),
        ("branch_taken", "u1"),
        ("destination_registers", "u1", (2,)),
        ("source_registers", "u1", (4,)),
        ("destination_memory", "<u8", (2,)),
        ("source_memory", "<u8", (4,)),
    ]
)

#: ``struct cloudsuite_instr``: 96 bytes with natural alignment (padding at 18 and 90)
CLOUDSUITE_INSTR_DTYPE: np.dtype[Any] = np.dtype(
    {
        "names": [
            "ip",
            "is_branch",
            "branch_taken",
            "destination_registers",
            "source_registers",
            "destination_memory",
            "source_memory",
            "asid",
        ],
        "formats": [
            "<u8",
            "u1",
            "u1",
            ("u1", (4,)),
            ("u1", (4,)),
            ("<u8", (4,)),
            ("<u8", (4,)),
            ("u1", (2,)),
        ],
        "offsets": [0, 8, 9, 10, 14, 24, 56, 88],
        "itemsize": 96,
    }
)


def layout(record_bytes: int) -> np.dtype[Any]:
    """The record dtype of ChampSim traces with ``record_bytes``-byte records."""
    if record_bytes == INPUT_INSTR_DTYPE.itemsize:
        return INPUT_INSTR_DTYPE
    if record_bytes == CLOUDSUITE_INSTR_DTYPE.itemsize:
        return CLOUDSUITE_INSTR_DTYPE
    raise EmuValueError(f"no ChampSim layout has {record_bytes}-byte records")


def expand(instrs: np.ndarray[Any, Any], icount_before: int) -> tuple[TraceArray, int]:
    """Turn ChampSim instruction records into access records.

    Args:
        instrs: records of :data:`INPUT_INSTR_DTYPE` or :data:`CLOUDSUITE_INSTR_DTYPE`.
        icount_before: instructions before ``instrs``.

    Returns:
        The access records and the instruction count after them.
    """
    n = len(instrs)
    src = instrs["source_memory"]
    dst = instrs["destination_memory"]
    ns, nd = src.shape[1], dst.shape[1]
    addrs = np.empty((n, 1 + ns + nd), dtype=np.uint64)
    addrs[:, 0] = instrs["ip"]
    addrs[:, 1 : 1 + ns] = src
    addrs[:, 1 + ns :] = dst
    kinds = np.array(
        [arch.ACC_FETCH] + [arch.ACC_READ] * ns + [arch.ACC_WRITE] * nd, dtype=np.uint8
    )
    keep = addrs != 0
    keep[:, 0] = True  # every instruction is fetched, even from address 0
    out = np.empty(int(keep.sum()), dtype=TRACE_DTYPE)
    out["addr"] = addrs[keep]  # row-major: per instruction, in array order
    out["kind"] = np.broadcast_to(kinds, addrs.shape)[keep]
    out["size"] = 0
    if "asid" in (instrs.dtype.names or ()):
        asid = instrs["asid"].astype(np.uint16)
        asids = np.empty(addrs.shape, dtype=np.uint16)
        asids[:, 0] = asid[:, 0]
        asids[:, 1:] = asid[:, 1:2]
        out["asid"] = asids[keep]
    else:
        out["asid"] = 0
    return out, fill_icount(out, icount_before)


def _iter(inp: Input, ctx: ReadContext, dtype: np.dtype[Any]) -> Iterator[TraceArray]:
    rb = dtype.itemsize
    per_instr = (
        1 + dtype["source_memory"].shape[0] + dtype["destination_memory"].shape[0]
    )
    n_instr = max(1, ctx.chunk_records // per_instr)
    offset = 0
    while True:
        data = inp.read(n_instr * rb)
        if not data:
            return
        whole = len(data) - len(data) % rb
        if whole:
            instrs = np.frombuffer(data, dtype=dtype, count=whole // rb)
            chunk, ctx.stats.instructions = expand(instrs, ctx.stats.instructions)
            ctx.stats.records += len(chunk)
            yield from split_chunk(chunk, ctx.chunk_records)
        if whole < len(data):  # a short read is the end of the input
            raise TraceFormatError(
                ctx.name,
                f"truncated ChampSim record: the input ends {len(data) - whole} bytes "
                f"into a {rb}-byte record",
                offset=offset + whole,
            )
        offset += whole


def iter_champsim(inp: Input, ctx: ReadContext) -> Iterator[TraceArray]:
    """Yield record chunks of a ChampSim ``input_instr`` trace."""
    return _iter(inp, ctx, INPUT_INSTR_DTYPE)


def iter_cloudsuite(inp: Input, ctx: ReadContext) -> Iterator[TraceArray]:
    """Yield record chunks of a ChampSim ``cloudsuite_instr`` trace."""
    return _iter(inp, ctx, CLOUDSUITE_INSTR_DTYPE)


class ChampSimWriter:
    """Packs access records back into ChampSim instructions, chunk by chunk.

    Each fetch starts an instruction; the reads and writes after it become its source
    and destination memory operands.  As ChampSim's Pin tracer does, an address read
    (or written) twice by one instruction is kept once (counted in ``merged``).  What
    ChampSim has no room for, more operands than the layout holds or a data address of
    0 (0 means "empty"), is dropped and counted in ``dropped`` (or raised with
    ``strict``).  An instruction can span chunks, so the last one waits for the next
    chunk or :meth:`finish`.

    Raises EmuValueError, naming the record, for an access before the first fetch, a
    kind other than read/write/fetch, and (cloudsuite) ASIDs above 255 or differing
    among one instruction's data accesses.
    """

    #: an instruction with more pending records than this is compacted as it grows
    PENDING_LIMIT = 1 << 16

    def __init__(self, cloudsuite: bool, strict: bool = False) -> None:
        self.dtype = CLOUDSUITE_INSTR_DTYPE if cloudsuite else INPUT_INSTR_DTYPE
        self._cloudsuite = cloudsuite
        self._strict = strict
        self._pending = np.empty(0, dtype=TRACE_DTYPE)
        self._index = 0  # trace index of _pending[0]
        self._ns = self.dtype["source_memory"].shape[0]
        self._nd = self.dtype["destination_memory"].shape[0]
        self.merged = 0
        self.dropped = 0
        self.first_dropped: int | None = None

    def add(self, chunk: TraceArray) -> bytes:
        """Pack the complete instructions so far; returns their bytes."""
        recs = np.concatenate([self._pending, chunk]) if len(self._pending) else chunk
        fetch = np.flatnonzero(recs["kind"] == arch.ACC_FETCH)
        last = int(fetch[-1]) if len(fetch) else 0
        out = self._pack(recs[:last], self._index) if last else b""
        self._pending = recs[last:].copy()
        self._index += last
        if len(self._pending) > self.PENDING_LIMIT:
            keep = self._select(self._pending, self._index)[0]
            keep[0] = True
            self._pending = self._pending[keep]
        return out

    def finish(self) -> bytes:
        """Pack the last instruction."""
        out = self._pack(self._pending, self._index)
        self._pending = np.empty(0, dtype=TRACE_DTYPE)
        return out

    def _fail(self, index: int, what: str) -> EmuValueError:
        return EmuValueError(f"record {index}: {what}; ChampSim cannot represent it")

    def _drop(self, base: int, idx: np.ndarray[Any, Any], what: str) -> None:
        if not len(idx):
            return
        if self._strict:
            raise self._fail(base + int(idx[0]), what)
        self.dropped += len(idx)
        if self.first_dropped is None:
            self.first_dropped = base + int(idx[0])

    def _select(
        self, recs: TraceArray, base: int
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Records that go into instructions: (mask, instruction id, operand slot)."""
        kind = recs["kind"]
        addr = recs["addr"]
        is_fetch = kind == arch.ACC_FETCH
        if not is_fetch[0]:
            raise self._fail(base, "an access before the first instruction fetch")
        bad_kind = np.flatnonzero(kind > arch.ACC_FETCH)
        if len(bad_kind):
            raise self._fail(base + int(bad_kind[0]), f"kind {int(kind[bad_kind[0]])}")
        instr = np.cumsum(is_fetch) - 1
        keep = is_fetch.copy()
        rank = np.zeros(len(recs), dtype=np.int64)
        data = np.flatnonzero(~is_fetch)
        self._drop(base, data[addr[data] == 0], "a data access at address 0")
        data = data[addr[data] != 0]
        # one operand per (instruction, kind, address): first occurrence wins
        order = np.lexsort((data, addr[data], kind[data], instr[data]))
        sd = data[order]
        same = np.zeros(len(sd), dtype=bool)
        same[1:] = (
            (instr[sd][1:] == instr[sd][:-1])
            & (kind[sd][1:] == kind[sd][:-1])
            & (addr[sd][1:] == addr[sd][:-1])
        )
        self.merged += int(same.sum())
        data = np.sort(sd[~same])
        for k, room in ((arch.ACC_READ, self._ns), (arch.ACC_WRITE, self._nd)):
            idx = data[kind[data] == k]
            grp = instr[idx]
            r = np.arange(len(idx)) - np.searchsorted(grp, grp, side="left")
            what = "reads" if k == arch.ACC_READ else "writes"
            self._drop(
                base, idx[r >= room], f"more than {room} {what} in one instruction"
            )
            keep[idx[r < room]] = True
            rank[idx] = r
        return keep, instr, rank

    def _pack(self, recs: TraceArray, base: int) -> bytes:
        if len(recs) == 0:
            return b""
        keep, instr, rank = self._select(recs, base)
        kind = recs["kind"]
        addr = recs["addr"]
        is_fetch = kind == arch.ACC_FETCH
        out = np.zeros(int(instr[-1]) + 1, dtype=self.dtype)
        out["ip"] = addr[is_fetch]
        for k, field in (
            (arch.ACC_READ, "source_memory"),
            (arch.ACC_WRITE, "destination_memory"),
        ):
            idx = np.flatnonzero(keep & (kind == k))
            out[field][instr[idx], rank[idx]] = addr[idx]
        if self._cloudsuite:
            asid = recs["asid"]
            big = np.flatnonzero(asid > 0xFF)
            if len(big):
                raise self._fail(
                    base + int(big[0]), f"asid {int(asid[big[0]])} above 255"
                )
            data = np.flatnonzero(~is_fetch)
            a0 = asid[is_fetch]
            a1 = a0.copy()
            # the first data access of each instruction names asid[1]
            starts = np.ones(len(data), dtype=bool)
            starts[1:] = instr[data][1:] != instr[data][:-1]
            a1[instr[data[starts]]] = asid[data[starts]]
            differ = data[asid[data] != a1[instr[data]]]
            if len(differ):
                raise self._fail(
                    base + int(differ[0]),
                    "data accesses of one instruction differ in asid",
                )
            out["asid"][:, 0] = a0
            out["asid"][:, 1] = a1
        return out.tobytes()
