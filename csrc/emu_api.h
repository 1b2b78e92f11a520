/*
 * mmulab C core: the one contract between C and Python.
 *
 * This file is read verbatim by cffi's cdef() (csrc/build_ffi.py), so it is written in
 * the subset cffi parses: no #include, no include guard, no macros other than integer
 * #defines, fixed-width types only, uint64_t for every address.  csrc/emu.h includes
 * the C headers this needs and then this file.
 *
 * Pointer parameters are marked: borrowed (caller keeps ownership, C does not keep it
 * past the call), owned (ownership passes to the receiver), out (C writes it).
 * Functions returning int return EMU_OK (0) or a negative EMU_E_* code.
 */

/* ---- return codes ---------------------------------------------------------------- */
#define EMU_OK 0
#define EMU_E_INVAL -1 /* an argument is out of its domain */
#define EMU_E_NOMEM -2 /* the host could not allocate */
#define EMU_E_RANGE -3 /* a physical address lies beyond 2^52 */
#define EMU_E_ALIGN -4 /* an address is not aligned as the operation needs */
#define EMU_E_SHORT -5 /* an output array is too small; the needed length is returned */

/* ---- paging levels (SDM 3A 4.5): never bare integers --------------------------------- */
#define EMU_LVL_PT 1   /* page table: PTE maps 4 KiB */
#define EMU_LVL_PD 2   /* page directory: PDE maps 2 MiB with PS=1 */
#define EMU_LVL_PDPT 3 /* page-directory-pointer table: PDPTE maps 1 GiB with PS=1 */
#define EMU_LVL_PML4 4
#define EMU_LVL_PML5 5 /* only with CR4.LA57 */

/* ---- page-table entry bits (SDM 3A 4.5, Tables 4-15..4-20) -------------------------- */
#define EMU_PTE_P 0x1            /* bit 0   P: present */
#define EMU_PTE_RW 0x2           /* bit 1   R/W: writes allowed */
#define EMU_PTE_US 0x4           /* bit 2   U/S: user-mode accesses allowed */
#define EMU_PTE_PWT 0x8          /* bit 3   PWT */
#define EMU_PTE_PCD 0x10         /* bit 4   PCD */
#define EMU_PTE_A 0x20           /* bit 5   A: accessed */
#define EMU_PTE_D 0x40           /* bit 6   D: dirty (leaves only) */
#define EMU_PTE_PS 0x80          /* bit 7   PS in PDPTE/PDE; reserved in PML4E/PML5E */
#define EMU_PTE_PAT 0x80         /* bit 7   PAT in a PTE */
#define EMU_PTE_G 0x100          /* bit 8   G: global (leaves); reserved on AMD in PML4E/PML5E */
#define EMU_PTE_PAT_LARGE 0x1000 /* bit 12 PAT in a 2 MiB / 1 GiB leaf */
#define EMU_PTE_PKEY_SHIFT 59    /* bits 62:59 protection key (leaves) */
#define EMU_PTE_NX_SHIFT 63      /* bit 63  XD: execute-disable; reserved when EFER.NXE=0 */
#define EMU_PA_BITS_MAX 52       /* architectural MAXPHYADDR limit */

/* ---- access kinds: the low two bits; same numbers as trace kinds ------------------- */
#define EMU_ACC_READ 0
#define EMU_ACC_WRITE 1
#define EMU_ACC_FETCH 2
#define EMU_ACC_KIND_MASK 3
#define EMU_ACC_USER 4     /* or'ed in: an explicit access at CPL 3 */
#define EMU_ACC_IMPLICIT 8 /* or'ed in: implicit supervisor access (SMAP ignores AC) */

/* ---- #PF error-code bits (SDM 3A 4.7) ----------------------------------------------- */
#define EMU_PF_P 0x1    /* 0: not-present entry; 1: protection, reserved bit or key */
#define EMU_PF_W 0x2    /* the access was a write */
#define EMU_PF_U 0x4    /* the access was a user-mode access */
#define EMU_PF_RSVD 0x8 /* a reserved bit was set in a present entry */
#define EMU_PF_I 0x10   /* instruction fetch, reported only with NXE=1 or SMEP=1 */
#define EMU_PF_PK 0x20  /* protection-key violation */

