/* Sparse simulated physical memory: frame number -> 4 KiB, zero until written. */
#include <stdlib.h>
#include <string.h>

#include "physmem_impl.h"

#define PM_INITIAL_CAP 1024u

emu_physmem *emu_physmem_new(void)
{
    emu_physmem *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->cap = PM_INITIAL_CAP;
    m->keys = malloc(m->cap * sizeof(*m->keys));
    m->data = calloc(m->cap, sizeof(*m->data));
    if (!m->keys || !m->data) {
        free(m->keys);
        free(m->data);
        free(m);
        return NULL;
    }
    memset(m->keys, 0xff, m->cap * sizeof(*m->keys));
    for (size_t c = 0; c < PM_CACHE; c++)
        m->cache[c].pfn = PM_EMPTY;
    return m;
}

void emu_physmem_free(emu_physmem *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i] != PM_EMPTY)
            free(m->data[i]);
    free(m->keys);
    free(m->data);
    free(m);
}

/* Rehashes into a table twice as large.  On failure m is unchanged. */
static int grow(emu_physmem *m)
{
    size_t ncap = m->cap * 2;
    uint64_t *nkeys = malloc(ncap * sizeof(*nkeys));
    uint8_t **ndata = calloc(ncap, sizeof(*ndata));
    if (!nkeys || !ndata) {
        free(nkeys);
        free(ndata);
        return EMU_E_NOMEM;
    }
    memset(nkeys, 0xff, ncap * sizeof(*nkeys));
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == PM_EMPTY)
            continue;
        size_t j = pm_slot(m->keys[i], ncap);
        while (nkeys[j] != PM_EMPTY)
            j = (j + 1) & (ncap - 1);
        nkeys[j] = m->keys[i];
        ndata[j] = m->data[i];
    }
    free(m->keys);
    free(m->data);
    m->keys = nkeys;
    m->data = ndata;
    m->cap = ncap;
    return EMU_OK;
}

/* The frame pfn, created zeroed if missing.  NULL only when the host is out of memory,
 * and then m is unchanged. */
static uint8_t *frame_get_or_create(emu_physmem *m, uint64_t pfn)
{
    uint8_t *f = pm_frame(m, pfn);
    if (f)
        return f;
    if ((m->count + 1) * 2 > m->cap && grow(m) != EMU_OK)
        return NULL;
    f = calloc(1, PM_FRAME_BYTES);
    if (!f)
        return NULL;
    size_t i = pm_slot(pfn, m->cap);
    while (m->keys[i] != PM_EMPTY)
        i = (i + 1) & (m->cap - 1);
    m->keys[i] = pfn;
    m->data[i] = f;
    m->count++;
    return f;
}

static int check_range(uint64_t pa, size_t n)
{
    if (pa >= PM_PA_LIMIT || n > PM_PA_LIMIT - pa)
        return EMU_E_RANGE;
    return EMU_OK;
}

int emu_physmem_read_u64(const emu_physmem *m, uint64_t pa, uint64_t *value)
{
    int rc = check_range(pa, 8);
    if (rc)
        return rc;
    if (pa & 7)
        return EMU_E_ALIGN;
    *value = pm_load8(m, pa);
    return EMU_OK;
}

int emu_physmem_read_path(const emu_physmem *m, uint64_t table_pa, uint64_t va, uint32_t top_level,
                          uint64_t *entries, uint32_t *count)
{
    *count = 0;
    if (top_level < EMU_LVL_PT || top_level > EMU_LVL_PML5)
        return EMU_E_INVAL;
    int rc = check_range(table_pa, 4096);
    if (rc)
        return rc;
    if (table_pa & 0xFFF)
        return EMU_E_ALIGN;
    uint32_t k = 0;
    for (uint32_t level = top_level; level >= EMU_LVL_PT; level--) {
        unsigned idx = (unsigned)(va >> (12 + 9 * (level - 1))) & 0x1FF;
        uint64_t e = pm_load8(m, table_pa + 8u * idx); /* bits 51:12: always in range */
        entries[k++] = e;
        if (!e)
            break;
        table_pa = e & 0x000FFFFFFFFFF000ull; /* bits 51:12 */
    }
    *count = k;
    return EMU_OK;
}

