"""Counter names of the MMU model, shared by the C wrapper and the reference.

Named after perf events where one exists (formats.md 3.4); pure Python, so ``emu.ref``
imports it without the compiled core.
"""

from __future__ import annotations

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
