/* A minimal hand-written TLB + page-walk loop: the yardstick of benchmarks/bench_mmu.py.
 *
 * What it models, and nothing more: a 4-level x86-64 walk (PML4 -> PDPT -> PD -> PT,
 * 4 KiB leaves only, no permission or A/D handling, no paging-structure caches) over
 * page-table frames held in one plain array, behind a set-associative L1 DTLB and a
 * set-associative L2 TLB, both true LRU (a per-array clock; victim = smallest stamp).
 * The geometry is skylake's data side for 4 KiB pages: L1 64 entries 4-way, L2 1536
 * entries 12-way.
 *
 * Input files (written by the benchmark):
 *   tables: the raw bytes of every table frame, contiguous from physical address
 *           TABLE_BASE (argv[2]), as PageTableBuilder allocated them; CR3 = TABLE_BASE.
 *   stream: uint64 little-endian virtual addresses, all reads.
 *
 * Usage: tlb_baseline TABLES TABLE_BASE STREAM REPEATS
 * Output (one line): accesses=N seconds=S accesses_per_s=R l1_misses=M walks=W
 *   pa_sum=X, where the run is repeated REPEATS times from an empty TLB and the fastest
 *   run is reported (counts are those of one run).
 *
 * Build: gcc -O2 -o tlb_baseline tlb_baseline.c
 */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define L1_SETS 16
#define L1_WAYS 4
#define L2_SETS 128
#define L2_WAYS 12
#define ADDR_MASK 0x000FFFFFFFFFF000ull

typedef struct {
    uint64_t tag[L2_SETS * L2_WAYS]; /* vpn + 1 (0 = invalid) */
    uint64_t pfn[L2_SETS * L2_WAYS];
    uint64_t stamp[L2_SETS * L2_WAYS];
    uint64_t clock;
    uint32_t sets, ways;
} tlb;

static const uint64_t *tables;
static uint64_t table_base, table_bytes;

static void tlb_init(tlb *t, uint32_t sets, uint32_t ways)
{
    memset(t, 0, sizeof(*t));
    t->sets = sets;
    t->ways = ways;
}

static int tlb_lookup(tlb *t, uint64_t vpn, uint64_t *pfn)
{
    uint32_t set = (uint32_t)(vpn & (t->sets - 1));
    uint64_t *tg = t->tag + (size_t)set * t->ways;
    for (uint32_t w = 0; w < t->ways; w++) {
        if (tg[w] == vpn + 1) {
            size_t i = (size_t)set * t->ways + w;
            t->stamp[i] = ++t->clock;
            *pfn = t->pfn[i];
            return 1;
        }
    }
    return 0;
}

static void tlb_fill(tlb *t, uint64_t vpn, uint64_t pfn)
{
    uint32_t set = (uint32_t)(vpn & (t->sets - 1));
    size_t base = (size_t)set * t->ways;
    uint32_t victim = 0;
    for (uint32_t w = 0; w < t->ways; w++) {
        if (t->tag[base + w] == 0) {
            victim = w;
            break;
        }
        if (t->stamp[base + w] < t->stamp[base + victim])
            victim = w;
    }
    t->tag[base + victim] = vpn + 1;
    t->pfn[base + victim] = pfn;
    t->stamp[base + victim] = ++t->clock;
}

static uint64_t load_entry(uint64_t pa)
{
    uint64_t off = pa - table_base;
    if (off >= table_bytes)
        return 0; /* outside the tables: not present */
    return tables[off >> 3];
}

/* The 4-level walk; returns the frame number or UINT64_MAX when not present. */
static uint64_t walk(uint64_t va)
{
    uint64_t table = table_base;
    for (int level = 4; level >= 1; level--) {
        unsigned idx = (unsigned)(va >> (12 + 9 * (level - 1))) & 0x1FF;
        uint64_t e = load_entry(table + 8u * idx);
        if (!(e & 1))
            return UINT64_MAX;
        table = e & ADDR_MASK;
    }
    return table >> 12;
}

static void *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "%s: read failed\n", path);
        exit(2);
    }
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s TABLES TABLE_BASE STREAM REPEATS\n", argv[0]);
        return 2;
    }
    size_t tlen, slen;
    tables = read_file(argv[1], &tlen);
    table_bytes = tlen;
    table_base = strtoull(argv[2], NULL, 0);
    const uint64_t *vas = read_file(argv[3], &slen);
    size_t n = slen / 8;
    int repeats = atoi(argv[4]);
    static tlb l1, l2;
    double best = 1e30;
    uint64_t l1_misses = 0, walks = 0, pa_sum = 0;
    for (int r = 0; r < repeats; r++) {
        tlb_init(&l1, L1_SETS, L1_WAYS);
        tlb_init(&l2, L2_SETS, L2_WAYS);
        uint64_t m1 = 0, wk = 0, sum = 0;
        double t0 = now();
        for (size_t i = 0; i < n; i++) {
            uint64_t va = vas[i], vpn = va >> 12, pfn;
            if (!tlb_lookup(&l1, vpn, &pfn)) {
                m1++;
                if (!tlb_lookup(&l2, vpn, &pfn)) {
                    wk++;
                    pfn = walk(va);
                    if (pfn == UINT64_MAX)
                        continue; /* fault: nothing cached */
                    tlb_fill(&l2, vpn, pfn);
                }
                tlb_fill(&l1, vpn, pfn);
            }
            sum += (pfn << 12) | (va & 0xFFF);
        }
        double dt = now() - t0;
        if (dt < best)
            best = dt;
        l1_misses = m1;
        walks = wk;
        pa_sum = sum;
    }
    printf("accesses=%zu seconds=%.6f accesses_per_s=%.1f l1_misses=%llu walks=%llu "
           "pa_sum=%llu\n",
           n, best, best > 0 ? (double)n / best : 0.0, (unsigned long long)l1_misses,
           (unsigned long long)walks, (unsigned long long)pa_sum);
    return 0;
}