int emu_physmem_write_u64(emu_physmem *m, uint64_t pa, uint64_t value)
{
    int rc = check_range(pa, 8);
    if (rc)
        return rc;
    if (pa & 7)
        return EMU_E_ALIGN;
    uint8_t *f = frame_get_or_create(m, pa >> PM_FRAME_SHIFT);
    if (!f)
        return EMU_E_NOMEM;
    memcpy(f + (pa & (PM_FRAME_BYTES - 1)), &value, 8);
    return EMU_OK;
}

int emu_physmem_read(const emu_physmem *m, uint64_t pa, uint8_t *buf, size_t n)
{
    int rc = check_range(pa, n);
    if (rc)
        return rc;
    while (n) {
        size_t off = (size_t)(pa & (PM_FRAME_BYTES - 1));
        size_t chunk = PM_FRAME_BYTES - off;
        if (chunk > n)
            chunk = n;
        const uint8_t *f = pm_frame(m, pa >> PM_FRAME_SHIFT);
        if (f)
            memcpy(buf, f + off, chunk);
        else
            memset(buf, 0, chunk);
        buf += chunk;
        pa += chunk;
        n -= chunk;
    }
    return EMU_OK;
}

int emu_physmem_write(emu_physmem *m, uint64_t pa, const uint8_t *buf, size_t n)
{
    int rc = check_range(pa, n);
    if (rc)
        return rc;
    /* Create every frame first, so a failure writes nothing. */
    uint64_t first = pa >> PM_FRAME_SHIFT;
    uint64_t last = n ? (pa + n - 1) >> PM_FRAME_SHIFT : first;
    for (uint64_t pfn = first; n && pfn <= last; pfn++)
        if (!frame_get_or_create(m, pfn))
            return EMU_E_NOMEM;
    while (n) {
        size_t off = (size_t)(pa & (PM_FRAME_BYTES - 1));
        size_t chunk = PM_FRAME_BYTES - off;
        if (chunk > n)
            chunk = n;
        memcpy(pm_frame(m, pa >> PM_FRAME_SHIFT) + off, buf, chunk);
        buf += chunk;
        pa += chunk;
        n -= chunk;
    }
    return EMU_OK;
}

int emu_physmem_discard(emu_physmem *m, uint64_t pfn)
{
    if (pfn >= (PM_PA_LIMIT >> PM_FRAME_SHIFT))
        return EMU_E_RANGE;
    size_t i = pm_slot(pfn, m->cap);
    while (m->keys[i] != pfn) {
        if (m->keys[i] == PM_EMPTY)
            return EMU_OK;
        i = (i + 1) & (m->cap - 1);
    }
    free(m->data[i]);
    m->data[i] = NULL;
    m->keys[i] = PM_EMPTY;
    m->count--;
    if (m->cache[pfn & (PM_CACHE - 1)].pfn == pfn)
        m->cache[pfn & (PM_CACHE - 1)].pfn = PM_EMPTY;
    /* Backward-shift deletion keeps every probe chain unbroken without tombstones. */
    size_t hole = i;
    size_t j = (i + 1) & (m->cap - 1);
    while (m->keys[j] != PM_EMPTY) {
        size_t home = pm_slot(m->keys[j], m->cap);
        /* Move j into the hole unless its home lies cyclically in (hole, j]. */
        int in_between = (hole <= j) ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!in_between) {
            m->keys[hole] = m->keys[j];
            m->data[hole] = m->data[j];
            m->keys[j] = PM_EMPTY;
            m->data[j] = NULL;
            hole = j;
        }
        j = (j + 1) & (m->cap - 1);
    }
    return EMU_OK;
}

uint64_t emu_physmem_frame_count(const emu_physmem *m)
{
    return m->count;
}

uint64_t emu_physmem_bytes_used(const emu_physmem *m)
{
    return (uint64_t)m->count * PM_FRAME_BYTES +
           (uint64_t)m->cap * (sizeof(*m->keys) + sizeof(*m->data)) + sizeof(*m);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

int emu_physmem_frames(const emu_physmem *m, uint64_t *out, size_t cap, size_t *needed)
{
    *needed = m->count;
    if (cap < m->count)
        return EMU_E_SHORT;
    size_t k = 0;
    for (size_t i = 0; i < m->cap; i++)
        if (m->keys[i] != PM_EMPTY)
            out[k++] = m->keys[i];
    qsort(out, k, sizeof(*out), cmp_u64);
    return EMU_OK;
}
