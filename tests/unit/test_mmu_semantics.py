"""Semantics table of the MMU (docs/mmu-model.md, reference x86-paging.md section 3).

Every rule gets a small hand-built machine and exact expected outcomes: which
translation a TLB hit serves after a page-table change, what each invalidation removes
(fractured pieces, global entries, PCIDs, PSC entries), rights checked at hit time,
D-bit walks, the walk's level skipping, page-straddling accesses, the cost model and
configuration errors.  Each test runs on the C core and on ``emu.ref.mmu.RefMMU``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import astuple
from typing import Any

import numpy as np
import pytest

import emu
import emu.ref
from emu import arch
from emu.cpus import TLBConfig, preset
from emu.errors import EmuValueError, GeneralProtection, PageFault
from emu.paging import PageTableBuilder
from emu.ref.mmu import RESULT_DTYPE, RefMMU

P, RW, US, A, D, G, PS = (
    arch.PTE_P,
    arch.PTE_RW,
    arch.PTE_US,
    arch.PTE_A,
    arch.PTE_D,
    arch.PTE_G,
    arch.PTE_PS,
)
KIB4, MIB2, GIB1 = arch.PAGE_SIZE, arch.PMD_SIZE, arch.PUD_SIZE
PKEY_SHIFT = arch.PTE_PKEY_SHIFT


class Machine:
    """Tables in one memory, an MMU over it with CR3 loaded, and helpers."""

    def __init__(self, mem: Any, mmu: Any) -> None:
        self.mem = mem
        self.mmu = mmu
        self.pt = PageTableBuilder(mem)
        mmu.cr3 = self.pt.cr3

    def map(self, va: int, pa: int, size: int = KIB4, flags: int = P | RW) -> int:
        return self.pt.map(va, pa, size, flags)

    def entries(self, va: int | None = None) -> list[Any]:
        """TLB entries (of the page holding ``va``'s leaf, when given)."""
        out = self.mmu.tlb_entries()
        if va is None:
            return out
        return [
            e
            for e in out
            if (e.va ^ va) & ~(e.orig_page_size - 1) & ((1 << 64) - 1) == 0
        ]

    def arrays_holding(self, va: int) -> list[str]:
        return sorted(e.array for e in self.entries(va))

    def psc(self) -> list[tuple[str, int, int]]:
        return sorted((e.array, e.va, e.pcid) for e in self.mmu.psc_entries())

    def stat(self, name: str) -> int:
        return int(self.mmu.stats[name])


Factory = Callable[..., Machine]


def _c_factory() -> Factory:
    try:
        import emu.mmu  # loads the compiled core
    except ImportError as exc:
        if os.environ.get("EMU_REQUIRE_C") == "1":
            raise
        pytest.skip(f"C core not importable: {exc}")

    def make(cpu: Any = "skylake", a_policy: str = "success") -> Machine:
        mem = emu.PhysMem()
        return Machine(mem, emu.MMU(mem, cpu, a_policy=a_policy))

    return make


def _ref_factory() -> Factory:
    def make(cpu: Any = "skylake", a_policy: str = "success") -> Machine:
        mem = emu.ref.PhysMem()
        return Machine(mem, RefMMU(mem, cpu, a_policy=a_policy))

    return make


@pytest.fixture(params=["c", "ref"])
def make(request: pytest.FixtureRequest) -> Factory:
    """Builds a :class:`Machine` on the implementation under test."""
    return _c_factory() if request.param == "c" else _ref_factory()


# ---- stale entries and INVLPG ----


def test_changed_pte_without_flush_still_serves_old_frame(make: Factory) -> None:
    m = make()
    va = 0x40_0000
    m.map(va, 0xA000)
    assert m.mmu.translate(va + 5).pa == 0xA005
    m.pt.set_entry(va, arch.LVL_PT, 0xB000 | P | RW)
    t = m.mmu.translate(va + 5)
    assert (t.pa, t.level_hit) == (0xA005, "L1")
    m.pt.set_entry(va, arch.LVL_PT, 0)  # not present in memory: still served
    assert m.mmu.translate(va + 6).pa == 0xA006
    assert m.stat("dtlb_load_misses.miss_causes_a_walk") == 1


def test_invlpg_after_pte_change_serves_new_frame(make: Factory) -> None:
    m = make()
    va = 0x40_0000
    m.map(va, 0xA000)
    m.mmu.translate(va)
    m.pt.set_entry(va, arch.LVL_PT, 0xB000 | P | RW)
    m.mmu.invlpg(va + 0xFFF)
    t = m.mmu.translate(va + 5)
    assert (t.pa, t.level_hit) == (0xB005, "walk")
    assert m.stat("invlpg") == 1
    assert m.stat("tlb_entries_flushed") == 2  # L1D-4K and STLB


def test_invlpg_leaves_other_pages(make: Factory) -> None:
    m = make()
    m.map(0x40_0000, 0xA000)
    m.map(0x40_1000, 0xB000)
    m.mmu.translate(0x40_0000)
    m.mmu.translate(0x40_1000)
    m.mmu.invlpg(0x40_0000)
    assert m.mmu.translate(0x40_1000).level_hit == "L1"
    assert m.mmu.translate(0x40_0000).level_hit == "walk"


def test_invlpg_non_canonical_is_counted_no_op(make: Factory) -> None:
    m = make()
    m.map(0x40_0000, 0xA000)
    m.mmu.translate(0x40_0000)
    before = m.mmu.psc_entries()
    m.mmu.invlpg(0x8000_0000_0000)
    assert m.stat("invlpg") == 1
    assert m.stat("tlb_entries_flushed") == 0
    assert len(m.mmu.psc_entries()) == len(before) == 3
    assert m.mmu.translate(0x40_0000).level_hit == "L1"


def test_invlpg_drops_every_psc_entry_of_current_pcid(make: Factory) -> None:
    m = make()
    m.map(0x40_0000, 0xA000)
    m.map(0x40_0000_0000, 0xB000)  # another PDPT entry in the same PML4 slot
    m.mmu.translate(0x40_0000)
    m.mmu.translate(0x40_0000_0000)
    assert len(m.mmu.psc_entries()) == 5  # 2 PD, 2 PDPT, 1 PML4
    m.mmu.invlpg(0x7FFF_0000_0000)  # unmapped, canonical: PSCs still go
    assert m.mmu.psc_entries() == []
    assert m.mmu.translate(0x40_0000).level_hit == "L1"  # the TLB entries stay


def test_invlpg_removes_fractured_4k_pieces_of_2m_page_in_every_level(
    make: Factory,
) -> None:
    m = make("champsim-default")  # ITLB, DTLB and STLB hold 4K entries only
    base, frame = 0x4000_0000, 0x8000_0000
    m.map(base, frame, MIB2)
    m.map(0x5000_0000, 0xC000)
    pages = (0, 1, 5, 511)
    for k in pages:
        t = m.mmu.translate(base + k * KIB4 + 0x10)
        # a walk reports the leaf's size; the arrays hold 4K pieces of it
        assert (t.pa, t.page_size, t.level_hit) == (
            frame + k * KIB4 + 0x10,
            MIB2,
            "walk",
        )
    t = m.mmu.translate(base + 5 * KIB4)
    assert (t.pa, t.page_size, t.level_hit) == (frame + 5 * KIB4, KIB4, "L1")
    m.mmu.translate(0x5000_0000)
    pieces = [e for e in m.mmu.tlb_entries() if e.orig_page_size == MIB2]
    assert sorted((e.array, e.va, e.pa) for e in pieces) == sorted(
        (arr, base + k * KIB4, frame + k * KIB4)
        for arr in ("DTLB", "STLB")
        for k in pages
    )
    assert all(e.page_size == KIB4 for e in pieces)
    m.mmu.invlpg(base + 300 * KIB4 + 5)  # a page of the 2M leaf that has no piece
    assert sorted((e.array, e.va) for e in m.mmu.tlb_entries()) == [
        ("DTLB", 0x5000_0000),
        ("STLB", 0x5000_0000),
    ]
    assert m.stat("tlb_entries_flushed") == 8
    assert m.mmu.translate(base + KIB4).level_hit == "walk"


def test_zen2_smashes_1g_into_2m_in_l2_and_repromotes_to_1g_in_l1(
    make: Factory,
) -> None:
    m = make("zen2")
    base, frame = 0x40_0000_0000, 0x4000_0000
    m.map(base, frame, GIB1)
    t = m.mmu.translate(base + 0x1234)
    assert (t.pa, t.page_size, t.level_hit) == (frame + 0x1234, GIB1, "walk")
    assert sorted(
        (e.array, e.va, e.pa, e.page_size, e.orig_page_size)
        for e in m.mmu.tlb_entries()
    ) == [
        ("L1D", base, frame, GIB1, GIB1),
        ("L2D", base, frame, MIB2, GIB1),
    ]
    assert m.mmu.translate(base + 0x3000_0000).level_hit == "L1"
    # evict the 1G entry from the 64-entry fully associative L1D (LRU)
    for i in range(64):
        m.map(0x1000_0000 + i * KIB4, 0x100_0000 + i * KIB4)
        m.mmu.translate(0x1000_0000 + i * KIB4)
    assert "L1D" not in m.arrays_holding(base)
    t = m.mmu.translate(base + 0x5678)
    assert (t.pa, t.page_size, t.level_hit) == (frame + 0x5678, MIB2, "L2")
    assert sorted((e.array, e.page_size) for e in m.entries(base)) == [
        ("L1D", GIB1),
        ("L2D", MIB2),
    ]
    # the re-promoted 1G entry serves a 2M region the L2 never held
    t = m.mmu.translate(base + 0x3000_0008)
    assert (t.pa, t.level_hit, t.page_size) == (frame + 0x3000_0008, "L1", GIB1)
    m.mmu.invlpg(base + 0x2000_0000)
    assert m.entries(base) == []


# ---- global pages, CR3 writes, PCIDs ----


def _global_machine(make: Factory) -> tuple[Machine, int, int]:
    m = make()
    m.mmu.cr4_pge = True
    va_g, va_n = 0x40_0000, 0x40_1000
    m.map(va_g, 0xA000, flags=P | RW | G)
    m.map(va_n, 0xB000)
    m.mmu.translate(va_g)
    m.mmu.translate(va_n)
    return m, va_g, va_n


def test_global_entry_survives_cr3_write(make: Factory) -> None:
    m, va_g, va_n = _global_machine(make)
    assert all(e.glob for e in m.entries(va_g))
    assert len(m.entries(va_g)) == 2
    m.mmu.write_cr3(m.pt.cr3)
    assert m.stat("tlb_entries_flushed") == 2
    assert m.mmu.translate(va_g).level_hit == "L1"
    assert m.mmu.translate(va_n).level_hit == "walk"
    assert m.stat("cr3_writes") == 2  # the machine's first load, then this one


@pytest.mark.parametrize(
    ("op", "globals_left"),
    [
        (lambda mmu: setattr(mmu, "cr4_pge", False), 0),
        (lambda mmu: mmu.invpcid(2), 0),
        (lambda mmu: mmu.flush_all(True), 0),
        (lambda mmu: mmu.flush_all(False), 2),
        (lambda mmu: mmu.invpcid(3), 2),
    ],
    ids=[
        "pge-toggle",
        "invpcid-2",
        "flush-all-global",
        "flush-all-nonglobal",
        "invpcid-3",
    ],
)
def test_global_entries_dropped_only_by_global_flushes(
    make: Factory, op: Callable[[Any], None], globals_left: int
) -> None:
    m, va_g, va_n = _global_machine(make)
    op(m.mmu)
    assert len(m.entries(va_g)) == globals_left
    assert m.entries(va_n) == []
    assert m.mmu.psc_entries() == []
    assert m.stat("tlb_entries_flushed") == 4 - globals_left


def test_pge_toggle_back_on_also_flushes_everything(make: Factory) -> None:
    m = make()
    m.map(0x40_0000, 0xA000)
    m.mmu.translate(0x40_0000)
    m.mmu.cr4_pge = True
    assert m.mmu.tlb_entries() == []
    assert m.mmu.psc_entries() == []
    assert m.stat("tlb_flushes") == 1


def test_smep_on_flushes_current_pcid_and_off_flushes_nothing(make: Factory) -> None:
    m = make()
    m.map(0x40_0000, 0xA000)
    m.mmu.translate(0x40_0000)
    m.mmu.cr4_smep = True
    assert m.mmu.tlb_entries() == []
    assert m.mmu.psc_entries() == []
    m.mmu.translate(0x40_0000)
    m.mmu.cr4_smep = False
    assert len(m.mmu.tlb_entries()) == 2


def _pcid_machine(make: Factory) -> tuple[Machine, int]:
    m = make()
    m.mmu.cr4_pcide = True
    va = 0x40_0000
    m.map(va, 0xA000)
    m.mmu.write_cr3(m.pt.cr3 | 1)
    assert m.mmu.translate(va).level_hit == "walk"
    return m, va


def test_pcid_entries_invisible_under_other_pcid_and_kept(make: Factory) -> None:
    m, va = _pcid_machine(make)
    m.mmu.write_cr3(m.pt.cr3 | 2)
    assert m.mmu.pcid == 2
    assert m.mmu.translate(va).level_hit == "walk"
    assert sorted((e.array, e.pcid) for e in m.entries(va)) == [
        ("L1D-4K", 1),
        ("L1D-4K", 2),
        ("STLB", 1),
        ("STLB", 2),
    ]
    assert {e.pcid for e in m.mmu.psc_entries()} == {1, 2}
    m.mmu.write_cr3(m.pt.cr3 | 1 | 1 << 63)  # no-flush hint: PCID 1 entries visible
    assert m.mmu.cr3 == m.pt.cr3 | 1  # bit 63 is not stored
    assert m.mmu.translate(va).level_hit == "L1"
    assert m.stat("tlb_entries_flushed") == 0


def test_cr3_write_flushes_only_the_new_pcid(make: Factory) -> None:
    m, va = _pcid_machine(make)
    m.mmu.write_cr3(m.pt.cr3 | 2)
    m.mmu.translate(va)
    m.mmu.write_cr3(m.pt.cr3 | 1)  # no hint: flush PCID 1 (TLB and PSC)
    assert sorted(e.pcid for e in m.entries(va)) == [2, 2]
    assert {e.pcid for e in m.mmu.psc_entries()} == {2}
    assert m.mmu.translate(va).level_hit == "walk"
    m.mmu.write_cr3(m.pt.cr3 | 2 | 1 << 63)
    assert m.mmu.translate(va).level_hit == "L1"


def test_cr3_bit63_needs_pcide_and_reserved_bits_raise_gp(make: Factory) -> None:
    m = make()
    root = m.pt.cr3
    with pytest.raises(GeneralProtection):
        m.mmu.write_cr3(root | 1 << 63)
    with pytest.raises(GeneralProtection):
        m.mmu.write_cr3(root | 1 << m.mmu.config.maxphyaddr)
    assert m.mmu.cr3 == root
    assert m.stat("cr3_writes") == 1
    m.mmu.write_cr3(root | 0x18)  # PWT/PCD: fine without PCIDE
    with pytest.raises(GeneralProtection):
        m.mmu.cr4_pcide = True  # CR3[11:0] != 0
    assert not m.mmu.cr4_pcide
    m.mmu.write_cr3(root)
    m.mmu.cr4_pcide = True
    m.mmu.write_cr3(root | 0x5 | 1 << 63)
    assert (m.mmu.cr3, m.mmu.pcid) == (root | 5, 5)


def test_pcide_off_flushes_everything(make: Factory) -> None:
    m, va = _pcid_machine(make)
    m.mmu.write_cr3(m.pt.cr3)  # PCID 0 before clearing PCIDE
    m.mmu.translate(va)
    m.mmu.cr4_pcide = False
    assert m.mmu.tlb_entries() == []
    assert m.mmu.psc_entries() == []


# ---- INVPCID ----


def _invpcid_machine(make: Factory) -> tuple[Machine, int, int, int]:
    """PCIDs 1 and 2 both hold va_a and va_b; a global page va_g (made under PCID 1)."""
    m = make()
    m.mmu.cr4_pge = True
    m.mmu.cr4_pcide = True
    va_a, va_b, va_g = 0x40_0000, 0x40_1000, 0x40_2000
    m.map(va_a, 0xA000)
    m.map(va_b, 0xB000)
    m.map(va_g, 0xC000, flags=P | RW | G)
    for pcid in (1, 2):
        m.mmu.write_cr3(m.pt.cr3 | pcid)
        for va in (va_a, va_b, va_g):
            m.mmu.translate(va)
    return m, va_a, va_b, va_g


def _who(m: Machine) -> list[tuple[int, int, bool]]:
    return sorted({(e.va, e.pcid, e.glob) for e in m.mmu.tlb_entries()})


def test_invpcid_type0_drops_nonglobal_page_of_that_pcid(make: Factory) -> None:
    m, va_a, va_b, va_g = _invpcid_machine(make)
    m.mmu.invpcid(0, 1, va_a + 0x123)
    m.mmu.invpcid(0, 1, va_g)  # global: untouched by type 0
    assert _who(m) == [
        (va_a, 2, False),
        (va_b, 1, False),
        (va_b, 2, False),
        (va_g, 1, True),
    ]
    assert {e.pcid for e in m.mmu.psc_entries()} == {2}
    assert m.stat("invpcid") == 2
    assert m.stat("tlb_entries_flushed") == 2


def test_invpcid_type1_drops_nonglobal_entries_of_that_pcid(make: Factory) -> None:
    m, va_a, va_b, va_g = _invpcid_machine(make)
    m.mmu.invpcid(1, 2)
    assert _who(m) == [(va_a, 1, False), (va_b, 1, False), (va_g, 1, True)]
    assert {e.pcid for e in m.mmu.psc_entries()} == {1}


def test_invpcid_type2_drops_everything_type3_keeps_globals(make: Factory) -> None:
    m, _, _, va_g = _invpcid_machine(make)
    m.mmu.invpcid(3)
    assert _who(m) == [(va_g, 1, True)]
    assert m.mmu.psc_entries() == []
    m.mmu.invpcid(2)
    assert m.mmu.tlb_entries() == []


@pytest.mark.parametrize(
    ("pcide", "kind", "pcid", "va"),
    [
        (True, 4, 0, 0),
        (True, 0, 0x1000, 0),
        (True, 1, 0x1000, 0),
        (True, 0, 1, 0x8000_0000_0000),  # type 0, non-canonical address
        (False, 0, 1, 0),
        (False, 1, 1, 0),
    ],
)
def test_invpcid_raises_gp(
    make: Factory, pcide: bool, kind: int, pcid: int, va: int
) -> None:
    m = make()
    m.mmu.cr4_pcide = pcide
    with pytest.raises(GeneralProtection):
        m.mmu.invpcid(kind, pcid, va)
    assert m.stat("invpcid") == 0


def test_invpcid_types_2_3_ignore_pcid_without_pcide(make: Factory) -> None:
    m = make()
    m.mmu.invpcid(2, 7)
    m.mmu.invpcid(3, 7, 0x8000_0000_0000)
    m.mmu.invpcid(1, 0)
    assert m.stat("invpcid") == 3


# ---- rights at hit time ----


def test_wp_toggle_without_flush_changes_write_outcome(make: Factory) -> None:
    m = make()
    va = 0x40_0000
    m.map(va, 0xA000, flags=P | A | D)  # read-only supervisor page, already dirty
    m.mmu.translate(va)
    refs = m.stat("walk_ref.pt")
    m.mmu.cr0_wp = False
    t = m.mmu.translate(va, "w")
    assert (t.pa, t.level_hit) == (0xA000, "L1")
    m.mmu.cr0_wp = True
    with pytest.raises(PageFault) as exc:
        m.mmu.translate(va, "w")
    assert (exc.value.va, exc.value.error_code) == (va, arch.PF_P | arch.PF_W)
    assert m.stat("walk_ref.pt") == refs  # decided by the cached rights, no walk
    assert m.entries(va) == []  # the #PF removed the entries
    assert m.stat("page_faults") == 1


def test_smap_refuses_at_hit_time_and_ac_allows(make: Factory) -> None:
    m = make()
    va = 0x40_0000
    m.map(va, 0xA000, flags=P | RW | US | A | D)
    m.mmu.translate(va)
    m.mmu.cr4_smap = True
    with pytest.raises(PageFault) as exc:
        m.mmu.translate(va)
    assert exc.value.error_code == arch.PF_P
    assert m.stat("walk_ref.pt") == 1
    m.mmu.cr4_smap = False
    m.mmu.translate(va)
    m.mmu.cr4_smap = True
    m.mmu.rflags_ac = True
    assert m.mmu.translate(va).level_hit == "L1"
    m.mmu.rflags_ac = False
    with pytest.raises(PageFault):
        m.mmu.translate(va, "w")


def test_pkru_change_without_flush_changes_outcome(make: Factory) -> None:
    m = make()
    va = 0x40_0000
    m.map(va, 0xA000, flags=P | RW | US | A | D | 3 << PKEY_SHIFT)
    m.mmu.cr4_pke = True
    assert m.mmu.translate(va, user=True).level_hit == "walk"
    assert m.entries(va)[0].pkey == 3
    m.mmu.pkru = 1 << (2 * 3)  # AD for key 3
    with pytest.raises(PageFault) as exc:
        m.mmu.translate(va, user=True)
    assert exc.value.error_code == arch.PF_P | arch.PF_U | arch.PF_PK
    assert m.stat("walk_ref.pt") == 1
    m.mmu.pkru = 1 << (2 * 3 + 1)  # WD for key 3: reads fine, writes refused
    assert m.mmu.translate(va, user=True).level_hit == "walk"
    with pytest.raises(PageFault) as exc:
        m.mmu.translate(va, "w", user=True)
    assert exc.value.error_code == arch.PF_P | arch.PF_W | arch.PF_U | arch.PF_PK
    m.mmu.pkru = 0
    m.mmu.translate(va, user=True)
    assert m.mmu.translate(va, "w", user=True).level_hit == "L1"


def test_user_access_to_supervisor_entry_faults_from_tlb(make: Factory) -> None:
    m = make()
    va = 0x40_0000
    m.map(va, 0xA000, flags=P | RW | A | D)
    m.mmu.translate(va)
    with pytest.raises(PageFault) as exc:
        m.mmu.translate(va, "r", user=True)
    assert exc.value.error_code == arch.PF_P | arch.PF_U
    assert m.stat("walk_ref.pt") == 1


# ---- D bit, faults and what gets cached ----


def test_write_hit_on_clean_entry_walks_and_sets_d(make: Factory) -> None:
    m = make()
    va = 0x40_0000
    pte = m.map(va, 0xA000)
    m.mmu.translate(va)
    assert m.mem.read_u64(pte) == 0xA000 | P | RW | A
    assert [e.dirty for e in m.entries(va)] == [False, False]
    t = m.mmu.translate(va + 8, "w")
    assert (t.pa, t.level_hit) == (0xA008, "L1")  # the L1 entry sent it to the walker
    assert m.mem.read_u64(pte) == 0xA000 | P | RW | A | D
    assert m.stat("dirty_bit_walks") == 1
    assert m.stat("walk_ref.pt") == 2
    assert m.stat("psc_hit.pd") == 1
    assert m.stat("dtlb_store_misses.miss_causes_a_walk") == 0
    # the L1 entry was refreshed with D=1; the STLB one (not consulted) is still clean
    assert sorted((e.array, e.dirty) for e in m.entries(va)) == [
        ("L1D-4K", True),
        ("STLB", False),
    ]
    assert m.mmu.translate(va, "w").level_hit == "L1"
    assert m.stat("dirty_bit_walks") == 1


def test_write_l2_hit_on_clean_entry_refills_l2_and_l1(make: Factory) -> None:
    m = make("icelake")  # writes look up the store DTLB, which the read did not fill
    va = 0x40_0000
    m.map(va, 0xA000)
    m.mmu.translate(va)
    t = m.mmu.translate(va, "w")
    assert t.level_hit == "L2"
    assert m.stat("dirty_bit_walks") == 1
    assert m.stat("dtlb_store_misses.stlb_hit") == 0
    assert sorted((e.array, e.dirty) for e in m.entries(va)) == [
        ("L1D-4K", False),
        ("L1S", True),
        ("STLB", True),
    ]


def test_tlb_fault_removes_tlb_and_psc_entries_for_the_address(make: Factory) -> None:
    m = make()
    va = 0x40_0000
    m.map(va, 0xA000, flags=P | A | D)
    m.map(0x4000_0000, 0xB000)  # other PD/PDPT keys: its PSC entries stay
    m.mmu.translate(va)
    m.mmu.translate(0x4000_0000)
    with pytest.raises(PageFault):
        m.mmu.translate(va, "w")
    assert m.entries(va) == []
    # PD and PDPT entries of 0x4000_0000 have other keys; the PML4 entry was shared
    assert m.psc() == [("PSC-PD", 0x4000_0000, 0), ("PSC-PDPT", 0x4000_0000, 0)]
    assert len(m.entries(0x4000_0000)) == 2


def test_walk_fault_removes_psc_entries_for_the_address(make: Factory) -> None:
    m = make()
    va = 0x40_0000
    m.map(va, 0xA000)
    m.mmu.translate(va)
    assert len(m.mmu.psc_entries()) == 3
    with pytest.raises(PageFault) as exc:
        m.mmu.translate(va + KIB4)  # same page table, PTE not present
    assert (exc.value.va, exc.value.error_code) == (va + KIB4, 0)
    assert m.stat("psc_hit.pd") == 1
    assert m.mmu.psc_entries() == []
    assert len(m.entries(va)) == 2  # another page: its TLB entries stay


def test_only_complete_valid_translations_are_cached(make: Factory) -> None:
    m = make()
    with pytest.raises(PageFault):
        m.mmu.translate(0x40_0000)  # PML4E not present
    m.map(0x40_0000, 0xA000)  # supervisor page
    with pytest.raises(PageFault) as exc:
        m.mmu.translate(0x40_1000)  # PTE not present
    assert exc.value.error_code == 0
    with pytest.raises(PageFault) as exc:
        m.mmu.translate(0x40_0000, "r", user=True)  # walk reaches the leaf, refused
    assert exc.value.error_code == arch.PF_P | arch.PF_U
    m.pt.set_entry(0x40_2000, arch.LVL_PT, 0xC000 | P | 1 << 51)  # reserved bit
    with pytest.raises(PageFault) as exc2:
        m.mmu.translate(0x40_2000)
    assert exc2.value.error_code == arch.PF_P | arch.PF_RSVD
    assert m.mmu.tlb_entries() == []
    assert m.mmu.psc_entries() == []
    assert m.stat("page_faults") == 4


def test_psc_hits_skip_levels_with_exact_reference_counts(make: Factory) -> None:
    m = make()
    va1 = 0x4000_0000
    va2 = va1 + KIB4  # same page table
    va3 = va1 + MIB2  # same page directory
    va4 = va1 + GIB1  # same PDPT
    va5 = 2 << 39  # another PML4 entry (slot 2)
    for i, va in enumerate((va1, va2, va3, va4, va5)):
        m.map(va, 0x10_0000_0000 + i * KIB4)
    expected = [
        # (pml4, pdpt, pd, pt) refs, psc hits (pd, pdpt, pml4), misses after each walk
        ((1, 1, 1, 1), (0, 0, 0), 1),
        ((1, 1, 1, 2), (1, 0, 0), 1),
        ((1, 1, 2, 3), (1, 1, 0), 1),
        ((1, 2, 3, 4), (1, 1, 1), 1),
        ((2, 3, 4, 5), (1, 1, 1), 2),
    ]
    for va, (refs, hits, misses) in zip(
        (va1, va2, va3, va4, va5), expected, strict=True
    ):
        assert m.mmu.translate(va).level_hit == "walk"
        s = m.mmu.stats
        assert (
            s["walk_ref.pml4"],
            s["walk_ref.pdpt"],
            s["walk_ref.pd"],
            s["walk_ref.pt"],
        ) == refs
        assert (s["psc_hit.pd"], s["psc_hit.pdpt"], s["psc_hit.pml4"]) == hits
        assert s["psc_miss"] == misses
    assert m.stat("walk_ref.pml5") == 0
    assert m.stat("psc_hit.pml5") == 0
    assert [(a, v) for a, v, _ in m.psc() if a != "PSC-PML4"] == [
        ("PSC-PD", va1),
        ("PSC-PD", va3),
        ("PSC-PD", va4),
        ("PSC-PD", va5),
        ("PSC-PDPT", va1),
        ("PSC-PDPT", va4),
        ("PSC-PDPT", 2 << 39),
    ]


def test_psc_pml4_entries_of_adjacent_slots_do_not_alias(make: Factory) -> None:
    """PML4 slots 0 and 1 need two PML4-cache entries; sharing one gives slot 0's
    translation to a slot-1 address."""
    m = make()
    m.map(0x1000, 0xA000)
    m.map(1 << 39 | 0x1000, 0xB000)
    assert m.mmu.translate(0x1000).pa == 0xA000
    assert m.mmu.translate(1 << 39 | 0x1000).pa == 0xB000
    assert m.stat("psc_hit.pml4") == 0
    assert [(a, v) for a, v, _ in m.psc() if a == "PSC-PML4"] == [
        ("PSC-PML4", 0),
        ("PSC-PML4", 1 << 39),
    ]


def test_la57_walk_reads_five_levels_and_caches_pml5e(make: Factory) -> None:
    mem_m = make()
    mem = mem_m.mem
    pt = PageTableBuilder(mem, la57=True, table_base=0x800_0000)
    va = 0xFF00_0000_0040_0000  # canonical for 57 bits, PML5 index 510
    pt.map(va, 0xA000)
    mmu = mem_m.mmu
    mmu.cr4_la57 = True
    mmu.write_cr3(pt.cr3)
    assert mmu.translate(va + 4).pa == 0xA004
    s = mmu.stats
    assert (s["walk_ref.pml5"], s["walk_ref.pml4"], s["walk_ref.pt"]) == (1, 1, 1)
    assert sorted(e.array for e in mmu.psc_entries()) == [
        "PSC-PD",
        "PSC-PDPT",
        "PSC-PML4",
        "PSC-PML5",
    ]
    with pytest.raises(GeneralProtection):
        mmu.translate(0x0100_0000_0000_0000)  # bit 56 set, 63:57 clear


# ---- TLB levels and roles ----


def test_store_dtlb_serves_writes_and_loads_use_l1d(make: Factory) -> None:
    m = make("icelake")
    va = 0x40_0000
    m.map(va, 0xA000, flags=P | RW | A | D)
    assert m.mmu.translate(va, "w").level_hit == "walk"
    assert m.arrays_holding(va) == ["L1S", "STLB"]
    assert m.mmu.translate(va, "r").level_hit == "L2"
    assert m.arrays_holding(va) == ["L1D-4K", "L1S", "STLB"]
    assert m.mmu.translate(va, "w").level_hit == "L1"
    assert m.mmu.translate(va, "r").level_hit == "L1"
    s = m.mmu.stats
    assert (
        s["dTLB-stores"],
        s["dTLB-store-misses"],
        s["dTLB-loads"],
        s["dTLB-load-misses"],
        s["dtlb_load_misses.stlb_hit"],
    ) == (2, 1, 2, 1, 1)


def test_fetch_uses_itlb_and_stlb(make: Factory) -> None:
    m = make()
    va = 0x40_0000
    m.map(va, 0xA000)
    assert m.mmu.translate(va, "x").level_hit == "walk"
    assert m.arrays_holding(va) == ["L1I-4K", "STLB"]
    assert m.mmu.translate(va, "r").level_hit == "L2"
    s = m.mmu.stats
    assert (
        s["iTLB-loads"],
        s["iTLB-load-misses"],
        s["itlb_misses.walk_completed_4k"],
    ) == (1, 1, 1)


def test_l2_hit_refills_l1(make: Factory) -> None:
    m = make()
    base = 0x40_0000  # L1D-4K: 16 sets x 4 ways; pages 16 apart share a set
    vas = [base + k * 16 * KIB4 for k in range(5)]
    for i, va in enumerate(vas):
        m.map(va, 0x100_0000 + i * KIB4)
        m.mmu.translate(va)
    assert m.arrays_holding(vas[0]) == ["STLB"]
    t = m.mmu.translate(vas[0] + 3)
    assert (t.pa, t.level_hit, t.page_size) == (0x100_0003, "L2", KIB4)
    assert m.mmu.translate(vas[0]).level_hit == "L1"
    assert m.arrays_holding(vas[1]) == ["STLB"]  # the LRU way was replaced
    assert m.stat("dtlb_load_misses.stlb_hit") == 1


def test_page_straddling_access_translates_both_pages(make: Factory) -> None:
    m = make()
    m.map(0x40_0000, 0xA000)
    m.map(0x40_1000, 0xF000)
    t = m.mmu.translate(0x40_0FFE, "r", size=4)
    assert (t.pa, t.page_size, t.level_hit) == (0xAFFE, KIB4, "walk")
    s = m.mmu.stats
    assert (
        s["page_crossings"],
        s["dTLB-loads"],
        s["dtlb_load_misses.walk_completed_4k"],
    ) == (1, 2, 2)
    assert m.arrays_holding(0x40_1000) == ["L1D-4K", "STLB"]
    assert m.mmu.translate(0x40_0FFC, "r", size=4).level_hit == "L1"  # no crossing
    assert m.stat("page_crossings") == 1


def test_fault_on_second_page_reports_second_page_address(make: Factory) -> None:
    m = make()
    m.map(0x50_0000, 0xA000)
    with pytest.raises(PageFault) as exc:
        m.mmu.translate(0x50_0FFF, "w", size=2)
    assert (exc.value.va, exc.value.error_code) == (0x50_1000, arch.PF_W)
    vas = np.array([0x50_0FFF, 0x50_0FF0, 0x4F_FFFF], dtype=np.uint64)
    out = np.zeros(3, dtype=RESULT_DTYPE)
    m.mmu.run(vas, np.zeros(3, np.uint8), sizes=np.array([2, 2, 2], np.uint32), out=out)
    assert out["crossed"].tolist() == [2, 0, 1]
    assert out["vector"].tolist() == [arch.VEC_PF, 0, arch.VEC_PF]
    assert out["hit"].tolist() == [0, 1, 0]
    assert int(out["pa"][1]) == 0xAFF0


def test_non_canonical_access_raises_gp_and_costs_nothing(make: Factory) -> None:
    m = make()
    with pytest.raises(GeneralProtection):
        m.mmu.translate(0x8000_0000_0000)
    s = m.mmu.stats
    assert (
        s["gp_faults"],
        s["dTLB-loads"],
        s["translation_cycles"],
        s["page_faults"],
    ) == (1, 1, 0, 0)


# ---- cost model and counters ----


def test_cost_model_cycles_without_line_cache(make: Factory) -> None:
    m = make(
        {"base": "skylake", "pte_cache": None, "l1_hit": 1, "l2_hit": 9, "walk_ref": 30}
    )
    va = 0x40_0000
    m.map(va, 0xA000)
    assert m.mmu.translate(va).cycles == 1 + 9 + 4 * 30
    assert m.mmu.translate(va).cycles == 1
    s = m.mmu.stats
    assert (s["translation_cycles"], s["walk_cycles"]) == (131, 120)
    assert (s["walk_ref.line_hit"], s["walk_ref.line_miss"]) == (0, 0)


def test_cost_model_cycles_with_line_cache(make: Factory) -> None:
    m = make(
        {
            "base": "skylake",
            "pte_cache": [64, 4],
            "l1_hit": 1,
            "l2_hit": 9,
            "pte_hit": 20,
            "pte_miss": 200,
        }
    )
    va = 0x40_0000
    for k in range(9):
        m.map(va + k * KIB4, 0x10_0000 + k * KIB4)
    assert m.mmu.translate(va).cycles == 1 + 9 + 4 * 200
    assert m.mmu.translate(va + KIB4).cycles == 1 + 9 + 20  # PTE in the same line
    assert m.mmu.translate(va + 8 * KIB4).cycles == 1 + 9 + 200  # the next line
    assert m.mmu.translate(va).cycles == 1
    s = m.mmu.stats
    assert (s["walk_ref.line_hit"], s["walk_ref.line_miss"]) == (1, 5)
    assert (s["walk_cycles"], s["translation_cycles"]) == (1020, 1051)
    m.mmu.flush_all()  # evicts no line: the PTE lines are still cached
    assert m.mmu.translate(va).cycles == 1 + 9 + 4 * 20


def test_run_returns_counters_of_the_run_and_reset_zeroes(make: Factory) -> None:
    m = make()
    m.map(0x40_0000, 0xA000)
    vas = np.array([0x40_0000, 0x40_0008, 0x8000_0000_0000], dtype=np.uint64)
    c1 = m.mmu.run(vas, "r")
    assert (c1["accesses"], c1["dTLB-loads"], c1["gp_faults"]) == (3, 3, 1)
    c2 = m.mmu.run(vas[:2], np.array([1, 0], np.uint8))
    assert (
        c2["accesses"],
        c2["dTLB-stores"],
        c2["dTLB-loads"],
        c2["dirty_bit_walks"],
    ) == (2, 1, 1, 1)
    assert m.stat("dTLB-loads") == 4
    m.mmu.reset()
    assert set(m.mmu.stats.values()) == {0}
    assert m.mmu.translate(0x40_0000).level_hit == "L1"  # contents survive a reset
    assert m.stat("dTLB-loads") == 1


def test_run_stop_on_fault_stops_after_first_fault(make: Factory) -> None:
    m = make()
    m.map(0x40_0000, 0xA000)
    vas = np.array([0x40_0000, 0x50_0000, 0x40_0000], dtype=np.uint64)
    out = np.zeros(3, dtype=RESULT_DTYPE)
    c = m.mmu.run(vas, "r", out=out, stop_on_fault=True)
    assert c["accesses"] == 2
    assert c["dTLB-loads"] == 2
    assert out["vector"].tolist() == [0, arch.VEC_PF, 0]
    assert out["hit"].tolist() == [3, 0, 0]


@pytest.mark.parametrize("stop", [False, True])
def test_run_unchecked_last_only_keeps_the_last_result(stop: bool) -> None:
    # two identical machines: one writes every result, the other only the last
    runs = []
    for last_only in (False, True):
        m = _c_factory()()
        m.map(0x40_0000, 0xA000)
        m.map(0x40_1000, 0xB000)
        vas = np.array(
            [0x40_0000, 0x40_0FFC, 0x50_0000, 0x40_1008, 0x40_0010], dtype=np.uint64
        )
        kinds = np.array([0, 1, 0, 2, 0], np.uint8)
        sizes = np.array([8, 8, 1, 4, 4], np.uint32)  # the second one straddles
        out = np.zeros(1 if last_only else 5, dtype=RESULT_DTYPE)
        done = m.mmu.run_unchecked(
            vas, kinds, sizes, out, stop_on_fault=stop, last_only=last_only
        )
        runs.append((done, out[-1] if last_only else out[done - 1], m.mmu.stats))
    (done, every, stats), (done1, last, stats1) = runs
    assert done == done1 == (3 if stop else 5)
    assert every.tobytes() == last.tobytes()
    assert stats == stats1
    assert last["vector"] == (arch.VEC_PF if stop else 0)


def test_run_user_flag_applies_to_every_access(make: Factory) -> None:
    m = make()
    m.map(0x40_0000, 0xA000)  # supervisor page
    out = np.zeros(2, dtype=RESULT_DTYPE)
    m.mmu.run(np.array([0x40_0000] * 2, np.uint64), "r", user=True, out=out)
    assert out["error_code"].tolist() == [arch.PF_P | arch.PF_U] * 2


def test_walk_heavy_run_equals_ref_past_the_prefetch_windows() -> None:
    # Long and walk-heavy enough that the C core prefetches leaf entries ahead
    # (host-side only, from the second window of 64 accesses on): every result and
    # counter must be the reference's.  3,000 pages one 2 MiB region apart (more than
    # the STLB holds), and 500 unmapped ones.
    rng = np.random.default_rng(7)
    slots = 0x40_0000 + 0x20_1000 * np.arange(3500, dtype=np.uint64)
    offsets = rng.integers(0, 512, 20_000).astype(np.uint64) * np.uint64(8)
    vas = slots[rng.integers(0, slots.size, 20_000)] + offsets
    kinds = rng.integers(0, 3, vas.size).astype(np.uint8)
    got = []
    for m in (_c_factory()(), _ref_factory()()):
        for j in range(3000):
            m.map(int(slots[j]), 0x100_0000 + 0x1000 * j)
        out = np.zeros(vas.size, dtype=RESULT_DTYPE)
        counts = m.mmu.run(vas, kinds, out=out)
        got.append((out, counts))
    (out_c, counts_c), (out_r, counts_r) = got
    assert counts_c["page_faults"] > 1000
    assert counts_c["dTLB-load-misses"] > 5000
    assert out_c.tobytes() == out_r.tobytes()
    assert counts_c == counts_r


# ---- the two implementations share tables ----


def test_ref_reports_the_same_counters_in_the_same_order_as_c() -> None:
    # the tables themselves live once, in emu.mmu_common; what can still differ is
    # which counters each implementation reports
    mmu_mod = pytest.importorskip("emu.mmu")
    assert tuple(RefMMU(emu.ref.PhysMem()).stats) == mmu_mod.STAT_NAMES
    assert tuple(mmu_mod.MMU(emu.PhysMem()).stats) == mmu_mod.STAT_NAMES


def test_ref_mmu_imports_without_the_compiled_core() -> None:
    code = (
        "import sys; sys.modules['emu._ffi'] = None; sys.modules['emu._core'] = None\n"
        "from emu.ref.mmu import RefMMU\nimport emu.ref\n"
        "m = RefMMU(emu.ref.PhysMem(), 'zen2'); print(m.stats['dTLB-loads'])\n"
        "assert 'emu.mmu' not in sys.modules"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0"


def test_tlb_entries_report_rights_and_key(make: Factory) -> None:
    m = make()
    va = 0x40_0000
    m.map(va, 0xA000, flags=P | US | arch.PTE_NX | 9 << PKEY_SHIFT)
    m.mmu.translate(va, user=True)
    e = next(e for e in m.mmu.tlb_entries() if e.array == "L1D-4K")
    assert astuple(e) == (
        "L1D-4K",
        va,
        0xA000,
        KIB4,
        KIB4,
        0,
        False,
        True,
        True,
        9,
        False,
        False,
    )


# ---- bad configurations ----


def _arrays(**bad: Any) -> list[dict[str, Any]]:
    l1d = {"name": "BadL1D", "role": "l1d", "sizes": ["4K"], "entries": 16, "ways": 4}
    l1d.update(bad)
    return [
        {"name": "L1I", "role": "l1i", "sizes": ["4K"], "entries": 8, "ways": 8},
        l1d,
    ]


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"ways": 0}, ("BadL1D", "positive")),
        ({"entries": 48, "ways": 4}, ("BadL1D", "12 sets", "power of two")),
        ({"entries": 24, "ways": 12, "policy": "plru"}, ("BadL1D", "PLRU", "12")),
        ({"entries": 18, "ways": 4}, ("BadL1D", "divide")),
        ({"role": "l3"}, ("BadL1D", "role", "'l3'")),
        ({"policy": "mru"}, ("BadL1D", "policy", "'mru'")),
        ({"sizes": ["4M"]}, ("BadL1D", "sizes")),
    ],
)
def test_bad_array_geometry_names_the_array(
    make: Factory, bad: dict[str, Any], words: tuple[str, ...]
) -> None:
    with pytest.raises(EmuValueError) as exc:
        make({"name": "t", "arrays": _arrays(**bad)})
    for w in words:
        assert w in str(exc.value)


