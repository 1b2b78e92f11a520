"""The buddy page allocator: zones, orders, pageblocks and migratetypes.

Models mm/page_alloc.c and mm/mm_init.c (Linux 7.0) for one node (UMA) on x86-64:

* zones DMA (below 16 MiB), DMA32 (below 4 GiB) and Normal, sized from the memblock
  view of an :class:`~kernel_model.e820.E820Table`;
* orders 0..MAX_PAGE_ORDER (10); per zone, order and migratetype a free list whose
  head is taken first (``__rmqueue_smallest``), with ``expand()`` putting the upper
  halves at the heads of the lower lists;
* pageblocks of 2 MiB (pageblock_order 9), each with a migratetype; boot marks every
  pageblock whose first page is RAM Movable, the others stay Unmovable (0);
* the migratetype fallbacks of ``__rmqueue()``: claim a whole pageblock
  (``__rmqueue_claim``), else steal (``__rmqueue_steal``), and the
  ``ALLOC_NOFRAGMENT`` first pass for allocations that prefer ZONE_NORMAL;
* freeing with buddy merging (``__free_one_page``), including the pageblock
  migratetype rules for orders >= pageblock_order and the ``buddy_merge_likely``
  tail placement;
* boot: ``memblock_free_all()`` releases every free RAM range in the largest
  aligned chunks to the tails of the lists; the first 1 MiB and any given
  reservations stay out of the buddy.

Simplifications, each also said where it applies: no per-CPU page lists (every
allocation and free goes straight to the buddy, as if pcp batches were 1), no
watermarks or lowmem_reserve (an allocation fails only when no block is free), no
reclaim/compaction/OOM, no page shuffling, no CMA (as on the captured machine),
and "movable" pages for the pageblock-claim heuristic are those allocated with
MIGRATE_MOVABLE (Linux asks whether the page is on an LRU list).

State lives in dicts keyed by block start PFN, never per page: a 1 TiB machine
(268M pages) boots into about 262 thousand order-10 blocks.
"""

from __future__ import annotations

import enum
import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from emu.errors import EmuValueError
from kernel_model.e820 import PAGE_SHIFT, E820Table

__all__ = [
    "GFP",
    "GFP_DMA",
    "GFP_DMA32",
    "GFP_HIGHUSER_MOVABLE",
    "GFP_KERNEL",
    "MAX_DMA32_PFN",
    "MAX_DMA_PFN",
    "MAX_PAGE_ORDER",
    "MIGRATETYPE_NAMES",
    "MIGRATE_PCPTYPES",
    "MIGRATE_TYPES",
    "NR_PAGE_ORDERS",
    "PAGEBLOCK_NR_PAGES",
    "PAGEBLOCK_ORDER",
    "ZONE_NAMES",
    "FreeBlock",
    "MigrateType",
    "PageAllocator",
    "Reservation",
    "Zone",
    "ZoneType",
    "gfp_migratetype",
    "gfp_zone",
]

log = logging.getLogger(__name__)

MAX_PAGE_ORDER = 10
NR_PAGE_ORDERS = MAX_PAGE_ORDER + 1
#: pageblock_order: HPAGE_PMD_ORDER on x86-64
PAGEBLOCK_ORDER = 9
#: pageblock_nr_pages
PAGEBLOCK_NR_PAGES = 1 << PAGEBLOCK_ORDER
#: MAX_DMA_PFN: 16 MiB (arch/x86/include/asm/dma.h)
MAX_DMA_PFN = (16 << 20) >> PAGE_SHIFT
#: MAX_DMA32_PFN: 4 GiB
MAX_DMA32_PFN = 1 << (32 - PAGE_SHIFT)
#: reserve_real_mode() reserves [0, 1 MiB) in memblock, unconditionally
_ISA_END_PFN = (1 << 20) >> PAGE_SHIFT
#: pagetypeinfo_showfree_print() stops counting a free list here
_PAGETYPEINFO_CAP = 100000
_ORDER_MASK = 0xF
_MT_SHIFT = 4


class MigrateType(enum.IntEnum):
    """Models enum migratetype (include/linux/mmzone.h, Linux 7.0) without CMA."""

    UNMOVABLE = 0
    MOVABLE = 1
    RECLAIMABLE = 2
    HIGHATOMIC = 3  # == MIGRATE_PCPTYPES
    ISOLATE = 4


MIGRATE_PCPTYPES = 3
MIGRATE_TYPES = len(MigrateType)
#: migratetype_names[] as /proc/pagetypeinfo prints them
MIGRATETYPE_NAMES = ("Unmovable", "Movable", "Reclaimable", "HighAtomic", "Isolate")

#: fallbacks[] of mm/page_alloc.c: where each type looks when its lists are empty
_FALLBACKS: dict[int, tuple[int, int]] = {
    MigrateType.UNMOVABLE: (MigrateType.RECLAIMABLE, MigrateType.MOVABLE),
    MigrateType.MOVABLE: (MigrateType.RECLAIMABLE, MigrateType.UNMOVABLE),
    MigrateType.RECLAIMABLE: (MigrateType.UNMOVABLE, MigrateType.MOVABLE),
}


class ZoneType(enum.IntEnum):
    """Models enum zone_type (include/linux/mmzone.h, Linux 7.0) as populated on x86-64.

    ZONE_MOVABLE and ZONE_DEVICE exist in Linux but are never populated here.
    """

    DMA = 0
    DMA32 = 1
    NORMAL = 2


ZONE_NAMES = ("DMA", "DMA32", "Normal")
_NR_ZONES = len(ZoneType)


class GFP(enum.IntFlag):
    """The zone and mobility modifiers of gfp_t (include/linux/gfp_types.h, Linux 7.0).

    These are ``__GFP_DMA``, ``__GFP_HIGHMEM``, ``__GFP_DMA32``, ``__GFP_MOVABLE``
    and ``__GFP_RECLAIMABLE`` at their kernel bit positions; the other gfp bits
    (reclaim, I/O, accounting, ...) do not change what the buddy allocator picks
    and are not modelled.
    """

    DMA = 0x01
    HIGHMEM = 0x02
    DMA32 = 0x04
    MOVABLE = 0x08
    RECLAIMABLE = 0x10