/* ---- exception vectors -------------------------------------------------------------- */
#define EMU_VEC_NONE 0
#define EMU_VEC_GP 13 /* non-canonical address: #GP(0), CR2 untouched (SDM 3A 4.5.1) */
#define EMU_VEC_PF 14

/* ---- walk control flags: the control-register state a walk sees -------------------- */
#define EMU_WF_WP 0x1      /* CR0.WP */
#define EMU_WF_NXE 0x2     /* IA32_EFER.NXE */
#define EMU_WF_SMEP 0x4    /* CR4.SMEP */
#define EMU_WF_SMAP 0x8    /* CR4.SMAP */
#define EMU_WF_AC 0x10     /* EFLAGS.AC */
#define EMU_WF_LA57 0x20   /* CR4.LA57: 5-level paging */
#define EMU_WF_PKE 0x40    /* CR4.PKE */
#define EMU_WF_A_QEMU 0x80 /* A-bit policy "qemu": A set on each level as the walk passes */
#define EMU_WF_NO_1G 0x100 /* CPU without 1 GiB pages: PS in a PDPTE is reserved */
#define EMU_WF_AMD 0x200   /* AMD: bit 8 of PML4E/PML5E is reserved */

/* ---- sparse physical memory ------------------------------------------------------------
 * Frames of 4 KiB, created on first write, zero before that.  Physical addresses below
 * 2^52.  Memory used is proportional to the frames written.
 */
typedef struct emu_physmem emu_physmem;

/* New empty physical memory.  Returns an owned handle, or NULL when the host is out of
 * memory.  Free it with emu_physmem_free. */
emu_physmem *emu_physmem_new(void);
/* Frees m (owned) and all its frames.  NULL is ignored. */
void emu_physmem_free(emu_physmem *m);

/* Reads the aligned 8-byte word at pa into *value (out).  EMU_E_RANGE / EMU_E_ALIGN. */
int emu_physmem_read_u64(const emu_physmem *m, uint64_t pa, uint64_t *value);
/* Writes an aligned 8-byte word; creates the frame when needed.  EMU_E_NOMEM leaves m
 * unchanged. */
int emu_physmem_write_u64(emu_physmem *m, uint64_t pa, uint64_t value);
/* The page-table entries on va's path, without judging them: from the table at
 * table_pa (4 KiB aligned), level top_level (EMU_LVL_*) down to EMU_LVL_PT, entries[k]
 * the entry read at level top_level - k, each next table taken from the entry's address
 * bits 51:12.  Stops after a zero entry.  *count (out) = entries read (1..top_level).
 * entries (borrowed, out) holds top_level words.  EMU_E_INVAL for a bad level,
 * EMU_E_ALIGN / EMU_E_RANGE for table_pa. */
int emu_physmem_read_path(const emu_physmem *m, uint64_t table_pa, uint64_t va, uint32_t top_level,
                          uint64_t *entries, uint32_t *count);
/* Reads n bytes from pa into buf (borrowed, out); may cross frames. */
int emu_physmem_read(const emu_physmem *m, uint64_t pa, uint8_t *buf, size_t n);
/* Writes n bytes from buf (borrowed) at pa; frames are created as needed.  On
 * EMU_E_NOMEM nothing has been written. */
int emu_physmem_write(emu_physmem *m, uint64_t pa, const uint8_t *buf, size_t n);
/* Drops the frame pfn so it reads as zeros again (the kernel model frees table pages
 * this way).  Dropping a frame never written is not an error. */
