"""Hypothesis strategies for the page walker: addresses, page-table sets, control state.

A page-table set is a list of :class:`EntryWrite` (va, level, raw entry value, flags of
the intermediate tables created on the way), applied in order with
``PageTableBuilder.set_entry``.  The same list therefore builds identical tables in an
``emu.PhysMem`` and an ``emu.ref.PhysMem`` (see :func:`build_tables`).

Addresses are composed from per-level table indices drawn mostly from a small alphabet,
so writes share tables and most accesses land on something that was written.

Speed: the walker differential runs 10,000 examples in CI and hypothesis spends tens of
microseconds per drawn choice, so each object here is decoded from one uniformly random
byte string (:func:`entropy`) instead of being drawn field by field.  Every decoder
maps all-zero bits to the plainest value (present, writable, user, index 0, no reserved
bit, default control state), so shrinking the bytes towards zero simplifies the example.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from emu import arch
from emu.errors import EmuValueError
from emu.paging import TABLE_FLAGS, PageTableBuilder

#: examples for the heavy walker differential (tests/conftest.py sets the same rule; it
#: is read here because ``tests`` is not an importable package)
HEAVY_EXAMPLES = 10_000 if os.environ.get("HYPOTHESIS_PROFILE", "dev") == "ci" else 500

#: first table frame of PageTableBuilder's bump allocator (its default)
TABLE_BASE = 0x100000
#: table frames that raw entries may point at (self-reference, aliasing, loops)
TABLE_FRAMES = 16
#: leaf frames stay below 2^36, so every MAXPHYADDR choice can map them
LEAF_PA_BITS = 36
#: MAXPHYADDR choices, the default first
MAXPHYADDRS = (52, 46, 39, 36)
#: CR3 bits the walker must ignore: PWT/PCD or PCID (11:0), the no-flush hint (63)
CR3_EXTRAS = (0, 0x18, 0xFFF, 1 << 63, (1 << 63) | 0x5A5)
#: PKRU choices besides a random one: open, all keys but 0 refused, write-disabled
PKRUS = (0, 0x55555554, 0xAAAAAAA8)

#: indices that many writes share, so tables are shared and accesses hit
HOT_INDICES = (0, 1, 2, 255, 256, 511)
#: leaf bits 11:0 that are drawn uniformly (P, R/W, U/S and PS/PAT are drawn apart)
_LEAF_LOW = arch.PTE_PWT | arch.PTE_PCD | arch.PTE_A | arch.PTE_D | arch.PTE_G | 0xE00
_IGNORED_HIGH_SHIFT = 52  # bits 58:52 are ignored in every entry
_RESERVED_HIGH = tuple(range(min(MAXPHYADDRS), arch.PA_BITS_MAX))  # bits 51:M, some M
_TABLE_FLIPS = (arch.PTE_P, arch.PTE_RW, arch.PTE_US, arch.PTE_RW | arch.PTE_US)
_TABLE_EXTRAS = (
    arch.PTE_A,
    arch.PTE_NX,
    arch.PTE_PWT | arch.PTE_PCD,
    0xE00,
    0x7F << 52,
    arch.PTE_G,  # reserved in a PML4E/PML5E on AMD
    arch.PTE_D,  # ignored in non-leaf entries
)
#: PS (reserved in PML4E/PML5E, makes a PDPTE/PDE a leaf) and bits 51:M
_TABLE_RARE = (7, *_RESERVED_HIGH)
_U64 = (1 << 64) - 1


def entropy(nbytes: int) -> st.SearchStrategy[int]:
    """A uniformly random ``8 * nbytes``-bit integer (one choice; shrinks towards 0).

    ``st.integers`` is skewed towards small magnitudes, which would leave the high
    fields of a packed word almost always zero.
    """
    return st.binary(min_size=nbytes, max_size=nbytes).map(
        lambda b: int.from_bytes(b, "little")
    )


class Bits:
    """Reads fields off a random integer, low bits first."""

    def __init__(self, word: int) -> None:
        self.word = word

    def take(self, n: int) -> int:
        """The next ``n`` bits."""
        v = self.word & ((1 << n) - 1)
        self.word >>= n
        return v

    def rare(self, n: int) -> bool:
        """True with probability 2^-n (all ``n`` bits set); False for zero bits."""
        return self.take(n) == (1 << n) - 1

    def pick(self, n: int, choices: Sequence[Any]) -> Any:
        """One of ``choices``, from ``n`` bits (the first for zero bits)."""
        return choices[self.take(n) % len(choices)]


def level_span(level: int) -> int:
    """Bytes of linear address space one entry at ``level`` covers."""
    return arch.PAGE_SIZE << (9 * (level - 1))


def top_level(la57: bool) -> int:
    """The root level: PML5 with LA57, else PML4."""
    return arch.LVL_PML5 if la57 else arch.LVL_PML4


def sign_extend(va: int, la57: bool) -> int:
    """Make ``va`` canonical from its bits 56:0 (LA57) or 47:0."""
    bits = 57 if la57 else 48
    va &= (1 << bits) - 1
    if va >> (bits - 1):
        va |= _U64 ^ ((1 << bits) - 1)
    return va


def compose_va(indices: Sequence[int], offset: int, la57: bool) -> int:
    """The canonical VA with table ``indices`` (top level first) and page ``offset``."""
    va = offset & (arch.PAGE_SIZE - 1)
    for level, idx in zip(range(top_level(la57), 0, -1), indices, strict=True):
        va |= idx << (arch.PAGE_SHIFT + 9 * (level - 1))
    return sign_extend(va, la57)


# ---- addresses ----------------------------------------------------------------------

VA_BYTES = 9  # 5 levels x (3 selector + 9 index bits) + 12 offset bits = 72 bits


def decode_va(r: Bits, la57: bool) -> int:
    """A canonical VA: each index is one of :data:`HOT_INDICES` 3 times in 4."""
    indices = []
    for _ in range(5):
        sel, idx = r.take(3), r.take(9)
        indices.append(HOT_INDICES[sel] if sel < len(HOT_INDICES) else idx)
    offset = r.take(12)
    return compose_va(indices[: top_level(la57)], offset, la57)


def decode_non_canonical_va(r: Bits, la57: bool) -> int:
    """A VA whose bits 63:48 (63:57 with LA57) do not all copy bit 47 (56).

    Under 4-level paging this includes VAs that LA57 would accept.
    """
    va = decode_va(r, la57)
    lo = 57 if la57 else 48
    return va ^ (1 << (lo + r.take(6) % (64 - lo)))


def canonical_vas(la57: bool = False) -> st.SearchStrategy[int]:
    """Canonical linear addresses, low and high half, built from shared indices."""
    return entropy(VA_BYTES).map(lambda w: decode_va(Bits(w), la57))


def non_canonical_vas(la57: bool = False) -> st.SearchStrategy[int]:
    """Linear addresses that are not canonical (#GP, never a walk)."""
    return entropy(VA_BYTES + 1).map(lambda w: decode_non_canonical_va(Bits(w), la57))


def any_vas(la57: bool = False) -> st.SearchStrategy[int]:
    """Canonical addresses mostly, non-canonical sometimes."""
    return canonical_vas(la57) | non_canonical_vas(la57)


# ---- page-table sets ----------------------------------------------------------------


@dataclass(frozen=True)
class EntryWrite:
    """One ``PageTableBuilder.set_entry(va, level, value, table_flags)`` call."""

    va: int
    level: int
    value: int
    table_flags: int

    def __repr__(self) -> str:
        return (
            f"EntryWrite(va={self.va:#x}, {arch.LEVEL_NAMES[self.level]}, "
            f"value={self.value:#x}, table_flags={self.table_flags:#x})"
        )


def decode_leaf(r: Bits, level: int) -> int:
    """A PTE, 2 MiB PDE or 1 GiB PDPTE with random flags and, 1 in 8, one bit that is
    reserved under some MAXPHYADDR (51:M) or an alignment bit (29:13 / 20:13)."""
    size = arch.page_size_of_level(level)
    value = (r.take(LEAF_PA_BITS - arch.PAGE_SHIFT) << arch.PAGE_SHIFT) & ~(size - 1)
    value |= 0 if r.rare(4) else arch.PTE_P  # absent 1 in 16
    value |= 0 if r.rare(2) else arch.PTE_RW  # read-only 1 in 4
    value |= 0 if r.rare(2) else arch.PTE_US  # supervisor 1 in 4
    value |= r.take(12) & _LEAF_LOW
    pat = r.take(1)
    if level == arch.LVL_PT:
        value |= arch.PTE_PAT * pat
    else:
        value |= arch.PTE_PS | arch.PTE_PAT_LARGE * pat
    value |= r.take(4) << arch.PTE_PKEY_SHIFT
    value |= arch.PTE_NX * r.rare(2)
    ignored = r.take(7) << _IGNORED_HIGH_SHIFT
    value |= ignored if r.rare(2) else 0
    candidates: tuple[int, ...] = _RESERVED_HIGH
    if level == arch.LVL_PDPT:
        candidates += tuple(range(13, 30))
    elif level == arch.LVL_PD:
        candidates += tuple(range(13, 21))
    rsvd = 1 << r.pick(8, candidates)
    return value | (rsvd if r.rare(3) else 0)


def decode_raw(r: Bits) -> int:
    """Any entry: a pointer to one of the first table frames (self-reference, aliasing,
    loops), a pointer into empty memory, or 64 random bits."""
    kind, rnd = r.take(2), r.take(64)
    frame, pfn = r.take(4), r.take(LEAF_PA_BITS - arch.PAGE_SHIFT)
    low, absent, high = r.take(12), r.rare(2), r.take(12)
    if kind == 3:
        return rnd
    addr = TABLE_BASE + frame * arch.PAGE_SIZE if kind < 2 else pfn << arch.PAGE_SHIFT
    return addr | low | (0 if absent else arch.PTE_P) | high << _IGNORED_HIGH_SHIFT


def decode_table_flags(r: Bits) -> int:
    """Flags for intermediate tables: P|R/W|U/S with occasional flips and extras
    (XD, A, PWT/PCD, ignored bits, bit 8, D), rarely PS or a bit of 51:M."""
    flips = r.pick(2, _TABLE_FLIPS)
    flip = r.rare(2)
    extra = r.pick(3, _TABLE_EXTRAS)
    with_extra = r.take(1)
    rare = 1 << r.pick(5, _TABLE_RARE)
    with_rare = r.rare(4)
    return (
        (TABLE_FLAGS ^ (flips if flip else 0))
        | (extra if with_extra else 0)
        | (rare if with_rare else 0)
    )


WRITE_BYTES = 32


def decode_write(word: int, la57: bool) -> EntryWrite:
    """An :class:`EntryWrite`: a 4K leaf 4 in 10, a 2M or 1G leaf 2 in 10 each, else
    a raw entry at any level."""
    r = Bits(word)
    va = decode_va(r, la57) & ~(arch.PAGE_SIZE - 1)
    kind = r.take(8) % 10
    raw_level = arch.LVL_PT + r.take(4) % top_level(la57)
    table_flags = decode_table_flags(r)
    if kind < 4:
        level, value = arch.LVL_PT, decode_leaf(r, arch.LVL_PT)
    elif kind < 6:
        level, value = arch.LVL_PD, decode_leaf(r, arch.LVL_PD)
    elif kind < 8:
        level, value = arch.LVL_PDPT, decode_leaf(r, arch.LVL_PDPT)
    else:
        level, value = raw_level, decode_raw(r)
    return EntryWrite(va, level, value, table_flags)


def entry_writes(la57: bool = False) -> st.SearchStrategy[EntryWrite]:
    """One write: mostly a 4K/2M/1G leaf, sometimes a raw entry at any level."""
    return entropy(WRITE_BYTES).map(lambda w: decode_write(w, la57))


@functools.cache  # strategies built once: hypothesis validates each new one
def entry_write_lists(la57: bool = False, max_size: int = 8) -> Any:
    """Lists of writes (at least one): a page-table set."""
    return st.lists(entry_writes(la57), min_size=1, max_size=max_size)


def build_tables(
    mem: Any, la57: bool, writes: Sequence[EntryWrite]
) -> PageTableBuilder:
    """Apply ``writes`` in order to fresh tables in ``mem``; returns the builder.

    A write the builder refuses (a large leaf in the way) is skipped; the refusal
    depends only on what was written before, so it is the same in every memory.
    """
    b = PageTableBuilder(mem, la57=la57, table_base=TABLE_BASE)
    for w in writes:
        with contextlib.suppress(EmuValueError):
            b.set_entry(w.va, w.level, w.value, table_flags=w.table_flags)
    return b


# ---- control state and accesses ----------------------------------------------------


@dataclass(frozen=True)
class Control:
    """Control-register state of a walk (the keywords of ``emu.walk``) plus CR3 extras.

    ``cr3_extra`` holds bits 11:0 (PCID or PWT/PCD) and bit 63 (no-flush hint), which
    the walker must ignore; they are or'ed into the root table's address.
    """

    la57: bool = False
    wp: bool = True
    nxe: bool = True
    smep: bool = False
    smap: bool = False
    ac: bool = False
    pke: bool = False
    pkru: int = 0
    maxphyaddr: int = 52
    a_policy: str = "success"
    gbpages: bool = True
    amd: bool = False
    cr3_extra: int = 0

    def kwargs(self) -> dict[str, Any]:
        """The control keywords for ``emu.walk`` / ``emu.ref.walk`` / ``walk_batch``."""
        return {
            "la57": self.la57,
            "wp": self.wp,
            "nxe": self.nxe,
            "smep": self.smep,
            "smap": self.smap,
            "ac": self.ac,
            "pke": self.pke,
            "pkru": self.pkru,
            "maxphyaddr": self.maxphyaddr,
            "a_policy": self.a_policy,
            "gbpages": self.gbpages,
            "amd": self.amd,
        }

    def cr3(self, root: int) -> int:
        """CR3 for a root table at ``root``."""
        return root | self.cr3_extra


CONTROL_BYTES = 8


def decode_control(word: int, la57: bool | None = None) -> Control:
    """Control state; every flag is flipped from its default half the time."""
    r = Bits(word)
    f = r.take(10)
    maxphyaddr = r.pick(2, MAXPHYADDRS)
    cr3_extra = r.pick(3, CR3_EXTRAS)
    pkru_sel, pkru_rnd = r.take(2), r.take(32)
    return Control(
        la57=bool(f & 512) if la57 is None else la57,
        wp=not f & 1,
        nxe=not f & 2,
        smep=bool(f & 4),
        smap=bool(f & 8),
        ac=bool(f & 16),
        pke=bool(f & 32),
        pkru=PKRUS[pkru_sel] if pkru_sel < len(PKRUS) else pkru_rnd,
        maxphyaddr=maxphyaddr,
        a_policy="qemu" if f & 64 else "success",
        gbpages=not f & 128,
        amd=bool(f & 256),
        cr3_extra=cr3_extra,
    )


def controls(la57: bool | None = None) -> st.SearchStrategy[Control]:
    """Random control state (wp, nxe, smep, smap, ac, pke, pkru, maxphyaddr, a_policy,
    gbpages, amd, la57 and CR3's ignored bits); ``la57`` fixed when given."""
    return entropy(CONTROL_BYTES).map(lambda w: decode_control(w, la57))


@dataclass(frozen=True)
class Access:
    """One access: linear address, kind ``"r"``/``"w"``/``"x"``, CPL 3 or implicit."""

    va: int
    kind: str
    user: bool = False
    implicit: bool = False

    @property
    def code(self) -> int:
        """The ``arch.ACC_*`` code ``emu.walk_batch`` takes."""
        code = arch.ACCESS_CODES[self.kind]
        if self.user:
            code |= arch.ACC_USER
        if self.implicit:
            code |= arch.ACC_IMPLICIT
        return code

    def kwargs(self) -> dict[str, Any]:
        """``user``/``implicit`` keywords for the scalar walkers."""
        return {"user": self.user, "implicit": self.implicit}

    def __repr__(self) -> str:
        mods = (" user" if self.user else "") + (" implicit" if self.implicit else "")
        return f"Access({self.va:#x} {self.kind!r}{mods})"


ACCESS_BYTES = 24


def decode_access(word: int, writes: Sequence[EntryWrite], la57: bool) -> Access:
    """An access aimed at ``writes``.

    VA: half the time inside the range of one written entry; a fifth of the time the
    upper indices of one write spliced with the lower ones of another (following
    chains through shared and aliased tables); otherwise a random canonical address
    (2 in 10) or a non-canonical one (1 in 10).  Supervisor 3 in 6, implicit
    supervisor 1 in 6, user 2 in 6; read, write and fetch equally often.
    """
    r = Bits(word)
    sel = r.take(8) % 10
    w = writes[r.take(8) % len(writes)]
    other = writes[r.take(8) % len(writes)]
    kind = "rwx"[r.take(8) % 3]
    mode = r.take(8) % 6
    low = r.take(64)
    if sel < 7:
        span = level_span(w.level)
        if sel >= 5:
            low = (other.va & (span - 1)) | (low & (arch.PAGE_SIZE - 1))
        va = sign_extend((w.va & ~(span - 1)) | (low & (span - 1)), la57)
    elif sel < 9:
        va = decode_va(r, la57)
    else:
        va = decode_non_canonical_va(r, la57)
    return Access(va, kind, user=mode >= 4, implicit=mode == 3)


def accesses(writes: Sequence[EntryWrite], la57: bool) -> st.SearchStrategy[Access]:
    """One access aimed at ``writes`` (see :func:`decode_access`)."""
    return entropy(ACCESS_BYTES).map(lambda w: decode_access(w, writes, la57))


@dataclass(frozen=True)
class WalkCase:
    """Tables, control state and an access sequence for one property example."""

    control: Control
    writes: tuple[EntryWrite, ...]
    accesses: tuple[Access, ...]

    def build(self, mem: Any) -> int:
        """Build the tables into ``mem``; returns the CR3 value to walk with."""
        b = build_tables(mem, self.control.la57, self.writes)
        return self.control.cr3(b.cr3)


_CONTROLS = controls()


def _counted_chunks(blob: bytes, size: int) -> list[int]:
    """Byte 0 of ``blob`` says how many (1 + byte % capacity) of the ``size``-byte
    little-endian integers that follow it to use."""
    capacity = (len(blob) - 1) // size
    count = 1 + blob[0] % capacity
    return [
        int.from_bytes(blob[1 + i * size : 1 + (i + 1) * size], "little")
        for i in range(count)
    ]


@st.composite
def walk_cases(draw: st.DrawFn, max_writes: int = 8, max_accesses: int = 8) -> WalkCase:
    """A random :class:`WalkCase`: 4- or 5-level tables, control state, accesses.

    The writes and the accesses are each decoded from one fixed-size byte string
    holding a count (uniform in 1..max) and the chunks (one hypothesis choice each,
    rather than two per list element); shrinking the count drops writes/accesses.
    """
    control = draw(_CONTROLS)
    wblob = draw(_blobs(WRITE_BYTES, max_writes))
    ablob = draw(_blobs(ACCESS_BYTES, max_accesses))
    writes = tuple(
        decode_write(w, control.la57) for w in _counted_chunks(wblob, WRITE_BYTES)
    )
    accs = tuple(
        decode_access(w, writes, control.la57)
        for w in _counted_chunks(ablob, ACCESS_BYTES)
    )
    return WalkCase(control, writes, accs)


@functools.cache  # strategies built once: hypothesis validates each new one
def _blobs(chunk: int, max_chunks: int) -> st.SearchStrategy[bytes]:
    size = 1 + chunk * max_chunks
    return st.binary(min_size=size, max_size=size)


# ---- comparison helpers shared by the property and differential tests ----------------


def words_of(mem: Any) -> dict[int, int]:
    """Every non-zero 8-byte word of an ``emu.PhysMem`` or ``emu.ref.PhysMem``."""
    if hasattr(mem, "words"):
        return {pa: v for pa, v in mem.words.items() if v}
    out: dict[int, int] = {}
    for pfn in mem.frames().tolist():
        table = mem.read_table(pfn << arch.PAGE_SHIFT)
        for i in table.nonzero()[0].tolist():
            out[(pfn << arch.PAGE_SHIFT) + 8 * i] = int(table[i])
    return out


def diff_words(a: dict[int, int], b: dict[int, int], limit: int = 8) -> str:
    """The first ``limit`` words where two :func:`words_of` snapshots differ."""
    bad = sorted(pa for pa in a.keys() | b.keys() if a.get(pa, 0) != b.get(pa, 0))
    lines = [
        f"    word @{pa:#x}: {a.get(pa, 0):#018x} vs {b.get(pa, 0):#018x}"
        for pa in bad[:limit]
    ]
    if len(bad) > limit:
        lines.append(f"    ... {len(bad) - limit} more")
    return "\n".join(lines)


def format_path(path: Sequence[tuple[int, int, int]]) -> str:
    """A walk path, one entry a line."""
    if not path:
        return "    (no entry read)"
    return "\n".join(
        f"    {arch.LEVEL_NAMES[lvl]:<5} @{pa:#014x} = {value:#018x}"
        for lvl, pa, value in path
    )


def format_result(r: Any) -> str:
    """A WalkResult on one line, addresses in hex."""

    def h(v: int | None) -> str:
        return "None" if v is None else f"{v:#x}"

    return (
        f"ok={r.ok} pa={h(r.pa)} page_size={h(r.page_size)} vector={r.vector} "
        f"error_code={h(r.error_code)} cr2={h(r.cr2)} level={r.level}"
    )


def scalar_row(r: Any) -> tuple[int, int, int, int, int, int]:
    """A WalkResult as a batch record would hold it (None -> 0)."""
    return (
        r.pa or 0,
        r.page_size or 0,
        r.cr2 or 0,
        r.error_code or 0,
        r.vector or 0,
        r.level,
    )


def batch_row(rec: Any, i: int) -> tuple[int, int, int, int, int, int]:
    """Record ``i`` of a ``walk_batch`` result, in :func:`scalar_row` order."""
    x = rec[i]
    return (
        int(x["pa"]),
        int(x["page_size"]),
        int(x["cr2"]),
        int(x["error_code"]),
        int(x["vector"]),
        int(x["level"]),
    )


def path_rights(path: Sequence[tuple[int, int, int]], nxe: bool) -> tuple[int, int]:
    """(rights, pkey) a walk that reached the leaf ``path[-1]`` must report.

    rights: bit 0 R/W ANDed, bit 1 U/S ANDed, bit 2 XD ORed (with NXE) over the path
    (SDM 3A 4.6.1; ``emu_walk_result.rights`` in csrc/emu_api.h).
    """
    rw = all(v & arch.PTE_RW for _, _, v in path)
    us = all(v & arch.PTE_US for _, _, v in path)
    xd = nxe and any(v & arch.PTE_NX for _, _, v in path)
    return int(rw) | int(us) << 1 | int(xd) << 2, arch.pte_pkey(path[-1][2])


def reached_leaf(r: Any) -> bool:
    """Whether a walk got past every present/reserved check (ok or a rights fault)."""
    if r.ok:
        return True
    return (
        r.vector == arch.VEC_PF
        and bool(r.error_code & arch.PF_P)
        and not r.error_code & arch.PF_RSVD
    )
