/* Internal: one set-associative translation array (a TLB level for some page sizes, or a
 * paging-structure cache) and its replacement policies.  Not part of the cffi contract. */
#ifndef EMU_TLB_IMPL_H
#define EMU_TLB_IMPL_H
#include <stdlib.h>

#include "emu.h"
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define TLB_F_GLOBAL 0x1
#define TLB_F_DIRTY 0x2

/* One cached translation.  The tag (in tlb_array.tags) is vpn << 3 | level, where vpn is
 * the full canonical VA shifted right by the page shift: no VA bit is masked away. */
typedef struct tlb_entry {
    uint64_t pfn; /* frame of this entry's page, in 4 KiB units */
    uint16_t pcid;
    uint8_t level;      /* page size held: EMU_LVL_PT 4K, PD 2M, PDPT 1G */
    uint8_t orig_level; /* size of the leaf it came from; > level for a fractured piece */
    uint8_t rights;     /* RIGHT_RW | RIGHT_US | RIGHT_XD, combined over all levels */
    uint8_t pkey;
    uint8_t flags; /* TLB_F_* */
    uint8_t reserved0;
} tlb_entry;

typedef struct tlb_array {
    uint32_t sets, ways, policy, sizes, role;
    uint32_t set_mask;
    uint32_t depth;     /* log2(ways): the tree-PLRU depth */
    uint32_t nlevel[8]; /* valid entries per tag level: a probe of a level with none can
                           only miss, so lookups skip it */
    /* The bit of each level in a mask of non-empty probes (the MMU's per-role probe
     * list): set while nlevel[level] > 0.  probe_mask points to own_mask until the MMU
     * links the array into a role. */
    uint64_t *probe_mask;
    uint64_t own_mask;
    uint8_t probe_bit[8];
    uint64_t *tags;      /* sets*ways; 0 = invalid */
    tlb_entry *e;        /* sets*ways */
    uint64_t *stamp;     /* LRU over more than 16 ways: last-use time per way */
    uint64_t *order;     /* LRU over at most 16 ways: per set, the ways from the most
                            recently used (bits 3:0) to the least, 4 bits each; NULL
                            otherwise */
    uint64_t order_mask; /* the 4*ways bits of order holding ways */
    uint8_t *rrpv;       /* SRRIP: re-reference prediction value per way */
    uint64_t *plru;      /* tree-PLRU: one bit tree per set (ways <= 64, power of two) */
    uint32_t *fifo;      /* FIFO: next way to replace per set */
    uint32_t *nvalid;    /* valid ways per set */
    uint64_t clock;      /* LRU time */
    uint64_t rng;        /* xorshift64* state for the random policy */
    uint32_t nfract;     /* valid entries with orig_level > level */
    uint32_t may_fract;  /* fills may store fractured pieces here (else nfract stays 0) */
} tlb_array;

#define TLB_TAG_LEVEL_BITS 3 /* levels 1..5 (PSCs go up to PML5) */
#define TLB_TAG_LEVEL_MASK 7u

static inline uint64_t tlb_tag(uint64_t va, int level)
{
    return ((va >> (12 + 9 * (level - 1))) << TLB_TAG_LEVEL_BITS) | (uint64_t)level;
}

/* A way's hint in a set-associative probe: 7 bits of a hash of its tag with bit 0 set, so
 * never 0 (an invalid way).  A way whose hint differs from the probed tag's cannot hold
 * it, so a probe compares the tags of the other ways only. */
static inline uint8_t tag_hint(uint64_t tag)
{
    return (uint8_t)(((tag * 0x9E3779B97F4A7C15ull) >> 56) | 1u);
}

/* Bit i set when h[i] equals v (i = 0..15). */
static inline unsigned hint16_mask(const uint8_t *h, uint8_t v)
{
#ifdef __SSE2__
    __m128i x = _mm_loadu_si128((const __m128i *)(const void *)h);
    return (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(x, _mm_set1_epi8((char)v)));
#else
    unsigned mk = 0;
    for (unsigned i = 0; i < 16; i++)
        mk |= (unsigned)(h[i] == v) << i;
    return mk;
#endif
}

int tlb_array_init(tlb_array *a, uint32_t role, uint32_t sizes, uint32_t sets, uint32_t ways,
                   uint32_t policy, uint64_t seed);
void tlb_array_destroy(tlb_array *a);

/* Bit 4i set when t[i] equals tag, for i < n (n <= 16); no other bit set.  No branch
 * depends on where (or whether) the tag is found: a set-associative probe whose hit way
 * is unpredictable would otherwise mispredict the compare that ends its scan.  With SSE2,
 * four ways per step: 32-bit-lane compares packed to 16 bits, one byte mask, a way equal
 * when both halves of its tag are. */
