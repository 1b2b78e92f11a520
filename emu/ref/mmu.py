"""Reference MMU: TLB hierarchy, paging-structure caches, walker and cost model.

The pure-Python twin of ``emu.MMU`` (``csrc/mmu.c``), written straight from
``docs/mmu-model.md`` as plainly as the document reads.  It keeps no per-address
shortcut: every access goes through the lookup the document describes, so the
differential tests check the C core's shortcut.  It never imports the compiled core.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from emu import arch
from emu._check import as_int, u64, u64_array
from emu.cpus import TLBConfig, resolve
from emu.errors import EmuValueError, GeneralProtection, PageFault
from emu.mmu_common import (
    CONTROL_FIELDS,
    HIT_FAULT,
    HIT_L1,
    HIT_L2,
    HIT_NAMES,
    HIT_WALK,
    LEVEL_KEYS,
    RESULT_DTYPE,
    STAT_NAMES_BY_FIELD,
    TLBEntry,
    Translation,
)
from emu.ref.tlb import LineRef, PSCEntryRef, SetAssocArray, TLBEntryRef
from emu.ref.walk import Memory, alignment_bits, bits, reserved_bits, rights_fault
from emu.walkargs import WalkConfig

U64_MASK = (1 << 64) - 1
SIZE_SHIFTS = {"4K": 12, "2M": 21, "1G": 30}
PSC_LEVELS = (arch.LVL_PD, arch.LVL_PDPT, arch.LVL_PML4, arch.LVL_PML5)
_LEVEL_KEYS = LEVEL_KEYS

_KIND_PREFIX = {arch.ACC_READ: "load", arch.ACC_WRITE: "store", arch.ACC_FETCH: "fetch"}
_KIND_COUNT = {
    arch.ACC_READ: "loads",
    arch.ACC_WRITE: "stores",
    arch.ACC_FETCH: "fetches",
}
_WALK_SIZE_KEY = {12: "4k", 21: "2m", 30: "1g"}
_CONTROL_BITS = CONTROL_FIELDS


@dataclass
class Result:
    """Outcome of one access (a row of :data:`RESULT_DTYPE`)."""

    pa: int = 0
    page_size: int = 0
    error_code: int = 0
    vector: int = arch.VEC_NONE
    hit: int = HIT_FAULT
    crossed: int = 0
    cycles: int = 0

    @property
    def faulted(self) -> bool:
        """Whether the access raised #PF or #GP."""
        return self.vector != arch.VEC_NONE


@dataclass(frozen=True)
class Leaf:
    """A complete translation produced by a walk (or read back from a TLB entry)."""

    frame: int
    shift: int
    rw: bool
    us: bool
    xd: bool
    pkey: int
    glob: bool
    dirty: bool


def _remove_psc_key(psc: SetAssocArray[PSCEntryRef], va: int, pcid: int) -> None:
    """Remove ``psc``'s entry keyed by ``va`` (its level's shift) tagged ``pcid``."""
    psc.remove_if(lambda p: p.tag == va >> p.shift and p.pcid == pcid)


class _Array:
    """A configured TLB array: its name, role, sizes and storage."""

    def __init__(
        self,
        name: str,
        role: str,
        shifts: tuple[int, ...],
        store: SetAssocArray[TLBEntryRef],
    ) -> None:
        self.name = name
        self.role = role
        self.shifts = shifts
        self.store = store


def _control_property(name: str) -> property:
    def get(self: RefMMU) -> bool:
        return self._ctl[name]

    def put(self: RefMMU, value: bool) -> None:
        self._set_bit(name, value)

    return property(
        get, put, doc=f"The {name} control bit (changes flush as SDM 4.10.4)"
    )