int emu_physmem_discard(emu_physmem *m, uint64_t pfn);
/* Number of frames that exist. */
uint64_t emu_physmem_frame_count(const emu_physmem *m);
/* Host bytes used by frames and the index, for the "1 TiB costs its tables" check. */
uint64_t emu_physmem_bytes_used(const emu_physmem *m);
/* Writes the frame numbers that exist, ascending, into out (borrowed, out, cap
 * entries); *needed (out) gets the count.  EMU_E_SHORT when cap is too small. */
int emu_physmem_frames(const emu_physmem *m, uint64_t *out, size_t cap, size_t *needed);

/* ---- the page walker (SDM 3A 4.5 - 4.8) ------------------------------------------------ */

/* Control state a walk runs under. */
typedef struct emu_walk_cfg {
    uint64_t cr3;        /* full CR3; bits 11:0 (PCID/PWT/PCD) and bit 63 ignored */
    uint32_t flags;      /* EMU_WF_* */
    uint32_t pkru;       /* PKRU: bits 2k AD, 2k+1 WD for key k */
    uint32_t maxphyaddr; /* M: 32..52; bits 51:M of entries are reserved */
    uint32_t reserved0;  /* must be zero */
} emu_walk_cfg;

/* Outcome of one walk; one record per access in emu_walk_batch. */
typedef struct emu_walk_result {
    uint64_t pa;         /* translated address; 0 on a fault */
    uint64_t page_size;  /* 4096, 2 MiB or 1 GiB; 0 on a fault */
    uint64_t cr2;        /* faulting address on #PF, else 0 */
    uint32_t error_code; /* #PF error code (EMU_PF_*); 0 for #GP or success */
    uint8_t vector;      /* EMU_VEC_NONE, EMU_VEC_GP or EMU_VEC_PF */
    uint8_t level;       /* leaf level on success; level that faulted on #PF; 0 on #GP */
    uint8_t rights;      /* combined rights: bit 0 R/W (AND), bit 1 U/S (AND), bit 2 XD (OR) */
    uint8_t pkey;        /* leaf protection key (bits 62:59) */
} emu_walk_result;

/* The entries a walk read, for debugging and for diffing against the reference.  Index
 * level-1; levels not read are zero with entry_pa 0 and read flag clear. */
typedef struct emu_walk_path {
    uint64_t entry[5];    /* value as read, before any A/D update */
    uint64_t entry_pa[5]; /* physical address of the entry */
    uint8_t read_mask;    /* bit level-1 set when that level was read */
    uint8_t reserved0[7];
} emu_walk_path;

/* Translates va for one access (EMU_ACC_* kind, or'ed with EMU_ACC_USER / IMPLICIT)
 * under cfg (borrowed), writing A/D bits into m as the A-bit policy says.  *out (out)
 * always receives the outcome; path (out, may be NULL) the entries read.  Returns
 * EMU_E_INVAL only for a bad cfg or access code (nothing written then); an
 * architectural fault is EMU_OK with out->vector set. */
int emu_walk(emu_physmem *m, const emu_walk_cfg *cfg, uint64_t va, uint32_t access,
             emu_walk_result *out, emu_walk_path *path);

/* emu_walk over n accesses: vas and access (borrowed, n each) to out (borrowed, out,
 * n records).  The walks run in order, so A/D written by one is seen by the next.
 * EMU_E_INVAL (bad cfg or an access code; out[i].vector is 0xff for a bad code) leaves
 * memory as it was. */
int emu_walk_batch(emu_physmem *m, const emu_walk_cfg *cfg, const uint64_t *vas,
                   const uint8_t *access, size_t n, emu_walk_result *out);

/* ---- build identity ---------------------------------------------------------------- */
/* Hash of csrc/ baked in at build time (hex, NUL-terminated); _ffi.py compares it with
 * the sources of a checkout to refuse a stale build. */
const char *emu_src_hash(void);
/* Text for an EMU_E_* code; never NULL. */
const char *emu_strerror(int code);

