"""The split/merge invariant checker (Linux 7.0; reference/linux-mm.md 1.7-5.6).

:class:`Validator` wraps a booted :class:`~kernel_model.machine.Machine`.  Every
``set_memory_*``-family call made *through the validator* is forwarded to the machine
and also applied to an independent **flat model**: one byte of intended bits per 4 KiB
page of every kernel mapping the model knows (the direct map, the high kernel map of
the image, and each vmalloc/module area).  The flat model is written from the
*documented intent* of each call (linux-mm.md 2.1-2.4 and 2.9), never from CPA's
internals:

* the page's bits become ``(old & ~clr) | set``; static protections then remove NX
  from high-map text and (once ``mark_rodata_ro`` ran) RW from every alias of the
  rodata frames; a non-present result loses G (``pgprot_clear_protnone_bits``);
* a primary call also changes the aliases (the direct-map alias of a non-direct-map
  page, and the high-map alias of a kernel-image frame) with NX masked out, unless it
  is a ``_noalias``/``set_direct_map_*`` call;
* a hole in the direct map is skipped page by page; an unmapped page elsewhere stops
  the call with ``-EFAULT``;
* structural operations (splits, collapses, ``set_memory_4k``'s split) change no
  intended bit except ``_PAGE_KERNEL_4K``.

The intent right after boot is derived from the boot rules: the direct map is P RW NX
G over the ISA range and the RAM (1.3, 1.5; no G with PTI); the high map of the image
is first what head_64.S maps (P RW G, executable, 2 MiB pages over [_text,
roundup(_brk_end, 2M))), then the boot's calls are replayed on the flat model:
``set_memory_4k(__va(0), 1)`` without gbpages (1.6), ``free_initmem`` and
``mark_rodata_ro`` (2.7).  That gives text RO+X, rodata RO+NX, data/bss/brk RW+NX and
the freed gaps RW+NX (non-present in the high map with PTI), with the direct-map alias
of text and rodata RO.  Which kfence pool pages carry ``_PAGE_KERNEL_4K`` depends on
the page sizes the pool had at boot (arch_kfence_init_pool splits only pages that are
not 4K yet), so that bit is taken from the tables for pool pages only.

``check()`` compares the machine against the flat model and its own invariants:

(a) ``translation``: every direct-map page maps ``va - PAGE_OFFSET``, every high-map and
    vmalloc page its intended frame; holes and freed areas map nothing.  Checked by a
    vectorised walk of the page tables and by reading the pages through every CPU's
    MMU (``MMU.run``; all pages, or a sample).
(b) ``permission``: effective P, RW, NX, G, the CPA test bit and ``_PAGE_KERNEL_4K``
    (RW ANDed and NX ORed over the levels, as the walker combines them) equal the flat
    model; no kernel page is user-accessible.
(c) ``count``: ``direct_pages_count`` equals a recount of the direct-map leaves, plus
    the boot-time excess (a baseline measured when the validator is created, right
    after boot: 1.5's ``update_page_count`` counts leaves kept by a later window
    twice), plus the high-map quirk of 1.7 (a split of a high-map 2M leaf moves the
    DirectMap counters although the high map is not the direct map).
(d) ``table``: every page-table page is referenced exactly once, is a known table page
    and is allocated in the buddy allocator; every table page freed since the last
    check is back in the allocator (or legitimately reused); no leak.
(e) ``tlb`` (only with ``check(tlb=True)``, meaningful after operations that flush):
    on every CPU, no TLB entry grants a right the tables deny (write, execute, user,
    presence) or maps another frame, no address is cached with two page sizes whose
    attributes differ, and no paging-structure-cache entry points to a table the
    tables no longer use.  A stale *upgrade* is allowed.  Pages changed by a
    ``_noflush`` call are exempt until the CPU's next full flush, as their caller owns
    the flush; with ``linux_flush_gaps=True`` so are the two stale windows 7.0 leaves
    by design (2.8: array-mode addresses outside ``[first, first + numpages)``, and
    alias-only changes that set no ``CPA_FLUSHTLB``).
(f) ``wx``: pages mapped writable and executable, counted as ptdump's W+X check does
    (effective RW and not NX on a non-none entry); :meth:`Validator.wx_message` gives
    Linux's closing line.

Every violation names the address, the expected and the actual value; runs of
consecutive pages with the same difference are reported once.

A call that fails part-way (``-ENOMEM`` from a split under ``cpa.fail_table_allocs``)
is not rolled back by Linux: each page it targets must then be either as before or as
intended, the primary pages it changed must be a prefix of the call, and the flat model
adopts what the tables show.  The same holds for the pages of a call in which a split
failed without failing the call (cpa_process_alias() ignores the high-map alias's
return).  A return value the model does not predict is a
``return`` violation.

Simplifications (each one line): A and D are not modelled (the hardware sets them);
"Text RO" (2.6) only keeps large text pages large and never changes a final 4K
permission, so it is not modelled; the high-map alias is decided per page, where Linux
tests the first frame of each large-page chunk (they differ only for a chunk that
straddles the image's 2M-aligned bounds: a 1G leaf, which boot splits around the
image).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from emu.mmu import MMU_RESULT_DTYPE
from kernel_model import pgtable as pt
from kernel_model.machine import SYSTEM_RUNNING
from kernel_model.pgtable import (
    LEVEL_SHIFT,
    PG_LEVEL_1G,
    PG_LEVEL_2M,
    PG_LEVEL_4K,
    PMD_SIZE,
    PTRS_PER_TABLE,
)

if TYPE_CHECKING:
    from kernel_model.machine import Machine
    from kernel_model.vmalloc import VmArea

PAGE_SIZE = 4096
EFAULT = 14
ENOMEM = 12
ISA_END_PFN = 0x100  # [0, 1 MiB) is always mapped, holes included (1.3)

# One byte of intended (or actual) state per page.
BIT_P = 1 << 0  # _PAGE_PRESENT
BIT_RW = 1 << 1  # _PAGE_RW (effective: ANDed over the levels)
BIT_NX = 1 << 2  # _PAGE_NX (effective: ORed over the levels)
BIT_G = 1 << 3  # _PAGE_GLOBAL
BIT_TEST = 1 << 4  # _PAGE_CPA_TEST (SOFTW1, bit 9)
BIT_K4K = 1 << 5  # _PAGE_KERNEL_4K (SOFTW3, bit 11)
BIT_US = 1 << 6  # _PAGE_USER (effective); never intended for kernel mappings
COVERED = 1 << 7  # (actual state only) a leaf maps the page
_BIT_NAMES = (
    (BIT_P, "P"),
    (BIT_RW, "RW"),
    (BIT_NX, "NX"),
    (BIT_G, "G"),
    (BIT_TEST, "TEST"),
    (BIT_K4K, "K4K"),
    (BIT_US, "USR"),
)
_PTE_TO_BIT = (
    (pt._PAGE_PRESENT, BIT_P),
    (pt._PAGE_RW, BIT_RW),
    (pt._PAGE_NX, BIT_NX),
    (pt._PAGE_GLOBAL, BIT_G),
    (pt._PAGE_CPA_TEST, BIT_TEST),
    (pt._PAGE_KERNEL_4K, BIT_K4K),
)

KINDS = ("translation", "permission", "count", "table", "tlb", "wx", "return")
MAX_PER_KIND = 64  # violations listed per kind before a summary line

U64Array = npt.NDArray[np.uint64]
I64Array = npt.NDArray[np.int64]
U8Array = npt.NDArray[np.uint8]
BoolArray = npt.NDArray[np.bool_]


def describe_bits(bits: int) -> str:
    """The bits of a flat-model byte as text, e.g. ``"P RW NX G"`` (``"none"``)."""
    names = [n for b, n in _BIT_NAMES if bits & b]
    return " ".join(names) if names else "none"


def mask_bits(mask: int) -> int:
    """The flat-model bits a ``set``/``clr`` protection mask touches."""
    out = 0
    for pte_bit, bit in _PTE_TO_BIT:
        if mask & pte_bit:
            out |= bit
    return out


def entry_bits(
    entries: U64Array,
    eff_rw: BoolArray | None = None,
    eff_nx: BoolArray | None = None,
    eff_us: BoolArray | None = None,
) -> U8Array:
    """Flat-model bytes of page-table entries (vectorised).

    Args:
        entries: leaf entries.
        eff_rw: effective RW over all levels (default: the leaf's own bit).
        eff_nx: effective NX over all levels (default: the leaf's own bit).
        eff_us: effective USR over all levels (default: the leaf's own bit).

    Returns:
        One byte per entry.
    """
    e = entries.astype(np.uint64)
    out = np.zeros(e.shape, dtype=np.uint8)
    for pte_bit, bit in _PTE_TO_BIT:
        out |= np.where((e & np.uint64(pte_bit)) != 0, np.uint8(bit), np.uint8(0))
    if eff_rw is not None:
        out = np.where(eff_rw, out | BIT_RW, out & ~np.uint8(BIT_RW)).astype(np.uint8)
    if eff_nx is not None:
        out = np.where(eff_nx, out | BIT_NX, out & ~np.uint8(BIT_NX)).astype(np.uint8)
    us = eff_us if eff_us is not None else (e & np.uint64(pt._PAGE_USER)) != 0
    return np.where(us, out | BIT_US, out).astype(np.uint8)


@dataclass(frozen=True)
class Violation:
    """One broken invariant.

    Attributes:
        kind: ``translation``, ``permission``, ``count``, ``table``, ``tlb``, ``wx`` or
            ``return`` (a call returned what its documented semantics exclude).
        address: the first virtual address concerned (a physical address for table
            pages, the PG_LEVEL_* for counters).
        expected: what the model or the invariant requires.
        actual: what the machine has.
        message: one line naming the problem (and the run length for page runs).
    """

    kind: str
    address: int
    expected: object
    actual: object
    message: str

    def __str__(self) -> str:
        return (
            f"[{self.kind}] {self.address:#x}: {self.message} "
            f"(expected {self.expected}, actual {self.actual})"
        )


def format_violations(violations: Sequence[Violation]) -> str:
    """The violations one per line (``"no violations"`` when empty)."""
    if not violations:
        return "no violations\n"
    return "".join(f"{v}\n" for v in violations)


def wx_message(wx_pages: int) -> str:
    """ptdump_check_wx()'s closing line (arch/x86/mm/dump_pagetables.c, 7.0)."""
    if wx_pages:
        return f"x86/mm: Checked W+X mappings: FAILED, {wx_pages} W+X pages found."
    return "x86/mm: Checked W+X mappings: passed, no W+X pages found."


# ---- the flat model's regions ------------------------------------------------------


@dataclass
class Region:
    """The flat model's intended state of a run of virtually contiguous pages.

    ``frames`` is None for regions with ``frame = frame_base + index`` (the direct and
    the high map).  ``mapped`` False marks a page that must map nothing (a hole).
    """

    name: str
    start: int
    bits: U8Array
    mapped: BoolArray
    frame_base: int = 0
    frames: I64Array | None = None

    @property
    def npages(self) -> int:
        """Number of 4 KiB pages."""
        return int(self.bits.size)

    @property
    def end(self) -> int:
        """First address past the region."""
        return self.start + self.npages * PAGE_SIZE

    def vas(self, idx: I64Array) -> U64Array:
        """Virtual addresses of pages ``idx``."""
        return (
            np.uint64(self.start) + (idx.astype(np.uint64) << np.uint64(12))
        ).astype(np.uint64)

    def frame_of(self, idx: I64Array) -> I64Array:
        """Intended frames of pages ``idx``."""
        if self.frames is not None:
            return self.frames[idx]
        return (idx + self.frame_base).astype(np.int64)

    def all_frames(self) -> I64Array:
        """Intended frame of every page."""
        if self.frames is not None:
            return self.frames
        return np.arange(self.frame_base, self.frame_base + self.npages, dtype=np.int64)


@dataclass
class _Leaves:
    """Every leaf (and non-present non-zero entry) of the kernel tables, by va."""

    va: U64Array
    last: U64Array  # inclusive last byte (va + size - 1 never overflows)
    npages: I64Array
    level: npt.NDArray[np.int8]
    entry: U64Array
    frame0: I64Array
    bits: U8Array

    def find(self, va: U64Array) -> tuple[I64Array, BoolArray]:
        """Index of the leaf holding each address, and whether one does."""
        i = np.searchsorted(self.va, va, side="right").astype(np.int64) - 1
        ok = i >= 0
        ic = np.where(ok, i, 0)
        ok &= self.last[ic] >= va if self.va.size else np.zeros(va.shape, bool)
        return ic, ok

    def overlap(
        self, start: int, npages: int
    ) -> tuple[int, int, I64Array, I64Array, I64Array]:
        """Leaves [lo, hi) overlapping ``npages`` pages from ``start``.

        Returns:
            lo, hi, and for each leaf the first page it covers (p0), its pages before
            the range (skip) and the number of pages it covers in the range (cnt).
        """
        z = np.zeros(0, dtype=np.int64)
        if not npages or not self.va.size:
            return 0, 0, z, z, z
        s = np.uint64(start)
        last = np.uint64(start + npages * PAGE_SIZE - 1)
        lo = int(np.searchsorted(self.last, s, side="left"))
        hi = int(np.searchsorted(self.va, last, side="right"))
        if hi <= lo:
            return lo, lo, z, z, z
        va = self.va[lo:hi]
        after = va >= s
        p0 = np.where(after, (va - s) >> np.uint64(12), 0).astype(np.int64)
        skip = np.where(after, 0, (s - va) >> np.uint64(12)).astype(np.int64)
        cnt = np.maximum(np.minimum(self.npages[lo:hi] - skip, npages - p0), 0)
        return lo, hi, p0, skip, cnt

    def bits_over(self, start: int, npages: int) -> U8Array:
        """Per-page bits over a range, ``COVERED`` set where a leaf maps the page.

        A difference array summed once: no per-page index arrays.
        """
        lo, hi, p0, _, cnt = self.overlap(start, npages)
        d = np.zeros(npages + 1, dtype=np.int16)
        if hi > lo:
            val = self.bits[lo:hi].astype(np.int16) | COVERED
            np.add.at(d, p0, val)
            np.add.at(d, p0 + cnt, -val)
        return np.cumsum(d[:-1], dtype=np.int16).astype(np.uint8)

    def expand(self, start: int, npages: int) -> tuple[BoolArray, I64Array, U8Array]:
        """Per-page (covered, frame, bits) over ``npages`` pages from ``start``.

        For small ranges: TLB entries, vmalloc areas.
        """
        covered = np.zeros(npages, dtype=np.bool_)
        frame = np.full(npages, -1, dtype=np.int64)
        bits = np.zeros(npages, dtype=np.uint8)
        lo, hi, p0, skip, cnt = self.overlap(start, npages)
        if hi <= lo:
            return covered, frame, bits
        total = int(cnt.sum())
        run_start = np.cumsum(cnt) - cnt
        within = np.arange(total, dtype=np.int64) - np.repeat(run_start, cnt)
        idx = np.repeat(p0, cnt) + within
        covered[idx] = True
        frame[idx] = np.repeat(self.frame0[lo:hi] + skip, cnt) + within
        bits[idx] = np.repeat(self.bits[lo:hi], cnt)
        return covered, frame, bits


@dataclass
class _Op:
    """One flat-model change: targets (region, page index) with old and new bits."""

    regions: list[Region] = field(default_factory=list)
    idx: list[I64Array] = field(default_factory=list)
    old: list[U8Array] = field(default_factory=list)
    new: list[U8Array] = field(default_factory=list)
    pos: list[I64Array | None] = field(default_factory=list)  # call order; None: alias
    alias_touched: bool = False  # cpa_process_alias() set force_flush_all


class Validator:
    """Invariant checker and independent flat model of one booted Machine.

    Args:
        machine: a machine right after boot (the boot intent is derived from its
            configuration; ``direct_pages_count``'s boot excess is measured now).
        sample: default number of pages per region read through each MMU by
            :meth:`check` (None: every page).
        linux_flush_gaps: exempt from the TLB check the stale entries Linux 7.0's
            ``cpa_flush`` leaves by design (array-mode pages outside the flushed range,
            alias-only changes).  Off by default: they are reported.
        seed: seed of the page sampler.

    Attributes:
        m: the machine.
        direct: the flat model of the direct map (a :class:`Region`).
        high: the flat model of the high kernel map of the image.
        areas: the flat model of each vmalloc/module area, by start address.
        count_baseline: ``direct_pages_count`` minus the recount, per PG_LEVEL_*,
            measured at construction (the boot-time double counting).
        log: the calls made through the validator, in order (for reproductions).
    """

    def __init__(
        self,
        machine: Machine,
        *,
        sample: int | None = None,
        linux_flush_gaps: bool = False,
        seed: int = 0,
    ) -> None:
        self.m = machine
        self.sample = sample
        self.linux_flush_gaps = linux_flush_gaps
        self._rng = np.random.default_rng(seed)
        lay = machine.layout
        self.page_offset = lay.page_offset
        self.kernel_set_to_readonly = False
        self.log: list[str] = []
        self._pending_violations: list[Violation] = []
        self._touched: list[int] = []
        self._tlb_exempt: list[set[int]] = [set() for _ in machine.mmus]
        self._flush_mark: list[int] = [0 for _ in machine.mmus]

        # direct map: the ISA range and every memblock RAM page (1.3, 1.6)
        ranges = [(0, ISA_END_PFN), *machine.e820.pfn_ranges()]
        npfn = max(e for _, e in ranges)
        mapped = np.zeros(npfn, dtype=np.bool_)
        for lo_pfn, hi_pfn in ranges:
            mapped[lo_pfn:hi_pfn] = True
        g = 0 if machine.config.pti else BIT_G
        dm_bits = np.where(
            mapped, np.uint8(BIT_P | BIT_RW | BIT_NX | g), np.uint8(0)
        ).astype(np.uint8)
        self.direct = Region("direct map", self.page_offset, dm_bits, mapped)

        # high map: 2M pages over [_text, roundup(_brk_end, 2M)), executable (1.1, 2.7)
        s = machine.sym
        self.pa_text = s.pa_text
        self.pa_brk_2m = s.pa_brk_end_2m
        lo = self.pa_text // PMD_SIZE * PMD_SIZE
        hi_pages = (self.pa_brk_2m - lo) >> 12
        hm_bits = np.full(hi_pages, BIT_P | BIT_RW | g, dtype=np.uint8)
        self.high = Region(
            "high map",
            machine.highmap_va(lo),
            hm_bits,
            np.ones(hi_pages, dtype=np.bool_),
            frame_base=lo >> 12,
        )
        self.rodata_pfns = (s.pa_start_rodata >> 12, (s.pa_end_rodata - 1) >> 12)
        self.areas: dict[int, Region] = {}
        self._area_starts: list[int] = []
        for area in machine.vmalloc.areas.values():
            self._add_area(area)
        self._prev_tables: set[int] = set(machine.pt.tables)

        if machine.system_state == SYSTEM_RUNNING and machine.config.rodata:
            self._replay_boot()
        # the boot-time direct_pages_count excess (1.5), measured now
        leaves = self._walk()
        recount = self._recount(leaves)
        adj = self._highmap_adjust(leaves)
        self.count_baseline = [
            machine.direct.direct_pages_count[i] - recount[i] - adj[i]
            for i in range(len(recount))
        ]
        self._sync_flush_marks()

    # ---- boot intent ----------------------------------------------------------------

    def _replay_boot(self) -> None:
        """Apply free_initmem() and mark_rodata_ro() (2.7) to the flat model."""
        m = self.m
        s = m.sym
        pti = m.config.pti
        if not m.direct.direct_gbpages:
            # arch/x86/kernel/cpu/common.c: set_memory_4k(__va(0), 1), fixed MTRRs
            self._model(self._range_vas(m.va(0), 1), BIT_K4K, 0, force_split=True)
        # kfence: set_memory_4k page by page where the pool is not yet 4K; which pages
        # get _PAGE_KERNEL_4K depends on the boot layout, so it is taken from the tables
        # (and only pool pages may carry it)
        if m.kfence_pool is not None:
            start, end = m.kfence_pool
            for pa in range(start, end, PAGE_SIZE):
                look = m.pt.lookup_address(m.va(pa))
                if look.entry is not None and look.entry & pt._PAGE_KERNEL_4K:
                    self.direct.bits[pa >> 12] |= BIT_K4K

        def free_kernel_image_pages(begin: int, end: int) -> None:
            b = -(-begin // PAGE_SIZE) * PAGE_SIZE
            e = end & ~(PAGE_SIZE - 1)
            if b < e:
                n = (e - b) >> 12
                if m.config.debug_pagealloc:
                    self._model(self._range_vas(b, n), 0, BIT_P)
                else:
                    self._model(self._range_vas(b, n), BIT_NX, 0)
                    self._model(self._range_vas(b, n), BIT_RW, 0)
            if pti:
                self._model(
                    self._range_vas(begin, (end - begin) >> 12), 0, BIT_P, alias=False
                )

        free_kernel_image_pages(s.init_begin, s.init_end)
        start = s.text & ~(PAGE_SIZE - 1)
        end = s.end_rodata_hpage_align
        self._model(self._range_vas(start, (end - start) >> 12), 0, BIT_RW)
        self.kernel_set_to_readonly = True
        text_end = -(-s.etext // PAGE_SIZE) * PAGE_SIZE
        all_end = -(-s.brk_end // PMD_SIZE) * PMD_SIZE
        self._model(self._range_vas(text_end, (all_end - text_end) >> 12), BIT_NX, 0)
        rodata_start = -(-s.start_rodata // PAGE_SIZE) * PAGE_SIZE
        rodata_end = -(-s.end_rodata // PAGE_SIZE) * PAGE_SIZE
        free_kernel_image_pages(text_end, rodata_start)
        free_kernel_image_pages(rodata_end, s.sdata)

    # ---- regions --------------------------------------------------------------------

    def _add_area(self, area: VmArea) -> None:
        prot = np.array([area.prot], dtype=np.uint64)
        b = int(entry_bits(prot)[0])
        n = area.npages
        reg = Region(
            f"vmalloc area {area.addr:#x}",
            area.addr,
            np.full(n, b, dtype=np.uint8),
            np.ones(n, dtype=np.bool_),
            frames=np.asarray(area.pages, dtype=np.int64),
        )
        self.areas[area.addr] = reg
        bisect.insort(self._area_starts, area.addr)

    def regions(self) -> list[Region]:
        """Every region of the flat model (direct map, high map, areas)."""
        return [self.direct, self.high, *self.areas.values()]

    def expected(self, va: int) -> tuple[int, int] | None:
        """Intended (frame, bits) of the page holding ``va``.

        Returns:
            None if the flat model intends no mapping there.
        """
        for reg in self.regions():
            if reg.start <= va < reg.end:
                i = (va - reg.start) >> 12
                if not reg.mapped[i]:
                    return None
                return int(reg.frame_of(np.array([i], dtype=np.int64))[0]), int(
                    reg.bits[i]
                )
        return None

    # ---- the flat model of one call -------------------------------------------------

    @staticmethod
    def _range_vas(addr: int, numpages: int) -> U64Array:
        base = addr & ~(PAGE_SIZE - 1)
        n = max(int(numpages), 0)
        return (
            np.uint64(base) + np.arange(n, dtype=np.uint64) * np.uint64(PAGE_SIZE)
        ).astype(np.uint64)

    def _locate(self, vas: U64Array) -> list[tuple[Region | None, I64Array, BoolArray]]:
        """Split primary page addresses by region: (region, indices, positions)."""
        out: list[tuple[Region | None, I64Array, BoolArray]] = []
        left = np.ones(vas.shape, dtype=np.bool_)
        for reg in self.regions():
            inside = (vas >= np.uint64(reg.start)) & (vas < np.uint64(reg.end)) & left
            if inside.any():
                idx = ((vas[inside] - np.uint64(reg.start)) >> np.uint64(12)).astype(
                    np.int64
                )
                out.append((reg, idx, inside))
                left &= ~inside
        if left.any():
            out.append((None, np.zeros(0, dtype=np.int64), left))
        return out

    def _new_bits(
        self, reg: Region, idx: I64Array, old: U8Array, set_b: int, clr_b: int
    ) -> U8Array:
        """(old & ~clr) | set, then static protections (2.6) and protnone (2.4)."""
        new = ((old & ~np.uint8(clr_b)) | np.uint8(set_b)).astype(np.uint8)
        present = (new & BIT_P) != 0
        if reg is self.high:
            # Text NX: the virtual range [_text, _etext) of the high map
            va = reg.vas(idx)
            s = self.m.sym
            text = (va + np.uint64(PAGE_SIZE) > np.uint64(s.text)) & (
                va < np.uint64(s.etext)
            )
            new = np.where(present & text, new & ~np.uint8(BIT_NX), new).astype(
                np.uint8
            )
        if self.kernel_set_to_readonly:
            # Rodata RO: by frame, so for every alias
            pfn = reg.frame_of(idx)
            ro = (pfn >= self.rodata_pfns[0]) & (pfn <= self.rodata_pfns[1])
            new = np.where(present & ro, new & ~np.uint8(BIT_RW), new).astype(np.uint8)
        return np.where(present, new, new & ~np.uint8(BIT_G)).astype(np.uint8)

    def _model(
        self,
        vas: U64Array,
        set_b: int,
        clr_b: int,
        *,
        alias: bool = True,
        force_split: bool = False,
    ) -> tuple[int, _Op]:
        """Apply one CPA call to the flat model; returns (predicted ret, the change)."""
        op = _Op()
        if not set_b and not clr_b and not force_split:
            return 0, op
        # where the call stops: the first unmapped page outside the direct map
        ret = 0
        unmapped = np.zeros(vas.shape, dtype=np.bool_)
        for reg, _, pos in self._locate(vas):
            if reg is None:
                unmapped |= pos
        if unmapped.any():
            stop = int(np.flatnonzero(unmapped)[0])
            vas = vas[:stop]
            ret = -EFAULT
        alias_set = set_b & ~BIT_NX
        alias_clr = clr_b & ~BIT_NX
        s = self.m.sym
        for reg, idx, where in self._locate(vas):
            if reg is None:  # cut off above: the call stops there
                continue
            keep = reg.mapped[idx]  # holes in the direct map are skipped
            idx = idx[keep]
            if not idx.size:
                continue
            old = reg.bits[idx].copy()
            new = self._new_bits(reg, idx, old, set_b, clr_b)
            reg.bits[idx] = new  # before the aliases: one may be this very page
            op.regions.append(reg)
            op.idx.append(idx)
            op.old.append(old)
            op.new.append(new)
            op.pos.append(np.flatnonzero(where)[keep].astype(np.int64))
            if not alias:
                continue
            pfn = reg.frame_of(idx)
            in_dm = (pfn >= 0) & (pfn < self.direct.npages)
            in_dm[in_dm] = self.direct.mapped[pfn[in_dm]]  # pfn_range_is_mapped()
            va = reg.vas(idx)
            in_image = (
                (pfn >= self.pa_text >> 12)
                & (pfn <= (self.pa_brk_2m - 1) >> 12)
                & in_dm
            )
            if reg is self.high:
                in_image &= ~((va >= np.uint64(s.text)) & (va < np.uint64(s.brk_end)))
            d_idx = pfn[in_dm] if reg is not self.direct else pfn[:0]
            h_idx = pfn[in_image] - self.high.frame_base
            h_idx = h_idx[(h_idx >= 0) & (h_idx < self.high.npages)]
            op.alias_touched |= bool(d_idx.size or h_idx.size)
            if not (alias_set or alias_clr or force_split):
                continue  # the alias walk returns at once (but flushes all)
            for areg, a_idx in ((self.direct, d_idx), (self.high, h_idx)):
                if not a_idx.size:
                    continue
                a_old = areg.bits[a_idx].copy()
                a_new = self._new_bits(areg, a_idx, a_old, alias_set, alias_clr)
                areg.bits[a_idx] = a_new
                op.regions.append(areg)
                op.idx.append(a_idx)
                op.old.append(a_old)
                op.new.append(a_new)
                op.pos.append(None)
        return ret, op

    def _actual_bits(self, reg: Region, idx: I64Array) -> U8Array:
        """The tables' bits for some pages of a region (scalar lookups)."""
        out = np.zeros(idx.shape, dtype=np.uint8)
        for k, i in enumerate(idx.tolist()):
            look = self.m.pt.lookup_address(reg.start + i * PAGE_SIZE)
            if look.entry is None or look.entry == 0:
                continue
            e = np.array([look.entry], dtype=np.uint64)
            rw = np.array([look.rw and bool(look.entry & pt._PAGE_RW)])
            nx = np.array([look.nx or bool(look.entry & pt._PAGE_NX)])
            out[k] = entry_bits(e, rw, nx)[0] & ~np.uint8(BIT_US)
        return out

    def _reconcile(
        self, call: str, op: _Op, ret: int, predicted: int, split_failed: bool
    ) -> None:
        """Compare a call's return with the model's and settle a failed call.

        A call that failed part-way (-ENOMEM from a split, or an -EFAULT the model did
        not predict) leaves each page either as before or as intended, and the primary
        pages it changed form a prefix of the call (Linux does not roll back); the flat
        model adopts what the tables show.  So does a call in which a split failed
        without failing the call: cpa_process_alias() ignores the high-map alias's
        return, so those alias pages may stay as they were.
        """
        if ret == predicted and not split_failed:
            return
        if ret != predicted and (ret >= 0 or ret != -ENOMEM):
            self._pending_violations.append(
                Violation("return", 0, predicted, ret, f"{call} returned {ret}")
            )
        if ret >= 0 and not split_failed:
            return
        changed_at: list[int] = []
        unchanged_at: list[int] = []
        cmp_mask = np.uint8(~BIT_US & 0xFF)
        for reg, idx, old, new, pos in zip(
            op.regions, op.idx, op.old, op.new, op.pos, strict=True
        ):
            act = self._actual_bits(reg, idx) & cmp_mask
            is_new = act == new
            is_old = act == old
            differs = new != old
            if pos is not None:
                changed_at += pos[is_new & differs & ~is_old].tolist()
                unchanged_at += pos[is_old & differs].tolist()
            bad = ~(is_new | is_old)
            for i in np.flatnonzero(bad)[:MAX_PER_KIND].tolist():
                self._pending_violations.append(
                    Violation(
                        "permission",
                        reg.start + int(idx[i]) * PAGE_SIZE,
                        f"{describe_bits(int(old[i]))} or {describe_bits(int(new[i]))}",
                        describe_bits(int(act[i])),
                        f"{call} failed ({ret}) and left a page in neither state",
                    )
                )
            reg.bits[idx] = np.where(is_old & ~is_new, old, new)
        if changed_at and unchanged_at and max(changed_at) > min(unchanged_at):
            self._pending_violations.append(
                Violation(
                    "permission",
                    0,
                    "a prefix of the pages changed",
                    f"page {min(unchanged_at)} unchanged before page {max(changed_at)}",
                    f"{call} failed ({ret}) with its changes out of order",
                )
            )

    def _run(
        self,
        call: str,
        vas: U64Array,
        set_mask: int,
        clr_mask: int,
        fn: Callable[[], int],
        *,
        alias: bool = True,
        force_split: bool = False,
        noflush: bool = False,
        array: bool = False,
    ) -> int:
        """Model a call, run it on the machine, reconcile, and note TLB exemptions."""
        self.log.append(call)
        predicted, op = self._model(
            vas,
            mask_bits(set_mask),
            mask_bits(clr_mask),
            alias=alias,
            force_split=force_split,
        )
        gaps = (
            self.linux_flush_gaps and array and vas.size <= self.m.config.flush_ceiling
        )
        before = [self.m.pt.lookup_address(int(a)).level for a in vas] if gaps else []
        flushes = [mmu.stats["tlb_flushes"] for mmu in self.m.mmus]
        failures = self.m.cpa.split_alloc_failures
        ret = fn()
        split_failed = self.m.cpa.split_alloc_failures != failures
        self._reconcile(call, op, ret, predicted, split_failed)
        for reg, idx in zip(op.regions, op.idx, strict=True):
            self._touched.extend(reg.vas(idx[:256]).tolist())
        del self._touched[:-4096]
        clean = [
            mmu.stats["tlb_flushes"] > n
            for mmu, n in zip(self.m.mmus, flushes, strict=True)
        ]
        self._note_stale(
            op, vas, clean, noflush=noflush, levels_before=before if gaps else None
        )
        return ret

    def _note_stale(
        self,
        op: _Op,
        vas: U64Array,
        clean: list[bool],
        *,
        noflush: bool,
        levels_before: list[int] | None,
    ) -> None:
        """Pages whose stale TLB entries are legitimate until the next full flush.

        No access happens inside a call, so a CPU fully flushed during the call
        (``clean``) holds no entry older than the call: nothing is exempt there.
        Elsewhere:

        * ``_noflush`` calls: every page they changed (their caller flushes).
        * With ``linux_flush_gaps`` (2.8, 2.9): when no primary page changed, nothing
          is flushed (``CPA_FLUSHTLB`` is the primary's; ``alias_cpa`` is a copy), so
          the aliases changed stay stale; and in the array modes without an alias
          (which would force a full flush), the end flush covers only
          ``[first, first + numpages)``, so a changed page outside it stays stale,
          unless some page of the call needed a split (a global flush: every older
          entry is gone).
        """
        exempt: list[int] = []
        changed = [
            reg.bits[idx] != old
            for reg, idx, old in zip(op.regions, op.idx, op.old, strict=True)
        ]
        if noflush:
            for reg, idx, ch in zip(op.regions, op.idx, changed, strict=True):
                exempt += reg.vas(idx[ch]).tolist()
        elif self.linux_flush_gaps:
            primary_changed = any(
                bool(ch.any())
                for ch, p in zip(changed, op.pos, strict=True)
                if p is not None
            )
            if not primary_changed:
                for reg, idx, ch in zip(op.regions, op.idx, changed, strict=True):
                    exempt += reg.vas(idx[ch]).tolist()
            elif levels_before is not None and not op.alias_touched:
                exempt += self._array_gap(op, changed, vas, levels_before)
        if not exempt:
            return
        self._sync_flush_marks()
        for pages, was_flushed in zip(self._tlb_exempt, clean, strict=True):
            if not was_flushed:
                pages.update(exempt)

    def _array_gap(
        self, op: _Op, changed: list[BoolArray], vas: U64Array, levels_before: list[int]
    ) -> list[int]:
        """Changed array-mode pages 7.0's ranged end flush misses (2.8)."""
        ch_pos = np.zeros(vas.size, dtype=np.bool_)
        for ch, pos in zip(changed, op.pos, strict=True):
            if pos is not None:
                ch_pos[pos[ch]] = True
        # a page changed while mapped large needs a split (each step of an array
        # call covers one page, never a whole large page): a global flush
        if any(
            ch_pos[j] and lv in (PG_LEVEL_2M, PG_LEVEL_1G)
            for j, lv in enumerate(levels_before)
        ):
            return []
        first = int(vas[0])
        end = first + vas.size * PAGE_SIZE
        return [
            int(vas[k])
            for k in range(vas.size)
            if ch_pos[k] and not first <= int(vas[k]) < end
        ]

    def _sync_flush_marks(self) -> None:
        for i, mmu in enumerate(self.m.mmus):
            self._flush_mark[i] = mmu.stats["tlb_flushes"]

    # ---- the wrapped API ------------------------------------------------------------

    def _range_call(
        self,
        name: str,
        addr: int,
        numpages: int,
        set_mask: int,
        clr_mask: int,
        fn: Callable[[], int],
        **kw: Any,
    ) -> int:
        return self._run(
            f"{name}({addr:#x}, {numpages})",
            self._range_vas(addr, numpages),
            set_mask,
            clr_mask,
            fn,
            **kw,
        )

    def set_memory_ro(self, addr: int, numpages: int) -> int:
        """set_memory_ro() through the model: clear RW (and D)."""
        return self._range_call(
            "set_memory_ro",
            addr,
            numpages,
            0,
            pt._PAGE_RW,
            lambda: self.m.set_memory_ro(addr, numpages),
        )

    def set_memory_rw(self, addr: int, numpages: int) -> int:
        """set_memory_rw() through the model: set RW."""
        return self._range_call(
            "set_memory_rw",
            addr,
            numpages,
            pt._PAGE_RW,
            0,
            lambda: self.m.set_memory_rw(addr, numpages),
        )

    def set_memory_x(self, addr: int, numpages: int) -> int:
        """set_memory_x() through the model: clear NX (never on aliases)."""
        return self._range_call(
            "set_memory_x",
            addr,
            numpages,
            0,
            pt._PAGE_NX,
            lambda: self.m.set_memory_x(addr, numpages),
        )

    def set_memory_nx(self, addr: int, numpages: int) -> int:
        """set_memory_nx() through the model: set NX (never on aliases)."""
        return self._range_call(
            "set_memory_nx",
            addr,
            numpages,
            pt._PAGE_NX,
            0,
            lambda: self.m.set_memory_nx(addr, numpages),
        )

    def set_memory_rox(self, addr: int, numpages: int) -> int:
        """set_memory_rox() through the model: clear RW and NX (collapse: none)."""
        return self._range_call(
            "set_memory_rox",
            addr,
            numpages,
            0,
            pt._PAGE_RW | pt._PAGE_NX,
            lambda: self.m.set_memory_rox(addr, numpages),
        )

    def set_memory_np(self, addr: int, numpages: int) -> int:
        """set_memory_np() through the model: clear P (and so G)."""
        return self._range_call(
            "set_memory_np",
            addr,
            numpages,
            0,
            pt._PAGE_PRESENT,
            lambda: self.m.set_memory_np(addr, numpages),
        )

    def set_memory_np_noalias(self, addr: int, numpages: int) -> int:
        """set_memory_np_noalias() through the model: clear P, aliases untouched."""
        return self._range_call(
            "set_memory_np_noalias",
            addr,
            numpages,
            0,
            pt._PAGE_PRESENT,
            lambda: self.m.set_memory_np_noalias(addr, numpages),
            alias=False,
        )

    def set_memory_p(self, addr: int, numpages: int) -> int:
        """set_memory_p() through the model: set P (G stays lost)."""
        return self._range_call(
            "set_memory_p",
            addr,
            numpages,
            pt._PAGE_PRESENT,
            0,
            lambda: self.m.set_memory_p(addr, numpages),
        )

    def set_memory_4k(self, addr: int, numpages: int) -> int:
        """set_memory_4k() through the model: _PAGE_KERNEL_4K, split (structural)."""
        return self._range_call(
            "set_memory_4k",
            addr,
            numpages,
            pt._PAGE_KERNEL_4K,
            0,
            lambda: self.m.set_memory_4k(addr, numpages),
            force_split=True,
        )

    def set_memory_global(self, addr: int, numpages: int) -> int:
        """set_memory_global() through the model: set G."""
        return self._range_call(
            "set_memory_global",
            addr,
            numpages,
            pt._PAGE_GLOBAL,
            0,
            lambda: self.m.set_memory_global(addr, numpages),
        )

    def set_memory_nonglobal(self, addr: int, numpages: int) -> int:
        """set_memory_nonglobal() through the model: clear G."""
        return self._range_call(
            "set_memory_nonglobal",
            addr,
            numpages,
            0,
            pt._PAGE_GLOBAL,
            lambda: self.m.set_memory_nonglobal(addr, numpages),
        )

    def set_pages_ro(self, pfn: int, numpages: int) -> int:
        """set_pages_ro(): set_memory_ro on the direct-map address of ``pfn``."""
        return self._run(
            f"set_pages_ro({pfn:#x}, {numpages})",
            self._range_vas(self.m.va(pfn << 12), numpages),
            0,
            pt._PAGE_RW,
            lambda: self.m.set_pages_ro(pfn, numpages),
        )

    def set_pages_rw(self, pfn: int, numpages: int) -> int:
        """set_pages_rw(): set_memory_rw on the direct-map address of ``pfn``."""
        return self._run(
            f"set_pages_rw({pfn:#x}, {numpages})",
            self._range_vas(self.m.va(pfn << 12), numpages),
            pt._PAGE_RW,
            0,
            lambda: self.m.set_pages_rw(pfn, numpages),
        )

    def set_direct_map_invalid_noflush(self, pfn: int) -> int:
        """set_direct_map_invalid_noflush(): clear P and RW of one page.

        No alias, no flush: its TLB entries stay legitimately stale until a full flush.
        """
        return self._run(
            f"set_direct_map_invalid_noflush({pfn:#x})",
            self._range_vas(self.m.va(pfn << 12), 1),
            0,
            pt._PAGE_PRESENT | pt._PAGE_RW,
            lambda: self.m.set_direct_map_invalid_noflush(pfn),
            alias=False,
            noflush=True,
        )

    def set_direct_map_default_noflush(self, pfn: int) -> int:
        """set_direct_map_default_noflush(): set P and RW of one page; no flush."""
        return self._run(
            f"set_direct_map_default_noflush({pfn:#x})",
            self._range_vas(self.m.va(pfn << 12), 1),
            pt._PAGE_PRESENT | pt._PAGE_RW,
            0,
            lambda: self.m.set_direct_map_default_noflush(pfn),
            alias=False,
            noflush=True,
        )

    def set_direct_map_valid_noflush(self, pfn: int, nr: int, valid: bool) -> int:
        """set_direct_map_valid_noflush(): one of the two above over ``nr`` pages."""
        set_m = pt._PAGE_PRESENT | pt._PAGE_RW if valid else 0
        clr_m = 0 if valid else pt._PAGE_PRESENT | pt._PAGE_RW
        return self._run(
            f"set_direct_map_valid_noflush({pfn:#x}, {nr}, {valid})",
            self._range_vas(self.m.va(pfn << 12), nr),
            set_m,
            clr_m,
            lambda: self.m.set_direct_map_valid_noflush(pfn, nr, valid),
            alias=False,
            noflush=True,
        )

    def _addr_vas(
        self, addr: int | Sequence[int], numpages: int, array: bool
    ) -> U64Array:
        if array:
            if isinstance(addr, int):
                raise TypeError("array mode needs a sequence of addresses")
            vals = [int(a) & ~(PAGE_SIZE - 1) for a in list(addr)[:numpages]]
            return np.array(vals, dtype=np.uint64)
        if not isinstance(addr, int):
            addr = int(next(iter(addr)))
        return self._range_vas(addr, numpages)

    def change_page_attr_set(
        self, addr: int | Sequence[int], numpages: int, mask: int, array: bool = False
    ) -> int:
        """change_page_attr_set() (CPA_ARRAY with ``array``) through the model."""
        vas = self._addr_vas(addr, numpages, array)
        return self._run(
            f"change_page_attr_set({_fmt_addrs(vas, array)}, {numpages}, "
            f"{mask:#x}, array={array})",
            vas,
            mask,
            0,
            lambda: self.m.change_page_attr_set(addr, numpages, mask, array),
            array=array,
        )

    def change_page_attr_clear(
        self, addr: int | Sequence[int], numpages: int, mask: int, array: bool = False
    ) -> int:
        """change_page_attr_clear() (CPA_ARRAY with ``array``) through the model."""
        vas = self._addr_vas(addr, numpages, array)
        return self._run(
            f"change_page_attr_clear({_fmt_addrs(vas, array)}, "
            f"{numpages}, {mask:#x}, array={array})",
            vas,
            0,
            mask,
            lambda: self.m.change_page_attr_clear(addr, numpages, mask, array),
            array=array,
        )

    def change_page_attr_set_pages(
        self, pages: Sequence[int], mask_set: int, mask_clr: int = 0
    ) -> int:
        """change_page_attr_set_clr() in CPA_PAGES_ARRAY mode through the model."""
        vas = np.array([self.m.va(int(p) << 12) for p in pages], dtype=np.uint64)
        return self._run(
            f"change_page_attr_set_pages({[hex(int(p)) for p in pages]}, "
            f"{mask_set:#x}, {mask_clr:#x})",
            vas,
            mask_set,
            mask_clr,
            lambda: self.m.change_page_attr_set_pages(pages, mask_set, mask_clr),
            array=True,
        )

    def vmalloc(self, size: int, *, huge: bool = False, module: bool = False) -> VmArea:
        """vmalloc() on the machine; the flat model learns the new area."""
        area = self.m.vmalloc.vmalloc(size, huge=huge, module=module)
        self.log.append(
            f"vmalloc({size:#x}, huge={huge}, module={module}) = {area.addr:#x}"
        )
        self._add_area(area)
        return area

    def vfree(self, addr: int) -> None:
        """vfree() on the machine; the area leaves the flat model.

        The direct-map aliases keep what the calls gave them: vfree does not reset
        them (no VM_FLUSH_RESET_PERMS).
        """
        self.log.append(f"vfree({addr:#x})")
        self.m.vmalloc.vfree(addr)
        self.areas.pop(addr, None)
        if addr in self._area_starts:
            self._area_starts.remove(addr)

    # ---- walking the tables ---------------------------------------------------------

    def _walk(self) -> _Leaves:
        """Every leaf of the kernel tables with effective rights.

        Vectorised per table page; the tables are read raw (nothing is written).
        """
        t = self.m.pt
        top = t.top_level
        va_bits = 57 if t.la57 else 48
        sign = np.uint64(((1 << 64) - 1) ^ ((1 << va_bits) - 1))
        out_va: list[U64Array] = []
        out_lv: list[npt.NDArray[np.int8]] = []
        out_e: list[U64Array] = []
        out_rw: list[BoolArray] = []
        out_nx: list[BoolArray] = []
        out_us: list[BoolArray] = []
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[int, int, int, bool, bool, bool]] = [
            (t.pgd, top, 0, True, False, True)
        ]
        while stack:
            table, level, base, urw, unx, uus = stack.pop()
            if (table, level) in seen:
                continue
            seen.add((table, level))
            ents = t.read_table(table)
            nz = np.flatnonzero(ents)
            if not nz.size:
                continue
            e = ents[nz].astype(np.uint64)
            shift = np.uint64(LEVEL_SHIFT[level])
            va = np.uint64(base) + (nz.astype(np.uint64) << shift)
            if level == top:
                va = np.where(nz >= 256, va | sign, va).astype(np.uint64)
            present = (e & np.uint64(pt._PAGE_PRESENT)) != 0
            if level == PG_LEVEL_4K:
                leaf = np.ones(e.shape, dtype=np.bool_)
            elif level <= PG_LEVEL_1G:
                leaf = ~present | ((e & np.uint64(pt._PAGE_PSE)) != 0)
            else:
                leaf = ~present
            rw = ((e & np.uint64(pt._PAGE_RW)) != 0) & urw
            nx = ((e & np.uint64(pt._PAGE_NX)) != 0) | unx
            us = ((e & np.uint64(pt._PAGE_USER)) != 0) & uus
            if leaf.any():
                out_va.append(va[leaf])
                out_lv.append(np.full(int(leaf.sum()), level, dtype=np.int8))
                out_e.append(e[leaf])
                out_rw.append(rw[leaf])
                out_nx.append(nx[leaf])
                out_us.append(us[leaf])
            for k in np.flatnonzero(~leaf).tolist():
                stack.append(
                    (
                        int(e[k]) & pt.PTE_PFN_MASK,
                        level - 1,
                        int(va[k]),
                        bool(rw[k]),
                        bool(nx[k]),
                        bool(us[k]),
                    )
                )
        if not out_va:
            z64 = np.zeros(0, dtype=np.uint64)
            zi = np.zeros(0, dtype=np.int64)
            return _Leaves(
                z64, z64, zi, np.zeros(0, np.int8), z64, zi, np.zeros(0, np.uint8)
            )
        va_a = np.concatenate(out_va)
        order = np.argsort(va_a, kind="stable")
        va_a = va_a[order]
        lv = np.concatenate(out_lv)[order]
        ent = np.concatenate(out_e)[order]
        rw_a = np.concatenate(out_rw)[order]
        nx_a = np.concatenate(out_nx)[order]
        us_a = np.concatenate(out_us)[order]
        shifts = np.array([0, 12, 21, 30, 39, 48], dtype=np.int64)[lv]
        npages = (np.int64(1) << (shifts - 12)).astype(np.int64)
        last = va_a + ((npages.astype(np.uint64) << np.uint64(12)) - np.uint64(1))
        pfn = ((ent & np.uint64(pt.PTE_PFN_MASK)) >> np.uint64(12)).astype(np.int64)
        frame0 = pfn & ~(npages - 1)  # drops _PAGE_PAT_LARGE on 2M/1G leaves
        bits = entry_bits(ent, rw_a, nx_a, us_a)
        return _Leaves(va_a, last, npages, lv, ent, frame0, bits)

    def _space_leaves(self, leaves: _Leaves, start: int, end: int) -> BoolArray:
        return (leaves.va >= np.uint64(start)) & (leaves.va < np.uint64(end))

    def _recount(self, leaves: _Leaves) -> list[int]:
        """Direct-map leaves per PG_LEVEL_* (non-present non-zero entries count)."""
        lay = self.m.layout
        inside = self._space_leaves(leaves, lay.page_offset, lay.vmalloc_start)
        out = [0] * 6
        for level in (PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G):
            out[level] = int(np.count_nonzero(inside & (leaves.level == level)))
        return out

    def _highmap_adjust(self, leaves: _Leaves) -> list[int]:
        """The high-map quirk of 1.7, per PG_LEVEL_*.

        Each high-map 2M leaf split (relative to the 2M-only high map head_64.S
        builds) moved 1 page from DirectMap2M to 512 in DirectMap4k, unless
        DirectMap2M was empty (debug_pagealloc), when split_page_count() changes
        nothing.
        """
        inside = self._space_leaves(leaves, self.high.start, self.high.end)
        n2m = int(np.count_nonzero(inside & (leaves.level == PG_LEVEL_2M)))
        split = self.high.npages // PTRS_PER_TABLE - n2m
        adj = [0] * 6
        if self.m.direct.direct_pages_count[PG_LEVEL_2M] or split < 0:
            adj[PG_LEVEL_2M] = -split
            adj[PG_LEVEL_4K] = PTRS_PER_TABLE * split
        return adj

    # ---- the checks -----------------------------------------------------------------

    def check(
        self,
        *,
        tlb: bool = False,
        sample: int | Literal["default"] | None = "default",
        mmu: bool = True,
        wx: bool = True,
    ) -> list[Violation]:
        """Check every invariant; see the module docstring.

        Args:
            tlb: also check TLB coherence (only meaningful after an operation that
                flushes; pages changed by ``_noflush`` calls since each CPU's last full
                flush are exempt).
            sample: pages per region read through each MMU (None: all; default: the
                validator's ``sample``); pages changed since the last check are
                always read.
            mmu: read pages through the MMUs at all.
            wx: report W+X pages.

        Returns:
            The violations, grouped into runs; empty when everything holds.
        """
        out: list[Violation] = list(self._pending_violations)
        self._pending_violations.clear()
        leaves = self._walk()
        if tlb:  # before the MMU reads below refill the TLBs
            out += self._check_tlb(leaves)
        out += self._check_mappings(leaves)
        out += self._check_counts(leaves)
        out += self._check_tables()
        if mmu:
            out += self._check_mmus(self.sample if sample == "default" else sample)
        if wx:
            out += self._check_wx(leaves)
        self._touched.clear()
        return _cap(out)

    def wx_pages(self) -> int:
        """W+X pages as ptdump's check counts them."""
        leaves = self._walk()
        return int(leaves.npages[self._wx_mask(leaves)].sum())

    def expected_wx_pages(self) -> int:
        """W+X pages the flat model intends (calls can legitimately make some)."""
        return sum(
            int(np.count_nonzero(((r.bits & (BIT_RW | BIT_NX)) == BIT_RW) & r.mapped))
            for r in self.regions()
        )

    def wx_message(self) -> str:
        """Linux's W+X check line for the machine as it is."""
        return wx_message(self.wx_pages())

    @staticmethod
    def _wx_mask(leaves: _Leaves) -> BoolArray:
        mask: BoolArray = (leaves.bits & (BIT_RW | BIT_NX)) == BIT_RW
        return mask

    def _check_wx(self, leaves: _Leaves) -> list[Violation]:
        mask = self._wx_mask(leaves)
        total = int(leaves.npages[mask].sum())
        if not total:
            return []
        out: list[Violation] = []
        for i in np.flatnonzero(mask).tolist():
            out.append(
                Violation(
                    "wx",
                    int(leaves.va[i]),
                    "not W+X",
                    describe_bits(int(leaves.bits[i])),
                    f"{int(leaves.npages[i])} W+X pages; {wx_message(total)}",
                )
            )
        return out

    def _check_mappings(self, leaves: _Leaves) -> list[Violation]:
        out: list[Violation] = []
        for reg in self.regions():
            act = leaves.bits_over(reg.start, reg.npages)
            covered = (act & COVERED) != 0
            bits = act & np.uint8(~COVERED & 0xFF)
            m = reg.mapped
            out += _runs(
                "translation",
                reg,
                m & ~covered,
                "mapped",
                "unmapped",
                f"{reg.name}: page not mapped",
            )
            out += _runs(
                "translation",
                reg,
                ~m & covered,
                "unmapped (hole)",
                "mapped",
                f"{reg.name}: a hole is mapped",
            )
            badb = m & covered & (bits != reg.bits)
            out += _runs(
                "permission",
                reg,
                badb,
                reg.bits,
                bits,
                f"{reg.name}: wrong permissions",
                bitsval=True,
            )
            if reg.frames is None:  # frame = frame_base + index: check leaf by leaf
                lo, hi, p0, skip, cnt = leaves.overlap(reg.start, reg.npages)
                want = reg.frame_base + p0
                have = leaves.frame0[lo:hi] + skip
                for k in np.flatnonzero((have != want) & (cnt > 0)).tolist():
                    out.append(
                        Violation(
                            "translation",
                            reg.start + int(p0[k]) * PAGE_SIZE,
                            hex(int(want[k]) << 12),
                            hex(int(have[k]) << 12),
                            f"{reg.name}: wrong frame ({int(cnt[k])} pages)",
                        )
                    )
            else:
                cov, frame, _ = leaves.expand(reg.start, reg.npages)
                badf = m & cov & (frame != reg.frames)
                out += _runs(
                    "translation",
                    reg,
                    badf,
                    reg.frames,
                    frame,
                    f"{reg.name}: wrong frame",
                    hexval=True,
                )
        # leaves in the model's address spaces that no region explains
        lay = self.m.layout
        spaces = [
            (lay.page_offset, lay.vmalloc_start),
            (lay.vmalloc_start, lay.vmalloc_end + 1),
            (lay.modules_vaddr, lay.modules_end),
            (lay.start_kernel_map, lay.start_kernel_map + lay.kernel_image_size),
            (0, 1 << 47),
        ]
        watched = np.zeros(leaves.va.shape, dtype=np.bool_)
        for s, e in spaces:
            watched |= self._space_leaves(leaves, s, e)
        for reg in self.regions():
            watched &= ~(
                (leaves.va >= np.uint64(reg.start)) & (leaves.last < np.uint64(reg.end))
            )
        for i in np.flatnonzero(watched)[: MAX_PER_KIND + 1].tolist():
            out.append(
                Violation(
                    "translation",
                    int(leaves.va[i]),
                    "no mapping",
                    hex(int(leaves.entry[i])),
                    f"unexpected mapping of {int(leaves.npages[i])} pages",
                )
            )
        return out

    def _check_counts(self, leaves: _Leaves) -> list[Violation]:
        m = self.m
        recount = self._recount(leaves)
        adj = self._highmap_adjust(leaves)
        out: list[Violation] = []
        names = {PG_LEVEL_4K: "4k", PG_LEVEL_2M: "2M", PG_LEVEL_1G: "1G"}
        for level in (PG_LEVEL_4K, PG_LEVEL_2M, PG_LEVEL_1G):
            want = recount[level] + self.count_baseline[level] + adj[level]
            have = m.direct.direct_pages_count[level]
            if want != have:
                out.append(
                    Violation(
                        "count",
                        level,
                        want,
                        have,
                        f"direct_pages_count[PG_LEVEL_{names[level].upper()}]: recount "
                        f"{recount[level]} + boot excess "
                        f"{self.count_baseline[level]} + high-map splits "
                        f"{adj[level]} (DirectMap{names[level]})",
                    )
                )
        return out

    def _check_tables(self) -> list[Violation]:
        t = self.m.pt
        alloc = self.m.page_alloc
        refs = t.table_refs()
        tables = set(t.tables)
        out: list[Violation] = []
        for pa, n in sorted(refs.items()):
            if n != 1:
                out.append(
                    Violation(
                        "table", pa, 1, n, "page-table page referenced more than once"
                    )
                )
            if pa not in tables:
                out.append(
                    Violation(
                        "table",
                        pa,
                        "a table page",
                        "not a table page",
                        "an entry points to a page that is not a table",
                    )
                )
            if alloc.allocated_order(pa >> 12) is None:
                out.append(
                    Violation(
                        "table",
                        pa,
                        "allocated",
                        "free" if alloc.is_free(pa >> 12) else "not a buddy allocation",
                        "a referenced page-table page is not allocated",
                    )
                )
        for pa in sorted(tables - set(refs)):
            out.append(
                Violation(
                    "table",
                    pa,
                    "referenced",
                    "unreferenced",
                    "page-table page leaked (no entry points to it)",
                )
            )
        area_pages = {
            p
            for reg in self.areas.values()
            if reg.frames is not None
            for p in reg.frames.tolist()
        }
        for pa in sorted(self._prev_tables - tables):
            pfn = pa >> 12
            if alloc.is_free(pfn) or pfn in area_pages:
                continue
            out.append(
                Violation(
                    "table",
                    pa,
                    "free",
                    "allocated",
                    "freed page-table page not back in the allocator",
                )
            )
        for pa in sorted(tables):
            if pa >> 12 in area_pages:
                out.append(
                    Violation(
                        "table",
                        pa,
                        "a table page only",
                        "also a vmalloc page",
                        "page-table page in use as data",
                    )
                )
        self._prev_tables = tables
        return out

    def _sample_idx(self, reg: Region, n: int | None) -> I64Array:
        present = reg.mapped & ((reg.bits & BIT_P) != 0)
        if n is not None and int(np.count_nonzero(present)) > n:
            chosen = np.zeros(reg.npages, dtype=np.bool_)
            chosen[self._rng.choice(np.flatnonzero(present), size=n, replace=False)] = (
                True
            )
            touched = np.array(
                [
                    (va - reg.start) >> 12
                    for va in self._touched
                    if reg.start <= va < reg.end
                ],
                dtype=np.int64,
            )
            chosen[touched] = True
            present &= chosen
        return np.flatnonzero(present).astype(np.int64)

    def _check_mmus(self, n: int | None) -> list[Violation]:
        out: list[Violation] = []
        for reg in self.regions():
            idx = self._sample_idx(reg, n)
            if not idx.size:
                continue
            offset = np.uint64(0x88)
            vas = (
                np.uint64(reg.start) + (idx.astype(np.uint64) << np.uint64(12)) + offset
            ).astype(np.uint64)
            want = (reg.frame_of(idx).astype(np.uint64) << np.uint64(12)) + offset
            for cpu, mmu in enumerate(self.m.mmus):
                for lo in range(0, vas.size, 1 << 20):
                    v = vas[lo : lo + (1 << 20)]
                    res = np.zeros(v.size, dtype=MMU_RESULT_DTYPE)
                    mmu.run(v, "r", out=res)
                    w = want[lo : lo + (1 << 20)]
                    fault = res["vector"] != 0
                    wrong = ~fault & (res["pa"] != w)
                    for i in np.flatnonzero(fault)[:MAX_PER_KIND].tolist():
                        out.append(
                            Violation(
                                "translation",
                                int(v[i]) - 0x88,
                                hex(int(w[i])),
                                f"#PF error {int(res['error_code'][i]):#x}",
                                f"{reg.name}: CPU {cpu} cannot read an intended page",
                            )
                        )
                    for i in np.flatnonzero(wrong)[:MAX_PER_KIND].tolist():
                        out.append(
                            Violation(
                                "translation",
                                int(v[i]) - 0x88,
                                hex(int(w[i])),
                                hex(int(res["pa"][i])),
                                f"{reg.name}: CPU {cpu} translates to the wrong frame",
                            )
                        )
        return out

    def _check_tlb(self, leaves: _Leaves) -> list[Violation]:
        out: list[Violation] = []
        for cpu, mmu in enumerate(self.m.mmus):
            if mmu.stats["tlb_flushes"] > self._flush_mark[cpu]:
                self._tlb_exempt[cpu].clear()
            exempt = self._tlb_exempt[cpu]
            ents = mmu.tlb_entries()
            if ents:
                out += self._check_tlb_cpu(cpu, ents, leaves, exempt)
            out += self._check_psc(cpu, mmu.psc_entries())
        return out

    def _check_tlb_cpu(
        self, cpu: int, ents: list[Any], leaves: _Leaves, exempt: set[int]
    ) -> list[Violation]:
        out: list[Violation] = []
        ex = np.sort(np.fromiter(exempt, dtype=np.uint64, count=len(exempt)))
        va = np.array([e.va for e in ents], dtype=np.uint64)
        pa = np.array([e.pa for e in ents], dtype=np.uint64)
        size = np.array([e.page_size for e in ents], dtype=np.uint64)
        rw = np.array([e.rw for e in ents], dtype=np.bool_)
        xd = np.array([e.xd for e in ents], dtype=np.bool_)
        us = np.array([e.us for e in ents], dtype=np.bool_)
        last = va + (size - np.uint64(1))
        n_ex = np.searchsorted(ex, last, side="right") - np.searchsorted(
            ex, va, side="left"
        )
        i, ok = leaves.find(va)
        small = size == np.uint64(PAGE_SIZE)
        # fast path: one leaf maps the whole entry (or a 4K entry), no exempt page
        fast = (small | (ok & (leaves.last[i] >= last))) & (n_ex == 0)
        frame = leaves.frame0[i] + ((va - leaves.va[i]) >> np.uint64(12)).astype(
            np.int64
        )
        bits = np.where(ok, leaves.bits[i], 0).astype(np.uint8)
        present = ok & ((bits & BIT_P) != 0)
        checks = (
            (
                fast & ~present,
                "present",
                "not present",
                "TLB entry for a page the tables do not map",
            ),
            (
                fast & present & (frame != (pa >> np.uint64(12)).astype(np.int64)),
                "frame",
                "other frame",
                "TLB entry maps another frame than the tables",
            ),
            (
                fast & present & rw & ((bits & BIT_RW) == 0),
                "read-only",
                "writable",
                "stale TLB entry grants write",
            ),
            (
                fast & present & ~xd & ((bits & BIT_NX) != 0),
                "NX",
                "executable",
                "stale TLB entry grants execute",
            ),
            (
                fast & present & us & ((bits & BIT_US) == 0),
                "supervisor",
                "user",
                "stale TLB entry grants user access",
            ),
        )
        for mask, exp, act, msg in checks:
            for j in np.flatnonzero(mask)[:MAX_PER_KIND].tolist():
                e = ents[j]
                out.append(
                    Violation(
                        "tlb",
                        e.va,
                        exp,
                        act,
                        f"CPU {cpu} {e.array} {e.page_size >> 10}K entry: {msg}",
                    )
                )
        # slow path: large entries over split tables or with exempt pages
        for k in np.flatnonzero(~fast & ~small).tolist():
            e = ents[k]
            npg = e.page_size >> 12
            covered, frame_b, bits_b = leaves.expand(e.va, npg)
            pages = np.uint64(e.va) + np.arange(npg, dtype=np.uint64) * np.uint64(
                PAGE_SIZE
            )
            live_b = ~np.isin(pages, ex) if ex.size else np.ones(npg, dtype=np.bool_)
            present_b = covered & ((bits_b & BIT_P) != 0)
            want_frame = (e.pa >> 12) + np.arange(npg, dtype=np.int64)
            problems = (
                (
                    live_b & ~present_b,
                    "present",
                    "not present",
                    "TLB entry for a page the tables do not map",
                ),
                (
                    live_b & present_b & (frame_b != want_frame),
                    "frame",
                    "other frame",
                    "TLB entry maps another frame than the tables",
                ),
                (
                    live_b & present_b & ((bits_b & BIT_RW) == 0) if e.rw else None,
                    "read-only",
                    "writable",
                    "stale TLB entry grants write",
                ),
                (
                    live_b & present_b & ((bits_b & BIT_NX) != 0) if not e.xd else None,
                    "NX",
                    "executable",
                    "stale TLB entry grants execute",
                ),
                (
                    live_b & present_b & ((bits_b & BIT_US) == 0) if e.us else None,
                    "supervisor",
                    "user",
                    "stale TLB entry grants user access",
                ),
            )
            for mask_b, exp, act, msg in problems:
                if mask_b is None or not mask_b.any():
                    continue
                first = int(np.flatnonzero(mask_b)[0])
                out.append(
                    Violation(
                        "tlb",
                        int(pages[first]),
                        exp,
                        act,
                        f"CPU {cpu} {e.array} {e.page_size >> 10}K entry at {e.va:#x}: "
                        f"{msg} ({int(mask_b.sum())} pages)",
                    )
                )
        out += self._check_two_sizes(cpu, ents)
        return out

    @staticmethod
    def _check_two_sizes(cpu: int, ents: list[Any]) -> list[Violation]:
        """No address cached with two page sizes of different attributes (2.7/9)."""
        out: list[Violation] = []
        va = np.array([e.va for e in ents], dtype=np.uint64)
        size = np.array([e.page_size for e in ents], dtype=np.uint64)
        order = np.argsort(va, kind="stable")
        sva = va[order]
        for j in np.flatnonzero(size > PAGE_SIZE).tolist():
            big = ents[j]
            lo = int(np.searchsorted(sva, np.uint64(big.va), side="left"))
            hi = int(
                np.searchsorted(
                    sva, np.uint64(big.va + big.page_size - 1), side="right"
                )
            )
            for k in order[lo:hi].tolist():
                small = ents[k]
                if k == j or small.page_size == big.page_size:
                    continue
                same = (
                    small.rw == big.rw
                    and small.xd == big.xd
                    and small.us == big.us
                    and small.pkey == big.pkey
                    and small.pa - big.pa == small.va - big.va
                )
                if not same:
                    out.append(
                        Violation(
                            "tlb",
                            small.va,
                            _attrs(big, small.va),
                            _attrs(small, small.va),
                            f"CPU {cpu}: {big.page_size >> 10}K entry ({big.array}) "
                            f"and {small.page_size >> 10}K entry ({small.array}) "
                            "with different attributes",
                        )
                    )
                    break
        return out

    def _check_psc(self, cpu: int, entries: list[Any]) -> list[Violation]:
        """Paging-structure-cache entries must point to the tables in use.

        Only the levels CPA rewrites (PMD and PUD: splits and collapses) are checked.
        PML4/PML5 entries are
        never rewritten by the kernel model, and emu reports their addresses wrongly
        (their tags pack the level into 2 bits), so they are not checked.
        """
        out: list[Violation] = []
        below = {"PSC-PD": PG_LEVEL_4K, "PSC-PDPT": PG_LEVEL_2M}
        for e in entries:
            level = below.get(e.array)
            if level is None:
                continue
            table = self.m.pt.table_of(e.va, level)
            if table != e.pa:
                out.append(
                    Violation(
                        "tlb",
                        e.va,
                        hex(table) if table is not None else "no table",
                        hex(e.pa),
                        f"CPU {cpu}: stale {e.array} entry (a freed or replaced "
                        "page-table page)",
                    )
                )
        return out


def validate_command(
    machine: Machine,
    *,
    cpa_selftest: bool = False,
    seed: int = 0,
    sample: int | None = None,
) -> tuple[str, bool]:
    """What ``mmulab validate [--cpa-test] [--seed N]`` prints, and whether it passed.

    Args:
        machine: a machine right after boot.
        cpa_selftest: also run the CPA self-test (kernel_model.cpa_test).
        seed: the self-test's seed.
        sample: pages per region read through each MMU (None: every page).

    Returns:
        The text (Linux's W+X line, the violations, the self-test's lines) and the
        verdict.
    """
    v = Validator(machine, sample=sample)
    vs = v.check(tlb=True)
    lines = [v.wx_message(), f"validator: {len(vs)} violations"]
    lines += [str(x) for x in vs]
    passed = not vs
    if cpa_selftest:
        from kernel_model import cpa_test  # here: cpa_test imports this module

        res = cpa_test.run(v, seed=seed)
        lines += res.lines
        lines += [f"mmulab: {x}" for x in res.extra]
        lines.append(f"validator after the self-test: {len(res.violations)} violations")
        lines += [str(x) for x in res.violations]
        passed = passed and res.passed
    return "".join(f"{line}\n" for line in lines), passed


# ---- helpers -----------------------------------------------------------------------


def _fmt_addrs(vas: U64Array, array: bool) -> str:
    if not array:
        return hex(int(vas[0])) if vas.size else "0x0"
    return "[" + ", ".join(hex(int(a)) for a in vas.tolist()) + "]"


def _attrs(e: Any, va: int) -> str:
    pa = e.pa + (va - e.va)
    rights = (
        ("RW" if e.rw else "RO") + (" NX" if e.xd else " X") + (" U" if e.us else "")
    )
    return f"{e.page_size >> 10}K {rights} pa {pa:#x}"


def _runs(
    kind: str,
    reg: Region,
    mask: BoolArray,
    expected: Any,
    actual: Any,
    message: str,
    *,
    hexval: bool = False,
    bitsval: bool = False,
) -> list[Violation]:
    """One violation per run of consecutive pages with the same expected/actual."""
    where = np.flatnonzero(mask)
    if not where.size:
        return []

    def val(x: Any, i: int) -> object:
        if isinstance(x, np.ndarray):
            v = int(x[i])
            if bitsval:
                return describe_bits(v)
            return hex(v << 12) if hexval and v >= 0 else v
        return x

    def key(i: int) -> tuple[object, object]:
        e = expected[i] if isinstance(expected, np.ndarray) else expected
        a = actual[i] if isinstance(actual, np.ndarray) else actual
        if hexval:  # frames: a run keeps a constant offset
            return (int(e) - i, int(a) - i)
        return (
            int(e) if isinstance(e, np.generic) else e,
            int(a) if isinstance(a, np.generic) else a,
        )

    out: list[Violation] = []
    start = prev = int(where[0])
    for i in [*where[1:].tolist(), None]:
        if i is not None and i == prev + 1 and key(i) == key(start):
            prev = i
            continue
        n = prev - start + 1
        out.append(
            Violation(
                kind,
                reg.start + start * PAGE_SIZE,
                val(expected, start),
                val(actual, start),
                f"{message} ({n} pages)",
            )
        )
        if len(out) > MAX_PER_KIND or i is None:
            break
        start = prev = i
    return out


def _cap(violations: Iterable[Violation]) -> list[Violation]:
    """At most MAX_PER_KIND violations of each kind, then one summary line."""
    out: list[Violation] = []
    counts: dict[str, int] = {}
    for v in violations:
        counts[v.kind] = counts.get(v.kind, 0) + 1
        if counts[v.kind] <= MAX_PER_KIND:
            out.append(v)
    for kind, n in counts.items():
        if n > MAX_PER_KIND:
            out.append(
                Violation(
                    kind,
                    0,
                    0,
                    n - MAX_PER_KIND,
                    f"... and {n - MAX_PER_KIND} more {kind} violations",
                )
            )
    return out