#: GFP_KERNEL: no zone or mobility modifier (Normal, then DMA32, then DMA; unmovable)
GFP_KERNEL = GFP(0)
#: GFP_DMA: ZONE_DMA only
GFP_DMA = GFP.DMA
#: GFP_DMA32: ZONE_DMA32, then ZONE_DMA
GFP_DMA32 = GFP.DMA32
#: GFP_HIGHUSER_MOVABLE: user pages, movable (ZONE_MOVABLE if it existed, else Normal)
GFP_HIGHUSER_MOVABLE = GFP.HIGHMEM | GFP.MOVABLE


# the modifier bits as plain ints: the fault path tests them once per allocation
_DMA, _DMA32, _HIGHMEM = int(GFP.DMA), int(GFP.DMA32), int(GFP.HIGHMEM)
_MOVABLE, _RECLAIMABLE = int(GFP.MOVABLE), int(GFP.RECLAIMABLE)


def gfp_zone(gfp: GFP | int) -> ZoneType:
    """Models gfp_zone in include/linux/gfp.h (Linux 7.0) on x86-64.

    Args:
        gfp: gfp flags; only the zone modifiers matter.

    Returns:
        The highest zone the allocation may use.

    Raises:
        EmuValueError: the flags name two zones (GFP_ZONE_BAD, a BUG in Linux).
    """
    bits = int(gfp)
    dma, dma32 = bool(bits & _DMA), bool(bits & _DMA32)
    if dma and (dma32 or bits & _HIGHMEM):
        raise EmuValueError(f"gfp {bits:#x}: __GFP_DMA with another zone modifier")
    if dma32 and bits & _HIGHMEM:
        raise EmuValueError(f"gfp {bits:#x}: __GFP_DMA32 with __GFP_HIGHMEM")
    if dma:
        return ZoneType.DMA
    if dma32:
        return ZoneType.DMA32
    return ZoneType.NORMAL


def gfp_migratetype(gfp: GFP | int) -> MigrateType:
    """Models gfp_migratetype in include/linux/gfp.h (Linux 7.0).

    Args:
        gfp: gfp flags; only ``__GFP_MOVABLE`` and ``__GFP_RECLAIMABLE`` matter.

    Returns:
        MOVABLE, RECLAIMABLE or UNMOVABLE.

    Raises:
        EmuValueError: both mobility bits are set (a VM_WARN in Linux).
    """
    bits = int(gfp)
    if bits & _MOVABLE and bits & _RECLAIMABLE:
        raise EmuValueError(f"gfp {bits:#x}: __GFP_MOVABLE with __GFP_RECLAIMABLE")
    if bits & _MOVABLE:
        return MigrateType.MOVABLE
    if bits & _RECLAIMABLE:
        return MigrateType.RECLAIMABLE
    return MigrateType.UNMOVABLE


@dataclass
class Zone:
    """Models the sizes and counters of struct zone (include/linux/mmzone.h, Linux 7.0).

    The allocator updates these; callers should only read them.

    Attributes:
        zone_type: which zone.
        zone_start_pfn: first PFN of the span.
        spanned_pages: PFNs from the start to the end, holes included.
        present_pages: RAM pages in the span (memblock memory).
        managed_pages: pages the buddy allocator owns (present minus reserved).
        nr_free: ``free_area[order].nr_free``: free blocks (not pages) per order.
    """

    zone_type: ZoneType
    zone_start_pfn: int
    spanned_pages: int
    present_pages: int
    managed_pages: int
    nr_free: list[int]

    @property
    def name(self) -> str:
        """The zone's name as /proc prints it ("DMA", "DMA32", "Normal")."""
        return ZONE_NAMES[self.zone_type]

    @property
    def zone_end_pfn(self) -> int:
        """One past the last spanned PFN."""
        return self.zone_start_pfn + self.spanned_pages

    @property
    def populated(self) -> bool:
        """populated_zone(): the zone has present pages."""
        return self.present_pages > 0

    def spans_pfn(self, pfn: int) -> bool:
        """zone_spans_pfn(): ``zone_start_pfn <= pfn < zone_end_pfn``."""
        return self.zone_start_pfn <= pfn < self.zone_end_pfn

    def nr_free_pages(self) -> int:
        """Free pages in the zone (NR_FREE_PAGES)."""
        return sum(n << order for order, n in enumerate(self.nr_free))


@dataclass(frozen=True, slots=True)
class FreeBlock:
    """One free buddy block.

    Attributes:
        pfn: first page frame number.
        order: the block holds ``1 << order`` pages.
        zone: the zone whose free list holds it.
        migratetype: the free list (and pageblock) migratetype.
    """

    pfn: int
    order: int
    zone: ZoneType
    migratetype: MigrateType


@dataclass(frozen=True, slots=True)
class Reservation:
    """A memblock-style reservation kept out of the buddy allocator.

    Attributes:
        start_pfn: first page frame number.
        npages: length in pages.
        reason: what the pages hold ("kernel image", "boot page tables", ...).
    """

    start_pfn: int
    npages: int
    reason: str

    @property
    def end_pfn(self) -> int:
        """One past the last reserved PFN."""
        return self.start_pfn + self.npages