class RefMMU:
    """One CPU's address translation, in plain Python (``emu.MMU``'s twin).

    Args:
        mem: physical memory holding the page tables (anything with ``read_u64`` and
            ``write_u64``: ``emu.ref.PhysMem`` or ``emu.PhysMem``).
        config: a preset name, a TOML file name, a ``TLBConfig`` or a dict.
        a_policy: ``"success"`` or ``"qemu"`` (see ``emu.walk``).

    Control bits start as ``emu.MMU``'s do: CR0.WP=1 and EFER.NXE=1, everything else 0.

    Raises:
        EmuValueError: an unusable configuration or A-bit policy.
    """

    def __init__(
        self,
        mem: Memory,
        config: str | TLBConfig | dict[str, Any] = "skylake",
        a_policy: str = "success",
    ) -> None:
        if a_policy not in arch.A_POLICIES:
            raise EmuValueError(
                f"a_policy={a_policy!r} must be one of {arch.A_POLICIES}"
            )
        self.config = resolve(config)
        self.mem = mem
        self.a_policy = a_policy
        self._arrays: list[_Array] = []
        for i, a in enumerate(self.config.arrays):
            seed = (self.config.policy_seed + 0x100 * (i + 1)) & U64_MASK
            shifts = tuple(SIZE_SHIFTS[s] for s in ("4K", "2M", "1G") if s in a.sizes)
            store: SetAssocArray[TLBEntryRef] = SetAssocArray(
                a.sets, a.ways, a.policy, seed
            )
            self._arrays.append(_Array(a.name, a.role, shifts, store))
        self._psc: dict[int, SetAssocArray[PSCEntryRef]] = {}
        for level in PSC_LEVELS:
            sets, ways = self.config.psc.get(level, (1, 0))
            self._psc[level] = SetAssocArray(sets, ways)
        self._lines: SetAssocArray[LineRef] | None = None
        if self.config.pte_cache:
            sets, ways = self.config.pte_cache
            self._lines = SetAssocArray(sets, ways)
        self._cr3 = 0
        self._ctl = dict.fromkeys(_CONTROL_BITS, False)
        self._ctl["cr0_wp"] = True
        self._ctl["efer_nxe"] = True
        self._pkru = 0
        self._counts: dict[str, int] = {}
        self._walk_refs = [0] * 6
        self._psc_hits = [0] * 6
        self.reset()

    # ---- control ----

    def _set_bit(self, name: str, value: bool) -> None:
        if not isinstance(value, bool | int) or value not in (0, 1):
            raise EmuValueError(f"{name} must be a bool, got {value!r}")
        new = bool(value)
        old = self._ctl[name]
        if name == "cr4_pcide" and new and not old and self._cr3 & 0xFFF:
            raise GeneralProtection(0)  # PCIDE 0->1 needs CR3[11:0] = 0
        everything = new != old and (
            name in ("cr4_pge", "cr4_la57", "efer_nxe") or (name == "cr4_pcide" and old)
        )
        self._ctl[name] = new
        # A flushing control change counts in tlb_flushes (the doc is silent here; a
        # CR4.PGE toggle is how Linux flushes global entries, so it is a flush).
        if everything:
            self._counts["flushes"] += 1
            self._sweep(lambda e: True, lambda p: True)
        elif name == "cr4_smep" and new and not old:
            pcid = self.pcid
            self._counts["flushes"] += 1
            self._sweep(lambda e: e.pcid == pcid, lambda p: p.pcid == pcid)

    cr0_wp = _control_property("cr0_wp")
    cr4_pge = _control_property("cr4_pge")
    cr4_pcide = _control_property("cr4_pcide")
    cr4_smep = _control_property("cr4_smep")
    cr4_smap = _control_property("cr4_smap")
    cr4_la57 = _control_property("cr4_la57")
    cr4_pke = _control_property("cr4_pke")
    efer_nxe = _control_property("efer_nxe")
    rflags_ac = _control_property("rflags_ac")

    @property
    def cr3(self) -> int:
        """CR3 as stored (bit 63 never is)."""
        return self._cr3

    @cr3.setter
    def cr3(self, value: int) -> None:
        self.write_cr3(value)

    @property
    def pkru(self) -> int:
        """The PKRU register (changing it flushes nothing)."""
        return self._pkru

    @pkru.setter
    def pkru(self, value: int) -> None:
        v = as_int(value, "pkru")
        if not 0 <= v < 1 << 32:
            raise EmuValueError(f"pkru={v:#x} must fit in 32 bits")
        self._pkru = v

    @property
    def pcid(self) -> int:
        """The current PCID (0 unless CR4.PCIDE)."""
        return self._cr3 & 0xFFF if self._ctl["cr4_pcide"] else 0

    def _la57(self) -> bool:
        return self._ctl["cr4_la57"]

    def _walk_config(self) -> WalkConfig:
        flags = 0
        for name, flag in (
            ("cr0_wp", arch.WF_WP),
            ("efer_nxe", arch.WF_NXE),
            ("cr4_smep", arch.WF_SMEP),
            ("cr4_smap", arch.WF_SMAP),
            ("rflags_ac", arch.WF_AC),
            ("cr4_la57", arch.WF_LA57),
            ("cr4_pke", arch.WF_PKE),
        ):
            if self._ctl[name]:
                flags |= flag
        if self.a_policy == "qemu":
            flags |= arch.WF_A_QEMU
        if not self.config.gbpages:
            flags |= arch.WF_NO_1G
        if self.config.vendor == "amd":
            flags |= arch.WF_AMD
        return WalkConfig(
            cr3=self._cr3,
            flags=flags,
            pkru=self._pkru,
            maxphyaddr=self.config.maxphyaddr,
        )

    # ---- invalidation ----

    def _sweep(
        self,
        tlb_pred: Callable[[TLBEntryRef], bool],
        psc_pred: Callable[[PSCEntryRef], bool],
    ) -> None:
        """Remove matching TLB entries (counted) and PSC entries (not counted)."""
        for a in self._arrays:
            self._counts["entries_flushed"] += a.store.remove_if(tlb_pred)
        for psc in self._psc.values():
            psc.remove_if(psc_pred)

    def _remove_page(self, va: int, pcid: int, *, with_global: bool) -> None:
        """Remove the TLB entries of ``pcid`` (and global ones) whose leaf covers va.

        Fractured pieces of that leaf go too, wherever they sit in it.
        """

        def hit(e: TLBEntryRef) -> bool:
            if e.glob and not with_global:
                return False
            return (e.pcid == pcid or e.glob) and e.covers_leaf_of(va)

        for a in self._arrays:
            self._counts["entries_flushed"] += a.store.remove_if(hit)

    def _fault_invalidate(self, va: int) -> None:
        """Invalidate what a #PF does (SDM 4.10.4.1).

        The page's TLB entries of the current PCID and global ones, and in each PSC the
        entry keyed by ``va`` with the current PCID.
        """
        pcid = self.pcid
        self._remove_page(va, pcid, with_global=True)
        for psc in self._psc.values():
            _remove_psc_key(psc, va, pcid)

    def write_cr3(self, value: int) -> None:
        """MOV to CR3: flush non-global entries of the new PCID unless bit 63 says not.

        Raises:
            GeneralProtection: reserved bits set, or bit 63 without CR4.PCIDE.
        """
        v = u64(value, "cr3")
        no_flush = bool(v >> 63)
        if no_flush and not self._ctl["cr4_pcide"]:
            raise GeneralProtection(0)
        v &= ~(1 << 63)
        if v >> self.config.maxphyaddr:
            raise GeneralProtection(0)
        self._cr3 = v
        if not no_flush:
            pcid = self.pcid
            self._sweep(
                lambda e: not e.glob and e.pcid == pcid, lambda p: p.pcid == pcid
            )
        self._counts["cr3_writes"] += 1

    def invlpg(self, va: int) -> None:
        """INVLPG: the page's entries and every PSC entry of the current PCID.

        The page's entries are those of the current PCID and global ones, of every size
        and every fractured piece of the leaf.  A non-canonical ``va`` is a no-op.
        """
        v = u64(va, "va")
        self._counts["invlpg"] += 1
        if not arch.is_canonical(v, self._la57()):
            return
        pcid = self.pcid
        self._remove_page(v, pcid, with_global=True)
        self._sweep(lambda e: False, lambda p: p.pcid == pcid)

    def invpcid(self, kind: int, pcid: int = 0, va: int = 0) -> None:
        """INVPCID of type ``kind`` (0 address, 1 context, 2 all, 3 all but global).

        Raises:
            GeneralProtection: as the instruction would (bad type, PCID or address).
        """
        k = as_int(kind, "kind")
        if not 0 <= k <= 3:
            raise GeneralProtection(va)
        p = u64(pcid, "pcid")
        v = u64(va, "va")
        if p > 0xFFF:
            raise GeneralProtection(v)
        if k in (0, 1) and not self._ctl["cr4_pcide"] and p != 0:
            raise GeneralProtection(v)
        if k == 0 and not arch.is_canonical(v, self._la57()):
            raise GeneralProtection(v)
        self._counts["invpcid"] += 1
        if k == 0:
            self._remove_page(v, p, with_global=False)
            self._sweep(lambda e: False, lambda q: q.pcid == p)
        elif k == 1:
            self._sweep(lambda e: not e.glob and e.pcid == p, lambda q: q.pcid == p)
        elif k == 2:
            self._sweep(lambda e: True, lambda q: True)
        else:
            self._sweep(lambda e: not e.glob, lambda q: True)

    def flush_all(self, include_global: bool = True) -> None:
        """Drop every TLB and PSC entry (global ones only with ``include_global``)."""
        self._counts["flushes"] += 1
        if include_global:
            self._sweep(lambda e: True, lambda q: True)
        else:
            self._sweep(lambda e: not e.glob, lambda q: True)

    # ---- TLB lookup and fill ----

    def _role_arrays(self, role: str) -> list[_Array]:
        return [a for a in self._arrays if a.role == role]

    def _l1_role(self, kind: int) -> str:
        if kind == arch.ACC_FETCH:
            return "l1i"
        if kind == arch.ACC_WRITE and self._role_arrays("l1s"):
            return "l1s"
        return "l1d"

    def _l2_role(self, kind: int) -> str:
        if kind == arch.ACC_FETCH and self._role_arrays("l2i"):
            return "l2i"
        return "l2"

    def _lookup(
        self, role: str, va: int
    ) -> tuple[_Array, int, int, TLBEntryRef] | None:
        pcid = self.pcid
        for a in self._role_arrays(role):
            for shift in a.shifts:
                found = a.store.find(va >> shift, shift, pcid)
                if found is not None:
                    s, w, e = found
                    return a, s, w, e
        return None

    def _fill(self, role: str, va: int, leaf: Leaf) -> None:
        """Fill ``role`` with ``leaf`` (docs/mmu-model.md "Fills")."""
        best: _Array | None = None
        best_shift = -1
        for a in self._role_arrays(role):
            fitting = [s for s in a.shifts if s <= leaf.shift]
            if fitting and max(fitting) > best_shift:
                best, best_shift = a, max(fitting)
        if best is None:
            return
        offset = va & ((1 << leaf.shift) - 1) & ~((1 << best_shift) - 1)
        best.store.insert(
            TLBEntryRef(
                tag=va >> best_shift,
                shift=best_shift,
                pcid=self.pcid,
                glob=leaf.glob,
                frame=leaf.frame + offset,
                rw=leaf.rw,
                us=leaf.us,
                xd=leaf.xd,
                pkey=leaf.pkey,
                dirty=leaf.dirty,
                orig_shift=leaf.shift,
            )
        )

    @staticmethod
    def _leaf_of(e: TLBEntryRef, va: int) -> Leaf:
        """The whole leaf a (possibly fractured) entry came from."""
        offset = va & ((1 << e.orig_shift) - 1) & ~((1 << e.shift) - 1)
        return Leaf(
            e.frame - offset, e.orig_shift, e.rw, e.us, e.xd, e.pkey, e.glob, e.dirty
        )

    # ---- the walk ----

    def _charge_ref(self, level: int, entry_pa: int) -> int:
        """Count one walk memory reference and return its cost."""
        self._walk_refs[level] += 1
        cfg = self.config
        if self._lines is None:
            cost = cfg.walk_ref
        else:
            line = entry_pa >> 6
            found = self._lines.find(line, 0, 0)
            if found is not None:
                self._lines.touch(found[0], found[1])
                self._counts["pte_cache_hits"] += 1
                cost = cfg.pte_hit
            else:
                self._lines.insert(LineRef(line))
                self._counts["pte_cache_misses"] += 1
                cost = cfg.pte_miss
        self._counts["walk_cycles"] += cost
        return cost

    def _walk(self, va: int, acc: int) -> tuple[Result, Leaf | None]:
        """The walk of docs/mmu-model.md step 9: PSC probe, walk, PSC fill, fault."""
        cfg = self._walk_config()
        la57 = self._la57()
        top = arch.LVL_PML5 if la57 else arch.LVL_PML4
        pcid = self.pcid
        level = top
        table = bits(self._cr3, 51, 12) << 12
        rw, us, xd = True, True, False
        for psc_level in [lv for lv in PSC_LEVELS if lv <= top]:
            shift = arch.PAGE_SHIFT + 9 * (psc_level - 1)
            psc = self._psc[psc_level]
            found = psc.find(va >> shift, shift, pcid)
            if found is not None:
                s, w, p = found
                psc.touch(s, w)
                self._psc_hits[psc_level] += 1
                level = psc_level - 1
                table, rw, us, xd = p.table, p.rw, p.us, p.xd
                break
        else:
            self._counts["psc_misses"] += 1

        kind = acc & arch.ACC_KIND_MASK
        qemu = bool(cfg.flags & arch.WF_A_QEMU)
        ec = 0
        if kind == arch.ACC_WRITE:
            ec |= arch.PF_W
        if acc & arch.ACC_USER:
            ec |= arch.PF_U
        if kind == arch.ACC_FETCH and cfg.flags & (arch.WF_NXE | arch.WF_SMEP):
            ec |= arch.PF_I

        cycles = 0
        used: list[tuple[int, int, int]] = []
        nonleaf: list[PSCEntryRef] = []
        fault: int | None = None
        entry = 0
        while True:
            entry_pa = table + 8 * arch.va_index(va, level)
            entry = self.mem.read_u64(entry_pa)
            cycles += self._charge_ref(level, entry_pa)
            used.append((level, entry_pa, entry))
            if not entry & arch.PTE_P:
                fault = ec
                break
            rsvd = reserved_bits(cfg, level, entry)
            if qemu:
                rsvd &= ~alignment_bits(cfg, level, entry)
            if entry & rsvd:
                fault = ec | arch.PF_P | arch.PF_RSVD
                break
            rw = rw and bool(entry & arch.PTE_RW)
            us = us and bool(entry & arch.PTE_US)
            if cfg.flags & arch.WF_NXE:
                xd = xd or bool(entry & arch.PTE_NX)
            leaf = level == arch.LVL_PT or (
                level in (arch.LVL_PD, arch.LVL_PDPT) and bool(entry & arch.PTE_PS)
            )
            if qemu and (not leaf or level == arch.LVL_PDPT):
                self.mem.write_u64(entry_pa, self.mem.read_u64(entry_pa) | arch.PTE_A)
            if leaf:
                break
            table = bits(entry, 51, 12) << 12
            nonleaf.append(
                PSCEntryRef(
                    tag=va >> (arch.PAGE_SHIFT + 9 * (level - 1)),
                    shift=arch.PAGE_SHIFT + 9 * (level - 1),
                    pcid=pcid,
                    table=table,
                    rw=rw,
                    us=us,
                    xd=xd,
                )
            )
            level -= 1

        if fault is None and qemu and entry & alignment_bits(cfg, level, entry):
            fault = ec | arch.PF_P | arch.PF_RSVD
        if fault is None:
            refused = rights_fault(cfg, acc, rw, us, xd, arch.pte_pkey(entry))
            if refused:
                fault = ec | refused
        if fault is not None:
            return self._page_fault(va, fault, cycles), None

        for lvl, pa, _ in used:
            new = self.mem.read_u64(pa) | arch.PTE_A
            if lvl == level and kind == arch.ACC_WRITE:
                new |= arch.PTE_D
            if new != self.mem.read_u64(pa):
                self.mem.write_u64(pa, new)

        for p in nonleaf:
            self._psc[(p.shift - arch.PAGE_SHIFT) // 9 + 1].insert(p)
        shift = arch.PAGE_SHIFT + 9 * (level - 1)
        frame = (bits(entry, 51, 12) << 12) & ~((1 << shift) - 1)
        leaf_pa = used[-1][1]
        leaf_info = Leaf(
            frame=frame,
            shift=shift,
            rw=rw,
            us=us,
            xd=xd,
            pkey=arch.pte_pkey(entry),
            glob=bool(entry & arch.PTE_G) and self._ctl["cr4_pge"],
            dirty=bool(self.mem.read_u64(leaf_pa) & arch.PTE_D),
        )
        pa = frame | (va & ((1 << shift) - 1))
        return Result(
            pa=pa, page_size=1 << shift, hit=HIT_WALK, cycles=cycles
        ), leaf_info

    # ---- one access ----

    def _page_fault(self, va: int, error_code: int, cycles: int) -> Result:
        self._counts["page_faults"] += 1
        self._fault_invalidate(va)
        return Result(error_code=error_code, vector=arch.VEC_PF, cycles=cycles)

    def _rights(self, e: TLBEntryRef, acc: int) -> int:
        return rights_fault(self._walk_config(), acc, e.rw, e.us, e.xd, e.pkey)

    def _tlb_fault(self, va: int, acc: int, refused: int, cycles: int) -> Result:
        """Cached rights refuse: #PF with P | W/U/I of the access | PK."""
        kind = acc & arch.ACC_KIND_MASK
        ec = refused
        if kind == arch.ACC_WRITE:
            ec |= arch.PF_W
        if acc & arch.ACC_USER:
            ec |= arch.PF_U
        if kind == arch.ACC_FETCH and self._ctl["efer_nxe"] | self._ctl["cr4_smep"]:
            ec |= arch.PF_I
        return self._page_fault(va, ec, cycles)

    def _dirty_walk(self, va: int, acc: int, cycles: int, hit: int) -> Result:
        """A write hit on an entry with D=0: the walker sets D (step 8).

        The arrays consulted are refilled from the walk: the L1 role after an L1 hit,
        the L2 and L1 roles after an L2 hit.  The result keeps ``hit``, the level whose
        entry sent the access to the walker.
        """
        self._counts["dirty_walks"] += 1
        r, leaf = self._walk(va, acc)
        r.cycles += cycles
        if leaf is not None:
            kind = acc & arch.ACC_KIND_MASK
            if hit == HIT_L2:
                self._fill(self._l2_role(kind), va, leaf)
            self._fill(self._l1_role(kind), va, leaf)
            r.hit = hit
        return r

    def _access_page(self, va: int, acc: int) -> Result:
        """Steps 1-9 of docs/mmu-model.md for the page holding ``va``."""
        kind = acc & arch.ACC_KIND_MASK
        prefix = _KIND_PREFIX[kind]
        self._counts[_KIND_COUNT[kind]] += 1
        if not arch.is_canonical(va, self._la57()):
            self._counts["gp_faults"] += 1
            return Result(vector=arch.VEC_GP)
        cycles = self.config.l1_hit
        found = self._lookup(self._l1_role(kind), va)
        if found is not None:
            a, s, w, e = found
            refused = self._rights(e, acc)
            if refused:
                return self._tlb_fault(va, acc, refused, cycles)
            if kind == arch.ACC_WRITE and not e.dirty:
                return self._dirty_walk(va, acc, cycles, HIT_L1)
            a.store.touch(s, w)
            pa = e.frame | (va & ((1 << e.shift) - 1))
            return Result(pa=pa, page_size=1 << e.shift, hit=HIT_L1, cycles=cycles)
        self._counts[f"{prefix}_l1_miss"] += 1
        cycles += self.config.l2_hit
        found = self._lookup(self._l2_role(kind), va)
        if found is not None:
            a, s, w, e = found
            refused = self._rights(e, acc)
            if refused:
                return self._tlb_fault(va, acc, refused, cycles)
            if kind == arch.ACC_WRITE and not e.dirty:
                return self._dirty_walk(va, acc, cycles, HIT_L2)
            a.store.touch(s, w)
            self._counts[f"{prefix}_l2_hit"] += 1
            self._fill(self._l1_role(kind), va, self._leaf_of(e, va))
            pa = e.frame | (va & ((1 << e.shift) - 1))
            return Result(pa=pa, page_size=1 << e.shift, hit=HIT_L2, cycles=cycles)
        self._counts[f"{prefix}_walks"] += 1
        r, leaf = self._walk(va, acc)
        r.cycles += cycles
        if leaf is not None:
            self._counts[f"{prefix}_walk_{_WALK_SIZE_KEY[leaf.shift]}"] += 1
            self._fill(self._l2_role(kind), va, leaf)
            self._fill(self._l1_role(kind), va, leaf)
        return r

    def _access(self, va: int, acc: int, size: int) -> Result:
        """One access, translating both pages when it straddles a page boundary."""
        crosses = size > 0 and (va & 0xFFF) + size > arch.PAGE_SIZE
        if crosses:
            self._counts["crossings"] += 1
        r = self._access_page(va, acc)
        if crosses and not r.faulted:
            r2 = self._access_page(((va | 0xFFF) + 1) & U64_MASK, acc)
            if r2.faulted:
                r2.cycles += r.cycles
                r2.crossed = 2
                r = r2
            else:
                r.cycles += r2.cycles
                r.crossed = 1
        elif crosses:
            r.crossed = 1
        self._counts["cycles"] += r.cycles
        return r

    # ---- public translation ----

    def translate(
        self, va: int, access: str = "r", user: bool = False, size: int = 1
    ) -> Translation:
        """Translate one access through the TLBs.

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
            EmuValueError: a malformed argument.
        """
        if access not in arch.ACCESS_CODES:
            raise EmuValueError(f"access={access!r} must be 'r', 'w' or 'x'")
        code = arch.ACCESS_CODES[access] | (arch.ACC_USER if user else 0)
        v = u64(va, "va")
        sz = as_int(size, "size")
        if not 0 <= sz < 1 << 32:
            raise EmuValueError(f"size={sz} out of range")
        r = self._access(v, code, sz)
        fault_va = ((v | 0xFFF) + 1) & U64_MASK if r.crossed == 2 else v
        if r.vector == arch.VEC_GP:
            raise GeneralProtection(fault_va)
        if r.vector == arch.VEC_PF:
            raise PageFault(fault_va, r.error_code)
        return Translation(r.pa, r.page_size, HIT_NAMES[r.hit], r.cycles)

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
        """Translate a stream of accesses (a plain loop; same contract as ``MMU.run``).

        Args:
            vas: uint64 addresses.
            kinds: uint8 kinds (0 read, 1 write, 2 fetch), or ``"r"``/``"w"``/``"x"``.
            user: every access is a user-mode access.
            sizes: optional access sizes.
            out: optional array of :data:`RESULT_DTYPE` (same length) for per-access
                results.
            stop_on_fault: stop after the first faulting access.

        Returns:
            The counters of this run (``stats`` names) plus ``accesses`` processed.

        Raises:
            EmuValueError: malformed arrays or kinds (nothing is translated then).
        """
        va_arr = u64_array(vas, "vas")
        n = va_arr.size
        if isinstance(kinds, str):
            if kinds not in arch.ACCESS_CODES:
                raise EmuValueError(f"kinds={kinds!r} must be 'r', 'w' or 'x'")
            k_list = [arch.ACCESS_CODES[kinds]] * n
        else:
            k_arr = np.asarray(kinds)
            if k_arr.shape != va_arr.shape:
                raise EmuValueError(
                    f"kinds has shape {k_arr.shape}, vas {va_arr.shape}"
                )
            if k_arr.dtype.kind not in "iu":
                raise EmuValueError(f"kinds must be integers, got {k_arr.dtype}")
            k_list = [int(k) for k in k_arr.astype(np.uint8)]
        for i, k in enumerate(k_list):
            if k > arch.ACC_FETCH:
                raise EmuValueError(f"kinds[{i}]={k} is not 0, 1 or 2")
        if sizes is None:
            s_list = [1] * n
        else:
            s_arr = np.ascontiguousarray(sizes, dtype=np.uint32)
            if s_arr.shape != va_arr.shape:
                raise EmuValueError(
                    f"sizes has shape {s_arr.shape}, vas {va_arr.shape}"
                )
            s_list = [int(s) for s in s_arr]
        if out is not None and (out.dtype != RESULT_DTYPE or out.shape != va_arr.shape):
            raise EmuValueError("out must be a RESULT_DTYPE array like vas")
        before = self.stats
        user_bit = arch.ACC_USER if user else 0
        done = 0
        for i, va in enumerate(va_arr.tolist()):
            r = self._access(va, k_list[i] | user_bit, s_list[i])
            done += 1
            if out is not None:
                out[i] = (
                    r.pa,
                    r.page_size,
                    r.error_code,
                    r.vector,
                    r.hit,
                    r.crossed,
                    0,
                    r.cycles,
                )
            if stop_on_fault and r.faulted:
                break
        after = self.stats
        delta = {k: after[k] - before[k] for k in after}
        delta["accesses"] = done
        return delta

    # ---- introspection ----

    @property
    def stats(self) -> dict[str, int]:
        """Counters since creation or ``reset``, named as ``emu.MMU.stats``."""
        out = {name: self._counts[f] for f, name in STAT_NAMES_BY_FIELD.items()}
        for lv in range(arch.LVL_PML5, 0, -1):
            out[f"walk_ref.{_LEVEL_KEYS[lv]}"] = self._walk_refs[lv]
        for lv in range(arch.LVL_PML5, 1, -1):
            out[f"psc_hit.{_LEVEL_KEYS[lv]}"] = self._psc_hits[lv]
        for side in ("dtlb_load_misses", "dtlb_store_misses", "itlb_misses"):
            out[f"{side}.walk_completed"] = sum(
                out[f"{side}.walk_completed_{k}"] for k in ("4k", "2m_4m", "1g")
            )
        out["accesses"] = 0
        return out

    def reset(self) -> None:
        """Zero the counters (TLB contents stay)."""
        self._counts = dict.fromkeys(STAT_NAMES_BY_FIELD, 0)
        self._walk_refs = [0] * 6
        self._psc_hits = [0] * 6

    def tlb_entries(self) -> list[TLBEntry]:
        """Every valid TLB entry, stale ones included."""
        return [
            TLBEntry(
                array=a.name,
                va=e.va,
                pa=e.frame,
                page_size=1 << e.shift,
                orig_page_size=1 << e.orig_shift,
                pcid=e.pcid,
                rw=e.rw,
                us=e.us,
                xd=e.xd,
                pkey=e.pkey,
                glob=e.glob,
                dirty=e.dirty,
            )
            for a in self._arrays
            for e in a.store.entries()
        ]

    def psc_entries(self) -> list[TLBEntry]:
        """Every valid paging-structure-cache entry (``pa`` is the next table)."""
        return [
            TLBEntry(
                array=f"PSC-{_LEVEL_KEYS[level].upper()}",
                va=(p.tag << p.shift) & U64_MASK,
                pa=p.table,
                page_size=1 << p.shift,
                orig_page_size=1 << p.shift,
                pcid=p.pcid,
                rw=p.rw,
                us=p.us,
                xd=p.xd,
                pkey=0,
                glob=False,
                dirty=False,
            )
            for level, psc in self._psc.items()
            for p in psc.entries()
        ]

    def __repr__(self) -> str:
        return f"RefMMU(cpu={self.config.name!r}, cr3={self._cr3:#x})"


__all__ = [
    "HIT_NAMES",
    "RESULT_DTYPE",
    "STAT_NAMES_BY_FIELD",
    "RefMMU",
    "TLBEntry",
    "Translation",
]