/* ---- TLBs, paging-structure caches and the MMU (csrc/tlb.c, csrc/mmu.c) ----------------
 * SDM 3A 4.10.  A TLB entry caches a complete valid translation with its combined rights;
 * rights are checked at use time against the current control state; entries stay (stale)
 * until invalidated.  See docs/mmu-model.md for every rule the model follows.
 */
#define EMU_E_GP -7 /* the operation raises #GP (e.g. INVPCID with a bad type) */

#define EMU_PS_4K 1 /* page-size bits of an array's "sizes" mask */
#define EMU_PS_2M 2
#define EMU_PS_1G 4

#define EMU_POL_LRU 0    /* true LRU */
#define EMU_POL_PLRU 1   /* tree pseudo-LRU (ways a power of two, <= 64) */
#define EMU_POL_FIFO 2   /* first in, first out */
#define EMU_POL_RANDOM 3 /* seeded xorshift64* */
#define EMU_POL_SRRIP 4  /* static RRIP, 2-bit RRPV, insert at 2 */

#define EMU_ROLE_L1I 0 /* first-level instruction TLB */
#define EMU_ROLE_L1D 1 /* first-level data TLB (loads; stores too without an L1S) */
#define EMU_ROLE_L1S 2 /* first-level store DTLB */
#define EMU_ROLE_L2I 3 /* second-level instruction TLB (AMD); else fetches use L2 */
#define EMU_ROLE_L2 4  /* second-level (shared) TLB: STLB / L2 DTLB */
#define EMU_MAX_ARRAYS 16

#define EMU_HIT_FAULT 0 /* emu_mmu_result.hit: the access faulted */
#define EMU_HIT_L1 1
#define EMU_HIT_L2 2
#define EMU_HIT_WALK 3

#define EMU_RUN_STOP_ON_FAULT 1 /* emu_mmu_run: stop after the first faulting access */
#define EMU_RUN_USER 2          /* emu_mmu_run: every access is a user-mode access */
#define EMU_RUN_LAST_ONLY 4     /* emu_mmu_run: out is one record: the last access's */

/* One TLB array: which role, which page sizes, geometry and replacement. */
typedef struct emu_tlb_array_cfg {
    uint32_t role;  /* EMU_ROLE_* */
    uint32_t sizes; /* EMU_PS_* mask */
    uint32_t sets;  /* power of two; 1 = fully associative */
    uint32_t ways;
    uint32_t policy; /* EMU_POL_* */
    uint32_t reserved0;
} emu_tlb_array_cfg;

/* A CPU's translation hardware.  Levels index psc_*: EMU_LVL_PD .. EMU_LVL_PML5; a
 * zero-way PSC is absent.  Latencies in cycles. */
typedef struct emu_mmu_cfg {
    emu_tlb_array_cfg arrays[16];
    uint32_t n_arrays;
    uint32_t psc_sets[6];
    uint32_t psc_ways[6];
    uint32_t pte_cache_sets; /* model of page-table lines in the data caches */
    uint32_t pte_cache_ways; /* 0: every walk reference costs lat_walk_ref */
    uint32_t lat_l1_hit;     /* cycles charged to every access that hits L1 */
    uint32_t lat_l2_hit;     /* added on an L1 miss (L2 lookup) */
    uint32_t lat_walk_ref;   /* per walk memory reference without the line model */
    uint32_t lat_pte_hit;    /* per walk reference whose line is cached */
    uint32_t lat_pte_miss;   /* per walk reference whose line is not cached */
    uint32_t walk_flags;     /* CPU properties: EMU_WF_A_QEMU, EMU_WF_NO_1G, EMU_WF_AMD */
    uint32_t maxphyaddr;
    uint32_t reserved0;
    uint64_t seed; /* random replacement */
} emu_mmu_cfg;

/* Control registers the MMU obeys. */
typedef struct emu_mmu_control {
    uint64_t cr3;
    uint32_t cr0_wp;
    uint32_t cr4_pge;
    uint32_t cr4_pcide;
    uint32_t cr4_smep;
    uint32_t cr4_smap;
    uint32_t cr4_la57;
    uint32_t cr4_pke;
    uint32_t efer_nxe;
    uint32_t rflags_ac;
    uint32_t pkru;
} emu_mmu_control;