static inline __attribute__((always_inline)) uint64_t tags_eq_nib(const uint64_t *t, uint32_t n,
                                                                  uint64_t tag)
{
    uint64_t mk = 0;
    uint32_t i = 0;
#ifdef __SSE2__
    const __m128i k = _mm_set1_epi64x((long long)tag);
#pragma GCC unroll 4
    for (; i + 4 <= n; i += 4) {
        const __m128i a =
            _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)(const void *)(t + i)), k);
        const __m128i b =
            _mm_cmpeq_epi32(_mm_loadu_si128((const __m128i *)(const void *)(t + i + 2)), k);
        const uint64_t bytes = (uint64_t)_mm_movemask_epi8(_mm_packs_epi32(a, b));
        mk |= (bytes & (bytes >> 2)) << (4 * i); /* bit 4j: both halves of way i+j */
    }
    mk &= 0x1111111111111111ull;
#endif
    for (; i < n; i++)
        mk |= (uint64_t)(t[i] == tag) << (4 * i);
    return mk;
}

/* tlb_find (below) given the page number (va >> the level's page shift) and the tag. */
static inline __attribute__((always_inline)) int
tlb_find_vpn(const tlb_array *a, uint64_t vpn, uint64_t tag, uint16_t pcid, uint32_t *set_out)
{
    uint32_t set = (uint32_t)vpn & a->set_mask;
    const uint64_t *t = a->tags + (size_t)set * a->ways;
    const tlb_entry *e = a->e + (size_t)set * a->ways;
    *set_out = set;
    if (a->ways >= 8 && a->ways <= 16) {
        /* the usual STLB set (12 ways) unrolled with a constant count */
        uint64_t mk = a->ways == 12 ? tags_eq_nib(t, 12, tag) : tags_eq_nib(t, a->ways, tag);
        for (; mk; mk &= mk - 1) {
            uint32_t w = (uint32_t)__builtin_ctzll(mk) / 4;
            if (e[w].pcid == pcid || (e[w].flags & TLB_F_GLOBAL))
                return (int)w;
        }
        return -1;
    }
    for (uint32_t w = 0; w < a->ways; w++) {
        if (t[w] == tag) {
            if (e[w].pcid == pcid || (e[w].flags & TLB_F_GLOBAL))
                return (int)w;
        }
    }
    return -1;
}

/* Way index of a valid entry for (va, level) usable under pcid (same PCID or global),
 * or -1: the lowest such way.  Does not touch replacement state.  Sets of 8 to 16 ways
 * are compared whole (tags_eq_nib); other sets are scanned (emu_mmu_run's L1 fast probe
 * compares a 4-way set whole too). */
static inline __attribute__((always_inline)) int
tlb_find(const tlb_array *a, uint64_t va, int level, uint16_t pcid, uint32_t *set_out)
{
    return tlb_find_vpn(a, va >> (12 + 9 * (level - 1)), tlb_tag(va, level), pcid, set_out);
}

/* A recency order of at most 16 ways (4 bits each, most recently used in bits 3:0) with
 * way moved to the front. */
static inline uint64_t lru_order_touch(uint64_t o, uint32_t way)
{
    /* position of way: the lowest zero nibble of o ^ way-in-every-nibble (the
     * has-zero-byte trick on nibbles; exact for the lowest one).  Position 0 (way is
     * already the most recently used) gives sh 0 and o back unchanged: no branch. */
    uint64_t x = o ^ (0x1111111111111111ull * way);
    uint64_t z = (x - 0x1111111111111111ull) & ~x & 0x8888888888888888ull;
    unsigned sh = (unsigned)__builtin_ctzll(z) - 3; /* 4 * position */
    uint64_t below = o & ((1ull << sh) - 1);
    uint64_t above = o & ((~0ull << sh) << 4);
    return above | (below << 4) | way;
}

/* lru_order_touch for a caller whose way is often already the most recently used (an
 * L1 hit on a stream with locality): that case returns at once. */
static inline uint64_t lru_order_touch_mru(uint64_t o, uint32_t way)
{
    return (o & 0xF) == way ? o : lru_order_touch(o, way);
}

/* A new recency order array for sets of ways <= 16 ways: in every set the ways 0..ways-1
 * in any order (the first ways-1 touches of a set happen before it is full), unused
 * nibbles 15, never a way here.  NULL when out of memory; *mask: the 4*ways bits that
 * hold ways. */
static inline uint64_t *lru_order_new(uint32_t sets, uint32_t ways, uint64_t *mask)
{
    uint64_t *order = malloc(sets * sizeof(*order));
    if (!order)
        return NULL;
    uint64_t init = ways == 16 ? 0 : ~0ull << (4 * ways);
    for (uint32_t w = 0; w < ways; w++)
        init |= (uint64_t)w << (4 * w);
    for (uint32_t s = 0; s < sets; s++)
        order[s] = init;
    *mask = ways == 16 ? ~0ull : (1ull << (4 * ways)) - 1;
    return order;
}

