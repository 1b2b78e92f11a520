"""A CPU's MMU: TLBs, paging-structure caches, walker and cost model (C core)."""

from __future__ import annotations

from typing import Any

import numpy as np

from emu import arch
from emu._check import as_int, u64, u64_array
from emu._ffi import check, ffi, from_array, lib, register_dtype
from emu.cpus import SIZE_NAMES, TLBConfig, resolve
from emu.errors import EmuValueError, GeneralProtection, PageFault
from emu.mmu_common import (
    HIT_NAMES,
    LEVEL_KEYS,
    RESULT_DTYPE,
    STAT_NAMES_BY_FIELD,
    TLBEntry,
    Translation,
)
from emu.physmem import PhysMem

MMU_RESULT_DTYPE = register_dtype("emu_mmu_result", RESULT_DTYPE)
ENTRY_INFO_DTYPE = register_dtype(
    "emu_tlb_entry_info",
    np.dtype(
        [
            ("va", np.uint64),
            ("pa", np.uint64),
            ("page_size", np.uint64),
            ("orig_page_size", np.uint64),
            ("pcid", np.uint16),
            ("array", np.uint8),
            ("rights", np.uint8),
            ("pkey", np.uint8),
            ("global", np.uint8),
            ("dirty", np.uint8),
            ("reserved0", np.uint8),
        ]
    ),
)

_ROLE_CODES = {"l1i": 0, "l1d": 1, "l1s": 2, "l2i": 3, "l2": 4}
_POLICY_CODES = {"lru": 0, "plru": 1, "fifo": 2, "random": 3, "srrip": 4}
_LEVEL_KEYS = LEVEL_KEYS

_STAT_NAMES = STAT_NAMES_BY_FIELD  # C counter -> reported name
STAT_NAMES: tuple[str, ...] = (
    *_STAT_NAMES.values(),
    *(f"walk_ref.{_LEVEL_KEYS[lv]}" for lv in range(arch.LVL_PML5, 0, -1)),
    *(f"psc_hit.{_LEVEL_KEYS[lv]}" for lv in range(arch.LVL_PML5, 1, -1)),
    "dtlb_load_misses.walk_completed",
    "dtlb_store_misses.walk_completed",
    "itlb_misses.walk_completed",
    "accesses",
)


def _stats_dict(s: Any) -> dict[str, int]:
    out: dict[str, int] = {name: int(getattr(s, c)) for c, name in _STAT_NAMES.items()}
    for lv in range(arch.LVL_PML5, 0, -1):
        out[f"walk_ref.{_LEVEL_KEYS[lv]}"] = int(s.walk_refs[lv])
    for lv in range(arch.LVL_PML5, 1, -1):
        out[f"psc_hit.{_LEVEL_KEYS[lv]}"] = int(s.psc_hits[lv])
    for side in ("dtlb_load_misses", "dtlb_store_misses", "itlb_misses"):
        out[f"{side}.walk_completed"] = sum(
            out[f"{side}.walk_completed_{k}"] for k in ("4k", "2m_4m", "1g")
        )
    out["accesses"] = 0
    return out


def _c_config(cfg: TLBConfig) -> Any:
    c = ffi.new("emu_mmu_cfg *")
    for i, a in enumerate(cfg.arrays):
        c.arrays[i].role = _ROLE_CODES[a.role]
        c.arrays[i].sizes = sum(SIZE_NAMES[s] for s in a.sizes)
        c.arrays[i].sets = a.sets
        c.arrays[i].ways = a.ways
        c.arrays[i].policy = _POLICY_CODES[a.policy]
    c.n_arrays = len(cfg.arrays)
    for level, (sets, ways) in cfg.psc.items():
        c.psc_sets[level] = sets
        c.psc_ways[level] = ways
    if cfg.pte_cache:
        c.pte_cache_sets, c.pte_cache_ways = cfg.pte_cache
    c.lat_l1_hit = cfg.l1_hit
    c.lat_l2_hit = cfg.l2_hit
    c.lat_walk_ref = cfg.walk_ref
    c.lat_pte_hit = cfg.pte_hit
    c.lat_pte_miss = cfg.pte_miss
    flags = 0
    if not cfg.gbpages:
        flags |= arch.WF_NO_1G
    if cfg.vendor == "amd":
        flags |= arch.WF_AMD
    c.walk_flags = flags
    c.maxphyaddr = cfg.maxphyaddr
    c.seed = cfg.policy_seed
    return c


