/* The MMU: TLB hierarchy + paging-structure caches + walker + cost model (SDM 3A 4.10).
 * docs/mmu-model.md states every rule implemented here. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "tlb_impl.h"
#include "walk_impl.h"

#define NO_ARRAY 0xFF
#define PTE_LINE_SHIFT 6 /* 64-byte lines hold 8 entries */

/* The model of page-table lines in the data caches: a set-associative LRU cache of line
 * addresses.  It behaves exactly as a tlb_array with the LRU policy whose entries all
 * have PCID 0 and one size, but keeps only what such an array would ever read back: the
 * tags and the LRU state (no entries, no per-size counts).  Lines are never invalidated
 * and a fill takes the lowest invalid way, so a set's valid ways are a prefix: the set is
 * full when its last way is valid, and a probe can stop at the first invalid way.  With
 * at most 16 ways a probe compares one row of hints (tag_hint) first and reads the tags
 * of the matching ways only. */
typedef struct line_cache {
    uint32_t ways, set_mask;
    uint64_t *tags;      /* sets*ways: line + 1, 0 = invalid */
    uint8_t *hint;       /* ways <= 16: sets*16, tag_hint of each valid way, else 0 */
    uint64_t last_tag;   /* the tag of the last probe (0: none): the most recently used
                            line of its set, so probing it again is a hit that changes
                            no replacement state */
    uint64_t *order;     /* ways <= 16: per set, the recency order (lru_order_touch) */
    uint64_t order_mask; /* the 4*ways bits of order holding ways */
    uint64_t *stamp;     /* ways > 16: last-use time per way (victim: the smallest) */
    uint64_t clock;
} line_cache;

/* Same geometry checks and errors as tlb_array_init. */
static int line_cache_init(line_cache *c, uint32_t sets, uint32_t ways)
{
    memset(c, 0, sizeof(*c));
    if (!sets || (sets & (sets - 1)) || ways == 0 || ways > 4096 || sets > (1u << 20))
        return EMU_E_INVAL;
    size_t n = (size_t)sets * ways;
    c->ways = ways;
    c->set_mask = sets - 1;
    c->tags = calloc(n, sizeof(*c->tags));
    if (ways <= 16) {
        c->hint = calloc((size_t)sets * 16, 1);
        c->order = lru_order_new(sets, ways, &c->order_mask);
    } else {
        c->stamp = calloc(n, sizeof(*c->stamp));
    }
    if (!c->tags || (ways <= 16 ? !c->order || !c->hint : !c->stamp)) {
        free(c->tags);
        free(c->hint);
        free(c->order);
        free(c->stamp);
        memset(c, 0, sizeof(*c));
        return EMU_E_NOMEM;
    }
    return EMU_OK;
}

static void line_cache_destroy(line_cache *c)
{
    free(c->tags);
    free(c->hint);
    free(c->order);
    free(c->stamp);
    memset(c, 0, sizeof(*c));
}

struct emu_mmu {
    emu_physmem *mem;
    emu_mmu_cfg cfg;
    tlb_array arr[EMU_MAX_ARRAYS];
    uint32_t n_arr;
    tlb_array psc[6];
    int has_psc[6];
    line_cache ptec;
    int has_ptec;
    emu_mmu_control ctl;
    emu_walk_cfg wcfg;
    walk_masks wmasks; /* of wcfg */
    uint16_t pcid;
    emu_mmu_stats st;
    /* arrays per role, in configuration order */
    uint8_t role_arr[5][EMU_MAX_ARRAYS];
    uint8_t role_n[5];
    /* per access kind (EMU_ACC_READ/WRITE/FETCH): its L1 and L2 roles */
    uint8_t l1role[3], l2role[3];
    /* per role and leaf level (EMU_LVL_PT..PDPT): the array a fill goes to and the
     * size it stores there (see fill_role); fill_arr NO_ARRAY: nothing is filled */
    uint8_t fill_arr[5][4], fill_lvl[5][4];
    /* per role: the probes of a lookup in order (array index, level): the role's
     * arrays in configuration order, each at the sizes it holds from 4K up */
    uint8_t probe_arr[5][3 * EMU_MAX_ARRAYS], probe_lvl[5][3 * EMU_MAX_ARRAYS];
    uint8_t probe_n[5];
    /* per role: bit k set while probe k's array holds entries of its level (kept by
     * the arrays, tlb_level_add/sub); lookups skip the other probes, which can only
     * miss */
    uint64_t probe_mask[5];
    /* per role: the level of the first probe of a lookup (the smallest size the
     * role's first array holds), 0 without arrays */
    uint8_t first_lvl[5];
    /* walk_check_rights under the current control state, per access code and
     * rights << 4 | pkey: 0 not yet known, else WALK_RIGHTS_KNOWN | the result.
     * Cleared whenever the control state changes (derive_walk_cfg). */
    uint8_t rights_ok[16][128];
};

/* ---- construction -------------------------------------------------------------------- */

static void derive_walk_cfg(emu_mmu *m)
{
    const emu_mmu_control *c = &m->ctl;
    uint32_t f = m->cfg.walk_flags & (EMU_WF_A_QEMU | EMU_WF_NO_1G | EMU_WF_AMD);
    f |= c->cr0_wp ? EMU_WF_WP : 0;
    f |= c->efer_nxe ? EMU_WF_NXE : 0;
    f |= c->cr4_smep ? EMU_WF_SMEP : 0;
    f |= c->cr4_smap ? EMU_WF_SMAP : 0;
    f |= c->rflags_ac ? EMU_WF_AC : 0;
    f |= c->cr4_la57 ? EMU_WF_LA57 : 0;
    f |= c->cr4_pke ? EMU_WF_PKE : 0;
    m->wcfg.cr3 = c->cr3;
    m->wcfg.flags = f;
    m->wcfg.pkru = c->pkru;
    m->wcfg.maxphyaddr = m->cfg.maxphyaddr;
    m->wcfg.reserved0 = 0;
    m->pcid = c->cr4_pcide ? (uint16_t)(c->cr3 & 0xFFF) : 0;
    walk_masks_init(&m->wmasks, &m->wcfg);
    memset(m->rights_ok, 0, sizeof(m->rights_ok));
}

/* The role tables: which roles serve each access kind, where fills go, and the level of
 * a lookup's first probe.  The configuration never changes after construction. */
static void derive_roles(emu_mmu *m)
{
    for (uint32_t kind = EMU_ACC_READ; kind <= EMU_ACC_FETCH; kind++) {
        m->l1role[kind] = kind == EMU_ACC_FETCH                              ? EMU_ROLE_L1I
                          : kind == EMU_ACC_WRITE && m->role_n[EMU_ROLE_L1S] ? EMU_ROLE_L1S
                                                                             : EMU_ROLE_L1D;
        m->l2role[kind] =
            kind == EMU_ACC_FETCH && m->role_n[EMU_ROLE_L2I] ? EMU_ROLE_L2I : EMU_ROLE_L2;
    }
    for (int role = 0; role <= EMU_ROLE_L2; role++) {
        /* A fill of a leaf of size S goes to the array holding the largest size <= S,
         * the first in configuration order on a tie (docs/mmu-model.md, Fills). */
        for (int leaf = EMU_LVL_PT; leaf <= EMU_LVL_PDPT; leaf++) {
            int best_arr = NO_ARRAY, best_level = 0;
            for (uint32_t k = 0; k < m->role_n[role]; k++) {
                const tlb_array *a = &m->arr[m->role_arr[role][k]];
                for (int level = leaf; level >= EMU_LVL_PT; level--) {
                    if ((a->sizes & (1u << (level - 1))) && level > best_level) {
                        best_level = level;
                        best_arr = m->role_arr[role][k];
                        break;
                    }
                }
            }
            m->fill_arr[role][leaf] = (uint8_t)best_arr;
            m->fill_lvl[role][leaf] = (uint8_t)best_level;
            if (best_arr != NO_ARRAY && best_level != leaf)
                m->arr[best_arr].may_fract = 1;
        }
        m->probe_n[role] = 0;
        for (uint32_t k = 0; k < m->role_n[role]; k++) {
            const tlb_array *a = &m->arr[m->role_arr[role][k]];
            for (int level = EMU_LVL_PT; level <= EMU_LVL_PDPT; level++) {
                if (a->sizes & (1u << (level - 1))) {
                    tlb_array *wa = &m->arr[m->role_arr[role][k]];
                    wa->probe_mask = &m->probe_mask[role]; /* still empty: mask 0 */
                    wa->probe_bit[level] = m->probe_n[role];
                    m->probe_arr[role][m->probe_n[role]] = m->role_arr[role][k];
                    m->probe_lvl[role][m->probe_n[role]++] = (uint8_t)level;
                }
            }
        }
        /* every array holds some size (checked), so the first probe is of array 0 */
        m->first_lvl[role] = m->probe_n[role] ? m->probe_lvl[role][0] : 0;
    }
}

