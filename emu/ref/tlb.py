"""Reference set-associative arrays and replacement policies (docs/mmu-model.md).

The plainest reading of the "Structures" and "Replacement" sections of
``docs/mmu-model.md``: one :class:`SetAssocArray` serves as a TLB array, a
paging-structure cache and the page-table line cache.  Every slot holds ``None``
(invalid) or an entry with a ``tag`` (the full VA shifted right by the entry's shift,
no bit masked), a ``shift`` (which size the tag is for), a ``pcid`` and a ``glob``
flag.  Nothing here imports the compiled core.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from emu.cpus import POLICIES
from emu.errors import EmuValueError

U64_MASK = (1 << 64) - 1
#: a zero random seed becomes this (docs/mmu-model.md, "Random")
ZERO_SEED = 0x9E3779B97F4A7C15
XORSHIFT_MULT = 0x2545F4914F6CDD1D


class Keyed(Protocol):
    """What an array needs of the entries it holds."""

    @property
    def tag(self) -> int: ...  # noqa: D102

    @property
    def shift(self) -> int: ...  # noqa: D102

    @property
    def pcid(self) -> int: ...  # noqa: D102

    @property
    def glob(self) -> bool: ...  # noqa: D102


E = TypeVar("E", bound=Keyed)


@dataclass
class TLBEntryRef:
    """One cached translation (a whole leaf or a fractured piece of one).

    Attributes:
        tag: the VA shifted right by ``shift`` (full canonical VA, nothing masked).
        shift: page shift of this entry (12, 21 or 30).
        pcid: PCID current when the entry was made.
        glob: global (leaf G and CR4.PGE).
        frame: physical base of this entry's page (of the piece, when fractured).
        rw: R/W ANDed over all levels.
        us: U/S ANDed over all levels.
        xd: XD ORed over all levels (only with EFER.NXE).
        pkey: protection key of the leaf.
        dirty: the leaf's D when the entry was made.
        orig_shift: page shift of the leaf it came from (> ``shift`` when fractured).
    """

    tag: int
    shift: int
    pcid: int
    glob: bool
    frame: int
    rw: bool
    us: bool
    xd: bool
    pkey: int
    dirty: bool
    orig_shift: int

    @property
    def va(self) -> int:
        """Base VA of this entry's page."""
        return (self.tag << self.shift) & U64_MASK

    def covers_leaf_of(self, va: int) -> bool:
        """Whether the leaf this entry came from covers ``va`` (pieces included)."""
        return (self.tag << self.shift) >> self.orig_shift == va >> self.orig_shift


@dataclass
class PSCEntryRef:
    """One paging-structure-cache entry of level ``shift``'s region.

    Attributes:
        tag: ``va >> shift``.
        shift: 21 (PDE cache), 30 (PDPTE), 39 (PML4E) or 48 (PML5E).
        pcid: PCID current when it was made.
        table: physical address of the next table.
        rw, us, xd: rights combined from the top level down to this one.
        glob: always False (PSC entries are never global).
    """

    tag: int
    shift: int
    pcid: int
    table: int
    rw: bool
    us: bool
    xd: bool
    glob: bool = False


@dataclass
class LineRef:
    """One 64-byte line of page-table entries in the cost model's line cache."""

    tag: int
    shift: int = 0
    pcid: int = 0
    glob: bool = False


class Policy(abc.ABC):
    """Replacement state of one array; the base class keeps no use history."""

    def __init__(self, sets: int, ways: int) -> None:
        self.sets = sets
        self.ways = ways

    def touch(self, s: int, way: int) -> None:  # noqa: B027  (no history by default)
        """A hit (or in-place update) on ``way`` of set ``s``."""

    def inserted(self, s: int, way: int) -> None:
        """A new entry went into ``way`` of set ``s``."""
        self.touch(s, way)

    @abc.abstractmethod
    def victim(self, s: int) -> int:
        """The way to replace in the full set ``s``."""


class LRU(Policy):
    """True LRU: a per-array clock; a touch stamps the way with ``++clock``."""

    def __init__(self, sets: int, ways: int) -> None:
        super().__init__(sets, ways)
        self.clock = 0
        self.stamp = [[0] * ways for _ in range(sets)]

    def touch(self, s: int, way: int) -> None:  # noqa: D102
        self.clock += 1
        self.stamp[s][way] = self.clock

    def victim(self, s: int) -> int:  # noqa: D102
        stamps = self.stamp[s]
        return stamps.index(min(stamps))  # lowest way on ties


class TreePLRU(Policy):
    """Tree pseudo-LRU: bits ``b[1..ways-1]`` in heap order, one tree per set."""

    def __init__(self, sets: int, ways: int) -> None:
        super().__init__(sets, ways)
        self.depth = ways.bit_length() - 1
        self.bits = [[0] * max(ways, 1) for _ in range(sets)]

    def touch(self, s: int, way: int) -> None:  # noqa: D102
        b = self.bits[s]
        node = 1
        for d in range(self.depth - 1, -1, -1):
            t = (way >> d) & 1
            b[node] = 1 - t
            node = 2 * node + t

    def victim(self, s: int) -> int:  # noqa: D102
        b = self.bits[s]
        node = 1
        while node < self.ways:
            node = 2 * node + b[node]
        return node - self.ways