def test_unknown_preset_lists_the_choices(make: Factory) -> None:
    with pytest.raises(EmuValueError, match=r"unknown CPU preset 'pentium'.*skylake"):
        make("pentium")


def test_bad_toml_names_the_file(make: Factory, tmp_path: Any) -> None:
    f = tmp_path / "cpu.toml"
    f.write_text("name = 'x'\narrays = [\n")
    with pytest.raises(EmuValueError, match=r"cpu\.toml: cannot read CPU config"):
        make(str(f))


def test_missing_l1_roles_and_unknown_keys_are_refused(make: Factory) -> None:
    with pytest.raises(EmuValueError, match="no l1i array"):
        make({"name": "t", "arrays": _arrays()[1:]})
    with pytest.raises(EmuValueError, match="unknown CPU config keys"):
        make({"base": "skylake", "l3_hit": 4})


def test_bad_psc_geometry_is_refused(make: Factory) -> None:
    with pytest.raises(EmuValueError, match="PSC level 2 geometry 3x2"):
        make({"base": "skylake", "psc": {"2": [3, 2]}})


def test_config_object_and_dict_give_same_machine(make: Factory) -> None:
    cfg = TLBConfig.from_dict({"base": "zen3", "l2_hit": 11})
    m = make(cfg)
    assert m.mmu.config == cfg
    assert m.mmu.config.arrays == preset("zen3").arrays


