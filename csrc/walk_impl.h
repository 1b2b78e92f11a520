/* Internal: the walker core shared by emu_walk and the MMU (which starts walks part-way
 * down, from a paging-structure-cache hit).  Not part of the cffi contract. */
#ifndef EMU_WALK_IMPL_H
#define EMU_WALK_IMPL_H
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

/* Walks from start, checks rights, applies the A/D policy.  path and tr may be NULL.
 * cfg must already be validated.  rights_cache: NULL, or a table indexed by
 * rights << 4 | pkey of walk_check_rights results for this cfg and access (see
 * WALK_RIGHTS_KNOWN), filled as it goes. */
void walk_from(emu_physmem *m, const emu_walk_cfg *cfg, uint64_t va, uint32_t access,
               walk_start start, emu_walk_result *out, emu_walk_path *path, walk_trace *tr,
               uint8_t *rights_cache);

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

#endif
