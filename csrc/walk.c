/* The x86-64 page walker: 4- and 5-level IA-32e paging (SDM 3A 4.5 - 4.8). */
#include <string.h>

#include "walk_impl.h"

#define NX_BIT (1ull << EMU_PTE_NX_SHIFT)
#define PKEY_MASK 0xFull

int walk_cfg_check(const emu_walk_cfg *cfg)
{
    if (cfg->maxphyaddr < 32 || cfg->maxphyaddr > EMU_PA_BITS_MAX || cfg->reserved0)
        return EMU_E_INVAL;
    /* CR3 bits 62:M are reserved (a MOV to CR3 with them set is #GP); bit 63 is the
     * PCID no-flush hint, never stored, so it is ignored here. SDM 3A 4.5 */
    uint64_t high = (cfg->cr3 & ~(1ull << 63)) >> cfg->maxphyaddr;
    if (high)
        return EMU_E_INVAL;
    if (cfg->flags & ~(uint32_t)0x3FF)
        return EMU_E_INVAL;
    return EMU_OK;
}

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
static uint64_t reserved_mask_before_leaf(const emu_walk_cfg *cfg, int level, uint64_t e)
{
    uint64_t m = reserved_mask(cfg, level, e);
    if (level == EMU_LVL_PDPT && (e & EMU_PTE_PS) && !(cfg->flags & EMU_WF_NO_1G))
        m &= ~0x3FFFE000ull;
    return m;
}

uint32_t walk_access_ec(const emu_walk_cfg *cfg, uint32_t access)
{
    uint32_t kind = access & EMU_ACC_KIND_MASK;
    uint32_t ec = 0;
    if (kind == EMU_ACC_WRITE)
        ec |= EMU_PF_W;
    if ((access & EMU_ACC_USER) && !(access & EMU_ACC_IMPLICIT))
        ec |= EMU_PF_U; /* implicit accesses are supervisor accesses even at CPL 3 */
    /* I/D is reported only with NXE or SMEP (SDM 3A 4.7) */
    if (kind == EMU_ACC_FETCH && (cfg->flags & (EMU_WF_NXE | EMU_WF_SMEP)))
        ec |= EMU_PF_I;
    return ec;
}

uint32_t walk_check_rights(const emu_walk_cfg *cfg, uint32_t access, unsigned rights,
                           unsigned pkey)
{
    uint32_t kind = access & EMU_ACC_KIND_MASK;
    /* An implicit access (GDT, IDT, ...) is a supervisor access even at CPL 3 (4.6) */
    int user = (access & EMU_ACC_USER) && !(access & EMU_ACC_IMPLICIT);
    int rw = (rights & RIGHT_RW) != 0;
    int user_addr = (rights & RIGHT_US) != 0;
    int xd = (rights & RIGHT_XD) != 0;
    int wp = (cfg->flags & EMU_WF_WP) != 0;
    int ok;

    /* SDM 3A 4.6.1 */
    if (user) {
        ok = user_addr && !(kind == EMU_ACC_WRITE && !rw) && !(kind == EMU_ACC_FETCH && xd);
    } else if (kind == EMU_ACC_FETCH) {
        ok = !xd && !((cfg->flags & EMU_WF_SMEP) && user_addr);
    } else {
        int smap_blocks = user_addr && (cfg->flags & EMU_WF_SMAP) &&
                          !((cfg->flags & EMU_WF_AC) && !(access & EMU_ACC_IMPLICIT));
        ok = !smap_blocks && !(kind == EMU_ACC_WRITE && !rw && wp);
    }

    /* Protection keys: data accesses to user-mode addresses only; never fetches.
     * PK is reported whenever the key refuses, whatever else refuses (SDM 3A 4.6.2). */
    if (kind != EMU_ACC_FETCH && user_addr && (cfg->flags & EMU_WF_PKE)) {
        unsigned ad = (cfg->pkru >> (2 * pkey)) & 1u;
        unsigned wd = (cfg->pkru >> (2 * pkey + 1)) & 1u;
        if (ad || (wd && kind == EMU_ACC_WRITE && (user || wp)))
            return EMU_PF_P | EMU_PF_PK;
    }
    return ok ? 0 : EMU_PF_P;
}