def _check_int(value: object, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise EmuValueError(f"{what} {value!r}: expected an int")
    if value < minimum:
        raise EmuValueError(f"{what} {value}: must be at least {minimum}")
    return value


def _ffs_order(pfn: int) -> int:
    """The order a block at ``pfn`` may have by alignment (__ffs), capped at MAX."""
    if pfn == 0:
        return MAX_PAGE_ORDER
    return min(MAX_PAGE_ORDER, (pfn & -pfn).bit_length() - 1)


def _chunks(lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """Models __free_pages_memory()'s split of [lo, hi) (mm/memblock.c, Linux 7.0).

    Yields (pfn, order) for the largest naturally aligned blocks, low to high.
    """
    pfn = lo
    while pfn < hi:
        order = _ffs_order(pfn)
        while pfn + (1 << order) > hi:
            order -= 1
        yield pfn, order
        pfn += 1 << order


def _chunk_runs(lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
    """:func:`_chunks` with consecutive MAX_PAGE_ORDER blocks as one (pfn, order, n)."""
    pfn = lo
    while pfn < hi:
        order = _ffs_order(pfn)
        if order == MAX_PAGE_ORDER and pfn + (1 << order) <= hi:
            count = (hi - pfn) >> MAX_PAGE_ORDER
            yield pfn, order, count
            pfn += count << MAX_PAGE_ORDER
            continue
        while pfn + (1 << order) > hi:
            order -= 1
        yield pfn, order, 1
        pfn += 1 << order


def _mergeable(mt: int) -> bool:
    """migratetype_is_mergeable(): only the per-cpu types merge across pageblocks."""
    return mt < MIGRATE_PCPTYPES


class PageAllocator:
    """Models the zoned buddy allocator of mm/page_alloc.c (Linux 7.0), one node.

    Building it performs the boot sequence: trim_bios_range() on the table,
    e820__memblock_setup() (RAM only, partial pages dropped), the first 1 MiB
    reserved as reserve_real_mode() does, the given reservations, zone sizing as
    free_area_init() does, pageblocks marked Movable by memmap_init_range(), and
    memblock_free_all() releasing the rest to the buddy.

    Args:
        e820: the physical layout.
        reserved: further memblock reservations, ``(start_pfn, npages, reason)``,
            e.g. the kernel image and the boot page tables.  They may cover holes;
            they must not overlap each other or the first 1 MiB.

    Raises:
        EmuValueError: the layout has no RAM above 1 MiB, or a reservation is
            malformed or overlaps another.
    """

    def __init__(
        self, e820: E820Table, reserved: Iterable[tuple[int, int, str]] = ()
    ) -> None:
        table = e820.trim_bios_range()
        self._memory: list[tuple[int, int]] = table.pfn_ranges()
        if not self._memory:
            raise EmuValueError("E820 table has no usable RAM")
        node_start, node_end = self._memory[0][0], self._memory[-1][1]

        self._reserved: list[Reservation] = [
            Reservation(0, _ISA_END_PFN, "first 1 MiB (reserve_real_mode)")
        ]
        for item in reserved:
            if not isinstance(item, tuple) or len(item) != 3:
                raise EmuValueError(
                    f"reservation {item!r}: expected (start_pfn, npages, reason)"
                )
            start = _check_int(item[0], "reservation start_pfn")
            npages = _check_int(item[1], "reservation npages", 1)
            self._reserved.append(Reservation(start, npages, str(item[2])))
        self._reserved.sort(key=lambda r: r.start_pfn)
        for a, b in zip(self._reserved, self._reserved[1:], strict=False):
            if b.start_pfn < a.end_pfn:
                raise EmuValueError(
                    f"reservation {b.reason!r} at pfn {b.start_pfn:#x} overlaps "
                    f"{a.reason!r} [{a.start_pfn:#x}, {a.end_pfn:#x})"
                )

        # free_area_init(): zone spans clamped to the node, present = memblock RAM
        bounds = (
            (0, MAX_DMA_PFN),
            (MAX_DMA_PFN, MAX_DMA32_PFN),
            (MAX_DMA32_PFN, max(node_end, MAX_DMA32_PFN)),
        )
        self._zones: list[Zone] = []
        for zt, (lo, hi) in zip(ZoneType, bounds, strict=True):
            start, end = max(lo, node_start), min(hi, node_end)
            end = max(start, end)
            present = sum(max(0, min(end, b) - max(start, a)) for a, b in self._memory)
            self._zones.append(
                Zone(zt, start, end - start, present, 0, [0] * NR_PAGE_ORDERS)
            )
        total_present = sum(z.present_pages for z in self._zones)
        #: build_all_zonelists(): "mobility grouping off" below this many pages
        self.page_group_by_mobility_disabled = (
            total_present < PAGEBLOCK_NR_PAGES * MIGRATE_TYPES
        )

        # memmap_init_range(): a pageblock becomes Movable when its first PFN is
        # initialised as memory; pageblocks starting in a hole keep flags 0.
        nblocks = (node_end + PAGEBLOCK_NR_PAGES - 1) >> PAGEBLOCK_ORDER
        self._pageblock_mt = bytearray(nblocks)
        for lo, hi in self._memory:
            first = (lo + PAGEBLOCK_NR_PAGES - 1) >> PAGEBLOCK_ORDER
            last = (hi + PAGEBLOCK_NR_PAGES - 1) >> PAGEBLOCK_ORDER
            if last > first:
                self._pageblock_mt[first:last] = bytes([MigrateType.MOVABLE]) * (
                    last - first
                )

        # Free lists: circular doubly linked lists threaded through two dicts; the
        # sentinel of list ``lid`` is the key ``-1 - lid``.
        nlists = _NR_ZONES * NR_PAGE_ORDERS * MIGRATE_TYPES
        self._next: dict[int, int] = {-1 - i: -1 - i for i in range(nlists)}
        self._prev: dict[int, int] = dict(self._next)
        self._list_len = [0] * nlists
        self._free: dict[int, int] = {}  # block pfn -> order | mt << 4
        self._allocated: dict[int, int] = {}  # block pfn -> order | mt << 4
        self._memblock_free_all()

    # --- free-list primitives --------------------------------------------------------

    @staticmethod
    def _lid(zone: int, order: int, mt: int) -> int:
        return (zone * NR_PAGE_ORDERS + order) * MIGRATE_TYPES + mt

    def _zone_index(self, pfn: int) -> int:
        if pfn < MAX_DMA_PFN:
            return ZoneType.DMA
        if pfn < MAX_DMA32_PFN:
            return ZoneType.DMA32
        return ZoneType.NORMAL

    def _add(self, pfn: int, zone: int, order: int, mt: int, tail: bool) -> None:
        """Models __add_to_free_list() (mm/page_alloc.c, Linux 7.0)."""
        lid = self._lid(zone, order, mt)
        s = -1 - lid
        if tail:
            p = self._prev[s]
            self._next[p] = pfn
            self._prev[pfn] = p
            self._next[pfn] = s
            self._prev[s] = pfn
        else:
            n = self._next[s]
            self._next[s] = pfn
            self._prev[pfn] = s
            self._next[pfn] = n
            self._prev[n] = pfn
        self._list_len[lid] += 1
        self._free[pfn] = order | mt << _MT_SHIFT
        self._zones[zone].nr_free[order] += 1

    def _add_tail_many(self, pfns: list[int], zone: int, order: int, mt: int) -> None:
        """__add_to_free_list(..., tail) for many ascending blocks at once."""
        if not pfns:
            return
        lid = self._lid(zone, order, mt)
        s = -1 - lid
        chain = [self._prev[s], *pfns, s]
        self._next.update(itertools.pairwise(chain))
        self._prev.update(zip(chain[1:], chain[:-1], strict=True))
        self._list_len[lid] += len(pfns)
        self._free.update(dict.fromkeys(pfns, order | mt << _MT_SHIFT))
        self._zones[zone].nr_free[order] += len(pfns)

    def _del(self, pfn: int) -> tuple[int, int]:
        """Models __del_page_from_free_list(); returns the block's (order, mt)."""
        info = self._free.pop(pfn)
        order, mt = info & _ORDER_MASK, info >> _MT_SHIFT
        zone = self._zone_index(pfn)
        p = self._prev.pop(pfn)
        n = self._next.pop(pfn)
        self._next[p] = n
        self._prev[n] = p
        self._list_len[self._lid(zone, order, mt)] -= 1
        self._zones[zone].nr_free[order] -= 1
        return order, mt

    def _first(self, zone: int, order: int, mt: int) -> int | None:
        """get_page_from_free_area(): the head of a free list, or None."""
        n = self._next[-1 - self._lid(zone, order, mt)]
        return n if n >= 0 else None

    def _iter_list(self, zone: int, order: int, mt: int) -> Iterator[int]:
        s = -1 - self._lid(zone, order, mt)
        n = self._next[s]
        while n != s:
            yield n
            n = self._next[n]

    def _get_pageblock_mt(self, pfn: int) -> int:
        return self._pageblock_mt[pfn >> PAGEBLOCK_ORDER]

    def _set_pageblock_mt(self, pfn: int, mt: int) -> None:
        # Simplification: Linux forces UNMOVABLE here when mobility grouping is off.
        self._pageblock_mt[pfn >> PAGEBLOCK_ORDER] = mt

    # --- boot ------------------------------------------------------------------------

    def _free_ranges(self) -> list[tuple[int, int]]:
        """for_each_free_mem_range(): memblock memory minus memblock reserved."""
        out: list[tuple[int, int]] = []
        res = self._reserved
        i = 0
        for lo, hi in self._memory:
            pos = lo
            while i < len(res) and res[i].end_pfn <= pos:
                i += 1
            j = i
            while pos < hi:
                if j < len(res) and res[j].start_pfn < hi:
                    r = res[j]
                    if r.start_pfn > pos:
                        out.append((pos, r.start_pfn))
                    pos = max(pos, r.end_pfn)
                    j += 1
                else:
                    out.append((pos, hi))
                    pos = hi
        return out

    def _memblock_free_all(self) -> None:
        """Models memblock_free_all() (mm/memblock.c, Linux 7.0).

        Each free range goes to the buddy as __free_pages_memory() splits it, every
        block to the tail of its list (FPI_TO_TAIL).  The blocks of one range never
        merge with each other or with those of another range, so they are linked
        directly.
        """
        for lo, hi in self._free_ranges():
            for zone in self._zones:
                zlo, zhi = max(lo, zone.zone_start_pfn), min(hi, zone.zone_end_pfn)
                if zlo >= zhi:
                    continue
                zone.managed_pages += zhi - zlo
                for pfn, order, count in _chunk_runs(zlo, zhi):
                    pb_lo = pfn >> PAGEBLOCK_ORDER
                    pb_hi = (pfn + (count << order)) >> PAGEBLOCK_ORDER
                    if (
                        order == MAX_PAGE_ORDER
                        and self._pageblock_mt[pb_lo:pb_hi].count(MigrateType.MOVABLE)
                        == pb_hi - pb_lo
                    ):
                        self._add_tail_many(
                            list(range(pfn, pfn + (count << order), 1 << order)),
                            zone.zone_type,
                            order,
                            MigrateType.MOVABLE,
                        )
                        continue
                    for i in range(count):
                        self._free_one_range(pfn + (i << order), order, to_tail=True)

    # --- freeing ---------------------------------------------------------------------

    def _buddy_merge_likely(
        self, pfn: int, buddy_pfn: int, order: int, zone: int
    ) -> bool:
        """Models buddy_merge_likely() (mm/page_alloc.c, Linux 7.0)."""
        if order >= MAX_PAGE_ORDER - 1:
            return False
        higher = buddy_pfn & pfn
        higher_buddy = higher ^ (1 << (order + 1))
        info = self._free.get(higher_buddy)
        return (
            info is not None
            and info & _ORDER_MASK == order + 1
            and self._zone_index(higher_buddy) == zone
        )

    def _free_one_page(self, pfn: int, order: int, mt: int, to_tail: bool) -> None:
        """Models __free_one_page() (mm/page_alloc.c, Linux 7.0)."""
        zone = self._zone_index(pfn)
        buddy_pfn = pfn ^ (1 << order)
        while order < MAX_PAGE_ORDER:
            buddy_pfn = pfn ^ (1 << order)
            info = self._free.get(buddy_pfn)
            if (
                info is None
                or info & _ORDER_MASK != order
                or self._zone_index(buddy_pfn) != zone
            ):
                break
            buddy_mt = info >> _MT_SHIFT
            if (
                order >= PAGEBLOCK_ORDER
                and buddy_mt != mt
                and not (_mergeable(mt) and _mergeable(buddy_mt))
            ):
                break
            self._del(buddy_pfn)
            if buddy_mt != mt:
                # "Match buddy type": the buddy's pageblock joins ours.
                self._set_pageblock_mt(buddy_pfn, mt)
            pfn &= buddy_pfn
            order += 1
        if not to_tail:
            to_tail = self._buddy_merge_likely(pfn, buddy_pfn, order, zone)
        self._add(pfn, zone, order, mt, to_tail)

    def _free_one_range(self, pfn: int, order: int, to_tail: bool) -> None:
        """Models free_one_page() -> split_large_buddy() (mm/page_alloc.c, Linux 7.0).

        A block larger than a pageblock is freed pageblock by pageblock, each with
        its own pageblock's migratetype.
        """
        step = min(order, PAGEBLOCK_ORDER)
        for p in range(pfn, pfn + (1 << order), 1 << step):
            self._free_one_page(p, step, self._get_pageblock_mt(p), to_tail)

    # --- allocation ------------------------------------------------------------------

    def _expand(self, pfn: int, low: int, high: int, mt: int) -> None:
        """Models expand() (mm/page_alloc.c, Linux 7.0): upper halves to list heads."""
        zone = self._zone_index(pfn)
        while high > low:
            high -= 1
            self._add(pfn + (1 << high), zone, high, mt, tail=False)

    def _rmqueue_smallest(self, zone: int, order: int, mt: int) -> int | None:
        """Models __rmqueue_smallest() (mm/page_alloc.c, Linux 7.0)."""
        for current_order in range(order, NR_PAGE_ORDERS):
            pfn = self._first(zone, current_order, mt)
            if pfn is None:
                continue
            self._del(pfn)
            self._expand(pfn, order, current_order, mt)
            return pfn
        return None

    def _should_try_claim_block(self, order: int, start_mt: int) -> bool:
        """Models should_try_claim_block() (mm/page_alloc.c, Linux 7.0)."""
        if order >= PAGEBLOCK_ORDER:
            return True
        if start_mt == MigrateType.MOVABLE:
            return False
        if self.page_group_by_mobility_disabled:
            return True
        return start_mt in (MigrateType.RECLAIMABLE, MigrateType.UNMOVABLE)

    def _find_suitable_fallback(
        self, zone: int, order: int, mt: int, claimable: bool
    ) -> int:
        """Models find_suitable_fallback(): a migratetype, -1 (none) or -2 (stop)."""
        if claimable and not self._should_try_claim_block(order, mt):
            return -2
        if self._zones[zone].nr_free[order] == 0:
            return -1
        for fallback_mt in _FALLBACKS[mt]:
            if self._list_len[self._lid(zone, order, fallback_mt)]:
                return fallback_mt
        return -1

    def _pageblock_usage(self, start_pfn: int) -> tuple[int, int]:
        """The free and movable pages of a pageblock (prep_move_freepages_block)."""
        free = movable = 0
        pfn, end = start_pfn, start_pfn + PAGEBLOCK_NR_PAGES
        while pfn < end:
            info = self._free.get(pfn)
            if info is not None:
                free += 1 << (info & _ORDER_MASK)
                pfn += 1 << (info & _ORDER_MASK)
                continue
            info = self._allocated.get(pfn)
            if info is not None:
                if info >> _MT_SHIFT == MigrateType.MOVABLE:
                    movable += 1 << (info & _ORDER_MASK)
                pfn += 1 << (info & _ORDER_MASK)
                continue
            pfn += 1
        return free, movable

    def _move_freepages_block(self, start_pfn: int, new_mt: int) -> None:
        """Models __move_freepages_block(): every free block to new_mt's list tail."""
        zone = self._zone_index(start_pfn)
        pfn, end = start_pfn, start_pfn + PAGEBLOCK_NR_PAGES
        while pfn < end:
            info = self._free.get(pfn)
            if info is None:
                pfn += 1
                continue
            order, _ = self._del(pfn)
            self._add(pfn, zone, order, new_mt, tail=True)
            pfn += 1 << order
        self._set_pageblock_mt(start_pfn, new_mt)

    def _try_to_claim_block(
        self,
        zone: int,
        pfn: int,
        current_order: int,
        order: int,
        start_mt: int,
        block_mt: int,
    ) -> int | None:
        """Models try_to_claim_block() (mm/page_alloc.c, Linux 7.0)."""
        if block_mt == MigrateType.HIGHATOMIC:
            return None
        if current_order >= PAGEBLOCK_ORDER:
            self._del(pfn)
            for p in range(pfn, pfn + (1 << current_order), PAGEBLOCK_NR_PAGES):
                self._set_pageblock_mt(p, start_mt)
            self._expand(pfn, order, current_order, start_mt)
            return pfn
        start_pfn = pfn & ~(PAGEBLOCK_NR_PAGES - 1)
        z = self._zones[zone]
        last_pfn = start_pfn + PAGEBLOCK_NR_PAGES - 1
        if not (z.spans_pfn(start_pfn) and z.spans_pfn(last_pfn)):
            return None
        free, movable = self._pageblock_usage(start_pfn)
        if start_mt == MigrateType.MOVABLE:
            alike = movable
        elif block_mt == MigrateType.MOVABLE:
            alike = PAGEBLOCK_NR_PAGES - (free + movable)
        else:
            alike = 0
        if (
            free + alike >= PAGEBLOCK_NR_PAGES // 2
            or self.page_group_by_mobility_disabled
        ):
            self._move_freepages_block(start_pfn, start_mt)
            return self._rmqueue_smallest(zone, order, start_mt)
        return None

    def _rmqueue_claim(
        self, zone: int, order: int, start_mt: int, nofragment: bool
    ) -> int | None:
        """Models __rmqueue_claim() (mm/page_alloc.c, Linux 7.0): largest first."""
        min_order = order
        if order < PAGEBLOCK_ORDER and nofragment:
            min_order = PAGEBLOCK_ORDER
        for current_order in range(MAX_PAGE_ORDER, min_order - 1, -1):
            fallback_mt = self._find_suitable_fallback(
                zone, current_order, start_mt, claimable=True
            )
            if fallback_mt == -1:
                continue
            if fallback_mt == -2:
                break
            pfn = self._first(zone, current_order, fallback_mt)
            if pfn is None:  # pragma: no cover - find_suitable_fallback checked
                continue
            page = self._try_to_claim_block(
                zone, pfn, current_order, order, start_mt, fallback_mt
            )
            if page is not None:
                return page
        return None

    def _rmqueue_steal(self, zone: int, order: int, start_mt: int) -> int | None:
        """Models __rmqueue_steal() (mm/page_alloc.c, Linux 7.0): smallest first."""
        for current_order in range(order, NR_PAGE_ORDERS):
            fallback_mt = self._find_suitable_fallback(
                zone, current_order, start_mt, claimable=False
            )
            if fallback_mt < 0:
                continue
            pfn = self._first(zone, current_order, fallback_mt)
            if pfn is None:  # pragma: no cover - find_suitable_fallback checked
                continue
            self._del(pfn)
            self._expand(pfn, order, current_order, fallback_mt)
            return pfn
        return None

    def _rmqueue(self, zone: int, order: int, mt: int, nofragment: bool) -> int | None:
        """Models __rmqueue() (mm/page_alloc.c, Linux 7.0) without CMA."""
        page = self._rmqueue_smallest(zone, order, mt)
        if page is None:
            page = self._rmqueue_claim(zone, order, mt, nofragment)
        if page is None and not nofragment:
            page = self._rmqueue_steal(zone, order, mt)
        return page

    def zonelist(self, gfp: GFP | int = GFP_KERNEL) -> list[ZoneType]:
        """The zones an allocation tries, in order (the node's zonelist).

        Models build_zonerefs_node() and first_zones_zonelist() (Linux 7.0):
        populated zones from gfp_zone(gfp) down to DMA.

        Args:
            gfp: gfp flags.

        Returns:
            Zone types, preferred first.
        """
        highest = gfp_zone(gfp)
        return [ZoneType(z) for z in range(highest, -1, -1) if self._zones[z].populated]

    def alloc_pages(
        self,
        order: int,
        gfp: GFP | int = GFP_KERNEL,
        *,
        migratetype: MigrateType | int | None = None,
    ) -> int | None:
        """Models alloc_pages, get_page_from_freelist and rmqueue (Linux 7.0).

        Zones are tried from the preferred zone down (GFP_KERNEL: Normal, DMA32,
        DMA).  An allocation preferring Normal first passes over the zonelist with
        ALLOC_NOFRAGMENT (fallbacks may only claim whole pageblocks, no stealing),
        then, if that fails, again without it.  No watermarks, per-CPU lists or
        reclaim are modelled: the allocation fails only when no suitable free block
        exists.

        Args:
            order: allocate ``1 << order`` contiguous, naturally aligned pages.
            gfp: gfp flags (zone and mobility modifiers; see :class:`GFP`).
            migratetype: overrides the migratetype gfp implies; one of Unmovable,
                Movable, Reclaimable.

        Returns:
            The first PFN of the block, or None (Linux returns NULL) when every
            allowed zone is exhausted or ``order > MAX_PAGE_ORDER`` (which Linux
            also WARNs about).

        Raises:
            EmuValueError: order is negative or not an int, or gfp/migratetype is
                invalid.
        """
        _check_int(order, "order")
        mt: int
        if migratetype is None:
            mt = gfp_migratetype(gfp)
        else:
            mt = _check_int(migratetype, "migratetype")
            if mt >= MIGRATE_PCPTYPES:
                raise EmuValueError(
                    f"migratetype {migratetype!r}: only Unmovable, "
                    "Movable and Reclaimable can be requested"
                )
        zones = self.zonelist(gfp)
        if order > MAX_PAGE_ORDER:
            log.warning(
                "alloc_pages: order %d > MAX_PAGE_ORDER %d", order, MAX_PAGE_ORDER
            )
            return None
        if self.page_group_by_mobility_disabled:
            mt = MigrateType.UNMOVABLE
        nofragment = bool(zones) and zones[0] == ZoneType.NORMAL
        page: int | None = None
        for pass_nofragment in (True, False) if nofragment else (False,):
            for zone in zones:
                page = self._rmqueue(zone, order, mt, pass_nofragment)
                if page is not None:
                    break
            if page is not None:
                break
        if page is None:
            return None
        self._allocated[page] = order | mt << _MT_SHIFT
        return page

    def free_pages(self, pfn: int, order: int) -> None:
        """Models __free_pages() -> free_one_page() (mm/page_alloc.c, Linux 7.0).

        The block merges with free buddies as far as it can.  Nothing changes
        unless the call is valid.

        Args:
            pfn: first PFN of a block :meth:`alloc_pages` returned.
            order: the order it was allocated with.

        Raises:
            EmuValueError: the PFN is not the start of an allocated block (a double
                free, a reserved or never-allocated frame, a PFN inside a block) or
                the order differs from the allocation's.
        """
        _check_int(pfn, "pfn")
        _check_int(order, "order")
        info = self._allocated.get(pfn)
        if info is None:
            raise EmuValueError(
                f"free_pages(pfn={pfn:#x}, order={order}): "
                f"{self._why_not_allocated(pfn)}"
            )
        if info & _ORDER_MASK != order:
            raise EmuValueError(
                f"free_pages(pfn={pfn:#x}, order={order}): the block was allocated "
                f"with order {info & _ORDER_MASK}"
            )
        del self._allocated[pfn]
        self._free_one_range(pfn, order, to_tail=False)

    def _containing(self, pfn: int, blocks: dict[int, int]) -> tuple[int, int] | None:
        """The (start, order) of the block in ``blocks`` that holds pfn, if any."""
        for order in range(NR_PAGE_ORDERS):
            start = pfn & ~((1 << order) - 1)
            info = blocks.get(start)
            if info is not None and info & _ORDER_MASK == order:
                return start, order
        return None

    def _why_not_allocated(self, pfn: int) -> str:
        free = self._containing(pfn, self._free)
        if free is not None:
            return (
                f"pfn {pfn:#x} is free (in the order-{free[1]} free block at "
                f"{free[0]:#x}): double free?"
            )
        inside = self._containing(pfn, self._allocated)
        if inside is not None:
            return (
                f"pfn {pfn:#x} is inside the order-{inside[1]} block allocated "
                f"at {inside[0]:#x}, not its first page"
            )
        for r in self._reserved:
            if r.start_pfn <= pfn < r.end_pfn:
                return f"pfn {pfn:#x} is reserved ({r.reason}), never allocated"
        if not self._is_ram(pfn):
            return f"pfn {pfn:#x} is not RAM"
        return f"pfn {pfn:#x} was never allocated"

    def _is_ram(self, pfn: int) -> bool:
        return any(lo <= pfn < hi for lo, hi in self._memory)

    # --- reservations ----------------------------------------------------------------

    def reserve(self, start_pfn: int, npages: int, reason: str) -> None:
        """Takes free pages out of the buddy, as a late memblock reservation.

        Boot reservations belong in the constructor's ``reserved`` argument, which
        keeps them out of the buddy from the start as memblock does.  This method
        is for reservations made later: every page must be free; the free blocks
        holding them are split and the remainders go back, in the largest aligned
        chunks, to the tails of their lists.

        Args:
            start_pfn: first PFN.
            npages: number of pages, at least 1.
            reason: what the pages are for.

        Raises:
            EmuValueError: a page in the range is not free (allocated, reserved,
                or not RAM); nothing changes.
        """
        start = _check_int(start_pfn, "start_pfn")
        n = _check_int(npages, "npages", 1)
        end = start + n
        blocks: list[tuple[int, int]] = []
        pfn = start
        while pfn < end:
            found = self._containing(pfn, self._free)
            if found is None:
                raise EmuValueError(
                    f"reserve({start:#x}, {n}, {reason!r}): pfn {pfn:#x} is not free"
                    f" ({self._describe(pfn)})"
                )
            blocks.append(found)
            pfn = found[0] + (1 << found[1])
        for bstart, order in blocks:
            zone_idx = self._zone_index(bstart)
            _, mt = self._del(bstart)
            bend = bstart + (1 << order)
            for lo, hi in ((bstart, max(bstart, start)), (min(bend, end), bend)):
                for p, o in _chunks(lo, hi):
                    self._add(p, zone_idx, o, mt, tail=True)
        for zone in self._zones:
            zone.managed_pages -= max(
                0, min(end, zone.zone_end_pfn) - max(start, zone.zone_start_pfn)
            )
        self._reserved.append(Reservation(start, n, reason))
        self._reserved.sort(key=lambda r: r.start_pfn)

    def free_reserved_area(self, start_pfn: int, npages: int) -> None:
        """Models free_reserved_area in mm/page_alloc.c (Linux 7.0).

        Returns reserved RAM pages (freed init memory, an initrd) to the buddy and
        to the zones' managed pages.  Linux frees them one page at a time through
        the per-CPU lists; this frees the largest aligned chunks, which merge to
        the same blocks.

        Args:
            start_pfn: first PFN.
            npages: number of pages, at least 1.

        Raises:
            EmuValueError: a page in the range is not reserved or not RAM;
                nothing changes.
        """
        start = _check_int(start_pfn, "start_pfn")
        n = _check_int(npages, "npages", 1)
        end = start + n
        pfn = start
        touched: list[Reservation] = []
        for r in self._reserved:
            if r.end_pfn <= pfn or r.start_pfn >= end:
                continue
            if r.start_pfn > pfn:
                break
            touched.append(r)
            pfn = r.end_pfn
        if pfn < end:
            raise EmuValueError(
                f"free_reserved_area({start:#x}, {n}): pfn {pfn:#x} "
                f"is not reserved ({self._describe(pfn)})"
            )
        if not any(a <= start and end <= b for a, b in self._memory):
            raise EmuValueError(
                f"free_reserved_area({start:#x}, {n}): the range "
                "includes pages that are not RAM"
            )
        for r in touched:
            self._reserved.remove(r)
            if r.start_pfn < start:
                self._reserved.append(
                    Reservation(r.start_pfn, start - r.start_pfn, r.reason)
                )
            if r.end_pfn > end:
                self._reserved.append(Reservation(end, r.end_pfn - end, r.reason))
        self._reserved.sort(key=lambda r: r.start_pfn)
        for zone in self._zones:
            zone.managed_pages += max(
                0, min(end, zone.zone_end_pfn) - max(start, zone.zone_start_pfn)
            )
        for p, o in _chunks(start, end):
            self._free_one_range(p, o, to_tail=False)

    def _describe(self, pfn: int) -> str:
        if self._containing(pfn, self._allocated) is not None:
            return "allocated"
        for r in self._reserved:
            if r.start_pfn <= pfn < r.end_pfn:
                return f"reserved: {r.reason}"
        if self._containing(pfn, self._free) is not None:
            return "free"
        return "not RAM"

    # --- queries ---------------------------------------------------------------------

    @property
    def zones(self) -> tuple[Zone, ...]:
        """The zones DMA, DMA32 and Normal (possibly empty), by zone type."""
        return tuple(self._zones)

    def zone(self, zone: ZoneType | str) -> Zone:
        """The zone of a type or name ("DMA", "DMA32", "Normal").

        Raises:
            EmuValueError: no such zone.
        """
        return self._zones[self._zone_arg(zone)]

    @staticmethod
    def _zone_arg(zone: ZoneType | str | int) -> int:
        if isinstance(zone, str):
            if zone not in ZONE_NAMES:
                raise EmuValueError(f"zone {zone!r}: expected one of {ZONE_NAMES}")
            return ZONE_NAMES.index(zone)
        if (
            isinstance(zone, bool)
            or not isinstance(zone, int)
            or not 0 <= zone < _NR_ZONES
        ):
            raise EmuValueError(f"zone {zone!r}: expected a ZoneType")
        return int(zone)

    def zone_of(self, pfn: int) -> ZoneType | None:
        """Models page_zone(pfn_to_page(pfn)): the zone whose span holds pfn.

        Args:
            pfn: a page frame number.

        Returns:
            The zone type, or None when no zone spans the PFN.
        """
        z = self._zone_index(pfn)
        return ZoneType(z) if self._zones[z].spans_pfn(pfn) else None

    def is_free(self, pfn: int) -> bool:
        """True if the page is inside a free buddy block (PageBuddy of its head)."""
        return self._containing(pfn, self._free) is not None

    def allocated_order(self, pfn: int) -> int | None:
        """The order of the allocated block starting at pfn, or None."""
        info = self._allocated.get(pfn)
        return None if info is None else info & _ORDER_MASK

    def allocated_blocks(self) -> Iterator[tuple[int, int]]:
        """Every allocated block as (pfn, order), in PFN order."""
        for pfn in sorted(self._allocated):
            yield pfn, self._allocated[pfn] & _ORDER_MASK

    def free_blocks(self) -> Iterator[FreeBlock]:
        """Every free block, list by list (zone, order, migratetype), heads first."""
        for zone in range(_NR_ZONES):
            for order in range(NR_PAGE_ORDERS):
                for mt in range(MIGRATE_TYPES):
                    for pfn in self._iter_list(zone, order, mt):
                        yield FreeBlock(pfn, order, ZoneType(zone), MigrateType(mt))

    def free_list(
        self,
        zone: ZoneType | str,
        order: int,
        migratetype: MigrateType | int = MigrateType.MOVABLE,
    ) -> list[int]:
        """The block PFNs on one free list, head first.

        Args:
            zone: zone type or name.
            order: 0..MAX_PAGE_ORDER.
            migratetype: which list of the order.

        Returns:
            The first PFN of each block, in list order.
        """
        z = self._zone_arg(zone)
        _check_int(order, "order")
        mt = _check_int(migratetype, "migratetype")
        if order > MAX_PAGE_ORDER or mt >= MIGRATE_TYPES:
            raise EmuValueError(f"order {order} / migratetype {mt}: out of range")
        return list(self._iter_list(z, order, mt))

    def reservations(self) -> list[Reservation]:
        """The memblock-style reservations, by start PFN."""
        return list(self._reserved)

    def pageblock_migratetype(self, pfn: int) -> MigrateType:
        """Models get_pageblock_migratetype() for the pageblock holding pfn.

        Raises:
            EmuValueError: the PFN is beyond the node.
        """
        _check_int(pfn, "pfn")
        if pfn >> PAGEBLOCK_ORDER >= len(self._pageblock_mt):
            raise EmuValueError(f"pfn {pfn:#x}: beyond the end of memory")
        return MigrateType(self._pageblock_mt[pfn >> PAGEBLOCK_ORDER])

    def nr_free_pages(self) -> int:
        """Free pages in all zones (global NR_FREE_PAGES)."""
        return sum(z.nr_free_pages() for z in self._zones)

    def managed_pages(self) -> int:
        """Pages owned by the buddy allocator, free or allocated (totalram_pages)."""
        return sum(z.managed_pages for z in self._zones)

    def snapshot(self) -> tuple[object, ...]:
        """The whole allocator state as a comparable value (for "nothing changed").

        Returns:
            A tuple of the free lists in order, allocations, reservations,
            pageblock migratetypes and zone counters.
        """
        lists = tuple(
            tuple(self._iter_list(z, o, m))
            for z in range(_NR_ZONES)
            for o in range(NR_PAGE_ORDERS)
            for m in range(MIGRATE_TYPES)
        )
        zones = tuple((z.managed_pages, tuple(z.nr_free)) for z in self._zones)
        return (
            lists,
            tuple(sorted(self._allocated.items())),
            tuple(self._reserved),
            bytes(self._pageblock_mt),
            zones,
        )

    # --- /proc texts -----------------------------------------------------------------

    def buddyinfo(self) -> str:
        """Models /proc/buddyinfo: frag_show_print() (mm/vmstat.c, Linux 7.0).

        Returns:
            One ``Node 0, zone %8s `` line per populated zone, then ``%6lu `` per
            order, then a newline.
        """
        lines = []
        for z in self._zones:
            if not z.populated:
                continue
            counts = "".join(f"{n:6d} " for n in z.nr_free)
            lines.append(f"Node 0, zone {z.name:>8s} {counts}\n")
        return "".join(lines)

    def pagetypeinfo(self) -> str:
        """Models /proc/pagetypeinfo: pagetypeinfo_show() (mm/vmstat.c, Linux 7.0).

        Free-list lengths per zone, migratetype and order (capped at 100000 with a
        ``>``), then pageblocks per migratetype.  A pageblock is counted when its
        first PFN in the zone lies in a present 128 MiB memory section, as
        pfn_to_online_page() decides; the mixed-blocks table (page_owner) is
        omitted.

        Returns:
            The file's text.
        """
        out = [
            f"Page block order: {PAGEBLOCK_ORDER}\n",
            f"Pages per block:  {PAGEBLOCK_NR_PAGES}\n",
            "\n",
        ]
        out.append(
            f"{'Free pages count per migrate type at order':<43s} "
            + "".join(f"{o:6d} " for o in range(NR_PAGE_ORDERS))
            + "\n"
        )
        populated = [z for z in self._zones if z.populated]
        for z in populated:
            for mt in range(MIGRATE_TYPES):
                name = MIGRATETYPE_NAMES[mt]
                row = f"Node {0:4d}, zone {z.name:>8s}, type {name:>12s} "
                for order in range(NR_PAGE_ORDERS):
                    n = self._list_len[self._lid(z.zone_type, order, mt)]
                    row += (
                        f">{_PAGETYPEINFO_CAP:6d} "
                        if n >= _PAGETYPEINFO_CAP
                        else f"{n:6d} "
                    )
                out.append(row + "\n")
        out.append(
            f"\n{'Number of blocks type ':<23s}"
            + "".join(f"{name:>12s} " for name in MIGRATETYPE_NAMES)
            + "\n"
        )
        for z in populated:
            counts = [0] * MIGRATE_TYPES
            for pfn in range(z.zone_start_pfn, z.zone_end_pfn, PAGEBLOCK_NR_PAGES):
                if self._section_present(pfn):
                    counts[self._get_pageblock_mt(pfn)] += 1
            out.append(
                f"Node 0, zone {z.name:>8s} "
                + "".join(f"{c:12d} " for c in counts)
                + "\n"
            )
        return "".join(out)

    def _section_present(self, pfn: int) -> bool:
        """pfn_to_online_page(): the PFN's 128 MiB section holds some memory."""
        section_shift = 27 - PAGE_SHIFT  # SECTION_SIZE_BITS on x86-64
        lo = pfn >> section_shift << section_shift
        hi = lo + (1 << section_shift)
        return any(a < hi and b > lo for a, b in self._memory)