def _control_property(name: str) -> property:
    def get(self: MMU) -> bool:
        return bool(getattr(self._control(), name))

    def put(self: MMU, value: bool) -> None:
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise EmuValueError(f"{name} must be a bool, got {value!r}")
        c = self._control()
        setattr(c, name, int(value))
        rc = lib.emu_mmu_set_control(self._h, c)
        if rc == lib.EMU_E_GP:
            raise GeneralProtection(0)
        check(rc, f"set {name}")

    return property(
        get, put, doc=f"The {name} control bit (changes flush as SDM 4.10.4)"
    )


class MMU:
    """One CPU's address translation: TLBs, paging-structure caches, the walker.

    Args:
        mem: the physical memory holding the page tables (kept alive by the MMU).
        cpu: a preset name from ``emu.cpus.PRESETS``, a TOML file name, a TLBConfig or
            a dict.
        config: the same as ``cpu``, taking precedence.
        a_policy: ``"success"`` or ``"qemu"`` (see ``emu.walk``).

    Control bits start as Linux runs: CR0.WP=1 and EFER.NXE=1, everything else 0;
    set ``cr3`` before translating.
    """

    cr0_wp = _control_property("cr0_wp")
    cr4_pge = _control_property("cr4_pge")
    cr4_pcide = _control_property("cr4_pcide")
    cr4_smep = _control_property("cr4_smep")
    cr4_smap = _control_property("cr4_smap")
    cr4_la57 = _control_property("cr4_la57")
    cr4_pke = _control_property("cr4_pke")
    efer_nxe = _control_property("efer_nxe")
    rflags_ac = _control_property("rflags_ac")

    def __init__(
        self,
        mem: PhysMem,
        cpu: str | TLBConfig | dict[str, Any] = "skylake",
        *,
        config: TLBConfig | dict[str, Any] | None = None,
        a_policy: str = "success",
    ) -> None:
        if not isinstance(mem, PhysMem):
            raise EmuValueError(f"mem must be an emu.PhysMem, got {type(mem).__name__}")
        if a_policy not in arch.A_POLICIES:
            raise EmuValueError(
                f"a_policy={a_policy!r} must be one of {arch.A_POLICIES}"
            )
        self.config = resolve(cpu, config)
        self.mem = mem  # the C MMU borrows mem's handle: keep the parent alive
        c = _c_config(self.config)
        if a_policy == "qemu":
            c.walk_flags |= arch.WF_A_QEMU
        err = ffi.new("int *")
        bad = ffi.new("int *")
        h = lib.emu_mmu_new(mem._h, c, err, bad)
        if h == ffi.NULL:
            where = (
                f"array {self.config.arrays[bad[0]].name!r}"
                if 0 <= bad[0] < len(self.config.arrays)
                else f"component {bad[0]}"
            )
            check(err[0], f"MMU({self.config.name}): {where}")
        self._h = ffi.gc(h, lib.emu_mmu_free)
        self._stats = ffi.new("emu_mmu_stats *")
        self._res = ffi.new("emu_mmu_result *")

    # ---- control -------------------------------------------------------------------

    def _control(self) -> Any:
        c = ffi.new("emu_mmu_control *")
        lib.emu_mmu_get_control(self._h, c)
        return c

    @property
    def cr3(self) -> int:
        """CR3 as stored (bit 63 never is)."""
        return int(self._control().cr3)

    @cr3.setter
    def cr3(self, value: int) -> None:
        self.write_cr3(value)

    @property
    def pkru(self) -> int:
        """The PKRU register."""
        return int(self._control().pkru)

    @pkru.setter
    def pkru(self, value: int) -> None:
        v = as_int(value, "pkru")
        if not 0 <= v < 1 << 32:
            raise EmuValueError(f"pkru={v:#x} must fit in 32 bits")
        c = self._control()
        c.pkru = v
        check(lib.emu_mmu_set_control(self._h, c), "set pkru")

    @property
    def pcid(self) -> int:
        """The current PCID (0 unless CR4.PCIDE)."""
        c = self._control()
        return int(c.cr3) & 0xFFF if c.cr4_pcide else 0

    def write_cr3(self, value: int) -> None:
        """MOV to CR3: flush non-global entries of the new PCID unless bit 63 says not.

        Raises:
            GeneralProtection: reserved bits set, or bit 63 without CR4.PCIDE.
        """
        rc = lib.emu_mmu_write_cr3(self._h, u64(value, "cr3"))
        if rc == lib.EMU_E_GP:
            raise GeneralProtection(0)
        check(rc, "write_cr3")

    def invlpg(self, va: int) -> None:
        """INVLPG: drop the page's TLB entries and every PSC entry of the PCID.

        The page's entries of the current PCID and global ones go, every size and
        every fractured piece.  A non-canonical address is a no-op.
        """
        check(lib.emu_mmu_invlpg(self._h, u64(va, "va")), "invlpg")

    def invpcid(self, kind: int, pcid: int = 0, va: int = 0) -> None:
        """INVPCID of type ``kind`` (0 address, 1 context, 2 all, 3 all but global).

        Raises:
            GeneralProtection: as the instruction would (bad type, PCID or address).
        """
        k = as_int(kind, "kind")
        if not 0 <= k <= 3:
            raise GeneralProtection(va)
        rc = lib.emu_mmu_invpcid(self._h, k, u64(pcid, "pcid"), u64(va, "va"))
        if rc == lib.EMU_E_GP:
            raise GeneralProtection(va)
        check(rc, "invpcid")

    def flush_all(self, include_global: bool = True) -> None:
        """Drop every TLB and PSC entry (global ones only with ``include_global``)."""
        check(lib.emu_mmu_flush_all(self._h, 1 if include_global else 0), "flush_all")

    # ---- translation -----------------------------------------------------------------

    def translate(
        self, va: int, access: str = "r", user: bool = False, size: int = 1
    ) -> Translation:
        """Translate one access through the TLBs (for tests and the REPL).

        Args:
            va: linear address.
            access: ``"r"``, ``"w"`` or ``"x"``.
            user: a user-mode (CPL 3) access.
            size: access size in bytes; a page-straddling access translates both pages.

        Returns:
            The :class:`Translation`.

        Raises:
            PageFault: the access faults (error code and CR2 as the CPU gives them).
            GeneralProtection: non-canonical address.
        """
        if access not in arch.ACCESS_CODES:
            raise EmuValueError(f"access={access!r} must be 'r', 'w' or 'x'")
        code = arch.ACCESS_CODES[access] | (arch.ACC_USER if user else 0)
        v = u64(va, "va")
        sz = as_int(size, "size")
        if not 0 <= sz < 1 << 32:
            raise EmuValueError(f"size={sz} out of range")
        r = self._res
        check(lib.emu_mmu_translate(self._h, v, code, sz, r), "translate")
        fault_va = ((v | 0xFFF) + 1) % (1 << 64) if r.crossed == 2 else v
        if r.vector == arch.VEC_GP:
            raise GeneralProtection(fault_va)
        if r.vector == arch.VEC_PF:
            raise PageFault(fault_va, int(r.error_code))
        return Translation(
            int(r.pa), int(r.page_size), HIT_NAMES[int(r.hit)], int(r.cycles)
        )

    def run(
        self,
        vas: Any,
        kinds: Any,
        user: bool = False,
        *,
        sizes: Any = None,
        out: np.ndarray[Any, Any] | None = None,
        stop_on_fault: bool = False,
    ) -> dict[str, int]:
        """Translate a stream of accesses in one C call.

        Args:
            vas: uint64 addresses.
            kinds: uint8 kinds (0 read, 1 write, 2 fetch), or one of ``"r"``, ``"w"``,
                ``"x"`` for all.
            user: every access is a user-mode access.
            sizes: optional uint32 access sizes (straddling accesses translate both
                pages).
            out: optional array of ``MMU_RESULT_DTYPE`` (same length) to receive the
                per-access results.
            stop_on_fault: stop after the first faulting access.

        Returns:
            The counters of this run (``stats`` names) plus ``accesses`` processed.
        """
        va_arr = u64_array(vas, "vas")
        n = va_arr.size
        if isinstance(kinds, str):
            if kinds not in arch.ACCESS_CODES:
                raise EmuValueError(f"kinds={kinds!r} must be 'r', 'w' or 'x'")
            k_arr = np.full(n, arch.ACCESS_CODES[kinds], dtype=np.uint8)
        else:
            k_arr = np.ascontiguousarray(kinds)
            if k_arr.shape != va_arr.shape:
                raise EmuValueError(
                    f"kinds has shape {k_arr.shape}, vas {va_arr.shape}"
                )
            if k_arr.dtype != np.uint8:
                if k_arr.dtype.kind not in "iu":
                    raise EmuValueError(f"kinds must be integers, got {k_arr.dtype}")
                k_arr = k_arr.astype(np.uint8)
        if n and int(k_arr.max()) > arch.ACC_FETCH:
            bad = int(np.flatnonzero(k_arr > arch.ACC_FETCH)[0])
            raise EmuValueError(f"kinds[{bad}]={int(k_arr[bad])} is not 0, 1 or 2")
        size_ptr = ffi.NULL
        if sizes is not None:
            s_arr = np.ascontiguousarray(sizes, dtype=np.uint32)
            if s_arr.shape != va_arr.shape:
                raise EmuValueError(
                    f"sizes has shape {s_arr.shape}, vas {va_arr.shape}"
                )
            size_ptr = from_array("uint32_t[]", s_arr)
        out_ptr = ffi.NULL
        if out is not None:
            if out.dtype != MMU_RESULT_DTYPE or out.shape != va_arr.shape:
                raise EmuValueError("out must be an MMU_RESULT_DTYPE array like vas")
            out_ptr = from_array("emu_mmu_result[]", out, writable=True)
        flags = (lib.EMU_RUN_STOP_ON_FAULT if stop_on_fault else 0) | (
            lib.EMU_RUN_USER if user else 0
        )
        before = self.stats
        done = ffi.new("size_t *")
        check(
            lib.emu_mmu_run(
                self._h,
                from_array("uint64_t[]", va_arr),
                from_array("uint8_t[]", k_arr),
                size_ptr,
                n,
                flags,
                out_ptr,
                done,
            ),
            "run",
        )
        after = self.stats
        delta = {k: after[k] - before[k] for k in after}
        delta["accesses"] = int(done[0])
        return delta

    def run_unchecked(
        self,
        vas: np.ndarray[Any, Any],
        kinds: np.ndarray[Any, Any],
        sizes: np.ndarray[Any, Any] | None,
        out: np.ndarray[Any, Any],
        user: bool = False,
        stop_on_fault: bool = False,
        last_only: bool = False,
    ) -> int:
        """:meth:`run` without argument checks or counter snapshots.

        For drivers that call it once per fault; returns the accesses processed.  The
        arrays must already be C-contiguous uint64 / uint8 / uint32 and ``out`` an
        MMU_RESULT_DTYPE array as long as ``vas`` or, with ``last_only``, of one
        record that receives the result of the last access processed (the faulting
        one when the run stops on a fault).
        """
        flags = (
            (lib.EMU_RUN_STOP_ON_FAULT if stop_on_fault else 0)
            | (lib.EMU_RUN_USER if user else 0)
            | (lib.EMU_RUN_LAST_ONLY if last_only else 0)
        )
        done = ffi.new("size_t *")
        check(
            lib.emu_mmu_run(
                self._h,
                ffi.from_buffer("uint64_t[]", vas),
                ffi.from_buffer("uint8_t[]", kinds),
                ffi.NULL if sizes is None else ffi.from_buffer("uint32_t[]", sizes),
                len(vas),
                flags,
                ffi.from_buffer("emu_mmu_result[]", out, require_writable=True),
                done,
            ),
            "run",
        )
        return int(done[0])

    # ---- introspection ---------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counters since creation or ``reset``, named after perf events."""
        lib.emu_mmu_get_stats(self._h, self._stats)
        return _stats_dict(self._stats)

    def reset(self) -> None:
        """Zero the counters (TLB contents stay)."""
        lib.emu_mmu_reset_stats(self._h)

    def _entries(self, fn: Any) -> np.ndarray[Any, Any]:
        needed = ffi.new("size_t *")
        fn(self._h, ffi.NULL, 0, needed)
        out = np.zeros(needed[0], dtype=ENTRY_INFO_DTYPE)
        check(
            fn(
                self._h,
                from_array("emu_tlb_entry_info[]", out, writable=True),
                out.size,
                needed,
            ),
            "entries",
        )
        return out

    def tlb_entries(self) -> list[TLBEntry]:
        """Every valid TLB entry, stale ones included."""
        raw = self._entries(lib.emu_mmu_entries)
        return [self._entry(r, self.config.arrays[int(r["array"])].name) for r in raw]

    def psc_entries(self) -> list[TLBEntry]:
        """Every valid paging-structure-cache entry (``pa`` is the next table)."""
        raw = self._entries(lib.emu_mmu_psc_entries)
        return [
            self._entry(r, f"PSC-{_LEVEL_KEYS[int(r['array'])].upper()}") for r in raw
        ]

    @staticmethod
    def _entry(r: Any, name: str) -> TLBEntry:
        rights = int(r["rights"])
        return TLBEntry(
            array=name,
            va=int(r["va"]),
            pa=int(r["pa"]),
            page_size=int(r["page_size"]),
            orig_page_size=int(r["orig_page_size"]),
            pcid=int(r["pcid"]),
            rw=bool(rights & 1),
            us=bool(rights & 2),
            xd=bool(rights & 4),
            pkey=int(r["pkey"]),
            glob=bool(r["global"]),
            dirty=bool(r["dirty"]),
        )

    def __repr__(self) -> str:
        return f"MMU(cpu={self.config.name!r}, cr3={self.cr3:#x})"
