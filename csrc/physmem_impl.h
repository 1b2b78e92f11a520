/* Internal: the layout of emu_physmem and the inline frame lookup the walker and the
 * MMU use on their hot paths.  Not part of the cffi contract. */
#ifndef EMU_PHYSMEM_IMPL_H
#define EMU_PHYSMEM_IMPL_H
#include "emu.h"

#define PM_FRAME_SHIFT 12
#define PM_FRAME_BYTES 4096u
#define PM_EMPTY UINT64_MAX /* a free slot in the open-addressing index */
#define PM_PA_LIMIT (1ull << EMU_PA_BITS_MAX)

/* Direct-mapped cache of recent frame lookups, indexed by the frame number's low bits.
 * 4096 slots cover 16 MiB of consecutively allocated frames (e.g. the 2048 page tables
 * of 4 GiB of 4K pages) without a conflict; each slot is one 16-byte pair, so a hit
 * reads one host line. */
#define PM_CACHE 4096

typedef struct pm_cache_slot {
    uint64_t pfn; /* PM_EMPTY when the slot is unused */
    uint8_t *ptr;
} pm_cache_slot;

/* Open addressing with linear probing, keyed by frame number.  cap is a power of two
 * and the table is kept at most half full, so probes stay short.  Frames never move
 * (a rehash moves only the index), so the lookup cache stays valid until a discard. */
struct emu_physmem {
    uint64_t *keys; /* frame numbers, PM_EMPTY for free slots */
    uint8_t **data; /* 4 KiB zero-initialised frames */
    size_t cap;
    size_t count;
    pm_cache_slot cache[PM_CACHE];
};

static inline size_t pm_slot(uint64_t pfn, size_t cap)
{
    /* Fibonacci hashing: consecutive frame numbers spread over the table. */
    return (size_t)((pfn * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

/* The frame's bytes, or NULL when the frame does not exist (reads as zeros).  Page
 * tables are read far more often than frames appear, so hits are cached; the cache is
 * bookkeeping, not state, hence the cast away from const. */
static inline uint8_t *pm_frame(const emu_physmem *m, uint64_t pfn)
{
    const pm_cache_slot *cs = &m->cache[pfn & (PM_CACHE - 1)];
    if (cs->pfn == pfn)
        return cs->ptr;
    size_t i = pm_slot(pfn, m->cap);
    for (;;) {
        uint64_t k = m->keys[i];
        if (k == pfn) {
            pm_cache_slot *w = (pm_cache_slot *)cs;
            w->pfn = pfn;
            w->ptr = m->data[i];
            return m->data[i];
        }
        if (k == PM_EMPTY)
            return NULL;
        i = (i + 1) & (m->cap - 1);
    }
}

/* Pointer to the aligned u64 at pa, or NULL when its frame does not exist. */
static inline uint64_t *pm_word(const emu_physmem *m, uint64_t pa)
{
    uint8_t *f = pm_frame(m, pa >> PM_FRAME_SHIFT);
    return f ? (uint64_t *)(void *)(f + (pa & (PM_FRAME_BYTES - 1))) : NULL;
}

/* Reads an aligned u64 that is known to be in range. */
static inline uint64_t pm_load8(const emu_physmem *m, uint64_t pa)
{
    const uint8_t *f = pm_frame(m, pa >> PM_FRAME_SHIFT);
    if (!f)
        return 0;
    uint64_t v;
    __builtin_memcpy(&v, f + (pa & (PM_FRAME_BYTES - 1)), 8);
    return v;
}

#endif