static void set_fault(emu_walk_result *out, uint64_t va, uint32_t ec, int level)
{
    out->pa = 0;
    out->page_size = 0;
    out->cr2 = va;
    out->error_code = ec;
    out->vector = EMU_VEC_PF;
    out->level = (uint8_t)level;
}

void walk_from(emu_physmem *m, const emu_walk_cfg *cfg, uint64_t va, uint32_t access,
               walk_start start, emu_walk_result *out, emu_walk_path *path, walk_trace *tr,
               uint8_t *rights_cache)
{
    const int qemu = (cfg->flags & EMU_WF_A_QEMU) != 0;
    const int nxe = (cfg->flags & EMU_WF_NXE) != 0;
    uint64_t entry[6];
    uint64_t *entry_ptr[6]; /* where each entry lives: frames never move during a walk */
    int top = start.level;
    uint64_t table = start.table_pa;
    unsigned rights = start.rights;
    int level;

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
        uint64_t rsvd = qemu ? reserved_mask_before_leaf(cfg, level, e)
                             : reserved_mask(cfg, level, e);
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
        uint64_t late = reserved_mask(cfg, level, e) & ~reserved_mask_before_leaf(cfg, level, e);
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
    for (int l = top; l >= level; l--) {
        uint64_t v = *entry_ptr[l]; /* re-read: QEMU mode or an alias may have set A */
        uint64_t nv = v | EMU_PTE_A | (l == level ? dbit : 0);
        if (nv != v)
            *entry_ptr[l] = nv;
        if (tr && l == level)
            tr->leaf = nv;
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

static int access_ok(uint32_t access)
{
    return (access & EMU_ACC_KIND_MASK) != 3 &&
           !(access & ~(uint32_t)(EMU_ACC_KIND_MASK | EMU_ACC_USER | EMU_ACC_IMPLICIT));
}

static void walk_one(emu_physmem *m, const emu_walk_cfg *cfg, uint64_t va, uint32_t access,
                     emu_walk_result *out, emu_walk_path *path)
{
    if (!va_canonical(va, (cfg->flags & EMU_WF_LA57) != 0)) {
        /* #GP(0): no paging structure is read and CR2 is untouched (SDM 3A 4.5) */
        memset(out, 0, sizeof(*out));
        out->vector = EMU_VEC_GP;
        return;
    }
    walk_from(m, cfg, va, access, walk_top(cfg), out, path, NULL, NULL);
}

int emu_walk(emu_physmem *m, const emu_walk_cfg *cfg, uint64_t va, uint32_t access,
             emu_walk_result *out, emu_walk_path *path)
{
    memset(out, 0, sizeof(*out));
    if (path)
        memset(path, 0, sizeof(*path));
    if (walk_cfg_check(cfg) != EMU_OK || !access_ok(access))
        return EMU_E_INVAL;
    walk_one(m, cfg, va, access, out, path);
    return EMU_OK;
}

int emu_walk_batch(emu_physmem *m, const emu_walk_cfg *cfg, const uint64_t *vas,
                   const uint8_t *access, size_t n, emu_walk_result *out)
{
    if (walk_cfg_check(cfg) != EMU_OK)
        return EMU_E_INVAL;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        if (!access_ok(access[i])) {
            memset(&out[i], 0, sizeof(out[i]));
            out[i].vector = 0xff;
            bad = 1;
        }
    }
    if (bad)
        return EMU_E_INVAL;
    for (size_t i = 0; i < n; i++)
        walk_one(m, cfg, vas[i], access[i], &out[i], NULL);
    return EMU_OK;
}
