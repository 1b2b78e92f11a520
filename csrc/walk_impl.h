/* Internal: the walker core shared by emu_walk and the MMU (which starts walks part-way
 * down, from a paging-structure-cache hit).  Not part of the cffi contract. */
#ifndef EMU_WALK_IMPL_H
#define EMU_WALK_IMPL_H
#include <string.h>

#include "physmem_impl.h"

#define RIGHT_RW 0x1 /* R/W ANDed across levels (SDM 3A 4.6.1) */
#define RIGHT_US 0x2 /* U/S ANDed across levels */
#define RIGHT_XD 0x4 /* XD ORed across levels (only with EFER.NXE=1) */
#define RIGHTS_ALL_OPEN (RIGHT_RW | RIGHT_US)

#define ENTRY_ADDR_MASK 0x000FFFFFFFFFF000ull /* bits 51:12 */

static inline unsigned va_index(uint64_t va, int level)
{
    return (unsigned)(va >> (12 + 9 * (level - 1))) & 0x1FFu;
}

static inline uint64_t level_page_size(int level)
{
    return 4096ull << (9 * (level - 1));
}

/* Canonical: bits 63:47 (63:56 with LA57) all equal to bit 47 (56). SDM 3A 4.5 */
static inline int va_canonical(uint64_t va, int la57)
{
    int shift = la57 ? 7 : 16;
    return (uint64_t)((int64_t)(va << shift) >> shift) == va;
}

/* Where a walk begins: the top level and its table, or a lower level found in a
 * paging-structure cache together with the rights combined above it. */
typedef struct walk_start {
    uint64_t table_pa;
    int level;
    unsigned rights;
} walk_start;

/* What a walk read, for paging-structure-cache fills and the walk cost model. */
typedef struct walk_trace {
    uint64_t entry_pa[6]; /* index level: address of the entry read at that level */
    uint64_t table_pa[6]; /* index level: next table named by a non-leaf entry */
    unsigned rights[6];   /* rights combined down to and including that level */
    uint64_t leaf;        /* the leaf entry as it is after the walk's A/D update */
    uint8_t read_mask;    /* bit level-1: the level was read from memory */
} walk_trace;

/* A rights cache entry: 0 not yet known, else WALK_RIGHTS_KNOWN | the walk_check_rights
 * result (whose bits, P and PK, never include this one). */
#define WALK_RIGHTS_KNOWN 0x80

/* Rights check for a complete translation under the current control state (SDM 3A
 * 4.6): 0 when allowed, else the #PF error-code bits beyond W/U/I (P, PK). */
uint32_t walk_check_rights(const emu_walk_cfg *cfg, uint32_t access, unsigned rights,
                           unsigned pkey);

/* The error-code bits that describe the access itself (W, U, I). */
uint32_t walk_access_ec(const emu_walk_cfg *cfg, uint32_t access);

/* EMU_OK when cfg is usable. */
int walk_cfg_check(const emu_walk_cfg *cfg);

/* Top of the hierarchy: the level and the table CR3 names. */
static inline walk_start walk_top(const emu_walk_cfg *cfg)
{
    walk_start s;
    s.table_pa = cfg->cr3 & ENTRY_ADDR_MASK;
    s.level = (cfg->flags & EMU_WF_LA57) ? EMU_LVL_PML5 : EMU_LVL_PML4;
    s.rights = RIGHTS_ALL_OPEN;
    return s;
}

#define NX_BIT (1ull << EMU_PTE_NX_SHIFT)
#define PKEY_MASK 0xFull

/* Reserved bits of a present entry at level (SDM 3A 4.5, Tables 4-14..4-20). */
static inline uint64_t reserved_mask(const emu_walk_cfg *cfg, int level, uint64_t e)
{
    uint64_t m = 0;
    if (cfg->maxphyaddr < EMU_PA_BITS_MAX) /* bits 51:M */
        m |= ((1ull << EMU_PA_BITS_MAX) - 1) & ~((1ull << cfg->maxphyaddr) - 1);
    if (!(cfg->flags & EMU_WF_NXE))
        m |= NX_BIT;
    switch (level) {
    case EMU_LVL_PML5:
    case EMU_LVL_PML4:
        m |= EMU_PTE_PS; /* PS must be 0 in PML5E/PML4E */
        if (cfg->flags & EMU_WF_AMD)
            m |= EMU_PTE_G; /* AMD: bit 8 MBZ in PML4E/PML5E (APM 5.3.3) */
        break;
    case EMU_LVL_PDPT:
        if (e & EMU_PTE_PS)
            m |= (cfg->flags & EMU_WF_NO_1G) ? EMU_PTE_PS : 0x3FFFE000ull; /* bits 29:13 */
        break;
    case EMU_LVL_PD:
        if (e & EMU_PTE_PS)
            m |= 0x1FE000ull; /* bits 20:13; bit 12 is PAT */
        break;
    default:
        break;
    }
    return m;
}