/* Marks (set, way) most recently used under the array's policy. */
static inline void tlb_touch(tlb_array *a, uint32_t set, uint32_t way)
{
    size_t i = (size_t)set * a->ways + way;
    if (a->order) {
        /* Move way to the front of the recency order.  This ranks the ways exactly as
         * the stamps (stamp = ++clock) would: the victim of a full set, the way with
         * the smallest stamp, is the last one in the order. */
        a->order[set] = lru_order_touch(a->order[set], way);
    } else if (a->policy == EMU_POL_LRU) {
        a->stamp[i] = ++a->clock;
    } else if (a->policy == EMU_POL_PLRU) {
        /* Heap-ordered tree: node n has children 2n, 2n+1; a bit names the colder child. */
        uint64_t bits = a->plru[set];
        unsigned node = 1;
        for (unsigned d = a->depth; d-- > 0;) {
            unsigned b = (way >> d) & 1u;
            bits = (bits & ~(1ull << node)) | ((uint64_t)(b ^ 1u) << node);
            node = 2 * node + b;
        }
        a->plru[set] = bits;
    } else if (a->policy == EMU_POL_SRRIP) {
        a->rrpv[i] = 0;
    } /* FIFO and random keep no use history */
}

/* Installs an entry for tag into set, replacing an existing entry with the same tag and
 * PCID (or global) in place (as a hit), else the lowest invalid way, else the policy's
 * victim.  Returns the way used. */
uint32_t tlb_insert(tlb_array *a, uint32_t set, uint64_t tag, const tlb_entry *ent);

static inline void tlb_level_add(tlb_array *a, uint64_t tag)
{
    unsigned level = (unsigned)(tag & TLB_TAG_LEVEL_MASK);
    if (a->nlevel[level]++ == 0)
        *a->probe_mask |= 1ull << a->probe_bit[level];
}

static inline void tlb_level_sub(tlb_array *a, uint64_t tag)
{
    unsigned level = (unsigned)(tag & TLB_TAG_LEVEL_MASK);
    if (--a->nlevel[level] == 0)
        *a->probe_mask &= ~(1ull << a->probe_bit[level]);
}

/* The policy's victim in a full set (advances FIFO pointers and the random state). */
uint32_t tlb_victim(tlb_array *a, uint32_t set);

#define SRRIP_INSERT 2 /* SRRIP inserts with a "long" prediction */

/* tlb_insert for a caller that knows no valid entry in set has tag with the same PCID as
 * ent or a global flag on either side (typically: a lookup under ent's PCID just missed
 * and ent is not global), so the in-place case cannot arise and the scan for it is
 * skipped.  Same result as tlb_insert under that precondition. */
static inline __attribute__((always_inline)) uint32_t tlb_insert_new(tlb_array *a, uint32_t set,
                                                                     uint64_t tag,
                                                                     const tlb_entry *ent)
{
    size_t base = (size_t)set * a->ways;
    uint64_t *t = a->tags + base;
    uint32_t w;
    if (a->nvalid[set] < a->ways) {
        for (w = 0; t[w] != 0; w++)
            ;
        a->nvalid[set]++;
    } else {
        if (a->order) {
            /* LRU: the victim is the last of the recency order; inserting touches it,
             * which rotates it to the front (what tlb_touch would do) */
            uint64_t o = a->order[set];
            w = (uint32_t)(o >> (4 * (a->ways - 1))) & 0xF;
            a->order[set] = ((o << 4) & a->order_mask) | (o & ~a->order_mask) | w;
        } else {
            w = tlb_victim(a, set);
        }
        if (a->may_fract) {
            const tlb_entry *old = &a->e[base + w];
            a->nfract = a->nfract + (uint32_t)(ent->orig_level > ent->level) -
                        (uint32_t)(old->orig_level > old->level);
        }
        if ((t[w] ^ tag) & TLB_TAG_LEVEL_MASK) { /* the counts change only across sizes */
            tlb_level_sub(a, t[w]);
            tlb_level_add(a, tag);
        }
        t[w] = tag;
        a->e[base + w] = *ent;
        if (a->order)
            return w; /* touched above */
        if (a->policy == EMU_POL_SRRIP)
            a->rrpv[base + w] = SRRIP_INSERT;
        else
            tlb_touch(a, set, w);
        return w;
    }
    t[w] = tag;
    tlb_level_add(a, tag);
    a->e[base + w] = *ent;
    if (ent->orig_level > ent->level)
        a->nfract++;
    if (a->policy == EMU_POL_SRRIP)
        a->rrpv[base + w] = SRRIP_INSERT;
    else
        tlb_touch(a, set, w);
    return w;
}

/* Invalidates (set, way). */
void tlb_kill(tlb_array *a, uint32_t set, uint32_t way);

#endif
