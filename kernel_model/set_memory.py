"""CPA: set_memory_* and friends (arch/x86/mm/pat/set_memory.c, Linux 7.0).

Follows reference/linux-mm.md sections 2 and 3: the main loop over pages, lookup,
``should_split_large_page`` with clamping, static protections, the W^X check,
splitting 1G -> 2M -> 4K with a table page from the buddy allocator and a global flush
on every CPU, alias processing (direct map and high kernel map, NX masked out, forcing
a full flush), the end-of-CPA flush with the 33-page ceiling, ``CPA_COLLAPSE`` for
``set_memory_rox``, ``direct_pages_count`` accounting with its high-map quirk, the vm
split/collapse events, and the ``cpa_stats`` counters.

Simplifications: cache-mode changes (``set_memory_uc/wc/wb``), memory encryption, the
EFI ``cpa->pgd`` path and ``vm_unmap_aliases`` purges of real lazy vmalloc areas are
not modelled (the purge is counted); locking and races do not exist in the model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from emu.errors import EmuMemoryError, EmuValueError
from kernel_model import pgtable as pt
from kernel_model.pgtable import (
    PG_LEVEL_1G,
    PG_LEVEL_2M,
    PG_LEVEL_4K,
    PMD_SIZE,
    PUD_SIZE,
)

if TYPE_CHECKING:
    from kernel_model.machine import Machine

log = logging.getLogger(__name__)

PAGE_SIZE = 4096
ENOMEM = 12
EFAULT = 14
EINVAL = 22

CPA_FLUSHTLB = 1
CPA_ARRAY = 2
CPA_PAGES_ARRAY = 4
CPA_NO_CHECK_ALIAS = 8
CPA_COLLAPSE = 16

CPA_CONFLICT = 0
CPA_PROTECT = 1
CPA_DETECT = 2
CPA_WARN_LEVEL = CPA_PROTECT

TLB_FLUSH_ALL = -1
TLB_SINGLE_PAGE_FLUSH_CEILING = 33

_P, _RW, _NX, _PSE, _G, _D = (
    pt._PAGE_PRESENT,
    pt._PAGE_RW,
    pt._PAGE_NX,
    pt._PAGE_PSE,
    pt._PAGE_GLOBAL,
    pt._PAGE_DIRTY,
)
_PROTNONE = _G  # on a non-present entry bit 8 means _PAGE_PROTNONE


@dataclass
class CpaData:
    """struct cpa_data (2.2)."""

    vaddr: list[int]  # one start address, or the CPA_ARRAY addresses
    mask_set: int
    mask_clr: int
    numpages: int
    flags: int = 0
    pages: list[int] | None = None  # CPA_PAGES_ARRAY: page frame numbers
    curpage: int = 0
    pfn: int = 0
    force_split: bool = False
    force_static_prot: bool = False
    force_flush_all: bool = False


@dataclass
class CpaStats:
    """CONFIG_X86_CPA_STATISTICS counters and the model's own flush counters."""

    gb_checked: int = 0
    gb_sameprot: int = 0
    gb_preserved: int = 0
    mb_checked: int = 0
    mb_sameprot: int = 0
    mb_preserved: int = 0
    set_checked_4k: int = 0
    # model counters (2.8: count each kind separately)
    splits: dict[int, int] = field(
        default_factory=lambda: {PG_LEVEL_1G: 0, PG_LEVEL_2M: 0}
    )
    collapses: dict[int, int] = field(
        default_factory=lambda: {PG_LEVEL_1G: 0, PG_LEVEL_2M: 0}
    )
    split_flushes: int = 0
    ranged_flushes: int = 0
    ranged_flush_pages: int = 0
    full_flushes: int = 0
    collapse_flushes: int = 0
    vm_unmap_aliases: int = 0
    enomem: int = 0

    def text(self) -> str:
        """/sys/kernel/debug/x86/cpa_stats."""
        rows = [
            ("1G pages checked:", self.gb_checked),
            ("1G pages sameprot:", self.gb_sameprot),
            ("1G pages preserved:", self.gb_preserved),
            ("2M pages checked:", self.mb_checked),
            ("2M pages sameprot:", self.mb_sameprot),
            ("2M pages preserved:", self.mb_preserved),
            ("4K pages set-checked:", self.set_checked_4k),
        ]
        return "".join(f"{label:<22}{value:16d}\n" for label, value in rows)