void emu_mmu_free(emu_mmu *m)
{
    if (!m)
        return;
    for (uint32_t i = 0; i < m->n_arr; i++)
        tlb_array_destroy(&m->arr[i]);
    for (int l = EMU_LVL_PD; l <= EMU_LVL_PML5; l++)
        if (m->has_psc[l])
            tlb_array_destroy(&m->psc[l]);
    if (m->has_ptec)
        line_cache_destroy(&m->ptec);
    free(m);
}

emu_mmu *emu_mmu_new(emu_physmem *mem, const emu_mmu_cfg *cfg, int *err, int *bad_array)
{
    *err = EMU_OK;
    *bad_array = -1;
    if (cfg->n_arrays > EMU_MAX_ARRAYS || cfg->maxphyaddr < 32 ||
        cfg->maxphyaddr > EMU_PA_BITS_MAX ||
        (cfg->walk_flags & ~(uint32_t)(EMU_WF_A_QEMU | EMU_WF_NO_1G | EMU_WF_AMD))) {
        *err = EMU_E_INVAL;
        return NULL;
    }
    emu_mmu *m = calloc(1, sizeof(*m));
    if (!m) {
        *err = EMU_E_NOMEM;
        return NULL;
    }
    m->mem = mem;
    m->cfg = *cfg;
    for (uint32_t i = 0; i < cfg->n_arrays; i++) {
        const emu_tlb_array_cfg *a = &cfg->arrays[i];
        int rc = EMU_E_INVAL;
        if (a->role <= EMU_ROLE_L2 && a->sizes && !(a->sizes & ~7u))
            rc = tlb_array_init(&m->arr[i], a->role, a->sizes, a->sets, a->ways, a->policy,
                                cfg->seed + 0x100 * (i + 1));
        if (rc != EMU_OK) {
            *err = rc;
            *bad_array = (int)i;
            emu_mmu_free(m);
            return NULL;
        }
        m->n_arr = i + 1;
        m->role_arr[a->role][m->role_n[a->role]++] = (uint8_t)i;
    }
    derive_roles(m);
    for (int l = EMU_LVL_PD; l <= EMU_LVL_PML5; l++) {
        if (!cfg->psc_ways[l])
            continue;
        int rc =
            tlb_array_init(&m->psc[l], 0, 0, cfg->psc_sets[l], cfg->psc_ways[l], EMU_POL_LRU, 0);
        if (rc != EMU_OK) {
            *err = rc;
            *bad_array = 100 + l;
            emu_mmu_free(m);
            return NULL;
        }
        m->has_psc[l] = 1;
    }
    if (cfg->pte_cache_ways) {
        int rc = line_cache_init(&m->ptec, cfg->pte_cache_sets, cfg->pte_cache_ways);
        if (rc != EMU_OK) {
            *err = rc;
            *bad_array = 200;
            emu_mmu_free(m);
            return NULL;
        }
        m->has_ptec = 1;
    }
    /* Linux-like defaults: paging with WP and NXE on; the rest off. */
    m->ctl.cr0_wp = 1;
    m->ctl.efer_nxe = 1;
    derive_walk_cfg(m);
    return m;
}

/* ---- invalidation ---------------------------------------------------------------------- */

static inline uint64_t entry_va(uint64_t tag)
{
    unsigned level = (unsigned)(tag & TLB_TAG_LEVEL_MASK);
    return (tag >> TLB_TAG_LEVEL_BITS) << (12 + 9 * (level - 1));
}

/* Kills the entries of array a that cover va and satisfy the PCID filter, fractured pieces
 * of a covering leaf included.  mode 0: pcid or global; 1: pcid and not global. */
static void kill_covering(emu_mmu *m, tlb_array *a, uint64_t va, uint16_t pcid, int mode)
{
    if (a->nfract == 0) {
        for (int level = EMU_LVL_PT; level <= EMU_LVL_PDPT; level++) {
            if (!(a->sizes & (1u << (level - 1))) || !a->nlevel[level])
                continue; /* no entry of that size: nothing to kill */
            uint64_t tag = tlb_tag(va, level);
            uint32_t set = (uint32_t)(va >> (12 + 9 * (level - 1))) & a->set_mask;
            for (uint32_t w = 0; w < a->ways; w++) {
                size_t i = (size_t)set * a->ways + w;
                if (a->tags[i] != tag)
                    continue;
                int g = (a->e[i].flags & TLB_F_GLOBAL) != 0;
                int hit = mode ? (a->e[i].pcid == pcid && !g) : (a->e[i].pcid == pcid || g);
                if (hit) {
                    tlb_kill(a, set, w);
                    m->st.entries_flushed++;
                }
            }
        }
        return;
    }
    for (uint32_t set = 0; set < a->sets; set++) {
        for (uint32_t w = 0; w < a->ways; w++) {
            size_t i = (size_t)set * a->ways + w;
            uint64_t tag = a->tags[i];
            if (!tag)
                continue;
            const tlb_entry *e = &a->e[i];
            unsigned oshift = 12 + 9 * (e->orig_level - 1);
            if ((entry_va(tag) ^ va) >> oshift)
                continue;
            int g = (e->flags & TLB_F_GLOBAL) != 0;
            int hit = mode ? (e->pcid == pcid && !g) : (e->pcid == pcid || g);
            if (hit) {
                tlb_kill(a, set, w);
                m->st.entries_flushed++;
            }
        }
    }
}

/* What selects entries in a sweep over whole arrays. */
enum sweep { SWEEP_ALL, SWEEP_NONGLOBAL, SWEEP_PCID_NONGLOBAL, SWEEP_PCID_ANY };

static int sweep_match(const tlb_entry *e, enum sweep how, uint16_t pcid)
{
    int g = (e->flags & TLB_F_GLOBAL) != 0;
    switch (how) {
    case SWEEP_ALL:
        return 1;
    case SWEEP_NONGLOBAL:
        return !g;
    case SWEEP_PCID_NONGLOBAL:
        return !g && e->pcid == pcid;
    default:
        return e->pcid == pcid;
    }
}

static void sweep_array(emu_mmu *m, tlb_array *a, enum sweep how, uint16_t pcid, int count)
{
    for (uint32_t set = 0; set < a->sets; set++) {
        for (uint32_t w = 0; w < a->ways; w++) {
            size_t i = (size_t)set * a->ways + w;
            if (a->tags[i] && sweep_match(&a->e[i], how, pcid)) {
                tlb_kill(a, set, w);
                if (count)
                    m->st.entries_flushed++;
            }
        }
    }
}

/* PSC entries never hold global translations: "non-global" sweeps take them all. */
static void sweep_pscs(emu_mmu *m, enum sweep how, uint16_t pcid)
{
    enum sweep p =
        (how == SWEEP_PCID_NONGLOBAL || how == SWEEP_PCID_ANY) ? SWEEP_PCID_ANY : SWEEP_ALL;
    for (int l = EMU_LVL_PD; l <= EMU_LVL_PML5; l++)
        if (m->has_psc[l])
            sweep_array(m, &m->psc[l], p, pcid, 0);
}

static void sweep_all(emu_mmu *m, enum sweep how, uint16_t pcid)
{
    for (uint32_t i = 0; i < m->n_arr; i++)
        sweep_array(m, &m->arr[i], how, pcid, 1);
    sweep_pscs(m, how, pcid);
}