# ---- tags: every VA bit above the page counts ----


def _l1d_l2_4k(cfg: TLBConfig) -> tuple[Any, Any]:
    """The L1D and L2 arrays holding 4K pages."""
    l1 = next(a for a in cfg.arrays if a.role == "l1d" and "4K" in a.sizes)
    l2 = next(a for a in cfg.arrays if a.role == "l2" and "4K" in a.sizes)
    return l1, l2


@pytest.mark.parametrize("cpu", sorted(emu.cpus.PRESETS))
def test_l2_tags_differing_only_in_high_va_bits_are_distinct(
    make: Factory, cpu: str
) -> None:
    """Pages whose VAs differ only in bits 41 and above (the upper half of a 4K tag) sit
    in one L2 set; each L2 hit, by translate and by run, returns its own frame."""
    m = make(cpu)
    l1, l2 = _l1d_l2_4k(m.mmu.config)
    base = 0x12_3456_7000
    vas = [base, base | 1 << 41, base | 1 << 46, base | 3 << 44]
    frames = [0x100_0000 + k * KIB4 for k in range(len(vas))]
    for va, pa in zip(vas, frames, strict=True):
        m.map(va, pa)
    for va in vas:
        assert m.mmu.translate(va).level_hit == "walk"
    # pages in base's L1 set but in other L2 sets push vas out of the L1 only
    others = [base + k * l1.sets * KIB4 for k in range(1, l1.ways + 2)]
    for k, va in enumerate(others):
        assert (va >> 12) % l2.sets != (base >> 12) % l2.sets
        m.map(va, 0x200_0000 + k * KIB4)

    def push_out() -> None:
        for va in others:
            m.mmu.translate(va)
        for va in vas:
            assert m.arrays_holding(va) == [l2.name]

    push_out()
    for va, pa in zip(vas, frames, strict=True):
        t = m.mmu.translate(va + 0x123)
        assert (t.level_hit, t.pa) == ("L2", pa + 0x123)
    push_out()
    dtype = RESULT_DTYPE if isinstance(m.mmu, RefMMU) else emu.mmu.MMU_RESULT_DTYPE
    out = np.zeros(len(vas), dtype=dtype)
    m.mmu.run(np.array(vas, np.uint64) + np.uint64(0x456), "r", out=out)
    assert out["pa"].tolist() == [pa + 0x456 for pa in frames]
    assert m.stat("dtlb_load_misses.stlb_hit") >= len(vas)