/* Outcome of one access. */
typedef struct emu_mmu_result {
    uint64_t pa;         /* physical address of the first byte; 0 on a fault */
    uint32_t page_size;  /* size of the translation used (a fractured piece counts as its
                            own size); 0 on a fault */
    uint32_t error_code; /* #PF error code; 0 otherwise */
    uint8_t vector;      /* EMU_VEC_NONE / GP / PF */
    uint8_t hit;         /* EMU_HIT_* of the first page */
    uint8_t crossed;     /* 1: straddled a page boundary; 2: and faulted on the second page */
    uint8_t reserved0;
    uint32_t cycles; /* estimated translation cycles of this access */
} emu_mmu_result;

/* Counters.  Names in emu/mmu.py follow perf events where one exists. */
typedef struct emu_mmu_stats {
    uint64_t loads, stores, fetches;
    uint64_t load_l1_miss, load_l2_hit, load_walks, load_walk_4k, load_walk_2m, load_walk_1g;
    uint64_t store_l1_miss, store_l2_hit, store_walks, store_walk_4k, store_walk_2m, store_walk_1g;
    uint64_t fetch_l1_miss, fetch_l2_hit, fetch_walks, fetch_walk_4k, fetch_walk_2m, fetch_walk_1g;
    uint64_t walk_refs[6]; /* memory references per level (index EMU_LVL_*) */
    uint64_t psc_hits[6];  /* walks that started below a PSC hit at this level */
    uint64_t psc_misses;   /* walks that started at the top */
    uint64_t pte_cache_hits, pte_cache_misses;
    uint64_t dirty_walks; /* write hits on an entry with D=0, sent to the walker */
    uint64_t page_faults, gp_faults;
    uint64_t crossings; /* accesses that straddled a page boundary */
    uint64_t cycles, walk_cycles;
    uint64_t invlpg, cr3_writes, invpcid, flushes, entries_flushed;
} emu_mmu_stats;

/* A cached translation, for validation and debugging. */
typedef struct emu_tlb_entry_info {
    uint64_t va; /* page base (canonical) */
    uint64_t pa; /* frame base */
    uint64_t page_size;
    uint64_t orig_page_size; /* size of the leaf it was made from */
    uint16_t pcid;
    uint8_t array;  /* index into emu_mmu_cfg.arrays */
    uint8_t rights; /* bit 0 R/W, bit 1 U/S, bit 2 XD */
    uint8_t pkey;
    uint8_t global;
    uint8_t dirty;
    uint8_t reserved0;
} emu_tlb_entry_info;

typedef struct emu_mmu emu_mmu;

/* New MMU over mem (borrowed: the caller keeps mem alive longer than the MMU).  *cfg is
 * copied.  Returns an owned handle or NULL; *err (out) gets EMU_E_INVAL for a bad
 * geometry (the index of the bad array in *bad_array, out) or EMU_E_NOMEM. */
emu_mmu *emu_mmu_new(emu_physmem *mem, const emu_mmu_cfg *cfg, int *err, int *bad_array);
void emu_mmu_free(emu_mmu *m);

/* Control state.  set_control applies the flushes a change implies (SDM 3A 4.10.4.1):
 * PGE toggled or PCIDE 1->0: everything; SMEP 0->1: current PCID; LA57 or NXE changed:
 * everything.  Its cr3 field is ignored (use emu_mmu_write_cr3).  EMU_E_GP for PCIDE 0->1
 * while CR3[11:0] != 0. */
int emu_mmu_get_control(const emu_mmu *m, emu_mmu_control *out);
int emu_mmu_set_control(emu_mmu *m, const emu_mmu_control *c);
/* MOV to CR3 (SDM 3A 4.10.4.1): bit 63 is the no-flush hint with PCIDE=1, never stored.
 * EMU_E_GP for reserved bits (or bit 63 without PCIDE). */