/* A #PF invalidates the TLB entries for the faulting page and the PSC entries that would
 * be used for its address (SDM 3A 4.10.4.1). */
static void fault_invalidate(emu_mmu *m, uint64_t va)
{
    for (uint32_t i = 0; i < m->n_arr; i++)
        kill_covering(m, &m->arr[i], va, m->pcid, 0);
    for (int l = EMU_LVL_PD; l <= EMU_LVL_PML5; l++) {
        if (!m->has_psc[l] || !m->psc[l].nlevel[l])
            continue;
        uint32_t set;
        int w;
        while ((w = tlb_find(&m->psc[l], va, l, m->pcid, &set)) >= 0)
            tlb_kill(&m->psc[l], set, (uint32_t)w);
    }
}

/* ---- fills ------------------------------------------------------------------------------ */

/* The leaf a translation came from. */
typedef struct leaf_info {
    uint64_t base_pfn; /* frame of the whole leaf page */
    uint8_t level;     /* leaf level */
    uint8_t rights, pkey, flags;
} leaf_info;

/* The entry of leaf li as an array holding size level stores it under the current PCID
 * (for a fractured piece, level < li->level, the caller adds va's part to pfn). */
static inline tlb_entry entry_of_leaf(const emu_mmu *m, const leaf_info *li, int level)
{
    tlb_entry e;
    e.pfn = li->base_pfn;
    e.pcid = m->pcid;
    e.level = (uint8_t)level;
    e.orig_level = li->level;
    e.rights = li->rights;
    e.pkey = li->pkey;
    e.flags = li->flags;
    e.reserved0 = 0;
    return e;
}

/* Installs the translation of va into the arrays of one role list: into the array that
 * holds the leaf's size, else the largest smaller size one holds (a fractured piece).
 * fresh: a lookup of this role under the current PCID has just missed (with no change to
 * the role's arrays since), so an entry with the new tag and our PCID or a global flag
 * cannot be there; unless the new entry is global (which would replace another PCID's
 * entry with that tag in place) tlb_insert's scan for one is skipped. */
static inline __attribute__((always_inline)) void fill_role(emu_mmu *m, int role, uint64_t va,
                                                            const leaf_info *li, int fresh)
{
    unsigned ai = m->fill_arr[role][li->level];
    if (ai == NO_ARRAY)
        return;
    int level = m->fill_lvl[role][li->level];
    tlb_array *a = &m->arr[ai];
    unsigned pshift = 12 + 9 * (level - 1);
    tlb_entry e = entry_of_leaf(m, li, level);
    if (level != li->level) { /* a fractured piece: the part of the leaf holding va */
        unsigned oshift = 12 + 9 * (li->level - 1);
        e.pfn += ((va & ((1ull << oshift) - 1)) >> pshift) << (pshift - 12);
    }
    uint32_t set = (uint32_t)(va >> pshift) & a->set_mask;
    uint64_t tag = tlb_tag(va, level);
    if (fresh && !(e.flags & TLB_F_GLOBAL))
        tlb_insert_new(a, set, tag, &e);
    else
        tlb_insert(a, set, tag, &e);
}

/* ---- lookups ----------------------------------------------------------------------------- */

typedef struct hit_ref {
    tlb_array *a;
    uint32_t set, way;
    int level;
} hit_ref;

/* First array of the role (in configuration order) holding va, sizes probed 4K, 2M, 1G
 * (the role's probe list).  skip: probes (bit k: probe k) already made for this access,
 * which missed.  A size with no valid entry in an array is not probed: it could only
 * miss. */
static inline __attribute__((always_inline)) int lookup_role(emu_mmu *m, int role, uint64_t va,
                                                             hit_ref *h, uint64_t skip)
{
    uint64_t mask = m->probe_mask[role] & ~skip;
    while (mask) {
        unsigned k = (unsigned)__builtin_ctzll(mask);
        mask &= mask - 1;
        tlb_array *a = &m->arr[m->probe_arr[role][k]];
        int level = m->probe_lvl[role][k];
        uint32_t set;
        int w = tlb_find(a, va, level, m->pcid, &set);
        if (w >= 0) {
            h->a = a;
            h->set = set;
            h->way = (uint32_t)w;
            h->level = level;
            return 1;
        }
    }
    return 0;
}

static leaf_info leaf_of_entry(const tlb_entry *e, uint64_t va)
{
    leaf_info li;
    li.base_pfn = e->pfn;
    if (e->orig_level != e->level) { /* a fractured piece: back to the leaf's frame */
        unsigned oshift = 12 + 9 * (e->orig_level - 1), pshift = 12 + 9 * (e->level - 1);
        li.base_pfn -= ((va & ((1ull << oshift) - 1)) >> pshift) << (pshift - 12);
    }
    li.level = e->orig_level;
    li.rights = e->rights;
    li.pkey = e->pkey;
    li.flags = e->flags;
    return li;
}

/* ---- the walk with PSCs and the cost model ---------------------------------------------- */

static uint32_t ref_cost(emu_mmu *m, uint64_t entry_pa)
{
    if (!m->has_ptec)
        return m->cfg.lat_walk_ref;
    line_cache *c = &m->ptec;
    uint64_t line = entry_pa >> PTE_LINE_SHIFT;
    uint64_t tag = line + 1;
    uint32_t set = (uint32_t)line & c->set_mask;
    uint32_t ways = c->ways;
    uint64_t *t = c->tags + (size_t)set * ways;
    if (tag == c->last_tag) { /* e.g. the walks of neighbouring 4K pages */
        m->st.pte_cache_hits++;
        return m->cfg.lat_pte_hit;
    }
    c->last_tag = tag; /* every path below leaves the line most recently used */
    if (c->hint) {     /* at most 16 ways: LRU by recency order, with hints */
        uint8_t *hr = c->hint + (size_t)set * 16;
        const uint8_t h = tag_hint(tag);
        uint32_t w;
        for (unsigned mk = hint16_mask(hr, h); mk; mk &= mk - 1) {
            w = (uint32_t)__builtin_ctz(mk);
            if (t[w] == tag) {
                c->order[set] = lru_order_touch(c->order[set], w);
                m->st.pte_cache_hits++;
                return m->cfg.lat_pte_hit;
            }
        }
        /* a miss: the lowest invalid way, else the victim, the last of the order */
        const unsigned invalid = hint16_mask(hr, 0) & ((1u << ways) - 1);
        const uint64_t o = c->order[set];
        if (invalid) {
            w = (uint32_t)__builtin_ctz(invalid);
            c->order[set] = lru_order_touch(o, w);
        } else { /* the victim moves to the front */
            w = (uint32_t)(o >> (4 * (ways - 1))) & 0xF;
            c->order[set] = ((o << 4) & c->order_mask) | (o & ~c->order_mask) | w;
        }
        t[w] = tag;
        hr[w] = h;
        m->st.pte_cache_misses++;
        return m->cfg.lat_pte_miss;
    }
    /* more than 16 ways: LRU by time stamps */
    uint64_t *st = c->stamp + (size_t)set * ways;
    uint32_t w = 0;
    /* four ways per step while all four are valid and none matches */
    for (; w + 4 <= ways; w += 4)
        if (!t[w + 3] || tags_eq_nib(t + w, 4, tag))
            break; /* !t[w + 3] also catches an invalid t[w..w+2]: valid ways are a prefix */
    for (; w < ways && t[w] != 0; w++) {
        if (t[w] == tag) {
            st[w] = ++c->clock;
            m->st.pte_cache_hits++;
            return m->cfg.lat_pte_hit;
        }
    }
    /* a miss; w is the first invalid way, or ways when the set is full */
    if (w == ways) { /* the smallest stamp (distinct in a full set), as tlb_victim */
        w = 0;
        for (uint32_t v = 1; v < ways; v++)
            if (st[v] < st[w])
                w = v;
    }
    st[w] = ++c->clock;
    t[w] = tag;
    m->st.pte_cache_misses++;
    return m->cfg.lat_pte_miss;
}

/* tlb_find in a PSC, and tlb_touch of the way found.  Entries are never global and are
 * inserted only after a miss under their PCID, so a set holds (tag, PCID) at most once: a
 * match in the most recently used way is the match, and touching it changes nothing. */