class CPA:
    """The CPA machinery of one Machine.

    Args:
        machine: the booted machine whose page tables and CPUs CPA acts on.
        merge: ``"linux"`` (7.0: only set_memory_rox collapses, only its primary
            range) or ``"eager"`` (try to collapse every range a CPA touched, aliases
            included, after every CPA — the 2022 "merge small mappings" RFC idea).
        flush_ceiling: ``tlb_single_page_flush_ceiling``.

    Attributes:
        stats: counters.
        warnings: WARN-like messages in Linux's wording, in order.
        kernel_set_to_readonly: set by mark_rodata_ro.
    """

    def __init__(
        self,
        machine: Machine,
        merge: str = "linux",
        flush_ceiling: int = TLB_SINGLE_PAGE_FLUSH_CEILING,
    ) -> None:
        if merge not in ("linux", "eager"):
            raise EmuValueError(f"merge={merge!r} must be 'linux' or 'eager'")
        if flush_ceiling < 0:
            raise EmuValueError(f"flush_ceiling={flush_ceiling} must be >= 0")
        self.m = machine
        self.pt = machine.pt
        self.merge = merge
        self.flush_ceiling = flush_ceiling
        self.stats = CpaStats()
        self.warnings: list[str] = []
        self.kernel_set_to_readonly = False
        self._warned_once: set[str] = set()
        self._pending_free: list[int] = []
        self._touched: list[int] = []  # addresses the eager merge policy revisits
        self.fail_table_allocs = 0  # test hook: make the next N table allocations fail
        self.split_alloc_failures = 0  # split tables that could not be allocated
        self.skip_split_flush = False  # test hook: a broken CPA for the validator
        self.skip_alias = False  # test hook: a broken CPA for the validator

    # ---- symbols ---------------------------------------------------------------------

    @property
    def sym(self) -> KernelSymbols:
        """The kernel image's symbols (high-map virtual addresses)."""
        return self.m.sym

    # ---- warnings --------------------------------------------------------------------

    def _warn(self, msg: str, once_key: str | None = None) -> None:
        if once_key is not None:
            if once_key in self._warned_once:
                return
            self._warned_once.add(once_key)
        self.warnings.append(msg)
        log.debug("%s", msg)  # the list is the record; callers decide what to show

    # ---- address helpers -------------------------------------------------------------

    def _direct_map_end(self) -> int:
        return self.m.layout.page_offset + (self.m.direct.max_pfn_mapped << 12)

    def _in_direct_map(self, va: int) -> bool:
        return self.m.layout.page_offset <= va < self._direct_map_end()

    def _in_highmap(self, va: int) -> bool:
        lay = self.m.layout
        return lay.start_kernel_map <= va < lay.start_kernel_map + lay.kernel_image_size

    def virt_addr_valid(self, va: int) -> bool:
        """virt_addr_valid() (x86-64): direct-map and high-kernel-map addresses."""
        return self._in_direct_map(va) or self._in_highmap(va)

    def _cpa_addr(self, cpa: CpaData, idx: int) -> int:
        """__cpa_addr(): address of page ``idx`` of the request."""
        if cpa.flags & CPA_PAGES_ARRAY:
            assert cpa.pages is not None
            return self.m.va(cpa.pages[idx] << 12)
        if cpa.flags & CPA_ARRAY:
            return cpa.vaddr[idx] & ~(PAGE_SIZE - 1)
        return cpa.vaddr[0] + idx * PAGE_SIZE

    # ---- static protections (2.6) ----------------------------------------------------

    def _overlaps(self, a0: int, a1: int, b0: int, b1: int) -> bool:
        return a0 <= b1 and b0 <= a1

    def static_protections(
        self, prot: int, start: int, pfn: int, npg: int, lpsize: int, warnlvl: int
    ) -> int:
        """static_protections(): ``prot`` minus the bits a static rule forbids."""
        if not prot & _P:
            return prot
        end = start + npg * PAGE_SIZE - 1
        s = self.sym
        forbidden = 0
        res = 0
        # Text NX: the high-map text may not become NX
        if self._overlaps(start, end, s.text, s.etext - 1):
            res = _NX
            self._check_conflict(warnlvl, prot, res, start, end, pfn, "Text NX")
            forbidden |= res
        # Text RO: only while the text is still a large page; not for whole-large-page
        # checks
        if lpsize != npg * PAGE_SIZE or start & (lpsize - 1 if lpsize else 0):
            res = self._protect_kernel_text_ro(start, end)
            self._check_conflict(warnlvl, prot, res, start, end, pfn, "Text RO")
            forbidden |= res
        # Rodata RO by PFN: every alias of rodata
        if self.kernel_set_to_readonly:
            rs = s.pa_start_rodata >> 12
            re = (s.pa_end_rodata - 1) >> 12
            if self._overlaps(pfn, pfn + npg - 1, rs, re):
                res = _RW
                self._check_conflict(warnlvl, prot, res, start, end, pfn, "Rodata RO")
                forbidden |= res
        return prot & ~forbidden

    def _protect_kernel_text_ro(self, start: int, end: int) -> int:
        s = self.sym
        if not self.kernel_set_to_readonly:
            return 0
        if not self._overlaps(start, end, s.text, s.end_rodata_hpage_align - 1):
            return 0
        look = self.pt.lookup_address(start)
        if look.entry is not None and look.level == PG_LEVEL_4K:
            return 0
        return _RW

    def _check_conflict(
        self,
        warnlvl: int,
        prot: int,
        val: int,
        start: int,
        end: int,
        pfn: int,
        txt: str,
    ) -> None:
        if not val or not prot & val:
            return
        if warnlvl > CPA_WARN_LEVEL:
            return
        lvltxt = ("conflict", "protect", "detect")[warnlvl]
        self._warn(
            f"CPA {lvltxt:>8} {txt:>10}: 0x{start:016x} - 0x{end:016x} PFN {pfn:x} "
            f"req {prot:016x} prevent {val:016x}"
        )

    def verify_rwx(
        self,
        old: int,
        new: int,
        start: int,
        pfn: int,
        npg: int,
        nx_up: bool,
        rw_up: bool,
    ) -> int:
        """verify_rwx(): warn (once) about a W^X change; 7.0 does not refuse it."""
        if not self.m.supported_pte_mask & _NX:
            return new
        if not ((old ^ new) & (_RW | _NX)):
            return new
        if (new & (_RW | _NX)) != _RW:
            return new
        if nx_up or not rw_up:
            return new
        end = start + npg * PAGE_SIZE - 1
        self._warn(
            f"CPA detected W^X violation: {old:016x} -> {new:016x} range: "
            f"0x{start:016x} - 0x{end:016x} PFN {pfn:x}",
            once_key="wx",
        )
        return new

    @staticmethod
    def clear_protnone_bits(prot: int) -> int:
        """pgprot_clear_protnone_bits(): a non-present entry must not look PROTNONE."""
        if not prot & _P:
            prot &= ~_PROTNONE
        return prot

    # ---- the main loop (2.3, 2.4) ----------------------------------------------------

    def change_page_attr_set_clr(
        self,
        addr: int | Sequence[int],
        numpages: int,
        mask_set: int,
        mask_clr: int,
        force_split: bool = False,
        in_flag: int = 0,
        pages: Sequence[int] | None = None,
    ) -> int:
        """change_page_attr_set_clr() (2.3): returns 0 or -errno."""
        if isinstance(numpages, bool) or not isinstance(numpages, int) or numpages < 0:
            raise EmuValueError(f"numpages={numpages!r} must be a non-negative integer")
        mask_set &= self.m.supported_pte_mask
        if not mask_set and not mask_clr and not force_split:
            return 0
        if in_flag & CPA_PAGES_ARRAY:
            if pages is None or len(pages) < numpages:
                raise EmuValueError("CPA_PAGES_ARRAY needs numpages page frames")
            vaddr: list[int] = [0]
            for pfn in pages[:numpages]:
                if not 0 <= pfn < self.m.direct.max_pfn_mapped:
                    raise EmuValueError(f"page frame {pfn:#x} is not in the direct map")
        elif in_flag & CPA_ARRAY:
            if isinstance(addr, int) or len(addr) < numpages:
                raise EmuValueError("CPA_ARRAY needs numpages addresses")
            vaddr = [int(a) for a in addr[:numpages]]
            for i, a in enumerate(vaddr):
                if a & (PAGE_SIZE - 1):
                    self._warn(f"CPA: misaligned address {a:#x}", once_key="misaligned")
                    vaddr[i] = a & ~(PAGE_SIZE - 1)
        else:
            if not isinstance(addr, int):
                raise EmuValueError("a range CPA takes one start address")
            if addr < 0 or addr >= 1 << 64:
                raise EmuValueError(f"addr={addr:#x} is not a 64-bit address")
            if addr & (PAGE_SIZE - 1):
                self._warn(f"CPA: misaligned address {addr:#x}", once_key="misaligned")
                addr &= ~(PAGE_SIZE - 1)
            vaddr = [addr]
        cpa = CpaData(
            vaddr=vaddr,
            mask_set=mask_set,
            mask_clr=mask_clr,
            numpages=numpages,
            flags=in_flag,
            pages=list(pages[:numpages]) if pages else None,
            force_split=force_split,
        )
        self.stats.vm_unmap_aliases += 1  # vm_unmap_aliases() before the walk
        self._touched = []
        ret = self._change_page_attr_set_clr(cpa, primary=True)
        if not cpa.flags & CPA_FLUSHTLB:
            self._eager_merge()
            return ret
        if ret:
            self.cpa_flush_all()
        else:
            self.cpa_flush(cpa)
        self._eager_merge()
        return ret

    def _change_page_attr_set_clr(self, cpa: CpaData, primary: bool) -> int:
        numpages = cpa.numpages
        if not cpa.mask_set and not cpa.mask_clr and not cpa.force_split:
            return 0
        rem = numpages
        ret = 0
        while rem:
            cpa.numpages = rem if not cpa.flags & (CPA_ARRAY | CPA_PAGES_ARRAY) else 1
            ret = self._change_page_attr(cpa, primary)
            if ret:
                break
            if primary and not cpa.flags & CPA_NO_CHECK_ALIAS and not self.skip_alias:
                ret = self.cpa_process_alias(cpa)
                if ret:
                    break
            if not 0 < cpa.numpages <= rem:
                raise AssertionError("CPA step size out of range")  # Linux BUG_ON
            rem -= cpa.numpages
            cpa.curpage += cpa.numpages
        cpa.numpages = numpages
        return ret

    def _change_page_attr(self, cpa: CpaData, primary: bool) -> int:
        address = self._cpa_addr(cpa, cpa.curpage)
        while True:
            look = self.pt.lookup_address(address)
            if look.entry is None or look.entry == 0:
                return self._cpa_process_fault(cpa, address, primary)
            old = look.entry
            if look.level == PG_LEVEL_4K:
                self._touched.append(address)
                old_prot = pt.pte_flags(old)
                pfn = pt.pte_pfn(old)
                new_prot = (old_prot & ~cpa.mask_clr) | cpa.mask_set
                new_prot = self.static_protections(
                    new_prot, address, pfn, 1, 0, CPA_PROTECT
                )
                new_prot = self.verify_rwx(
                    old_prot, new_prot, address, pfn, 1, look.nx, look.rw
                )
                new_prot = self.clear_protnone_bits(new_prot)
                self.stats.set_checked_4k += 1
                new = (pfn << 12) | new_prot
                if new != old:
                    assert look.entry_pa is not None
                    self.pt.write(
                        look.entry_pa & ~0xFFF, (look.entry_pa & 0xFFF) // 8, new
                    )
                    cpa.flags |= CPA_FLUSHTLB
                cpa.pfn = pfn
                cpa.numpages = 1
                return 0
            r = self.should_split_large_page(look, address, cpa)
            if r <= 0:
                return r
            err = self.split_large_page(cpa, look, address)
            if err:
                return err

    def _cpa_process_fault(self, cpa: CpaData, vaddr: int, primary: bool) -> int:
        """__cpa_process_fault(): holes in the direct map are skipped page by page."""
        if not primary:
            cpa.numpages = 1
            return 0
        if self._in_direct_map(vaddr):
            cpa.numpages = 1
            cpa.pfn = (vaddr - self.m.layout.page_offset) >> 12
            return 0
        if self._pfn_in_highmap(cpa.pfn):
            return -EFAULT  # faults in the high map are fine, and silent
        self._warn(
            f"CPA: called for zero pte. vaddr = {vaddr:x} cpa->vaddr = {cpa.vaddr[0]:x}"
        )
        return -EFAULT

    # ---- large pages (2.6) -----------------------------------------------------------

    def should_split_large_page(
        self, look: pt.Lookup, address: int, cpa: CpaData
    ) -> int:
        """should_split_large_page(): 0 handled in place, 1 split, < 0 error."""
        if cpa.force_split:
            return 1
        return self._should_split_large_page(look, address, cpa)

    def _should_split_large_page(
        self, look: pt.Lookup, address: int, cpa: CpaData
    ) -> int:
        level = look.level
        old = look.entry
        if old is None or look.entry_pa is None:
            return -EINVAL  # the caller looked up a present large entry
        if level == PG_LEVEL_2M:
            self.stats.mb_checked += 1
        elif level == PG_LEVEL_1G:
            self.stats.gb_checked += 1
        else:
            return -EINVAL
        old_prot = pt.pte_flags(old)
        old_pfn = pt.large_pfn(old, level)
        psize = pt.page_level_size(level)
        pmask = ~(psize - 1)
        lpaddr = address & pmask
        numpages = (psize - (address & (psize - 1))) >> 12
        if numpages < cpa.numpages:
            cpa.numpages = numpages
        # the large page's own PAT bit (bit 12) counts as a flag here
        old_prot |= old & pt._PAGE_PAT_LARGE
        req_prot = pt.pgprot_large_2_4k(old_prot)
        req_prot = (req_prot & ~cpa.mask_clr) | cpa.mask_set
        req_prot = pt.pgprot_4k_2_large(req_prot)
        req_prot = self.clear_protnone_bits(req_prot)
        if req_prot & _P:
            req_prot |= _PSE
        pfn = old_pfn + ((address & (psize - 1)) >> 12)
        cpa.pfn = pfn
        # a large page that already breaks a static protection must be split
        chk = self.static_protections(
            old_prot, lpaddr, old_pfn, psize >> 12, psize, CPA_CONFLICT
        )
        if chk != old_prot:
            self._warn(
                f"CPA: conflicting protections for large page at {lpaddr:#x}",
                once_key="conflict",
            )
            cpa.force_static_prot = True
            return 1
        if req_prot == old_prot:
            if level == PG_LEVEL_2M:
                self.stats.mb_sameprot += 1
            else:
                self.stats.gb_sameprot += 1
            return 0
        if address != lpaddr or cpa.numpages != numpages:
            return 1
        new_prot = self.static_protections(
            req_prot, lpaddr, old_pfn, numpages, psize, CPA_DETECT
        )
        new_prot = self.verify_rwx(
            old_prot, new_prot, lpaddr, old_pfn, numpages, look.nx, look.rw
        )
        if new_prot != req_prot:
            return 1
        new = (old_pfn << 12) | new_prot
        self.pt.write(look.entry_pa & ~0xFFF, (look.entry_pa & 0xFFF) // 8, new)
        cpa.flags |= CPA_FLUSHTLB
        self._touched.append(address)
        if level == PG_LEVEL_2M:
            self.stats.mb_preserved += 1
        else:
            self.stats.gb_preserved += 1
        return 0

    # ---- splitting (2.7) -------------------------------------------------------------

    def _alloc_split_table(self) -> int | None:
        if self.fail_table_allocs > 0:
            self.fail_table_allocs -= 1
            self.split_alloc_failures += 1
            return None
        try:
            return self.pt.alloc_table()
        except EmuMemoryError:
            self.split_alloc_failures += 1
            return None

    def split_large_page(self, cpa: CpaData, look: pt.Lookup, address: int) -> int:
        """split_large_page(): a new table page, then __split_large_page()."""
        table = self._alloc_split_table()
        if table is None:
            self.stats.enomem += 1
            return -ENOMEM
        self._split_large_page(cpa, look, address, table)
        return 0

    def _split_set_pte(
        self, cpa: CpaData, pfn: int, ref_prot: int, address: int, size: int
    ) -> int:
        """split_set_pte(): a child's protection, fixed up after an inconsistency.

        Only a 2M split's 4K children can be fixed; a 1G split warns.
        """
        if not cpa.force_static_prot:
            return ref_prot
        prot = self.static_protections(
            ref_prot, address, pfn, size >> 12, 0, CPA_PROTECT
        )
        if prot == ref_prot:
            return ref_prot
        if size == PAGE_SIZE:
            return prot
        self._warn(
            "CPA: Cannot fixup static protections for PUD split", once_key="pudfix"
        )
        return ref_prot

    def _split_large_page(
        self, cpa: CpaData, look: pt.Lookup, address: int, table: int
    ) -> None:
        level = look.level
        old = look.entry
        if old is None or look.entry_pa is None:
            raise EmuValueError(f"split of a missing entry at {address:#x}")
        psize = pt.page_level_size(level)
        lpaddr = address & ~(psize - 1)
        ref_prot = pt.pte_flags(old) | (old & pt._PAGE_PAT_LARGE)
        base_pfn = pt.large_pfn(old, level)
        if level == PG_LEVEL_2M:
            ref_prot = pt.pgprot_large_2_4k(ref_prot)
            lpinc = PAGE_SIZE
            pfninc = 1
        else:
            lpinc = PMD_SIZE
            pfninc = PMD_SIZE >> 12
            if not ref_prot & _P:
                ref_prot &= ~_PSE
        ref_prot = self.clear_protnone_bits(ref_prot)
        entries: list[int] = []
        for i in range(pt.PTRS_PER_TABLE):
            pfn = base_pfn + i * pfninc
            entries.append(
                (pfn << 12)
                | self._split_set_pte(cpa, pfn, ref_prot, lpaddr + i * lpinc, lpinc)
            )
        self.pt.write_table(table, np.array(entries, dtype=np.uint64))
        # accounting (1.7): only for virt_addr_valid addresses whose PFN is mapped
        if self.virt_addr_valid(address) and self.m.direct.pfn_range_is_mapped(
            base_pfn, base_pfn + 1
        ):
            self.m.split_page_count(level)
        self.stats.splits[level] += 1
        # the parent entry now points to the new table
        self.pt.write(
            look.entry_pa & ~0xFFF,
            (look.entry_pa & 0xFFF) // 8,
            table | pt._KERNPG_TABLE,
        )
        # flush_tlb_all() on every CPU before any attribute changes (Intel's note)
        self.stats.split_flushes += 1
        if not self.skip_split_flush:
            self.m.cpus.flush_all(include_global=True)

    # ---- aliases (2.9) ---------------------------------------------------------------

    def cpa_process_alias(self, cpa: CpaData) -> int:
        """cpa_process_alias(): the direct-map and high-map aliases, NX masked out."""
        if not self.m.direct.pfn_range_is_mapped(cpa.pfn, cpa.pfn + 1):
            return 0
        vaddr = self._cpa_addr(cpa, cpa.curpage)
        if not self._in_direct_map(vaddr):
            laddr = self.m.va(cpa.pfn << 12)
            alias = CpaData(
                vaddr=[laddr],
                mask_set=cpa.mask_set & ~_NX,
                mask_clr=cpa.mask_clr & ~_NX,
                numpages=cpa.numpages,
                flags=cpa.flags & ~(CPA_PAGES_ARRAY | CPA_ARRAY),
                pages=None,
            )
            # alias_cpa is a copy: its CPA_FLUSHTLB does not reach the primary, which
            # flushes everything (force_flush_all) only if it changed something itself
            cpa.force_flush_all = True
            ret = self._change_page_attr_set_clr(alias, primary=False)
            if ret:
                return ret
        s = self.sym
        if not (s.text <= vaddr < s.brk_end) and self._pfn_in_highmap(cpa.pfn):
            temp = (cpa.pfn << 12) + self.m.layout.start_kernel_map - self.m.phys_base
            alias = CpaData(
                vaddr=[temp],
                mask_set=cpa.mask_set & ~_NX,
                mask_clr=cpa.mask_clr & ~_NX,
                numpages=cpa.numpages,
                flags=cpa.flags & ~(CPA_PAGES_ARRAY | CPA_ARRAY),
            )
            cpa.force_flush_all = True
            self._change_page_attr_set_clr(alias, primary=False)  # result ignored
        return 0

    def _pfn_in_highmap(self, pfn: int) -> bool:
        """__cpa_pfn_in_highmap(): pfn within the image's 2M-rounded range."""
        s = self.sym
        return s.pa_text >> 12 <= pfn <= (s.pa_brk_end_2m - 1) >> 12

    # ---- flushing (2.8) --------------------------------------------------------------

    def cpa_flush_all(self) -> None:
        """cpa_flush_all(): a full flush on every CPU."""
        self.stats.full_flushes += 1
        self.m.cpus.flush_all(include_global=True)

    def cpa_flush(self, cpa: CpaData) -> None:
        """cpa_flush() (7.0): the end-of-CPA flush, then set_memory_rox's collapse.

        flush_tlb_kernel_range(start, start + numpages pages), or everything when an
        alias was touched.

        As in 7.0, the range starts at the *first* address even in the array modes.
        """
        start = self._cpa_addr(cpa, 0)
        end = TLB_FLUSH_ALL if cpa.force_flush_all else start + cpa.numpages * PAGE_SIZE
        self.flush_tlb_kernel_range(start, end)
        if cpa.flags & CPA_COLLAPSE:
            self.cpa_collapse_large_pages(cpa)

    def flush_tlb_kernel_range(self, start: int, end: int) -> None:
        """flush_tlb_kernel_range() (arch/x86/mm/tlb.c).

        INVLPG each page on every CPU up to the ceiling, else a full flush on every
        CPU.
        """
        if end == TLB_FLUSH_ALL or (end - start) > self.flush_ceiling << 12:
            self.cpa_flush_all()
            return
        addrs = list(range(start, end, PAGE_SIZE))
        self.stats.ranged_flushes += 1
        self.stats.ranged_flush_pages += len(addrs)

        def op(mmu: object) -> None:
            for a in addrs:
                mmu.invlpg(a)  # type: ignore[attr-defined]

        self.m.cpus.shootdown(op)

    # ---- collapse (3) ----------------------------------------------------------------

    def cpa_collapse_large_pages(self, cpa: CpaData) -> int:
        """cpa_collapse_large_pages(): try every PMD the primary range overlaps."""
        if cpa.flags & (CPA_ARRAY | CPA_PAGES_ARRAY):
            addrs = [self._cpa_addr(cpa, i) for i in range(cpa.numpages)]
        else:
            first = self._cpa_addr(cpa, 0)
            start = first & ~(PMD_SIZE - 1)
            end = first + cpa.numpages * PAGE_SIZE
            addrs = list(range(start, end, PMD_SIZE))
        return self._collapse_at(addrs)

    def _collapse_at(self, addrs: list[int]) -> int:
        collapsed = 0
        for addr in addrs:
            collapsed += self.collapse_large_pages(addr)
        if not collapsed:
            return 0
        self.stats.collapse_flushes += 1
        self.m.cpus.flush_all(include_global=True)
        for table in self._pending_free:
            self.pt.free_table(table)
        self._pending_free = []
        return collapsed

    def collapse_large_pages(self, addr: int) -> int:
        """collapse_large_pages(): a PMD merge, then (only then) a PUD merge."""
        addr &= ~(PMD_SIZE - 1)
        pud_table = self.pt.table_of(addr, PG_LEVEL_1G)
        if pud_table is None:
            return 0
        pud_idx = self.pt.index(addr, PG_LEVEL_1G)
        pud = self.pt.read(pud_table, pud_idx)
        if not pud & _P or pud & _PSE:
            return 0
        pmd_table = pud & pt.PTE_PFN_MASK
        pmd_idx = self.pt.index(addr, PG_LEVEL_2M)
        pmd = self.pt.read(pmd_table, pmd_idx)
        if not pmd & _P or pmd & _PSE:
            return 0
        n = self.collapse_pmd_page(pmd_table, pmd_idx, addr)
        if n:
            n += self.collapse_pud_page(pud_table, pud_idx, addr)
        return n

    def collapse_pmd_page(self, pmd_table: int, pmd_idx: int, addr: int) -> int:
        """collapse_pmd_page(): 512 identical consecutive PTEs -> one 2M leaf."""
        pmd = self.pt.read(pmd_table, pmd_idx)
        pte_table = pmd & pt.PTE_PFN_MASK
        ptes = [int(x) for x in self.pt.read_table(pte_table)]
        first = ptes[0]
        pfn0 = pt.pte_pfn(first)
        if (pfn0 << 12) & (PMD_SIZE - 1):
            return 0
        if first & pt._PAGE_KERNEL_4K:
            return 0
        flags0 = pt.pte_flags(first)
        for i in range(1, pt.PTRS_PER_TABLE):
            e = ptes[i]
            if not e & (_P | _PROTNONE):
                return 0
            if pt.pte_flags(e) != flags0 or pt.pte_pfn(e) != pfn0 + i:
                return 0
        if not first & (_P | _PROTNONE):
            return 0
        new = (pfn0 << 12) | pt.pgprot_4k_2_large(flags0) | _PSE
        self.pt.write(pmd_table, pmd_idx, new)
        self._pending_free.append(pte_table)
        if self.virt_addr_valid(addr) and self.m.direct.pfn_range_is_mapped(
            pfn0, pfn0 + 1
        ):
            self.m.collapse_page_count(PG_LEVEL_2M)
        self.stats.collapses[PG_LEVEL_2M] += 1
        return 1

    def collapse_pud_page(self, pud_table: int, pud_idx: int, addr: int) -> int:
        """collapse_pud_page(): 512 identical consecutive 2M leaves -> one 1G leaf."""
        if not self.m.direct.direct_gbpages:
            return 0
        pud = self.pt.read(pud_table, pud_idx)
        pmd_table = pud & pt.PTE_PFN_MASK
        pmds = [int(x) for x in self.pt.read_table(pmd_table)]
        first = pmds[0]
        if not first & _P or not first & _PSE:
            return 0
        pfn0 = pt.large_pfn(first, PG_LEVEL_2M)
        if (pfn0 << 12) & (PUD_SIZE - 1):
            return 0
        flags0 = pt.pte_flags(first) | (first & pt._PAGE_PAT_LARGE)
        for i in range(1, pt.PTRS_PER_TABLE):
            e = pmds[i]
            if not e & _P or not e & _PSE:
                return 0
            if (pt.pte_flags(e) | (e & pt._PAGE_PAT_LARGE)) != flags0:
                return 0
            if pt.large_pfn(e, PG_LEVEL_2M) != pfn0 + 512 * i:
                return 0
        self._pending_free.append(pmd_table)
        self.pt.write(pud_table, pud_idx, (pfn0 << 12) | flags0)
        if self.virt_addr_valid(addr) and self.m.direct.pfn_range_is_mapped(
            pfn0, pfn0 + 1
        ):
            self.m.collapse_page_count(PG_LEVEL_1G)
        self.stats.collapses[PG_LEVEL_1G] += 1
        return 1

    def _eager_merge(self) -> None:
        """merge="eager": after every CPA try to collapse every PMD it touched."""
        if self.merge != "eager" or not self._touched:
            return
        pmds = sorted({a & ~(PMD_SIZE - 1) for a in self._touched})
        self._touched = []
        self._collapse_at(pmds)


@dataclass(frozen=True)
class KernelSymbols:
    """The image symbols CPA and mark_rodata_ro use (high-map virtual addresses).

    ``pa_*`` are the physical addresses.  ``brk_end`` is ``_brk_end``.
    """

    text: int
    etext: int
    start_rodata: int
    end_rodata: int
    sdata: int
    edata: int
    init_begin: int
    init_end: int
    bss_start: int
    bss_stop: int
    brk_end: int
    phys_base: int
    start_kernel_map: int

    def pa(self, va: int) -> int:
        """__pa_symbol()."""
        return va - self.start_kernel_map + self.phys_base

    @property
    def end_rodata_hpage_align(self) -> int:
        """__end_rodata_hpage_align: __end_rodata rounded up to 2M."""
        return -(-self.end_rodata // PMD_SIZE) * PMD_SIZE

    @property
    def pa_text(self) -> int:
        """__pa_symbol(_text)."""
        return self.pa(self.text)

    @property
    def pa_start_rodata(self) -> int:
        """__pa_symbol(__start_rodata)."""
        return self.pa(self.start_rodata)

    @property
    def pa_end_rodata(self) -> int:
        """__pa_symbol(__end_rodata)."""
        return self.pa(self.end_rodata)

    @property
    def pa_brk_end_2m(self) -> int:
        """__pa_symbol(roundup(_brk_end, PMD_SIZE))."""
        return self.pa(-(-self.brk_end // PMD_SIZE) * PMD_SIZE)


class SetMemoryAPI:
    """The public set_memory_* family (2.1), as methods over a :class:`CPA`.

    Every function returns 0 or a negative errno as Linux does; addresses that are not
    64-bit integers or page counts that are not non-negative integers raise
    EmuValueError before anything changes.
    """

    cpa: CPA

    def _range(
        self,
        addr: int,
        numpages: int,
        mask_set: int,
        mask_clr: int,
        flags: int = 0,
        force_split: bool = False,
    ) -> int:
        if isinstance(addr, bool) or not isinstance(addr, int):
            raise EmuValueError(f"addr={addr!r} must be an integer address")
        return self.cpa.change_page_attr_set_clr(
            addr, numpages, mask_set, mask_clr, force_split, flags
        )

    def set_memory_x(self, addr: int, numpages: int) -> int:
        """set_memory_x(): clear NX (a no-op when the CPU has no NX)."""
        if not self.cpa.m.supported_pte_mask & _NX:
            return 0
        return self._range(addr, numpages, 0, _NX)

    def set_memory_nx(self, addr: int, numpages: int) -> int:
        """set_memory_nx(): set NX (a no-op when the CPU has no NX)."""
        if not self.cpa.m.supported_pte_mask & _NX:
            return 0
        return self._range(addr, numpages, _NX, 0)

    def set_memory_ro(self, addr: int, numpages: int) -> int:
        """set_memory_ro(): clear RW and D."""
        return self._range(addr, numpages, 0, _RW | _D)

    def set_memory_rox(self, addr: int, numpages: int) -> int:
        """set_memory_rox(): clear RW, D and NX; collapse afterwards (CPA_COLLAPSE)."""
        return self._range(addr, numpages, 0, _RW | _D | _NX, CPA_COLLAPSE)

    def set_memory_rw(self, addr: int, numpages: int) -> int:
        """set_memory_rw(): set RW (not D)."""
        return self._range(addr, numpages, _RW, 0)

    def set_memory_np(self, addr: int, numpages: int) -> int:
        """set_memory_np(): clear P."""
        return self._range(addr, numpages, 0, _P)

    def set_memory_np_noalias(self, addr: int, numpages: int) -> int:
        """set_memory_np_noalias(): clear P, aliases untouched."""
        return self._range(addr, numpages, 0, _P, CPA_NO_CHECK_ALIAS)

    def set_memory_p(self, addr: int, numpages: int) -> int:
        """set_memory_p(): set P."""
        return self._range(addr, numpages, _P, 0)

    def set_memory_4k(self, addr: int, numpages: int) -> int:
        """set_memory_4k(): split to 4K and mark the pages never to be merged."""
        return self._range(addr, numpages, pt._PAGE_KERNEL_4K, 0, force_split=True)

    def set_memory_global(self, addr: int, numpages: int) -> int:
        """set_memory_global(): set G."""
        return self._range(addr, numpages, _G, 0)

    def set_memory_nonglobal(self, addr: int, numpages: int) -> int:
        """set_memory_nonglobal(): clear G."""
        return self._range(addr, numpages, 0, _G)

    def change_page_attr_set(
        self, addr: int | Sequence[int], numpages: int, mask: int, array: bool = False
    ) -> int:
        """change_page_attr_set(): set ``mask`` (CPA_ARRAY when ``array``)."""
        return self.cpa.change_page_attr_set_clr(
            addr, numpages, mask, 0, False, CPA_ARRAY if array else 0
        )

    def change_page_attr_clear(
        self, addr: int | Sequence[int], numpages: int, mask: int, array: bool = False
    ) -> int:
        """change_page_attr_clear(): clear ``mask`` (CPA_ARRAY when ``array``)."""
        return self.cpa.change_page_attr_set_clr(
            addr, numpages, 0, mask, False, CPA_ARRAY if array else 0
        )

    def change_page_attr_set_pages(
        self, pages: Sequence[int], mask_set: int, mask_clr: int = 0
    ) -> int:
        """change_page_attr_set_clr() in CPA_PAGES_ARRAY mode over page frames."""
        return self.cpa.change_page_attr_set_clr(
            0, len(pages), mask_set, mask_clr, False, CPA_PAGES_ARRAY, pages
        )

    def set_pages_ro(self, pfn: int, numpages: int) -> int:
        """set_pages_ro(): set_memory_ro on the page's direct-map address."""
        return self.set_memory_ro(self.cpa.m.va(pfn << 12), numpages)

    def set_pages_rw(self, pfn: int, numpages: int) -> int:
        """set_pages_rw(): set_memory_rw on the page's direct-map address."""
        return self.set_memory_rw(self.cpa.m.va(pfn << 12), numpages)

    def _set_pages(self, pfn: int, numpages: int, valid: bool) -> int:
        if isinstance(pfn, bool) or not isinstance(pfn, int) or pfn < 0:
            raise EmuValueError(f"page frame {pfn!r} must be a non-negative integer")
        if isinstance(numpages, bool) or not isinstance(numpages, int) or numpages < 0:
            raise EmuValueError(f"numpages={numpages!r} must be a non-negative integer")
        cpa = CpaData(
            vaddr=[self.cpa.m.va(pfn << 12)],
            mask_set=(_P | _RW) if valid else 0,
            mask_clr=0 if valid else (_P | _RW | _D),
            numpages=numpages,
            flags=CPA_NO_CHECK_ALIAS,
        )
        return self.cpa._change_page_attr_set_clr(cpa, primary=True)

    def set_direct_map_invalid_noflush(self, pfn: int) -> int:
        """set_direct_map_invalid_noflush(): clear P, RW, D of one page; no flush."""
        return self._set_pages(pfn, 1, False)

    def set_direct_map_default_noflush(self, pfn: int) -> int:
        """set_direct_map_default_noflush(): set P, RW of one page; no flush."""
        return self._set_pages(pfn, 1, True)

    def set_direct_map_valid_noflush(self, pfn: int, nr: int, valid: bool) -> int:
        """set_direct_map_valid_noflush(): either of the above over ``nr`` pages."""
        return self._set_pages(pfn, nr, valid)