int emu_mmu_write_cr3(emu_mmu *m, uint64_t value);
/* INVLPG: entries of the page in the current PCID and global ones, every size and every
 * fractured piece of the leaf, and every PSC entry of the current PCID.  Non-canonical:
 * no-op. */
int emu_mmu_invlpg(emu_mmu *m, uint64_t va);
/* INVPCID types 0-3.  EMU_E_GP for a bad type, PCID, non-canonical type-0 address, or a
 * nonzero PCID for types 0/1 with PCIDE=0. */
int emu_mmu_invpcid(emu_mmu *m, uint32_t type, uint64_t pcid, uint64_t va);
/* Everything (include_global) or every non-global entry of every PCID; PSCs too. */
int emu_mmu_flush_all(emu_mmu *m, uint32_t include_global);

/* One access (EMU_ACC_* | EMU_ACC_USER...) through the TLBs and the walker. */
int emu_mmu_translate(emu_mmu *m, uint64_t va, uint32_t access, uint32_t size, emu_mmu_result *out);
/* n accesses in order: vas, kinds (EMU_ACC_* kinds 0..2) and sizes (may be NULL: 1 byte)
 * borrowed; out (borrowed, out, n records; may be NULL for counters only; one record
 * with EMU_RUN_LAST_ONLY, receiving the result of the last access processed).  flags:
 * EMU_RUN_*.  *done (out) = accesses processed (all, or up to and including the first
 * fault with EMU_RUN_STOP_ON_FAULT).  EMU_E_INVAL for a bad kind: the accesses before it
 * are done (*done of them), nothing of it. */
int emu_mmu_run(emu_mmu *m, const uint64_t *vas, const uint8_t *kinds, const uint32_t *sizes,
                size_t n, uint32_t flags, emu_mmu_result *out, size_t *done);

/* Counters since creation or the last reset. */
void emu_mmu_get_stats(const emu_mmu *m, emu_mmu_stats *out);
void emu_mmu_reset_stats(emu_mmu *m);
/* Valid TLB entries (out, borrowed, cap records); *needed (out) gets the count.
 * EMU_E_SHORT when cap is too small. */
int emu_mmu_entries(const emu_mmu *m, emu_tlb_entry_info *out, size_t cap, size_t *needed);
/* Valid PSC entries as emu_tlb_entry_info: va = the region base, pa = the next table,
 * page_size = bytes the entry covers, array = the level (EMU_LVL_PD..PML5). */
int emu_mmu_psc_entries(const emu_mmu *m, emu_tlb_entry_info *out, size_t cap, size_t *needed);

/* ---- trace parsing (csrc/trace.c) ---- */
/* Owned by the trace readers (emu/trace/).  Text trace formats are parsed here into
 * caller-provided record arrays; formats.md 1.2 defines the lackey grammar. */

/* One access of a trace.  emu.trace.TRACE_DTYPE mirrors it field by field (checked at
 * import; the byte at offset 9 is padding).  icount counts the fetch records up to and
 * including this access's instruction (0 before the first fetch or where unknown). */
typedef struct emu_trace_rec {
    uint64_t addr;   /* virtual address */
    uint8_t kind;    /* EMU_ACC_READ, EMU_ACC_WRITE or EMU_ACC_FETCH */
    uint16_t asid;   /* address-space id; 0 where the format has none */
    uint32_t size;   /* bytes accessed; 0 where the format has none */
    uint64_t icount; /* instructions fetched so far, this one included */
} emu_trace_rec;

/* flags of the parse functions */
#define EMU_TRACE_FINAL 0x1    /* buf ends the input: a last line without '\n' is parsed */
#define EMU_TRACE_SKIP_BAD 0x2 /* count and skip malformed lines instead of stopping */