static inline int psc_find_touch(tlb_array *a, uint64_t va, int level, uint16_t pcid,
                                 uint32_t *set_out)
{
    if (a->order) {
        uint32_t set = (uint32_t)(va >> (12 + 9 * (level - 1))) & a->set_mask;
        size_t i = (size_t)set * a->ways + (a->order[set] & 0xF);
        if (a->tags[i] == tlb_tag(va, level) && a->e[i].pcid == pcid) {
            *set_out = set;
            return (int)(a->order[set] & 0xF);
        }
    }
    int w = tlb_find(a, va, level, pcid, set_out);
    if (w >= 0)
        tlb_touch(a, *set_out, (uint32_t)w);
    return w;
}

/* Walks va (PSCs first), fills PSCs and the TLBs of the access's side.  Returns 1 and
 * sets *li on success; on a fault fills out and invalidates the page. */
static int do_walk(emu_mmu *m, uint64_t va, uint32_t access, emu_walk_result *wr, leaf_info *li,
                   uint32_t *cycles)
{
    walk_start start = walk_top(&m->wcfg);
    int top = start.level;
    int hit_level = 0;
    for (int l = EMU_LVL_PD; l <= top; l++) {
        if (!m->has_psc[l] || !m->psc[l].nlevel[l])
            continue; /* an empty PSC can only miss */
        uint32_t set;
        int w = psc_find_touch(&m->psc[l], va, l, m->pcid, &set);
        if (w >= 0) {
            const tlb_entry *e = &m->psc[l].e[(size_t)set * m->psc[l].ways + (uint32_t)w];
            start.table_pa = e->pfn << 12;
            start.level = l - 1;
            start.rights = e->rights;
            hit_level = l;
            break;
        }
    }
    if (hit_level)
        m->st.psc_hits[hit_level]++;
    else
        m->st.psc_misses++;

    walk_trace tr;
    tr.read_mask = 0; /* the other fields are read only where walk_from wrote them */
    tr.leaf = 0;      /* (set on success; this keeps -Wmaybe-uninitialized quiet) */
    if (start.level == EMU_LVL_PT && !(m->wcfg.flags & EMU_WF_A_QEMU)) {
        /* the common walk below a PDE-cache hit: the same walk_from, compiled for one
         * level without QEMU's A order (the constants fold its loop away) */
        start.level = EMU_LVL_PT;
        walk_from(m->mem, &m->wcfg, &m->wmasks, va, access, start, wr, NULL, &tr,
                  m->rights_ok[access]);
    } else {
        walk_from(m->mem, &m->wcfg, &m->wmasks, va, access, start, wr, NULL, &tr,
                  m->rights_ok[access]);
    }
    uint32_t wc = 0;
    for (int l = start.level; l >= EMU_LVL_PT; l--) {
        if (!(tr.read_mask & (1u << (l - 1))))
            break;
        m->st.walk_refs[l]++;
        wc += ref_cost(m, tr.entry_pa[l]);
    }
    m->st.walk_cycles += wc;
    *cycles += wc;
    if (wr->vector != EMU_VEC_NONE) {
        m->st.page_faults++;
        fault_invalidate(m, va);
        return 0;
    }
    /* PSC entries for every non-leaf entry read (all have A=1 now: SDM 3A 4.10.3.1) */
    for (int l = start.level; l > wr->level; l--) {
        if (!m->has_psc[l])
            continue;
        tlb_entry e;
        memset(&e, 0, sizeof(e));
        e.pfn = tr.table_pa[l] >> 12;
        e.pcid = m->pcid;
        e.level = e.orig_level = (uint8_t)l;
        e.rights = (uint8_t)tr.rights[l];
        uint32_t set = (uint32_t)(va >> (12 + 9 * (l - 1))) & m->psc[l].set_mask;
        /* Every level below the PSC hit (all, without one) was probed under this PCID
         * and missed, and PSC entries are never global: nothing to replace in place. */
        tlb_insert_new(&m->psc[l], set, tlb_tag(va, l), &e);
    }
    li->base_pfn = (wr->pa & ~(wr->page_size - 1)) >> 12;
    li->level = wr->level;
    li->rights = wr->rights;
    li->pkey = wr->pkey;
    li->flags = (uint8_t)(((tr.leaf & EMU_PTE_G) && m->ctl.cr4_pge ? TLB_F_GLOBAL : 0) |
                          ((tr.leaf & EMU_PTE_D) ? TLB_F_DIRTY : 0));
    return 1;
}

/* ---- one page --------------------------------------------------------------------------- */

static void set_pf(emu_mmu_result *r, uint32_t ec)
{
    r->pa = 0;
    r->page_size = 0;
    r->error_code = ec;
    r->vector = EMU_VEC_PF;
    r->hit = EMU_HIT_FAULT;
}

/* The counters of one access kind (EMU_ACC_READ, WRITE, FETCH): its access count, and
 * its block of six: L1 misses, L2 hits, walks, and walks completed per size (4K, 2M, 1G;
 * index 3 + level - 1). */
typedef struct kind_counters {
    uint64_t *accesses;
    uint64_t *block;
} kind_counters;