/* The reserved bits QEMU checks before it sets A in a PDPTE: all but the 1 GiB
 * alignment bits, which it checks only once it knows the entry is a leaf. */
static inline uint64_t reserved_mask_before_leaf(const emu_walk_cfg *cfg, int level, uint64_t e)
{
    uint64_t m = reserved_mask(cfg, level, e);
    if (level == EMU_LVL_PDPT && (e & EMU_PTE_PS) && !(cfg->flags & EMU_WF_NO_1G))
        m &= ~0x3FFFE000ull;
    return m;
}

/* The reserved-bit masks of a configuration, indexed [PS bit of the entry][level]: rsvd
 * as reserved_mask, before as reserved_mask_before_leaf (both depend on the entry only
 * through PS). */
typedef struct walk_masks {
    uint64_t rsvd[2][6];
    uint64_t before[2][6];
} walk_masks;

static inline void walk_masks_init(walk_masks *wm, const emu_walk_cfg *cfg)
{
    memset(wm, 0, sizeof(*wm));
    for (int ps = 0; ps < 2; ps++) {
        uint64_t e = ps ? EMU_PTE_PS : 0;
        for (int level = EMU_LVL_PT; level <= EMU_LVL_PML5; level++) {
            wm->rsvd[ps][level] = reserved_mask(cfg, level, e);
            wm->before[ps][level] = reserved_mask_before_leaf(cfg, level, e);
        }
    }
}

static inline void set_fault(emu_walk_result *out, uint64_t va, uint32_t ec, int level)
{
    out->pa = 0;
    out->page_size = 0;
    out->cr2 = va;
    out->error_code = ec;
    out->vector = EMU_VEC_PF;
    out->level = (uint8_t)level;
}

/* Walks from start, checks rights, applies the A/D policy.  path and tr may be NULL.
 * cfg must already be validated and wm made from it (walk_masks_init).  rights_cache:
 * NULL, or a table indexed by rights << 4 | pkey of walk_check_rights results for this
 * cfg and access (see WALK_RIGHTS_KNOWN), filled as it goes.  Inline: the MMU's walks
 * are hot. */
