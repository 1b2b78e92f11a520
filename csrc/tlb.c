/* Set-associative translation arrays and their replacement policies. */
#include <stdlib.h>
#include <string.h>

#include "tlb_impl.h"

#define SRRIP_MAX 3 /* 2-bit RRPV: 3 = distant re-reference */

static int is_pow2(uint32_t x)
{
    return x && !(x & (x - 1));
}

int tlb_array_init(tlb_array *a, uint32_t role, uint32_t sizes, uint32_t sets, uint32_t ways,
                   uint32_t policy, uint64_t seed)
{
    memset(a, 0, sizeof(*a));
    if (!is_pow2(sets) || ways == 0 || ways > 4096 || sets > (1u << 20))
        return EMU_E_INVAL;
    if (policy > EMU_POL_SRRIP)
        return EMU_E_INVAL;
    if (policy == EMU_POL_PLRU && (!is_pow2(ways) || ways > 64))
        return EMU_E_INVAL;
    size_t n = (size_t)sets * ways;
    a->sets = sets;
    a->ways = ways;
    a->policy = policy;
    a->sizes = sizes;
    a->role = role;
    a->set_mask = sets - 1;
    a->probe_mask = &a->own_mask;
    for (uint32_t w = ways; w > 1; w >>= 1)
        a->depth++;
    a->tags = calloc(n, sizeof(*a->tags));
    a->e = calloc(n, sizeof(*a->e));
    int use_order = policy == EMU_POL_LRU && ways <= 16;
    if (use_order) {
        a->order = lru_order_new(sets, ways, &a->order_mask);
    } else {
        a->stamp = calloc(n, sizeof(*a->stamp));
    }
    a->rrpv = calloc(n, sizeof(*a->rrpv));
    a->plru = calloc(sets, sizeof(*a->plru));
    a->fifo = calloc(sets, sizeof(*a->fifo));
    a->nvalid = calloc(sets, sizeof(*a->nvalid));
    a->rng = seed ? seed : 0x9E3779B97F4A7C15ull;
    if (!a->tags || !a->e || (use_order ? !a->order : !a->stamp) || !a->rrpv || !a->plru ||
        !a->fifo || !a->nvalid) {
        tlb_array_destroy(a);
        return EMU_E_NOMEM;
    }
    return EMU_OK;
}

void tlb_array_destroy(tlb_array *a)
{
    free(a->tags);
    free(a->e);
    free(a->stamp);
    free(a->order);
    free(a->rrpv);
    free(a->plru);
    free(a->fifo);
    free(a->nvalid);
    memset(a, 0, sizeof(*a));
}

static uint64_t xorshift64star(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* The policy's victim in a full set.  The loops have no data-dependent branches: the
 * running minimum and the first match are kept with conditional moves. */
uint32_t tlb_victim(tlb_array *a, uint32_t set)
{
    size_t base = (size_t)set * a->ways;
    switch (a->policy) {
    case EMU_POL_LRU: {
        if (a->order) /* the last of the recency order */
            return (uint32_t)(a->order[set] >> (4 * (a->ways - 1))) & 0xF;
        const uint64_t *st = a->stamp + base;
        uint64_t best = st[0];
        uint32_t bw = 0;
        for (uint32_t w = 1; w < a->ways; w++) {
            int lt = st[w] < best;
            best = lt ? st[w] : best;
            bw = lt ? w : bw;
        }
        return bw;
    }
    case EMU_POL_PLRU: {
        uint64_t bits = a->plru[set];
        unsigned node = 1;
        while (node < a->ways)
            node = 2 * node + (unsigned)((bits >> node) & 1u);
        return node - a->ways;
    }
    case EMU_POL_FIFO: {
        uint32_t w = a->fifo[set];
        a->fifo[set] = (w + 1 == a->ways) ? 0 : w + 1;
        return w;
    }
    case EMU_POL_RANDOM:
        return (uint32_t)((xorshift64star(&a->rng) >> 32) % a->ways);
    default: { /* SRRIP: age everything until some way predicts a distant re-use */
        uint8_t *r = a->rrpv + base;
        uint8_t mx = 0;
        for (uint32_t w = 0; w < a->ways; w++)
            mx = r[w] > mx ? r[w] : mx;
        uint8_t add = (uint8_t)(SRRIP_MAX - mx);
        uint32_t first = a->ways;
        for (uint32_t w = a->ways; w-- > 0;) {
            r[w] = (uint8_t)(r[w] + add);
            first = r[w] == SRRIP_MAX ? w : first;
        }
        return first;
    }
    }
}

uint32_t tlb_insert(tlb_array *a, uint32_t set, uint64_t tag, const tlb_entry *ent)
{
    size_t base = (size_t)set * a->ways;
    const uint64_t *t = a->tags + base;
    /* Same translation already cached (e.g. refreshed after a D-bit walk): update it. */
    for (uint32_t w = 0; w < a->ways; w++) {
        if (t[w] == tag) {
            const tlb_entry *o = &a->e[base + w];
            if (o->pcid == ent->pcid || ((o->flags | ent->flags) & TLB_F_GLOBAL)) {
                if (o->orig_level > o->level)
                    a->nfract--;
                a->e[base + w] = *ent; /* same tag: same level, nlevel unchanged */
                if (ent->orig_level > ent->level)
                    a->nfract++;
                tlb_touch(a, set, w);
                return w;
            }
        }
    }
    return tlb_insert_new(a, set, tag, ent);
}

void tlb_kill(tlb_array *a, uint32_t set, uint32_t way)
{
    size_t i = (size_t)set * a->ways + way;
    if (!a->tags[i])
        return;
    if (a->e[i].orig_level > a->e[i].level)
        a->nfract--;
    tlb_level_sub(a, a->tags[i]);
    a->tags[i] = 0;
    a->nvalid[set]--;
}