static inline kind_counters counters_of(emu_mmu_stats *s, uint32_t kind)
{
    static const size_t acc_off[3] = {offsetof(emu_mmu_stats, loads),
                                      offsetof(emu_mmu_stats, stores),
                                      offsetof(emu_mmu_stats, fetches)};
    static const size_t blk_off[3] = {offsetof(emu_mmu_stats, load_l1_miss),
                                      offsetof(emu_mmu_stats, store_l1_miss),
                                      offsetof(emu_mmu_stats, fetch_l1_miss)};
    kind_counters k;
    k.accesses = (uint64_t *)(void *)((char *)s + acc_off[kind]);
    k.block = (uint64_t *)(void *)((char *)s + blk_off[kind]);
    return k;
}
#define KC_L1_MISS 0
#define KC_L2_HIT 1
#define KC_WALKS 2
#define KC_WALK_SIZE(level) (3 + (level) - 1)
#define KC_BLOCK_OK(p)                                                                             \
    (offsetof(emu_mmu_stats, p##_l2_hit) == offsetof(emu_mmu_stats, p##_l1_miss) + 8 &&            \
     offsetof(emu_mmu_stats, p##_walks) == offsetof(emu_mmu_stats, p##_l1_miss) + 16 &&            \
     offsetof(emu_mmu_stats, p##_walk_4k) == offsetof(emu_mmu_stats, p##_l1_miss) + 24 &&          \
     offsetof(emu_mmu_stats, p##_walk_2m) == offsetof(emu_mmu_stats, p##_l1_miss) + 32 &&          \
     offsetof(emu_mmu_stats, p##_walk_1g) == offsetof(emu_mmu_stats, p##_l1_miss) + 40)
_Static_assert(KC_BLOCK_OK(load) && KC_BLOCK_OK(store) && KC_BLOCK_OK(fetch),
               "emu_mmu_stats: a kind's six counters must be consecutive");

/* walk_check_rights(access, e's rights and key), from a table filled as it goes:
 * table is m->rights_ok[access].  The answer depends only on the access code, the
 * rights, the key and the control state (derive_walk_cfg clears the tables whenever that
 * changes).  0 when allowed, else the #PF error-code bits beyond W/U/I. */
static inline uint32_t rights_deny(emu_mmu *m, uint8_t *table, uint32_t access, const tlb_entry *e)
{
    uint8_t *c = &table[((unsigned)e->rights << 4) | e->pkey];
    if (!*c)
        *c = (uint8_t)(WALK_RIGHTS_KNOWN | walk_check_rights(&m->wcfg, access, e->rights, e->pkey));
    return *c & ~(uint32_t)WALK_RIGHTS_KNOWN;
}

/* 1 when a hit on e by an access of kind must go to the walker to set D (a write on an
 * entry with D=0), else 0; no branch (whether an access writes is not predictable). */
static inline uint32_t needs_d_walk(uint32_t kind, const tlb_entry *e)
{
    return (uint32_t)(kind == EMU_ACC_WRITE) & (uint32_t)!(e->flags & TLB_F_DIRTY);
}

/* Translates the page of va for one access; fills r (pa, page_size, vector, error_code,
 * hit) and adds to *cycles.  skip1, skip2: probes of the L1 and L2 lookups (see
 * lookup_role) the caller made for this access, which missed. */
static void xlate(emu_mmu *m, uint64_t va, uint32_t access, emu_mmu_result *r, uint32_t *cycles,
                  uint64_t skip1, uint64_t skip2)
{
    const uint32_t kind = access & EMU_ACC_KIND_MASK;
    const int role1 = m->l1role[kind];
    const kind_counters kc = counters_of(&m->st, kind);
    (*kc.accesses)++;

    if (!va_canonical(va, m->ctl.cr4_la57 != 0)) {
        m->st.gp_faults++;
        memset(r, 0, sizeof(*r));
        r->vector = EMU_VEC_GP;
        return;
    }
    *cycles += m->cfg.lat_l1_hit;
    hit_ref h;
    int hit = EMU_HIT_L1;
    int found = lookup_role(m, role1, va, &h, skip1);
    if (!found) {
        kc.block[KC_L1_MISS]++;
        *cycles += m->cfg.lat_l2_hit;
        hit = EMU_HIT_L2;
        found = lookup_role(m, m->l2role[kind], va, &h, skip2);
    }
    if (found) {
        tlb_entry *e = &h.a->e[(size_t)h.set * h.a->ways + h.way];
        uint32_t deny = rights_deny(m, m->rights_ok[access], access, e);
        if (deny) { /* refused by the cached rights: a #PF, which drops the entries */
            m->st.page_faults++;
            fault_invalidate(m, va);
            set_pf(r, walk_access_ec(&m->wcfg, access) | deny);
            return;
        }
        if (needs_d_walk(kind, e)) {
            /* D=0 in the entry: the processor goes to the walker to set D (4.8) */
            m->st.dirty_walks++;
            emu_walk_result wr;
            leaf_info li;
            if (!do_walk(m, va, access, &wr, &li, cycles)) {
                set_pf(r, wr.error_code);
                return;
            }
            /* the entry found is refreshed in place: the scanning insert */
            if (hit == EMU_HIT_L2)
                fill_role(m, m->l2role[kind], va, &li, 0);
            fill_role(m, role1, va, &li, 0);
            r->pa = wr.pa;
            r->page_size = (uint32_t)wr.page_size;
        } else {
            tlb_touch(h.a, h.set, h.way);
            unsigned pshift = 12 + 9 * (h.level - 1);
            r->pa = (e->pfn << 12) | (va & ((1ull << pshift) - 1));
            r->page_size = 1u << pshift;
            if (hit == EMU_HIT_L2) {
                kc.block[KC_L2_HIT]++;
                leaf_info li = leaf_of_entry(e, va);
                fill_role(m, role1, va, &li, 1); /* the L1 lookup missed */
            }
        }
        r->error_code = 0;
        r->vector = EMU_VEC_NONE;
        r->hit = (uint8_t)hit;
        return;
    }

    /* L2 miss: a walk */
    kc.block[KC_WALKS]++;
    emu_walk_result wr;
    leaf_info li;
    if (!do_walk(m, va, access, &wr, &li, cycles)) {
        set_pf(r, wr.error_code);
        return;
    }
    kc.block[KC_WALK_SIZE(wr.level)]++;
    /* both lookups missed and the walk changed no TLB array */
    fill_role(m, m->l2role[kind], va, &li, 1);
    fill_role(m, role1, va, &li, 1);
    r->pa = wr.pa;
    r->page_size = (uint32_t)wr.page_size;
    r->error_code = 0;
    r->vector = EMU_VEC_NONE;
    r->hit = EMU_HIT_WALK;
}

/* One access, both pages when it straddles a boundary.  skip1, skip2: as for xlate, for
 * the first page. */
static inline __attribute__((always_inline)) void access_one(emu_mmu *m, uint64_t va,
                                                             uint32_t access, uint32_t size,
                                                             emu_mmu_result *r, uint64_t skip1,
                                                             uint64_t skip2)
{
    uint32_t cycles = 0;
    xlate(m, va, access, r, &cycles, skip1, skip2);
    r->crossed = 0;
    r->reserved0 = 0;
    if (size > 1 && (va & 0xFFF) + size > 4096) {
        m->st.crossings++;
        r->crossed = 1;
        if (r->vector == EMU_VEC_NONE) { /* a fault on the first page ends the access */
            emu_mmu_result r2;
            uint64_t va2 = (va | 0xFFF) + 1; /* wraps to 0 past 2^64, as the CPU's would */
            xlate(m, va2, access, &r2, &cycles, 0, 0);
            if (r2.vector != EMU_VEC_NONE) {
                r->pa = 0;
                r->page_size = 0;
                r->error_code = r2.error_code;
                r->vector = r2.vector;
                r->hit = EMU_HIT_FAULT;
                r->crossed = 2;
            }
        }
    }
    r->cycles = cycles;
    m->st.cycles += cycles;
}

static int access_ok(uint32_t access)
{
    return (access & EMU_ACC_KIND_MASK) != 3 &&
           !(access & ~(uint32_t)(EMU_ACC_KIND_MASK | EMU_ACC_USER | EMU_ACC_IMPLICIT));
}

int emu_mmu_translate(emu_mmu *m, uint64_t va, uint32_t access, uint32_t size, emu_mmu_result *out)
{
    memset(out, 0, sizeof(*out));
    if (!access_ok(access))
        return EMU_E_INVAL;
    access_one(m, va, access, size, out, 0, 0);
    return EMU_OK;
}

/* The first probe of an L1 lookup for one access kind, made inline by emu_mmu_run: the
 * L1 role's first array at its smallest size (first_lvl).  Copies of what the probe reads
 * (pointers and geometry never change after construction). */
typedef struct first_probe {
    tlb_array *a; /* NULL: the role has no array */
    const uint64_t *tags;
    const tlb_entry *e;
    uint8_t *rights_ok; /* m->rights_ok of the kind's access code */
    uint32_t set_mask, ways;
    unsigned shift, level;         /* of first_lvl */
    int role1, role2;              /* the kind's L1 and L2 roles */
    int direct_fill;               /* fills of first_lvl leaves go to a at first_lvl */
    const uint64_t *mask1, *mask2; /* m->probe_mask of the two roles */
    /* the first probe of the L2 lookup (bit 0 of *mask2): array (NULL: the role has
     * none) and level, and whether its tag and set index come from the same page
     * number as the L1 probe's */
    tlb_array *a2;
    int level2, same_page2;
} first_probe;

/* The counters of the accesses emu_mmu_run handled itself, added to the stats at the end
 * (nothing reads them during a run; the sums are the same in any order): per kind, the
 * L1 hits and the L2 hits (an L1 miss each). */
static void add_fast_hits(emu_mmu *m, const uint64_t hits[3], const uint64_t l2hits[3])
{
    emu_mmu_stats *s = &m->st;
    s->loads += hits[EMU_ACC_READ] + l2hits[EMU_ACC_READ];
    s->stores += hits[EMU_ACC_WRITE] + l2hits[EMU_ACC_WRITE];
    s->fetches += hits[EMU_ACC_FETCH] + l2hits[EMU_ACC_FETCH];
    s->load_l1_miss += l2hits[EMU_ACC_READ];
    s->store_l1_miss += l2hits[EMU_ACC_WRITE];
    s->fetch_l1_miss += l2hits[EMU_ACC_FETCH];
    s->load_l2_hit += l2hits[EMU_ACC_READ];
    s->store_l2_hit += l2hits[EMU_ACC_WRITE];
    s->fetch_l2_hit += l2hits[EMU_ACC_FETCH];
    uint64_t n1 = hits[EMU_ACC_READ] + hits[EMU_ACC_WRITE] + hits[EMU_ACC_FETCH];
    uint64_t n2 = l2hits[EMU_ACC_READ] + l2hits[EMU_ACC_WRITE] + l2hits[EMU_ACC_FETCH];
    s->cycles += n1 * m->cfg.lat_l1_hit + n2 * (m->cfg.lat_l1_hit + m->cfg.lat_l2_hit);
}

/* A translated one-page access's result. */
static inline void set_ok(emu_mmu_result *r, uint64_t pa, uint32_t page_size, uint8_t hit,
                          uint32_t cycles)
{
    r->pa = pa;
    r->page_size = page_size;
    r->error_code = 0;
    r->vector = EMU_VEC_NONE;
    r->hit = hit;
    r->crossed = 0;
    r->reserved0 = 0;
    r->cycles = cycles;
}

/* The result of a hit on entry e (its page 1 << shift) by the fast path. */
static inline void set_fast_hit(emu_mmu_result *r, const tlb_entry *e, uint64_t va, unsigned shift,
                                uint8_t hit, uint32_t cycles)
{
    set_ok(r, (e->pfn << 12) | (va & ((1ull << shift) - 1)), 1u << shift, hit, cycles);
}

/* The walk of an access whose L1 and L2 lookups emu_mmu_run made whole and which both
 * missed (p's probe at set, tag; a2's at set2, level2), va canonical and in one page:
 * what xlate does after its lookups, with the fills of leaves of the probed sizes made
 * straight into the probed sets.  r: the result, or NULL.  Returns 1 on success, 0 on
 * a fault. */
static int walk_direct(emu_mmu *m, const first_probe *p, uint64_t va, uint32_t access, uint32_t set,
                       uint64_t tag, tlb_array *a2, uint32_t set2, int level2, emu_mmu_result *r)
{
    const uint32_t kind = access & EMU_ACC_KIND_MASK;
    emu_mmu_stats *s = &m->st;
    const kind_counters kc = counters_of(s, kind);
    (*kc.accesses)++;
    kc.block[KC_L1_MISS]++;
    kc.block[KC_WALKS]++;
    uint32_t cycles = m->cfg.lat_l1_hit + m->cfg.lat_l2_hit;
    emu_walk_result wr;
    leaf_info li;
    if (!do_walk(m, va, access, &wr, &li, &cycles)) {
        s->cycles += cycles;
        if (r) {
            set_pf(r, wr.error_code);
            r->crossed = 0;
            r->reserved0 = 0;
            r->cycles = cycles;
        }
        return 0;
    }
    s->cycles += cycles;
    kc.block[KC_WALK_SIZE(wr.level)]++;
    /* both lookups missed and the walk changed no TLB array: fresh fills */
    if (m->fill_arr[p->role2][li.level] == (uint8_t)(a2 - m->arr) &&
        m->fill_lvl[p->role2][li.level] == level2 && level2 == li.level &&
        !(li.flags & TLB_F_GLOBAL)) {
        const tlb_entry e = entry_of_leaf(m, &li, li.level);
        tlb_insert_new(a2, set2, tlb_tag(va, level2), &e);
    } else {
        fill_role(m, p->role2, va, &li, 1);
    }
    if (p->direct_fill && li.level == (int)p->level && !(li.flags & TLB_F_GLOBAL)) {
        const tlb_entry e = entry_of_leaf(m, &li, li.level);
        tlb_insert_new(p->a, set, tag, &e);
    } else {
        fill_role(m, p->role1, va, &li, 1);
    }
    if (r)
        set_ok(r, wr.pa, (uint32_t)wr.page_size, EMU_HIT_WALK, cycles);
    return 1;
}

/* Asks the host to bring into its caches the page-table entry a walk of va would end at,
 * found by reading the entries above it (no model state is read or changed: this is
 * host-side bookkeeping, like the frame lookup cache).  A walk-heavy stream then finds
 * its leaf entries in the host's caches instead of waiting for each in turn. */
#define PREFETCH_AHEAD 8     /* accesses between the prefetch and the walk */
#define PREFETCH_WINDOW 64   /* accesses per decision */
#define PREFETCH_MIN_WALKS 4 /* walks in the last window that turn prefetching on */
#define PREFETCH_RECENT 64   /* lines remembered as prefetched (a hot set's stay cached) */

/* The page table (host pointer) below the 2 MiB region of va, or NULL when there is none
 * (no table, or a large leaf). */
static const uint64_t *leaf_table(const emu_mmu *m, uint64_t va)
{
    const walk_start s = walk_top(&m->wcfg);
    uint64_t table = s.table_pa;
    for (int level = s.level; level > EMU_LVL_PT; level--) {
        const uint64_t *ep = pm_word(m->mem, table + 8ull * va_index(va, level));
        if (!ep)
            return NULL;
        const uint64_t e = *ep;
        if (!(e & EMU_PTE_P) || (e & EMU_PTE_PS))
            return NULL;
        table = e & ENTRY_ADDR_MASK;
    }
    return pm_word(m->mem, table);
}

/* Page tables of recent 2 MiB regions, for prefetch_walk within one run (no table changes
 * place during a run: walks only set A and D). */
#define PT_MEMO 16
typedef struct pt_memo {
    uint64_t region[PT_MEMO]; /* va >> 21, or ~0 */
    const uint64_t *table[PT_MEMO];
} pt_memo;

static __attribute__((noinline)) void prefetch_walk(const emu_mmu *m, pt_memo *pm, uint64_t va)
{
    const uint64_t region = va >> 21;
    const unsigned k = (unsigned)region & (PT_MEMO - 1);
    if (pm->region[k] != region) {
        pm->region[k] = region;
        pm->table[k] = leaf_table(m, va);
    }
    if (pm->table[k])
        __builtin_prefetch(pm->table[k] + va_index(va, EMU_LVL_PT));
}

/* What emu_mmu_run keeps for prefetch_walk.  Accesses are counted in windows of
 * PREFETCH_WINDOW; prefetching is on in a window when the previous one (as far as the
 * accesses that reached the slow path show: L1 hits never walk) walked at least
 * PREFETCH_MIN_WALKS times. */
typedef struct ahead_state {
    size_t window_end;                /* index where the current window ends */
    uint32_t walks;                   /* walks in the current window */
    uint32_t on;                      /* prefetching in the current window */
    uint64_t last_line;               /* va >> 15 of the last access looked at ahead */
    uint64_t recent[PREFETCH_RECENT]; /* lines prefetched lately, by their low bits */
    pt_memo memo;
} ahead_state;

/* Called for access i on the slow path (an L1 miss, or a hit the fast path cannot
 * take): prefetches for access i + PREFETCH_AHEAD, once per 64-byte line of leaf
 * entries (8 4K pages, 32 KiB), not for the line right after the previous one (the
 * host's own prefetcher follows sequential streams), and not for a line still in the
 * small table of recent prefetches (a hot set's lines stay in the host's caches). */
static inline __attribute__((always_inline)) void ahead(const emu_mmu *m, ahead_state *ah,
                                                        const uint64_t *vas, size_t i, size_t n)
{
    if (i >= ah->window_end) {
        ah->on = ah->walks >= PREFETCH_MIN_WALKS;
        ah->walks = 0;
        ah->window_end = i + PREFETCH_WINDOW;
    }
    if (!ah->on || n - i <= PREFETCH_AHEAD)
        return;
    const uint64_t va = vas[i + PREFETCH_AHEAD];
    const uint64_t line = va >> 15;
    uint64_t *r = &ah->recent[line & (PREFETCH_RECENT - 1)];
    if (line - ah->last_line > 1 && *r != line) {
        *r = line;
        prefetch_walk(m, &ah->memo, va);
    }
    ah->last_line = line;
}

/* emu_mmu_run after its flag check; inlined twice so that the common counters-only call
 * (no sizes, no results) runs without per-access tests of sizes and out. */
static inline __attribute__((always_inline)) int
run_stream(emu_mmu *m, const uint64_t *vas, const uint8_t *kinds, const uint32_t *sizes, size_t n,
           uint32_t flags, emu_mmu_result *out, size_t *done)
{
    const uint32_t user = (flags & EMU_RUN_USER) ? EMU_ACC_USER : 0;
    /* Nothing in a run changes the configuration, the PCID or the control state. */
    const uint16_t pcid = m->pcid;
    const uint32_t lat_l1 = m->cfg.lat_l1_hit;
    const uint32_t lat_l12 = m->cfg.lat_l1_hit + m->cfg.lat_l2_hit;
    const int la57 = m->ctl.cr4_la57 != 0;
    first_probe fp[3];
    for (uint32_t kind = EMU_ACC_READ; kind <= EMU_ACC_FETCH; kind++) {
        int role = m->l1role[kind];
        first_probe *p = &fp[kind];
        memset(p, 0, sizeof(*p));
        p->role1 = role;
        p->role2 = m->l2role[kind];
        p->mask1 = &m->probe_mask[role];
        p->mask2 = &m->probe_mask[p->role2];
        if (m->probe_n[p->role2]) {
            p->a2 = &m->arr[m->probe_arr[p->role2][0]];
            p->level2 = m->probe_lvl[p->role2][0];
        }
        if (!m->first_lvl[role])
            continue;
        p->a = &m->arr[m->role_arr[role][0]];
        p->tags = p->a->tags;
        p->e = p->a->e;
        p->rights_ok = m->rights_ok[kind | user];
        p->set_mask = p->a->set_mask;
        p->ways = p->a->ways;
        p->level = m->first_lvl[role];
        p->shift = 12 + 9 * (p->level - 1);
        p->direct_fill = m->fill_arr[role][p->level] == m->role_arr[role][0] &&
                         m->fill_lvl[role][p->level] == p->level;
        p->same_page2 = p->a2 && p->level2 == (int)p->level;
    }
    /* out[i * ostep]: every result, or (EMU_RUN_LAST_ONLY) each in turn into out[0] */
    const size_t ostep = (flags & EMU_RUN_LAST_ONLY) ? 0 : 1;
    uint64_t hits[3] = {0, 0, 0}, l2hits[3] = {0, 0, 0};
    /* The previous access when the fast path below handled it as an L1 hit (else
     * last_kind = 3): its 4K page, kind and entry.  A repeat of it (same page and kind)
     * finds the same entry first, with the same rights and D, and its touch changes no
     * decision (the entry is already the most recently used of its array: an LRU or
     * PLRU touch of it keeps the order, SRRIP sets RRPV 0 again, FIFO and random ignore
     * touches). */
    uint32_t last_kind = 3;
    uint64_t last_page = 0;
    const tlb_entry *last_e = NULL;
    emu_mmu_result scratch;
    ahead_state ah;
    memset(&ah, 0, sizeof(ah));
    ah.window_end = PREFETCH_WINDOW;
    ah.last_line = ~1ull;
    memset(ah.recent, 0xFF, sizeof(ah.recent));
    memset(ah.memo.region, 0xFF, sizeof(ah.memo.region));
    for (size_t i = 0; i < n; i++) {
        const uint32_t kind = kinds[i];
        if (kind > EMU_ACC_FETCH) { /* checked as it comes: nothing done for it */
            add_fast_hits(m, hits, l2hits);
            *done = i;
            return EMU_E_INVAL;
        }
        const uint64_t va = vas[i];
        const uint32_t size = sizes ? sizes[i] : 1;
        uint64_t skip1 = 0, skip2 = 0;
        int ahead_done = 0;
        const first_probe *p = &fp[kind];
        const int one_page = size <= 1 || (va & 0xFFF) + size <= 4096;
        if (kind == last_kind && va >> 12 == last_page && one_page) {
            hits[kind]++;
            if (out)
                set_fast_hit(&out[i * ostep], last_e, va, p->shift, EMU_HIT_L1, lat_l1);
            continue;
        }
        last_kind = 3;
        if (p->a && one_page) {
            /* The L1 fast path: the first probe of xlate's L1 lookup.  A hit there is
             * what the lookup finds first; when the rights allow the access and no D
             * walk is needed it is an L1 hit, handled here as xlate would.  (A hit
             * implies a canonical va: entries only exist for canonical pages under the
             * current LA57 setting, and the tag is every bit of va above the page.) */
            const uint64_t vpn = va >> p->shift;
            const uint64_t tag = (vpn << TLB_TAG_LEVEL_BITS) | p->level;
            const uint32_t set = (uint32_t)vpn & p->set_mask;
            const size_t base = (size_t)set * p->ways;
            const uint64_t *t = p->tags + base;
            const uint32_t ways = p->ways;
            const tlb_entry *e = NULL;
            uint32_t w;
            if (ways == 4) { /* the usual L1 set, compared whole (as tlb_find) */
                w = ways;
                for (uint64_t mk = tags_eq_nib(t, 4, tag); mk; mk &= mk - 1) {
                    const uint32_t v = (uint32_t)__builtin_ctzll(mk) / 4;
                    if (p->e[base + v].pcid == pcid || (p->e[base + v].flags & TLB_F_GLOBAL)) {
                        w = v;
                        e = &p->e[base + v];
                        break;
                    }
                }
            } else {
                for (w = 0; w < ways; w++) { /* the first way with the tag and our PCID or global */
                    if (t[w] == tag) {
                        e = &p->e[base + w];
                        if (e->pcid == pcid || (e->flags & TLB_F_GLOBAL))
                            break;
                    }
                }
            }
            if (w == ways) {
                skip1 = 1;
            } else if (!(rights_deny(m, p->rights_ok, kind | user, e) | needs_d_walk(kind, e))) {
                if (p->a->order) /* LRU: often the way is already in front */
                    p->a->order[set] = lru_order_touch_mru(p->a->order[set], w);
                else
                    tlb_touch(p->a, set, w);
                hits[kind]++;
                last_kind = kind;
                last_page = va >> 12;
                last_e = e;
                if (out)
                    set_fast_hit(&out[i * ostep], e, va, p->shift, EMU_HIT_L1, lat_l1);
                continue;
            }
            ahead(m, &ah, vas, i, n); /* an L1 miss (or a slow hit): look ahead */
            ahead_done = 1;
            /* The L2 fast path, when that probe was the whole L1 lookup (the role's other
             * probes are of sizes it holds no entry of): the first probe of xlate's L2
             * lookup, and an L2 hit on it handled as xlate would (the same argument for
             * a canonical va). */
            const uint64_t mask2 = *p->mask2;
            if (skip1 && (mask2 & 1) && !(*p->mask1 & ~1ull)) {
                /* (when the L2 role's first probe is of a size it holds no entry of,
                 * the slow path below takes the access) */
                tlb_array *a2 = p->a2;
                const int level2 = p->level2;
                uint32_t set2;
                const int w2 = p->same_page2 ? tlb_find_vpn(a2, vpn, tag, pcid, &set2)
                                             : tlb_find(a2, va, level2, pcid, &set2);
                if (w2 < 0) {
                    skip2 = 1; /* bit 0: that first probe */
                    if (!(mask2 & ~skip2) && va_canonical(va, la57)) {
                        /* both lookups missed whole: the walk and fills as xlate's */
                        const int rc = walk_direct(m, p, va, kind | user, set, tag, a2, set2,
                                                   level2, out ? &out[i * ostep] : NULL);
                        ah.walks += (uint32_t)rc;
                        if (rc || !(flags & EMU_RUN_STOP_ON_FAULT))
                            continue;
                        add_fast_hits(m, hits, l2hits);
                        *done = i + 1;
                        return EMU_OK;
                    }
                } else {
                    const tlb_entry *e2 = &a2->e[(size_t)set2 * a2->ways + (uint32_t)w2];
                    if (!(rights_deny(m, p->rights_ok, kind | user, e2) | needs_d_walk(kind, e2))) {
                        tlb_touch(a2, set2, (uint32_t)w2);
                        l2hits[kind]++;
                        if (out)
                            set_fast_hit(&out[i * ostep], e2, va, 12 + 9 * (level2 - 1), EMU_HIT_L2,
                                         lat_l12);
                        /* the L1 fill (the L1 lookup missed): fill_role's entry */
                        if (p->direct_fill && e2->level == p->level && e2->orig_level == p->level) {
                            /* a whole leaf of the first probe's size into its array: the
                             * probe's set and tag, e2's fields under our PCID */
                            tlb_entry ne = *e2;
                            ne.pcid = pcid;
                            ne.reserved0 = 0;
                            if (ne.flags & TLB_F_GLOBAL)
                                tlb_insert(p->a, set, tag, &ne);
                            else
                                tlb_insert_new(p->a, set, tag, &ne);
                        } else {
                            leaf_info li = leaf_of_entry(e2, va);
                            fill_role(m, p->role1, va, &li, 1);
                        }
                        continue;
                    }
                }
            }
        }
        if (!ahead_done)
            ahead(m, &ah, vas, i, n);
        emu_mmu_result *r = out ? &out[i * ostep] : &scratch;
        access_one(m, va, kind | user, size, r, skip1, skip2);
        ah.walks += r->hit == EMU_HIT_WALK;
        if (r->vector != EMU_VEC_NONE && (flags & EMU_RUN_STOP_ON_FAULT)) {
            add_fast_hits(m, hits, l2hits);
            *done = i + 1;
            return EMU_OK;
        }
    }
    add_fast_hits(m, hits, l2hits);
    *done = n;
    return EMU_OK;
}

int emu_mmu_run(emu_mmu *m, const uint64_t *vas, const uint8_t *kinds, const uint32_t *sizes,
                size_t n, uint32_t flags, emu_mmu_result *out, size_t *done)
{
    *done = 0;
    if (flags & ~(uint32_t)(EMU_RUN_STOP_ON_FAULT | EMU_RUN_USER | EMU_RUN_LAST_ONLY))
        return EMU_E_INVAL;
    if (!sizes && !out)
        return run_stream(m, vas, kinds, NULL, n, flags, NULL, done);
    return run_stream(m, vas, kinds, sizes, n, flags, out, done);
}

/* ---- control ------------------------------------------------------------------------------- */

int emu_mmu_get_control(const emu_mmu *m, emu_mmu_control *out)
{
    *out = m->ctl;
    return EMU_OK;
}

int emu_mmu_set_control(emu_mmu *m, const emu_mmu_control *c)
{
    if ((c->cr0_wp | c->cr4_pge | c->cr4_pcide | c->cr4_smep | c->cr4_smap | c->cr4_la57 |
         c->cr4_pke | c->efer_nxe | c->rflags_ac) > 1)
        return EMU_E_INVAL;
    emu_mmu_control old = m->ctl;
    if (!old.cr4_pcide && c->cr4_pcide && (old.cr3 & 0xFFF))
        return EMU_E_GP; /* PCIDE can be set only while CR3[11:0] = 0 */
    emu_mmu_control nw = *c;
    nw.cr3 = old.cr3;
    m->ctl = nw;
    derive_walk_cfg(m);
    if (old.cr4_pge != nw.cr4_pge || (old.cr4_pcide && !nw.cr4_pcide) ||
        old.cr4_la57 != nw.cr4_la57 || old.efer_nxe != nw.efer_nxe) {
        m->st.flushes++;
        sweep_all(m, SWEEP_ALL, 0);
    } else if (!old.cr4_smep && nw.cr4_smep) {
        m->st.flushes++;
        sweep_all(m, SWEEP_PCID_ANY, m->pcid);
    }
    return EMU_OK;
}

int emu_mmu_write_cr3(emu_mmu *m, uint64_t value)
{
    int noflush = 0;
    if (value >> 63) {
        if (!m->ctl.cr4_pcide)
            return EMU_E_GP;
        noflush = 1;
        value &= ~(1ull << 63);
    }
    if (value >> m->cfg.maxphyaddr)
        return EMU_E_GP;
    m->ctl.cr3 = value;
    derive_walk_cfg(m);
    m->st.cr3_writes++;
    if (!noflush)
        sweep_all(m, SWEEP_PCID_NONGLOBAL, m->pcid);
    return EMU_OK;
}

int emu_mmu_invlpg(emu_mmu *m, uint64_t va)
{
    m->st.invlpg++;
    if (!va_canonical(va, m->ctl.cr4_la57 != 0))
        return EMU_OK;
    for (uint32_t i = 0; i < m->n_arr; i++)
        kill_covering(m, &m->arr[i], va, m->pcid, 0);
    sweep_pscs(m, SWEEP_PCID_ANY, m->pcid);
    return EMU_OK;
}

int emu_mmu_invpcid(emu_mmu *m, uint32_t type, uint64_t pcid, uint64_t va)
{
    if (type > 3 || pcid > 0xFFF)
        return EMU_E_GP;
    if (!m->ctl.cr4_pcide && type <= 1 && pcid != 0)
        return EMU_E_GP;
    if (type == 0 && !va_canonical(va, m->ctl.cr4_la57 != 0))
        return EMU_E_GP;
    m->st.invpcid++;
    switch (type) {
    case 0:
        for (uint32_t i = 0; i < m->n_arr; i++)
            kill_covering(m, &m->arr[i], va, (uint16_t)pcid, 1);
        sweep_pscs(m, SWEEP_PCID_ANY, (uint16_t)pcid);
        break;
    case 1:
        sweep_all(m, SWEEP_PCID_NONGLOBAL, (uint16_t)pcid);
        break;
    case 2:
        sweep_all(m, SWEEP_ALL, 0);
        break;
    default:
        sweep_all(m, SWEEP_NONGLOBAL, 0);
        break;
    }
    return EMU_OK;
}

int emu_mmu_flush_all(emu_mmu *m, uint32_t include_global)
{
    m->st.flushes++;
    sweep_all(m, include_global ? SWEEP_ALL : SWEEP_NONGLOBAL, 0);
    return EMU_OK;
}

/* ---- introspection ------------------------------------------------------------------------- */

void emu_mmu_get_stats(const emu_mmu *m, emu_mmu_stats *out)
{
    *out = m->st;
}

void emu_mmu_reset_stats(emu_mmu *m)
{
    memset(&m->st, 0, sizeof(m->st));
}

static void info_of(const tlb_array *a, size_t i, uint8_t index, emu_tlb_entry_info *o)
{
    const tlb_entry *e = &a->e[i];
    memset(o, 0, sizeof(*o));
    o->va = entry_va(a->tags[i]);
    o->pa = e->pfn << 12;
    o->page_size = 1ull << (12 + 9 * (e->level - 1));
    o->orig_page_size = 1ull << (12 + 9 * (e->orig_level - 1));
    o->pcid = e->pcid;
    o->array = index;
    o->rights = e->rights;
    o->pkey = e->pkey;
    o->global = (e->flags & TLB_F_GLOBAL) != 0;
    o->dirty = (e->flags & TLB_F_DIRTY) != 0;
}

int emu_mmu_entries(const emu_mmu *m, emu_tlb_entry_info *out, size_t cap, size_t *needed)
{
    size_t k = 0;
    for (uint32_t a = 0; a < m->n_arr; a++) {
        const tlb_array *t = &m->arr[a];
        for (size_t i = 0; i < (size_t)t->sets * t->ways; i++) {
            if (!t->tags[i])
                continue;
            if (k < cap)
                info_of(t, i, (uint8_t)a, &out[k]);
            k++;
        }
    }
    *needed = k;
    return k > cap ? EMU_E_SHORT : EMU_OK;
}

int emu_mmu_psc_entries(const emu_mmu *m, emu_tlb_entry_info *out, size_t cap, size_t *needed)
{
    size_t k = 0;
    for (int l = EMU_LVL_PD; l <= EMU_LVL_PML5; l++) {
        if (!m->has_psc[l])
            continue;
        const tlb_array *t = &m->psc[l];
        for (size_t i = 0; i < (size_t)t->sets * t->ways; i++) {
            if (!t->tags[i])
                continue;
            if (k < cap) {
                emu_tlb_entry_info *o = &out[k];
                memset(o, 0, sizeof(*o));
                o->va = (t->tags[i] >> TLB_TAG_LEVEL_BITS) << (12 + 9 * (l - 1));
                o->pa = t->e[i].pfn << 12;
                o->page_size = 1ull << (12 + 9 * (l - 1));
                o->orig_page_size = o->page_size;
                o->pcid = t->e[i].pcid;
                o->array = (uint8_t)l;
                o->rights = t->e[i].rights;
            }
            k++;
        }
    }
    *needed = k;
    return k > cap ? EMU_E_SHORT : EMU_OK;
}
