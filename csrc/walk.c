/* The x86-64 page walker: 4- and 5-level IA-32e paging (SDM 3A 4.5 - 4.8). */
#include <string.h>

#include "walk_impl.h"

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

uint32_t walk_check_rights(const emu_walk_cfg *cfg, uint32_t access, unsigned rights, unsigned pkey)
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

static int access_ok(uint32_t access)
{
    return (access & EMU_ACC_KIND_MASK) != 3 &&
           !(access & ~(uint32_t)(EMU_ACC_KIND_MASK | EMU_ACC_USER | EMU_ACC_IMPLICIT));
}

static void walk_one(emu_physmem *m, const emu_walk_cfg *cfg, const walk_masks *wm, uint64_t va,
                     uint32_t access, emu_walk_result *out, emu_walk_path *path)
{
    if (!va_canonical(va, (cfg->flags & EMU_WF_LA57) != 0)) {
        /* #GP(0): no paging structure is read and CR2 is untouched (SDM 3A 4.5) */
        memset(out, 0, sizeof(*out));
        out->vector = EMU_VEC_GP;
        return;
    }
    walk_from(m, cfg, wm, va, access, walk_top(cfg), out, path, NULL, NULL);
}

int emu_walk(emu_physmem *m, const emu_walk_cfg *cfg, uint64_t va, uint32_t access,
             emu_walk_result *out, emu_walk_path *path)
{
    memset(out, 0, sizeof(*out));
    if (path)
        memset(path, 0, sizeof(*path));
    if (walk_cfg_check(cfg) != EMU_OK || !access_ok(access))
        return EMU_E_INVAL;
    walk_masks wm;
    walk_masks_init(&wm, cfg);
    walk_one(m, cfg, &wm, va, access, out, path);
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
    walk_masks wm;
    walk_masks_init(&wm, cfg);
    for (size_t i = 0; i < n; i++)
        walk_one(m, cfg, &wm, vas[i], access[i], &out[i], NULL);
    return EMU_OK;
}
