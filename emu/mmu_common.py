"""What the C MMU wrapper (emu.mmu) and the reference (emu.ref.mmu) share.

Counter names (after perf events where one exists, formats.md 3.4), the per-access
result layout, and the records both return.  Pure Python, so ``emu.ref`` imports it
without the compiled core; ``emu.mmu`` checks RESULT_DTYPE against the C struct.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emu import arch

#: Per-access results: the layout of C's ``emu_mmu_result``.
RESULT_DTYPE = np.dtype(
    [
        ("pa", np.uint64),
        ("page_size", np.uint32),
        ("error_code", np.uint32),
        ("vector", np.uint8),
        ("hit", np.uint8),
        ("crossed", np.uint8),
        ("reserved0", np.uint8),
        ("cycles", np.uint32),
    ]
)

HIT_FAULT, HIT_L1, HIT_L2, HIT_WALK = 0, 1, 2, 3
HIT_NAMES = {HIT_FAULT: "fault", HIT_L1: "L1", HIT_L2: "L2", HIT_WALK: "walk"}

LEVEL_KEYS = {
    arch.LVL_PML5: "pml5",
    arch.LVL_PML4: "pml4",
    arch.LVL_PDPT: "pdpt",
    arch.LVL_PD: "pd",
    arch.LVL_PT: "pt",
}

#: control bits an MMU exposes as properties
CONTROL_FIELDS = (
    "cr0_wp",
    "cr4_pge",
    "cr4_pcide",
    "cr4_smep",
    "cr4_smap",
    "cr4_la57",
    "cr4_pke",
    "efer_nxe",
    "rflags_ac",
)

#: C counter field (``emu_mmu_stats``) -> reported name
STAT_NAMES_BY_FIELD = {
    "loads": "dTLB-loads",
    "load_l1_miss": "dTLB-load-misses",
    "load_l2_hit": "dtlb_load_misses.stlb_hit",
    "load_walks": "dtlb_load_misses.miss_causes_a_walk",
    "load_walk_4k": "dtlb_load_misses.walk_completed_4k",
    "load_walk_2m": "dtlb_load_misses.walk_completed_2m_4m",
    "load_walk_1g": "dtlb_load_misses.walk_completed_1g",
    "stores": "dTLB-stores",
    "store_l1_miss": "dTLB-store-misses",
    "store_l2_hit": "dtlb_store_misses.stlb_hit",
    "store_walks": "dtlb_store_misses.miss_causes_a_walk",
    "store_walk_4k": "dtlb_store_misses.walk_completed_4k",
    "store_walk_2m": "dtlb_store_misses.walk_completed_2m_4m",
    "store_walk_1g": "dtlb_store_misses.walk_completed_1g",
    "fetches": "iTLB-loads",
    "fetch_l1_miss": "iTLB-load-misses",
    "fetch_l2_hit": "itlb_misses.stlb_hit",
    "fetch_walks": "itlb_misses.miss_causes_a_walk",
    "fetch_walk_4k": "itlb_misses.walk_completed_4k",
    "fetch_walk_2m": "itlb_misses.walk_completed_2m_4m",
    "fetch_walk_1g": "itlb_misses.walk_completed_1g",
    "psc_misses": "psc_miss",
    "pte_cache_hits": "walk_ref.line_hit",
    "pte_cache_misses": "walk_ref.line_miss",
    "dirty_walks": "dirty_bit_walks",
    "page_faults": "page_faults",
    "gp_faults": "gp_faults",
    "crossings": "page_crossings",
    "cycles": "translation_cycles",
    "walk_cycles": "walk_cycles",
    "invlpg": "invlpg",
    "cr3_writes": "cr3_writes",
    "invpcid": "invpcid",
    "flushes": "tlb_flushes",
    "entries_flushed": "tlb_entries_flushed",
}


@dataclass(frozen=True)
class Translation:
    """A successful translation.

    Attributes:
        pa: physical address.
        page_size: size of the TLB entry or leaf used.
        level_hit: ``"L1"``, ``"L2"`` or ``"walk"``.
        cycles: estimated translation cycles.
    """

    pa: int
    page_size: int
    level_hit: str
    cycles: int = 0


@dataclass(frozen=True)
class TLBEntry:
    """A cached translation (``MMU.tlb_entries``) or PSC entry (``MMU.psc_entries``).

    Attributes:
        array: name of the TLB array (``"PSC-PD"`` etc. for PSC entries).
        va: page (or region) base.
        pa: frame base (next table for a PSC entry).
        page_size: bytes covered.
        orig_page_size: size of the leaf it came from (larger when fractured).
        pcid: PCID tag.
        rw, us, xd: combined rights.
        pkey: protection key.
        glob: global entry.
        dirty: cached D.
    """

    array: str
    va: int
    pa: int
    page_size: int
    orig_page_size: int
    pcid: int
    rw: bool
    us: bool
    xd: bool
    pkey: int
    glob: bool
    dirty: bool