/* emu_trace_parse_state.status */
#define EMU_TRACE_END 0  /* all whole lines consumed; a partial last line is left unless FINAL */
#define EMU_TRACE_FULL 1 /* out is full: call again with buf + consumed */
#define EMU_TRACE_BAD 2  /* stopped before malformed line bad_line; consumed = bad_offset */
#define EMU_TRACE_DIRECTIVE 3 /* native: stopped before a '#'-directive line at consumed */

/* emu_trace_parse_state.reason: what is wrong with a malformed line.  KIND: neither a
 * record ("I  ", " L ", " S ", " M ") nor a valgrind line ("==", "--", "**", "SB ", blank). */
#define EMU_TRACE_BAD_KIND 1
#define EMU_TRACE_BAD_ADDR 2     /* address: not 1..16 hex digits followed by ',' */
#define EMU_TRACE_BAD_SIZE 3     /* size: not 1..10 decimal digits below 2^32 */
#define EMU_TRACE_BAD_TRAILING 4 /* characters after the size */
#define EMU_TRACE_BAD_SYNTAX 5   /* din, xdin, pinatrace, native: see emu/trace for why */

/* text formats of emu_trace_text_parse (grammars: emu/trace/din.py, pinatrace.py,
 * native.py, which parse single lines the same way for diagnostics) */
#define EMU_TRACE_DIN 1       /* Dinero "LABEL ADDRESS": labels 0-3 records, 4-5 ignored */
#define EMU_TRACE_XDIN 2      /* Dinero IV "TYPE ADDRESS SIZE": c and v ignored */
#define EMU_TRACE_PINATRACE 3 /* Pin "IP: R|W ADDRESS [SIZE]" */
#define EMU_TRACE_NATIVE 4    /* mmulab "R|W|X|M ADDRESS [SIZE] [asid=N]"; events stop */

/* Progress of one parse call.  Only icount is read (the fetches before buf); every other
 * field is written.  Line numbers and offsets are relative to buf. */
typedef struct emu_trace_parse_state {
    uint64_t icount;     /* in: fetch records before buf; out: after the consumed lines */
    uint64_t consumed;   /* bytes of whole lines consumed */
    uint64_t records;    /* records written to out */
    uint64_t lines;      /* lines consumed: records, skipped and malformed */
    uint64_t skipped;    /* lines without a record: valgrind's, comments, blanks */
    uint64_t bad;        /* malformed lines skipped under EMU_TRACE_SKIP_BAD */
    uint64_t ignored;    /* records that are no access (Dinero cache control) */
    uint64_t bad_line;   /* 1-based line of the first malformed line met; 0 if none */
    uint64_t bad_offset; /* byte offset of that line in buf */
    uint32_t status;     /* EMU_TRACE_END, _FULL, _BAD or _DIRECTIVE */
    uint32_t reason;     /* EMU_TRACE_BAD_* of bad_line; 0 if none */
} emu_trace_parse_state;

/* Parses valgrind lackey --trace-mem=yes text in buf (borrowed, len bytes, no NUL
 * needed) into out (borrowed, out, cap records; cap >= 2 guarantees progress): I gives a
 * fetch, L a read, S a write, M a read then a write.  Whole lines only; progress and
 * any malformed line go to *st (borrowed, in/out).  EMU_E_INVAL for bad arguments. */
int emu_trace_lackey_parse(const uint8_t *buf, size_t len, uint32_t flags, emu_trace_rec *out,
                           size_t cap, emu_trace_parse_state *st);

/* Parses text of format EMU_TRACE_DIN/XDIN/PINATRACE/NATIVE in buf (borrowed) into out
 * (borrowed, out), progress in *st (borrowed, in/out), as emu_trace_lackey_parse does
 * lackey; fetches count in icount.  Comment and blank lines are skipped; a native
 * '#'-directive line (an event or the header) stops parsing with EMU_TRACE_DIRECTIVE so
 * the caller handles it.  EMU_E_INVAL for bad arguments. */
int emu_trace_text_parse(const uint8_t *buf, size_t len, uint32_t format, uint32_t flags,
                         emu_trace_rec *out, size_t cap, emu_trace_parse_state *st);