class FIFO(Policy):
    """FIFO: a pointer per set, advanced only when it names a victim."""

    def __init__(self, sets: int, ways: int) -> None:
        super().__init__(sets, ways)
        self.ptr = [0] * sets

    def inserted(self, s: int, way: int) -> None:  # noqa: D102
        pass

    def victim(self, s: int) -> int:  # noqa: D102
        way = self.ptr[s]
        self.ptr[s] = (way + 1) % self.ways
        return way


class Random(Policy):
    """Random: xorshift64* per array, seeded as docs/mmu-model.md says."""

    def __init__(self, sets: int, ways: int, seed: int) -> None:
        super().__init__(sets, ways)
        self.x = seed & U64_MASK or ZERO_SEED

    def inserted(self, s: int, way: int) -> None:  # noqa: D102
        pass

    def victim(self, s: int) -> int:  # noqa: D102
        x = self.x
        x ^= x >> 12
        x = (x ^ (x << 25)) & U64_MASK
        x ^= x >> 27
        self.x = x
        r = (x * XORSHIFT_MULT) & U64_MASK
        return (r >> 32) % self.ways


class SRRIP(Policy):
    """Static RRIP: 2-bit RRPV per way; hit 0, insert 2, victim the first RRPV 3."""

    def __init__(self, sets: int, ways: int) -> None:
        super().__init__(sets, ways)
        self.rrpv = [[0] * ways for _ in range(sets)]

    def touch(self, s: int, way: int) -> None:  # noqa: D102
        self.rrpv[s][way] = 0

    def inserted(self, s: int, way: int) -> None:  # noqa: D102
        self.rrpv[s][way] = 2

    def victim(self, s: int) -> int:  # noqa: D102
        r = self.rrpv[s]
        age = 3 - max(r)
        for w in range(self.ways):
            r[w] += age
        return r.index(3)


def make_policy(name: str, sets: int, ways: int, seed: int) -> Policy:
    """The replacement policy called ``name`` for a ``sets x ways`` array.

    Raises:
        EmuValueError: unknown policy name.
    """
    if name == "lru":
        return LRU(sets, ways)
    if name == "plru":
        return TreePLRU(sets, ways)
    if name == "fifo":
        return FIFO(sets, ways)
    if name == "random":
        return Random(sets, ways, seed)
    if name == "srrip":
        return SRRIP(sets, ways)
    raise EmuValueError(f"policy {name!r} not in {POLICIES}")


class SetAssocArray(Generic[E]):
    """A ``sets x ways`` array of entries with one replacement policy.

    Args:
        sets: number of sets (a power of two; 1 is fully associative).
        ways: associativity (0: the array holds nothing).
        policy: replacement policy name.
        seed: random-policy seed (already offset for this array).
    """

    def __init__(
        self, sets: int, ways: int, policy: str = "lru", seed: int = 0
    ) -> None:
        self.sets = sets
        self.ways = ways
        self.slots: list[list[E | None]] = [[None] * ways for _ in range(sets)]
        #: the valid slots, so sweeps need not visit empty ones
        self.valid: dict[tuple[int, int], E] = {}
        self.policy = make_policy(policy, sets, ways, seed)

    def set_of(self, tag: int) -> int:
        """Set index of a tag: its low bits."""
        return tag & (self.sets - 1)

    def find(self, tag: int, shift: int, pcid: int) -> tuple[int, int, E] | None:
        """The first valid entry with this tag and size usable under ``pcid``.

        Returns:
            ``(set, way, entry)`` or None.  Replacement state is not changed.
        """
        if not self.ways:
            return None
        s = self.set_of(tag)
        for w, e in enumerate(self.slots[s]):
            if (
                e is not None
                and e.tag == tag
                and e.shift == shift
                and (e.pcid == pcid or e.glob)
            ):
                return s, w, e
        return None

    def touch(self, s: int, way: int) -> None:
        """Mark a hit on (set, way)."""
        self.policy.touch(s, way)

    def insert(self, entry: E) -> None:
        """Insert ``entry`` over a matching one, else in the lowest invalid way.

        In a full set without a match, the policy chooses the victim.
        """
        if not self.ways:
            return
        s = self.set_of(entry.tag)
        row = self.slots[s]
        for w, e in enumerate(row):
            if (
                e is not None
                and e.tag == entry.tag
                and e.shift == entry.shift
                and (e.pcid == entry.pcid or e.glob or entry.glob)
            ):
                row[w] = entry
                self.valid[s, w] = entry
                self.policy.touch(s, w)
                return
        free = [w for w, e in enumerate(row) if e is None]
        w = free[0] if free else self.policy.victim(s)
        row[w] = entry
        self.valid[s, w] = entry
        self.policy.inserted(s, w)

    def remove_if(self, pred: Callable[[E], bool]) -> int:
        """Invalidate every entry for which ``pred`` holds; returns how many."""
        n = 0
        for (s, w), e in list(self.valid.items()):
            if pred(e):
                self.slots[s][w] = None
                del self.valid[s, w]
                n += 1
        return n

    def entries(self) -> Iterator[E]:
        """Valid entries, set by set, way by way."""
        for row in self.slots:
            for e in row:
                if e is not None:
                    yield e