static inline __attribute__((always_inline)) void
walk_from(emu_physmem *m, const emu_walk_cfg *cfg, const walk_masks *wm, uint64_t va,
          uint32_t access, walk_start start, emu_walk_result *out, emu_walk_path *path,
          walk_trace *tr, uint8_t *rights_cache)
{
    const int qemu = (cfg->flags & EMU_WF_A_QEMU) != 0;
    const int nxe = (cfg->flags & EMU_WF_NXE) != 0;
    uint64_t entry[6];
    uint64_t *entry_ptr[6]; /* where each entry lives: frames never move during a walk */
    int top = start.level;
    uint64_t table = start.table_pa;
    unsigned rights = start.rights;
    int level;
    /* A bits missing in the entries read: without any (and with D already set in the
     * leaf of a write) the A/D update below would write nothing */
    uint64_t missing = 0;

    out->rights = 0;
    out->pkey = 0;
    for (level = top;; level--) {
        uint64_t epa = table + 8ull * va_index(va, level);
        uint64_t *ep = pm_word(m, epa);
        uint64_t e = ep ? *ep : 0;
        entry_ptr[level] = ep;
        entry[level] = e;
        if (path) {
            path->entry[level - 1] = e;
            path->entry_pa[level - 1] = epa;
            path->read_mask |= (uint8_t)(1u << (level - 1));
        }
        if (tr) {
            tr->read_mask |= (uint8_t)(1u << (level - 1));
            tr->entry_pa[level] = epa;
        }
        if (!(e & EMU_PTE_P)) {
            set_fault(out, va, walk_access_ec(cfg, access), level); /* P=0: reserved bits ignored */
            return;
        }
        const unsigned ps = (e & EMU_PTE_PS) != 0;
        uint64_t rsvd = qemu ? wm->before[ps][level] : wm->rsvd[ps][level];
        missing |= ~e & EMU_PTE_A;
        if (e & rsvd) {
            set_fault(out, va, walk_access_ec(cfg, access) | EMU_PF_P | EMU_PF_RSVD, level);
            return;
        }
        /* R/W and U/S ANDed, XD ORed across levels (SDM 3A 4.6.1) */
        if (!(e & EMU_PTE_RW))
            rights &= ~(unsigned)RIGHT_RW;
        if (!(e & EMU_PTE_US))
            rights &= ~(unsigned)RIGHT_US;
        if (nxe && (e & NX_BIT))
            rights |= RIGHT_XD;
        int leaf = level == EMU_LVL_PT ||
                   ((level == EMU_LVL_PD || level == EMU_LVL_PDPT) && (e & EMU_PTE_PS));
        /* QEMU sets A in each non-leaf entry as it passes, and in a PDPTE before it
         * looks at PS (so a refused or misaligned 1 GiB leaf still gets A). */
        if (qemu && !(e & EMU_PTE_A) && (!leaf || level == EMU_LVL_PDPT))
            *ep = e | EMU_PTE_A; /* present, so its frame exists */
        if (leaf)
            break;
        if (tr) {
            tr->table_pa[level] = e & ENTRY_ADDR_MASK;
            tr->rights[level] = rights;
        }
        table = e & ENTRY_ADDR_MASK;
    }

    uint64_t e = entry[level];
    if (qemu) { /* the 1 GiB alignment bits, checked after A was set */
        const unsigned ps = (e & EMU_PTE_PS) != 0;
        uint64_t late = wm->rsvd[ps][level] & ~wm->before[ps][level];
        if (e & late) {
            set_fault(out, va, walk_access_ec(cfg, access) | EMU_PF_P | EMU_PF_RSVD, level);
            return;
        }
    }
    unsigned pkey = (unsigned)((e >> EMU_PTE_PKEY_SHIFT) & PKEY_MASK);
    out->rights = (uint8_t)rights;
    out->pkey = (uint8_t)pkey;
    uint32_t deny;
    if (rights_cache) {
        uint8_t *c = &rights_cache[(rights << 4) | pkey];
        if (!*c)
            *c = (uint8_t)(WALK_RIGHTS_KNOWN | walk_check_rights(cfg, access, rights, pkey));
        deny = *c & ~(uint32_t)WALK_RIGHTS_KNOWN;
    } else {
        deny = walk_check_rights(cfg, access, rights, pkey);
    }
    if (deny) {
        set_fault(out, va, walk_access_ec(cfg, access) | deny, level);
        return;
    }

    /* Allowed: A in every entry used, D in the leaf for a write (SDM 3A 4.8). */
    const uint64_t dbit = (access & EMU_ACC_KIND_MASK) == EMU_ACC_WRITE ? EMU_PTE_D : 0;
    if (!(missing | (dbit & ~e))) { /* every bit already set; no store was made */
        if (tr)
            tr->leaf = e;
    } else {
        for (int l = top; l >= level; l--) {
            uint64_t v = *entry_ptr[l]; /* re-read: QEMU mode or an alias may have set A */
            uint64_t nv = v | EMU_PTE_A | (l == level ? dbit : 0);
            if (nv != v)
                *entry_ptr[l] = nv;
            if (tr && l == level)
                tr->leaf = nv;
        }
    }

    uint64_t size = level_page_size(level);
    uint64_t frame = (level == EMU_LVL_PT ? e : (e & ~(uint64_t)EMU_PTE_PAT_LARGE)) &
                     ENTRY_ADDR_MASK & ~(size - 1);
    out->pa = frame | (va & (size - 1));
    out->page_size = size;
    out->cr2 = 0;
    out->error_code = 0;
    out->vector = EMU_VEC_NONE;
    out->level = (uint8_t)level;
}

#endif
