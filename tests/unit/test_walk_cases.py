"""Hand-written semantic cases for the x86-64 page walker (C core and reference).

Every expectation below was derived from reference/x86-paging.md
sections 1 and 2 (and the SDM 3A chapter 4 rules they restate), never copied from a
run of the code.  Each case plants one chain of entries, top down, at fixed table
frames, walks one access and checks:

* the result fields (vector, error code, pa, page size, CR2, level);
* the walk path (the entries read, with their values before any A/D update);
* the whole of physical memory afterwards: exactly the planted entries gain the
  A/D bits the case names, and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import pytest

from emu import arch

# --- entry bits -------------------------------------------------------------------

P = arch.PTE_P
RW = arch.PTE_RW
US = arch.PTE_US
PWT = arch.PTE_PWT
PCD = arch.PTE_PCD
A = arch.PTE_A
D = arch.PTE_D
PS = arch.PTE_PS
PAT = arch.PTE_PAT  # bit 7 of a 4 KiB PTE
G = arch.PTE_G
PAT_LARGE = arch.PTE_PAT_LARGE  # bit 12 of a 2 MiB / 1 GiB leaf
NX = arch.PTE_NX

K = P | RW  # supervisor, writable
KRO = P  # supervisor, read-only
U = P | RW | US  # user, writable
URO = P | US  # user, read-only

L5, L4, L3, L2, L1 = (
    arch.LVL_PML5,
    arch.LVL_PML4,
    arch.LVL_PDPT,
    arch.LVL_PD,
    arch.LVL_PT,
)

SZ_4K = 1 << 12
SZ_2M = 1 << 21
SZ_1G = 1 << 30


def bit(n: int) -> int:
    return 1 << n


def key(k: int) -> int:
    """Protection key ``k`` in bits 62:59 of a leaf."""
    return k << 59


def ad(k: int) -> int:
    """PKRU access-disable bit of key ``k``."""
    return 1 << (2 * k)


def wd(k: int) -> int:
    """PKRU write-disable bit of key ``k``."""
    return 1 << (2 * k + 1)


# Table frames: one per level, all below 2^32 so that MAXPHYADDR 36 reaches them.
TABLE_PA = {L5: 0x1000, L4: 0x2000, L3: 0x3000, L2: 0x4000, L1: 0x5000}

# The user-half address used by most cases, and its frames.
VA = 0x0000_7F12_3456_789A
F4K = 0xABCD_E000  # -> pa 0xABCDE89A
F2M = 0x4_0060_0000  # -> pa 0x4_0076_789A   (VA[20:0] = 0x16789A)
F1G = 0x8_4000_0000  # -> pa 0x8_7456_789A   (VA[29:0] = 0x3456789A)
PA_4K = 0xABCD_E89A
PA_2M = 0x4_0076_789A
PA_1G = 0x8_7456_789A
VA_B12 = 0x0000_7F12_3456_689A  # VA with bit 12 clear

# High-half addresses (Linux x86-64 layout).
KV_DIRECT = 0xFFFF_8880_1234_5678  # direct map (PGD 273), 1 GiB page at pa 0
KV_TEXT = 0xFFFF_FFFF_8123_4567  # kernel text, 2 MiB page 0xFFFFFFFF81200000
KV_VMALLOC = 0xFFFF_C900_0000_1234  # vmalloc, 4 KiB page
# LA57 (57-bit) addresses.
VA57 = 0x00FF_1234_5678_9ABC  # user half, above 2^48
KV57_DIRECT = 0xFF11_0000_1234_5678  # 5-level direct map base + 0x12345678
VA57_BIT47 = 0x0000_8000_0000_0000  # non-canonical in 4-level, fine in 5-level


# --- cases ------------------------------------------------------------------------


class Outcome(NamedTuple):
    vector: int | None
    error_code: int | None
    pa: int | None
    page_size: int | None
    cr2: int | None
    level: int


def ok(pa: int, size: int) -> Outcome:
    level = {SZ_4K: L1, SZ_2M: L2, SZ_1G: L3}[size]
    return Outcome(None, None, pa, size, None, level)


def pf(va: int, error_code: int, level: int) -> Outcome:
    return Outcome(arch.VEC_PF, error_code, None, None, va, level)


def gp() -> Outcome:
    return Outcome(arch.VEC_GP, 0, None, None, None, 0)


@dataclass
class Case:
    """One planted chain and one access.

    ``chain`` holds the flags of the entries for ``va`` from the root down: every entry
    but the last points to the next table (``TABLE_PA``), the last one holds
    ``frame``.  ``sets`` maps a level to the bits its entry must gain; None means the
    "success" rule: A in every entry on the path and D in the leaf for a write, only
    when the access is allowed.
    """

    id: str
    va: int
    access: str
    chain: tuple[int, ...]
    expect: Outcome
    frame: int = 0
    user: bool = False
    implicit: bool = False
    ctrl: dict[str, Any] = field(default_factory=dict)
    cr3_bits: int = 0  # extra bits or'ed into CR3 (PCID, PWT/PCD, bit 63)
    sets: dict[int, int] | None = None


def params(cases: Iterable[Case]) -> list[Any]:
    return [pytest.param(c, id=c.id) for c in cases]


def snapshot(mem: Any) -> dict[int, int]:
    """Every non-zero 8-byte word of ``mem`` (C or reference PhysMem)."""
    if hasattr(mem, "words"):
        return {pa: v for pa, v in mem.words.items() if v}
    words = {}
    for pfn in mem.frames():
        base = int(pfn) << 12
        for i, v in enumerate(mem.read_table(base)):
            if v:
                words[base + 8 * i] = int(v)
    return words


def plant(mem: Any, case: Case) -> list[tuple[int, int, int]]:
    """Write the case's chain; return (level, entry pa, value) top down."""
    top = L5 if case.ctrl.get("la57") else L4
    planted = []
    for i, flags in enumerate(case.chain):
        level = top - i
        epa = TABLE_PA[level] + 8 * arch.va_index(case.va, level)
        last = i == len(case.chain) - 1
        value = (case.frame if last else TABLE_PA[level - 1]) | flags
        mem.write_u64(epa, value)
        planted.append((level, epa, value))
    return planted


def run_case(impl: Any, case: Case) -> None:
    mem = impl.PhysMem()
    planted = plant(mem, case)
    before = snapshot(mem)
    top = L5 if case.ctrl.get("la57") else L4
    r = impl.walk(
        mem,
        case.va,
        case.access,
        cr3=TABLE_PA[top] | case.cr3_bits,
        user=case.user,
        implicit=case.implicit,
        **case.ctrl,
    )

    got = Outcome(r.vector, r.error_code, r.pa, r.page_size, r.cr2, r.level)
    assert got == case.expect
    assert r.ok is (case.expect.vector is None)

    # The path: every entry from the root down to the deciding level, none for #GP.
    if case.expect.vector == arch.VEC_GP:
        want_path: tuple[tuple[int, int, int], ...] = ()
    else:
        want_path = tuple(p for p in planted if p[0] >= case.expect.level)
    assert tuple(r.path) == want_path

    # Memory afterwards.
    if case.sets is None:
        if case.ctrl.get("a_policy", "success") != "success":
            raise AssertionError(f"case {case.id}: give 'sets' for a_policy qemu")
        sets = {}
        if case.expect.vector is None:
            sets = {lvl: A for lvl, _, _ in want_path}
            if case.access == "w":
                sets[case.expect.level] |= D
    else:
        sets = case.sets
    want = dict(before)
    for level, epa, value in planted:
        want[epa] = value | sets.get(level, 0)
    assert snapshot(mem) == {pa: v for pa, v in want.items() if v}


# --- not present ------------------------------------------------------------------

# Junk in a non-present entry: reserved in a present one, ignored here (SDM 4.7).
JUNK = NX | bit(51) | bit(40) | PS | G | (0x1FF << 13) | RW | US

# fmt: off
NOT_PRESENT = [
    Case("pml4_supervisor_read", VA, "r", (0,), pf(VA, 0x0, L4)),
    Case("pml4_supervisor_write", VA, "w", (0,), pf(VA, 0x2, L4)),
    Case("pml4_user_read", VA, "r", (0,), pf(VA, 0x4, L4), user=True),
    Case("pdpt_user_read", VA, "r", (U, 0), pf(VA, 0x4, L3), user=True),
    Case("pdpt_supervisor_write", VA, "w", (K, 0), pf(VA, 0x2, L3)),
    Case("pd_user_write", VA, "w", (U, U, 0), pf(VA, 0x6, L2), user=True),
    Case("pd_supervisor_read", VA, "r", (K, K, 0), pf(VA, 0x0, L2)),
    Case("pt_supervisor_fetch_nxe", VA, "x", (K, K, K, 0), pf(VA, 0x10, L1)),
    Case("pt_user_fetch_nxe", VA, "x", (U, U, U, 0), pf(VA, 0x14, L1), user=True),
    Case("pt_user_write", VA, "w", (U, U, U, 0), pf(VA, 0x6, L1), user=True),
    Case("pt_supervisor_fetch_no_nxe_no_smep_has_no_id", VA, "x", (K, K, K, 0),
         pf(VA, 0x0, L1), ctrl={"nxe": False}),
    Case("pt_user_fetch_no_nxe_no_smep_has_no_id", VA, "x", (U, U, U, 0),
         pf(VA, 0x4, L1), user=True, ctrl={"nxe": False}),
    Case("pt_supervisor_fetch_smep_without_nxe_has_id", VA, "x", (K, K, K, 0),
         pf(VA, 0x10, L1), ctrl={"nxe": False, "smep": True}),
    Case("pml5_supervisor_read_la57", VA57, "r", (0,), pf(VA57, 0x0, L5),
         ctrl={"la57": True}),
    Case("pml5_user_write_la57", VA57, "w", (0,), pf(VA57, 0x6, L5), user=True,
         ctrl={"la57": True}),
    Case("pml4_user_read_la57", VA57, "r", (U, 0), pf(VA57, 0x4, L4), user=True,
         ctrl={"la57": True}),
    Case("pml5_user_fetch_la57", VA57, "x", (0,), pf(VA57, 0x14, L5), user=True,
         ctrl={"la57": True}),
    Case("pt_supervisor_write_la57", VA57, "w", (K, K, K, K, 0), pf(VA57, 0x2, L1),
         ctrl={"la57": True}),
    # Reserved bits of a non-present entry are ignored: P=0, RSVD=0.
    Case("pml4_junk_reserved_bits_ignored", VA, "r", (JUNK,), pf(VA, 0x0, L4),
         ctrl={"maxphyaddr": 36, "nxe": False}),
    Case("pde_ps_and_align_bits_ignored_user_read", VA, "r", (U, U, JUNK),
         pf(VA, 0x4, L2), user=True),
    Case("pdpte_junk_ignored_without_1g_pages", VA, "w", (K, JUNK), pf(VA, 0x2, L3),
         ctrl={"gbpages": False}),
    Case("pte_xd_without_nxe_ignored", VA, "w", (K, K, K, NX | RW), pf(VA, 0x2, L1),
         ctrl={"nxe": False}),
    Case("pml5_ps_ignored_la57", VA57, "r", (PS | RW | bit(45),), pf(VA57, 0x0, L5),
         ctrl={"la57": True, "maxphyaddr": 39}),
    Case("pml4_amd_bit8_ignored", VA, "r", (G | RW,), pf(VA, 0x0, L4),
         ctrl={"amd": True}),
]
# fmt: on


@pytest.mark.parametrize("case", params(NOT_PRESENT))
def test_not_present_entry_faults_with_p_clear_at_its_level(
    impl: Any, case: Case
) -> None:
    run_case(impl, case)


# --- reserved bits ----------------------------------------------------------------

# fmt: off
RESERVED = [
    # Bits 51:M, at every level.
    Case("pml4_bit36_maxphyaddr36", VA, "r", (K | bit(36), K, K, K), pf(VA, 0x9, L4),
         frame=F4K, ctrl={"maxphyaddr": 36}),
    Case("pdpte_bit38_maxphyaddr36_user_read", VA, "r", (U, U | bit(38), U, U),
         pf(VA, 0xD, L3), frame=F4K, user=True, ctrl={"maxphyaddr": 36}),
    Case("pde_bit51_maxphyaddr46_user_write", VA, "w", (U, U, U | bit(51), U),
         pf(VA, 0xF, L2), frame=F4K, user=True, ctrl={"maxphyaddr": 46}),
    Case("pte_bit45_maxphyaddr39_supervisor_write", VA, "w", (K, K, K, K | bit(45)),
         pf(VA, 0xB, L1), frame=F4K, ctrl={"maxphyaddr": 39}),
    Case("pte_bit39_maxphyaddr39", VA, "r", (K, K, K, K | bit(39)), pf(VA, 0x9, L1),
         frame=F4K, ctrl={"maxphyaddr": 39}),
    Case("pte_bit46_maxphyaddr46_user_fetch", VA, "x", (U, U, U, U | bit(46)),
         pf(VA, 0x1D, L1), frame=F4K, user=True, ctrl={"maxphyaddr": 46}),
    Case("pml5_bit40_maxphyaddr39_la57", VA57, "r", (K | bit(40), K, K, K, K),
         pf(VA57, 0x9, L5), frame=F4K, ctrl={"la57": True, "maxphyaddr": 39}),
    Case("1g_bit36_maxphyaddr36", VA, "r", (K, K | PS), pf(VA, 0x9, L3),
         frame=F1G | bit(36), ctrl={"maxphyaddr": 36}),
    # Bit 63 (XD) without EFER.NXE.
    Case("pte_xd_without_nxe", VA, "r", (K, K, K, K | NX), pf(VA, 0x9, L1),
         frame=F4K, ctrl={"nxe": False}),
    Case("pml4_xd_without_nxe_user_fetch", VA, "x", (U | NX, U, U, U),
         pf(VA, 0xD, L4), frame=F4K, user=True, ctrl={"nxe": False}),
    Case("2m_xd_without_nxe_write", VA, "w", (K, K, K | PS | NX), pf(VA, 0xB, L2),
         frame=F2M, ctrl={"nxe": False}),
    # PS in PML4E / PML5E.
    Case("pml4_ps", VA, "r", (K | PS, K, K, K), pf(VA, 0x9, L4), frame=F4K),
    Case("pml4_ps_user_write", VA, "w", (U | PS, U, U, U), pf(VA, 0xF, L4),
         frame=F4K, user=True),
    Case("pml5_ps_la57", VA57, "r", (K | PS, K, K, K, K), pf(VA57, 0x9, L5),
         frame=F4K, ctrl={"la57": True}),
    Case("pml4_ps_la57", VA57, "w", (K, K | PS, K, K, K), pf(VA57, 0xB, L4),
         frame=F4K, ctrl={"la57": True}),
    # 1 GiB leaf: bits 29:13 reserved.
    Case("1g_bit13", VA, "r", (K, K | PS), pf(VA, 0x9, L3), frame=F1G | bit(13)),
    Case("1g_bit29_user_write", VA, "w", (U, U | PS), pf(VA, 0xF, L3),
         frame=F1G | bit(29), user=True),
    Case("1g_bit21_supervisor_fetch", VA, "x", (K, K | PS), pf(VA, 0x19, L3),
         frame=F1G | bit(21)),
    # 2 MiB leaf: bits 20:13 reserved.
    Case("2m_bit20", VA, "r", (K, K, K | PS), pf(VA, 0x9, L2), frame=F2M | bit(20)),
    Case("2m_bit13_supervisor_write", VA, "w", (K, K, K | PS), pf(VA, 0xB, L2),
         frame=F2M | bit(13)),
    # PDPTE.PS without 1 GiB page support.
    Case("pdpte_ps_without_gbpages", VA, "r", (K, K | PS), pf(VA, 0x9, L3),
         frame=F1G, ctrl={"gbpages": False}),
    Case("pdpte_ps_without_gbpages_user_read", VA, "r", (U, U | PS), pf(VA, 0xD, L3),
         frame=F1G, user=True, ctrl={"gbpages": False}),
    # AMD: bit 8 of PML4E / PML5E.
    Case("amd_pml4_bit8", VA, "r", (K | G, K, K, K), pf(VA, 0x9, L4), frame=F4K,
         ctrl={"amd": True}),
    Case("amd_pml5_bit8_la57", VA57, "w", (K | G, K, K, K, K), pf(VA57, 0xB, L5),
         frame=F4K, ctrl={"amd": True, "la57": True}),
    # The first bad entry from the top decides, before anything below or the rights.
    Case("pml4_reserved_above_not_present_pdpte", VA, "r", (K | PS, 0),
         pf(VA, 0x9, L4)),
    Case("reserved_beats_user_read_of_supervisor_page", VA, "r",
         (U, U, U, K | bit(51)), pf(VA, 0xD, L1), frame=F4K, user=True,
         ctrl={"maxphyaddr": 46}),
    Case("reserved_beats_xd_fetch", VA, "x", (K | NX, K, K | PS | bit(13)),
         pf(VA, 0x19, L2), frame=F2M),
]
# fmt: on

# Bits that look reserved but are legal: the walk succeeds.
# fmt: off
RESERVED_LOOKALIKES = [
    Case("addr_bit35_maxphyaddr36", VA, "r", (K, K, K, K), ok(0x8_ABCD_E89A, SZ_4K),
         frame=F4K | bit(35), ctrl={"maxphyaddr": 36}),
    Case("addr_bit45_maxphyaddr46", VA, "r", (K, K, K, K), ok(0x2000_ABCD_E89A, SZ_4K),
         frame=F4K | bit(45), ctrl={"maxphyaddr": 46}),
    Case("addr_bit51_maxphyaddr52", VA, "r", (K, K, K, K),
         ok(0x8_0000_ABCD_E89A, SZ_4K), frame=F4K | bit(51)),
    Case("xd_in_pml4_with_nxe_read", VA, "r", (K | NX, K, K, K), ok(PA_4K, SZ_4K),
         frame=F4K),
    # VA_B12 has bit 12 clear, so a PAT bit leaking into the address would show.
    Case("1g_pat_bit12", VA_B12, "r", (K, K | PS), ok(0x8_7456_689A, SZ_1G),
         frame=F1G | PAT_LARGE),
    Case("2m_pat_bit12", VA_B12, "w", (K, K, K | PS), ok(0x4_0076_689A, SZ_2M),
         frame=F2M | PAT_LARGE),
    Case("2m_pat_bit12_and_pat_index_bits", VA_B12, "r",
         (K, K, K | PS | PWT | PCD), ok(0x4_0076_689A, SZ_2M),
         frame=F2M | PAT_LARGE),
    Case("4k_pat_bit7", VA, "r", (K, K, K, K | PAT), ok(PA_4K, SZ_4K), frame=F4K),
    Case("pdpte_ps_with_gbpages", VA, "r", (K, K | PS), ok(PA_1G, SZ_1G), frame=F1G,
         ctrl={"gbpages": True}),
    Case("intel_pml4_bit8", VA, "r", (K | G, K, K, K), ok(PA_4K, SZ_4K), frame=F4K),
    Case("amd_pdpte_bit8_nonleaf", VA, "r", (K, K | G, K, K), ok(PA_4K, SZ_4K),
         frame=F4K, ctrl={"amd": True}),
    Case("amd_global_leaf", VA, "r", (K, K, K, K | G), ok(PA_4K, SZ_4K), frame=F4K,
         ctrl={"amd": True}),
    # Ignored bits (58:52, 11:9, keys without PKE) do not leak into the address.
    Case("ignored_bits_in_pte", VA, "r", (K, K, K, K | (0x7F << 52) | 0xE00 | key(15)),
         ok(PA_4K, SZ_4K), frame=F4K),
    Case("ignored_bits_in_nonleaf", VA, "r",
         (K | (0x7F << 52) | 0xE00 | D | key(9), K | D | 0xE00 | G, K | D | G, K),
         ok(PA_4K, SZ_4K), frame=F4K),
    Case("ignored_bits_in_1g_leaf", VA, "r", (K, K | PS | (0x7F << 52) | 0xE00),
         ok(PA_1G, SZ_1G), frame=F1G),
]
# fmt: on


@pytest.mark.parametrize("case", params(RESERVED))
def test_reserved_bit_in_present_entry_faults_with_rsvd(impl: Any, case: Case) -> None:
    run_case(impl, case)


@pytest.mark.parametrize("case", params(RESERVED_LOOKALIKES))
def test_legal_or_ignored_bit_does_not_fault(impl: Any, case: Case) -> None:
    run_case(impl, case)


# --- translations -----------------------------------------------------------------

# fmt: off
TRANSLATIONS = [
    Case("4k_user_read", VA, "r", (U, U, U, U), ok(PA_4K, SZ_4K), frame=F4K,
         user=True),
    Case("4k_supervisor_write", VA, "w", (K, K, K, K), ok(PA_4K, SZ_4K), frame=F4K),
    Case("4k_supervisor_fetch", VA, "x", (K, K, K, K), ok(PA_4K, SZ_4K), frame=F4K),
    Case("2m_supervisor_write", VA, "w", (K, K, K | PS), ok(PA_2M, SZ_2M), frame=F2M),
    Case("2m_user_fetch", VA, "x", (U, U, U | PS), ok(PA_2M, SZ_2M), frame=F2M,
         user=True),
    Case("1g_supervisor_read", VA, "r", (K, K | PS), ok(PA_1G, SZ_1G), frame=F1G),
    Case("1g_user_write", VA, "w", (U, U | PS), ok(PA_1G, SZ_1G), frame=F1G,
         user=True),
    Case("top_of_user_half_4k", 0x0000_7FFF_FFFF_FFFF, "r", (U, U, U, U),
         ok(0xABCD_EFFF, SZ_4K), frame=F4K, user=True),
    Case("high_half_direct_map_1g", KV_DIRECT, "r", (K, K | PS | G | NX),
         ok(0x1234_5678, SZ_1G), frame=0),
    Case("high_half_direct_map_1g_write", KV_DIRECT, "w", (K, K | PS | G | NX),
         ok(0x1234_5678, SZ_1G), frame=0),
    Case("high_half_kernel_text_2m_fetch", KV_TEXT, "x", (K, K, K | PS | G),
         ok(0x0123_4567, SZ_2M), frame=0x0120_0000),
    Case("high_half_vmalloc_4k_write", KV_VMALLOC, "w", (K, K, K, K | G | NX),
         ok(0x7654_3234, SZ_4K), frame=0x7654_3000),
    Case("top_of_high_half_4k", 0xFFFF_FFFF_FFFF_FFF8, "r", (K, K, K, K),
         ok(0xABCD_EFF8, SZ_4K), frame=F4K),
    Case("la57_user_4k", VA57, "r", (U, U, U, U, U), ok(0xABCD_EABC, SZ_4K),
         frame=F4K, user=True, ctrl={"la57": True}),
    Case("la57_high_half_direct_map_1g", KV57_DIRECT, "w", (K, K, K | PS),
         ok(0x1234_5678, SZ_1G), frame=0, ctrl={"la57": True}),
    Case("la57_address_with_bit47_set_2m", VA57_BIT47 | 0x12_3456, "r",
         (K, K, K, K | PS), ok(F2M | 0x12_3456, SZ_2M), frame=F2M,
         ctrl={"la57": True}),
    Case("la57_top_of_high_half", 0xFFFF_FFFF_FFFF_F000, "x", (K, K, K, K, K),
         ok(F4K, SZ_4K), frame=F4K, ctrl={"la57": True}),
]
# fmt: on


@pytest.mark.parametrize("case", params(TRANSLATIONS))
def test_valid_walk_translates_to_frame_plus_offset(impl: Any, case: Case) -> None:
    run_case(impl, case)


# --- canonical addresses ----------------------------------------------------------

# A full valid chain is planted (for the canonical twin of the address) so that a walk
# that should not happen would be visible, in the path and in memory.
# fmt: off
CANONICAL = [
    Case("4level_bit47_without_sign_extension", 0x0000_8000_0000_0000, "r",
         (K, K, K, K), gp(), frame=F4K),
    Case("4level_hole_top_user_write", 0xFFFF_7FFF_FFFF_FFFF, "w", (U, U, U, U),
         gp(), frame=F4K, user=True),
    Case("4level_57bit_user_address_fetch", VA57, "x", (K, K, K, K), gp(),
         frame=F4K),
    Case("4level_la57_direct_map_address", KV57_DIRECT, "r", (K, K | PS), gp()),
    Case("4level_bit63_only", 0x8000_0000_0000_0000, "r", (K, K, K, K), gp(),
         frame=F4K, ctrl={"a_policy": "qemu"}, sets={}),
    Case("4level_low_bits_with_bit48", 0x0001_0000_0000_1000, "w", (K, K, K, K), gp(),
         frame=F4K, ctrl={"a_policy": "qemu"}, sets={}),
    Case("la57_bit56_without_sign_extension", 0x0100_0000_0000_0000, "r",
         (K, K, K, K, K), gp(), frame=F4K, ctrl={"la57": True}),
    Case("la57_hole_top_user_read", 0xFEFF_FFFF_FFFF_FFFF, "r", (U, U, U, U, U),
         gp(), frame=F4K, user=True, ctrl={"la57": True}),
    Case("la57_bit57_set", 0x0200_0000_0000_0000, "x", (K, K, K, K, K), gp(),
         frame=F4K, ctrl={"la57": True, "a_policy": "qemu"}, sets={}),
]
# fmt: on


@pytest.mark.parametrize("case", params(CANONICAL))
def test_non_canonical_address_raises_gp_without_touching_memory(
    impl: Any, case: Case
) -> None:
    run_case(impl, case)


def test_gp_on_empty_memory_reads_and_writes_nothing(impl: Any) -> None:
    mem = impl.PhysMem()
    r = impl.walk(mem, 0x0000_8000_0000_0000, "w", cr3=TABLE_PA[L4], user=True)
    assert (r.ok, r.vector, r.error_code, r.cr2, r.level, r.path) == (
        False,
        13,
        0,
        None,
        0,
        (),
    )
    assert snapshot(mem) == {}


# --- access rights ----------------------------------------------------------------

# fmt: off
RIGHTS = [
    # U/S is ANDed across levels.
    Case("user_read_supervisor_pte", VA, "r", (U, U, U, K), pf(VA, 0x5, L1),
         frame=F4K, user=True),
    Case("user_read_pdpte_us0", VA, "r", (U, K, U, U), pf(VA, 0x5, L1), frame=F4K,
         user=True),
    Case("user_read_pml4e_us0_2m", VA, "r", (K, U, U | PS), pf(VA, 0x5, L2),
         frame=F2M, user=True),
    Case("user_read_pml5e_us0_la57", VA57, "r", (K, U, U, U, U), pf(VA57, 0x5, L1),
         frame=F4K, user=True, ctrl={"la57": True}),
    Case("user_read_supervisor_1g", VA, "r", (U, K | PS), pf(VA, 0x5, L3),
         frame=F1G, user=True),
    Case("user_write_supervisor_page", VA, "w", (U, U, K, U), pf(VA, 0x7, L1),
         frame=F4K, user=True),
    # R/W is ANDed across levels.
    Case("user_write_pml4e_rw0", VA, "w", (URO, U, U, U), pf(VA, 0x7, L1), frame=F4K,
         user=True),
    Case("user_write_pde_rw0", VA, "w", (U, U, URO, U), pf(VA, 0x7, L1), frame=F4K,
         user=True),
    Case("user_write_ro_leaf_wp_off", VA, "w", (U, U, U, URO), pf(VA, 0x7, L1),
         frame=F4K, user=True, ctrl={"wp": False}),
    Case("user_read_ro_page", VA, "r", (URO, URO, URO, URO), ok(PA_4K, SZ_4K),
         frame=F4K, user=True),
    Case("user_write_user_page", VA, "w", (U, U, U, U), ok(PA_4K, SZ_4K), frame=F4K,
         user=True),
    # CR0.WP and supervisor writes.
    Case("supervisor_write_pdpte_rw0_wp_on", VA, "w", (K, KRO, K, K),
         pf(VA, 0x3, L1), frame=F4K),
    Case("supervisor_write_pdpte_rw0_wp_off", VA, "w", (K, KRO, K, K),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"wp": False}),
    Case("supervisor_write_ro_supervisor_page_wp_on", VA, "w", (K, K, K, KRO),
         pf(VA, 0x3, L1), frame=F4K),
    Case("supervisor_write_ro_supervisor_page_wp_off", VA, "w", (K, K, K, KRO),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"wp": False}),
    Case("supervisor_write_ro_user_page_wp_on", VA, "w", (U, U, U, URO),
         pf(VA, 0x3, L1), frame=F4K),
    Case("supervisor_write_ro_user_page_wp_off", VA, "w", (U, U, U, URO),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"wp": False}),
    Case("supervisor_write_ro_1g_wp_on", VA, "w", (K, KRO | PS), pf(VA, 0x3, L3),
         frame=F1G),
    Case("supervisor_write_ro_2m_wp_off", VA, "w", (K, K, KRO | PS),
         ok(PA_2M, SZ_2M), frame=F2M, ctrl={"wp": False}),
    Case("supervisor_read_ro_page", VA, "r", (KRO, KRO, KRO, KRO), ok(PA_4K, SZ_4K),
         frame=F4K),
    # XD is ORed across levels.
    Case("supervisor_fetch_xd_in_pml4e", VA, "x", (K | NX, K, K, K),
         pf(VA, 0x11, L1), frame=F4K),
    Case("user_fetch_xd_in_pde", VA, "x", (U, U, U | NX, U), pf(VA, 0x15, L1),
         frame=F4K, user=True),
    Case("user_fetch_xd_2m_leaf", VA, "x", (U, U, U | PS | NX), pf(VA, 0x15, L2),
         frame=F2M, user=True),
    Case("supervisor_fetch_xd_1g_leaf", VA, "x", (K, K | PS | NX), pf(VA, 0x11, L3),
         frame=F1G),
    Case("supervisor_fetch_xd_pml5e_la57", VA57, "x", (K | NX, K, K, K, K),
         pf(VA57, 0x11, L1), frame=F4K, ctrl={"la57": True}),
    Case("xd_does_not_stop_reads_or_writes", VA, "w", (K | NX, K | NX, K, K | NX),
         ok(PA_4K, SZ_4K), frame=F4K),
    Case("user_fetch_supervisor_page", VA, "x", (U, U, U, K), pf(VA, 0x15, L1),
         frame=F4K, user=True),
    Case("user_fetch_supervisor_page_no_nxe_has_no_id", VA, "x", (U, U, U, K),
         pf(VA, 0x5, L1), frame=F4K, user=True, ctrl={"nxe": False}),
    # Rights are checked only after a complete walk.
    Case("user_read_pdpte_us0_pte_not_present", VA, "r", (U, K, U, 0),
         pf(VA, 0x4, L1), user=True),
    Case("user_write_pml4e_rw0_pde_not_present", VA, "w", (URO, U, 0),
         pf(VA, 0x6, L2), user=True),
    Case("supervisor_fetch_xd_pml4e_pte_not_present", VA, "x", (K | NX, K, K, 0),
         pf(VA, 0x10, L1)),
    Case("supervisor_write_ro_pdpte_pte_reserved", VA, "w", (K, KRO, K, K | bit(51)),
         pf(VA, 0xB, L1), frame=F4K, ctrl={"maxphyaddr": 48}),
]
# fmt: on


@pytest.mark.parametrize("case", params(RIGHTS))
def test_rights_are_combined_across_levels_and_checked_after_the_walk(
    impl: Any, case: Case
) -> None:
    run_case(impl, case)


# --- SMEP and SMAP ----------------------------------------------------------------

# fmt: off
SMEP_SMAP = [
    Case("smep_supervisor_fetch_user_page", VA, "x", (U, U, U, U), pf(VA, 0x11, L1),
         frame=F4K, ctrl={"smep": True}),
    Case("smep_off_supervisor_fetch_user_page", VA, "x", (U, U, U, U),
         ok(PA_4K, SZ_4K), frame=F4K),
    Case("smep_supervisor_fetch_supervisor_page", VA, "x", (K, K, K, K),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"smep": True}),
    Case("smep_pml4e_us0_makes_supervisor_address", VA, "x", (K, U, U, U),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"smep": True}),
    Case("smep_without_nxe_sets_id", VA, "x", (U, U, U, U), pf(VA, 0x11, L1),
         frame=F4K, ctrl={"smep": True, "nxe": False}),
    Case("smep_refuses_whatever_xd_says", VA, "x", (U, U, U, U | NX),
         pf(VA, 0x11, L1), frame=F4K, ctrl={"smep": True}),
    Case("smep_does_not_apply_to_user_fetch", VA, "x", (U, U, U, U), ok(PA_4K, SZ_4K),
         frame=F4K, user=True, ctrl={"smep": True}),
    Case("smep_1g_user_page", VA, "x", (U, U | PS), pf(VA, 0x11, L3), frame=F1G,
         ctrl={"smep": True}),
    Case("smep_does_not_stop_supervisor_reads", VA, "r", (U, U, U, U),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"smep": True}),
    Case("smap_supervisor_read_user_page_ac0", VA, "r", (U, U, U, U),
         pf(VA, 0x1, L1), frame=F4K, ctrl={"smap": True}),
    Case("smap_supervisor_read_user_page_ac1", VA, "r", (U, U, U, U),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"smap": True, "ac": True}),
    Case("smap_implicit_read_user_page_ac1", VA, "r", (U, U, U, U), pf(VA, 0x1, L1),
         frame=F4K, implicit=True, ctrl={"smap": True, "ac": True}),
    Case("smap_implicit_write_user_page_ac0", VA, "w", (U, U, U, U), pf(VA, 0x3, L1),
         frame=F4K, implicit=True, ctrl={"smap": True}),
    Case("smap_supervisor_write_user_page_ac0", VA, "w", (U, U, U, U),
         pf(VA, 0x3, L1), frame=F4K, ctrl={"smap": True}),
    Case("smap_supervisor_write_user_page_ac1", VA, "w", (U, U, U, U),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"smap": True, "ac": True}),
    Case("smap_ac1_write_ro_user_page_wp_off", VA, "w", (U, U, U, URO),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"smap": True, "ac": True, "wp": False}),
    Case("smap_ac1_write_ro_user_page_wp_on", VA, "w", (U, U, U, URO),
         pf(VA, 0x3, L1), frame=F4K, ctrl={"smap": True, "ac": True}),
    Case("smap_does_not_apply_to_fetch", VA, "x", (U, U, U, U), ok(PA_4K, SZ_4K),
         frame=F4K, ctrl={"smap": True}),
    Case("smap_pde_us0_makes_supervisor_address", VA, "r", (U, U, K, U),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"smap": True}),
    Case("smap_implicit_read_supervisor_page", VA, "r", (K, K, K, K),
         ok(PA_4K, SZ_4K), frame=F4K, implicit=True, ctrl={"smap": True}),
    Case("smap_off_supervisor_read_user_page", VA, "r", (U, U, U, U),
         ok(PA_4K, SZ_4K), frame=F4K),
    Case("smap_off_implicit_write_user_page", VA, "w", (U, U, U, U),
         ok(PA_4K, SZ_4K), frame=F4K, implicit=True),
    Case("smap_does_not_apply_to_user_access", VA, "r", (U, U, U, U),
         ok(PA_4K, SZ_4K), frame=F4K, user=True, ctrl={"smap": True}),
    Case("smap_2m_user_page", VA, "r", (U, U, U | PS), pf(VA, 0x1, L2), frame=F2M,
         ctrl={"smap": True}),
]
# fmt: on


@pytest.mark.parametrize("case", params(SMEP_SMAP))
def test_smep_and_smap_gate_supervisor_access_to_user_addresses(
    impl: Any, case: Case
) -> None:
    run_case(impl, case)


# An implicit access (GDT, IDT, TSS...) is a supervisor-mode access even at CPL 3
# (x86-paging.md 2.1): the error code has U/S=0 and SMAP ignores EFLAGS.AC.
# fmt: off
IMPLICIT_AT_CPL3 = [
    Case("implicit_at_cpl3_reads_supervisor_page", VA, "r", (K, K, K, K),
         ok(PA_4K, SZ_4K), frame=F4K, user=True, implicit=True),
    Case("implicit_at_cpl3_smap_ac1_user_page", VA, "r", (U, U, U, U),
         pf(VA, 0x1, L1), frame=F4K, user=True, implicit=True,
         ctrl={"smap": True, "ac": True}),
    Case("implicit_at_cpl3_write_not_present", VA, "w", (K, K, K, 0),
         pf(VA, 0x2, L1), user=True, implicit=True),
]
# fmt: on


@pytest.mark.parametrize("case", params(IMPLICIT_AT_CPL3))
def test_implicit_access_at_cpl3_is_a_supervisor_access(impl: Any, case: Case) -> None:
    run_case(impl, case)


# --- protection keys --------------------------------------------------------------

# fmt: off
PKEYS = [
    Case("user_read_key_access_disabled", VA, "r", (U, U, U, U | key(1)),
         pf(VA, 0x25, L1), frame=F4K, user=True, ctrl={"pke": True, "pkru": ad(1)}),
    Case("user_write_key_write_disabled", VA, "w", (U, U, U, U | key(1)),
         pf(VA, 0x27, L1), frame=F4K, user=True, ctrl={"pke": True, "pkru": wd(1)}),
    Case("user_read_key_write_disabled", VA, "r", (U, U, U, U | key(1)),
         ok(PA_4K, SZ_4K), frame=F4K, user=True, ctrl={"pke": True, "pkru": wd(1)}),
    Case("user_write_key_access_disabled", VA, "w", (U, U, U, U | key(1)),
         pf(VA, 0x27, L1), frame=F4K, user=True, ctrl={"pke": True, "pkru": ad(1)}),
    Case("user_fetch_key_access_disabled", VA, "x", (U, U, U, U | key(1)),
         ok(PA_4K, SZ_4K), frame=F4K, user=True,
         ctrl={"pke": True, "pkru": ad(1) | wd(1)}),
    Case("supervisor_fetch_key_access_disabled", VA, "x", (U, U, U, U | key(1)),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"pke": True, "pkru": ad(1)}),
    Case("supervisor_write_key_write_disabled_wp_on", VA, "w",
         (U, U, U, U | key(1)), pf(VA, 0x23, L1), frame=F4K,
         ctrl={"pke": True, "pkru": wd(1)}),
    Case("supervisor_write_key_write_disabled_wp_off", VA, "w",
         (U, U, U, U | key(1)), ok(PA_4K, SZ_4K), frame=F4K,
         ctrl={"pke": True, "pkru": wd(1), "wp": False}),
    Case("user_write_key_write_disabled_wp_off", VA, "w", (U, U, U, U | key(1)),
         pf(VA, 0x27, L1), frame=F4K, user=True,
         ctrl={"pke": True, "pkru": wd(1), "wp": False}),
    Case("supervisor_read_key_access_disabled", VA, "r", (U, U, U, U | key(1)),
         pf(VA, 0x21, L1), frame=F4K, ctrl={"pke": True, "pkru": ad(1)}),
    Case("pke_off_ignores_pkru", VA, "r", (U, U, U, U | key(1)), ok(PA_4K, SZ_4K),
         frame=F4K, user=True, ctrl={"pke": False, "pkru": ad(1)}),
    Case("supervisor_address_has_no_user_key", VA, "w", (K, K, K, K | key(1)),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"pke": True, "pkru": ad(1) | wd(1)}),
    Case("user_read_supervisor_page_keyed_is_not_pk", VA, "r", (U, U, U, K | key(1)),
         pf(VA, 0x5, L1), frame=F4K, user=True, ctrl={"pke": True, "pkru": ad(1)}),
    Case("other_key_unaffected", VA, "w", (U, U, U, U | key(2)), ok(PA_4K, SZ_4K),
         frame=F4K, user=True, ctrl={"pke": True, "pkru": ad(1) | wd(1)}),
    Case("key0_access_disabled", VA, "r", (U, U, U, U), pf(VA, 0x25, L1), frame=F4K,
         user=True, ctrl={"pke": True, "pkru": ad(0)}),
    Case("key15_access_disabled", VA, "r", (U, U, U, U | key(15)),
         pf(VA, 0x25, L1), frame=F4K, user=True, ctrl={"pke": True, "pkru": ad(15)}),
    Case("key15_write_disabled_pkru_bit31", VA, "w", (U, U, U, U | key(15)),
         pf(VA, 0x27, L1), frame=F4K, user=True, ctrl={"pke": True, "pkru": wd(15)}),
    Case("2m_leaf_key", VA, "r", (U, U, U | PS | key(3)), pf(VA, 0x25, L2),
         frame=F2M, user=True, ctrl={"pke": True, "pkru": ad(3)}),
    Case("1g_leaf_key_write_disabled", VA, "w", (U, U | PS | key(7)),
         pf(VA, 0x27, L3), frame=F1G, user=True, ctrl={"pke": True, "pkru": wd(7)}),
    Case("nonleaf_key_bits_ignored", VA, "r",
         (U | key(1), U | key(1), U | key(1), U), ok(PA_4K, SZ_4K), frame=F4K,
         user=True, ctrl={"pke": True, "pkru": ad(1)}),
    Case("user_write_ro_page_and_key_write_disabled", VA, "w",
         (U, U, U, URO | key(1)), pf(VA, 0x27, L1), frame=F4K, user=True,
         ctrl={"pke": True, "pkru": wd(1)}),
    Case("user_write_ro_page_key_allows", VA, "w", (U, U, U, URO | key(1)),
         pf(VA, 0x7, L1), frame=F4K, user=True, ctrl={"pke": True, "pkru": wd(2)}),
    Case("smap_refused_read_and_key_access_disabled", VA, "r", (U, U, U, U | key(1)),
         pf(VA, 0x21, L1), frame=F4K, ctrl={"pke": True, "pkru": ad(1), "smap": True}),
    Case("smap_ac1_read_key_access_disabled", VA, "r", (U, U, U, U | key(1)),
         pf(VA, 0x21, L1), frame=F4K,
         ctrl={"pke": True, "pkru": ad(1), "smap": True, "ac": True}),
    Case("smep_refused_fetch_with_key_access_disabled_has_no_pk", VA, "x",
         (U, U, U, U | key(1)), pf(VA, 0x11, L1), frame=F4K,
         ctrl={"pke": True, "pkru": ad(1), "smep": True}),
    Case("smap_refused_write_and_key_write_disabled", VA, "w", (U, U, U, U | key(1)),
         pf(VA, 0x23, L1), frame=F4K, ctrl={"pke": True, "pkru": wd(1), "smap": True}),
    Case("la57_user_read_key_access_disabled", VA57, "r", (U, U, U, U, U | key(4)),
         pf(VA57, 0x25, L1), frame=F4K, user=True,
         ctrl={"pke": True, "pkru": ad(4), "la57": True}),
]
# fmt: on


@pytest.mark.parametrize("case", params(PKEYS))
def test_protection_keys_refuse_data_access_to_user_addresses(
    impl: Any, case: Case
) -> None:
    run_case(impl, case)


# --- CR3 --------------------------------------------------------------------------

# fmt: off
CR3_BITS = [
    Case("pcid_bits_ignored", VA, "r", (K, K, K, K), ok(PA_4K, SZ_4K), frame=F4K,
         cr3_bits=0xFFF),
    Case("pwt_pcd_ignored", VA, "w", (K, K, K, K), ok(PA_4K, SZ_4K), frame=F4K,
         cr3_bits=PWT | PCD),
    Case("bit63_ignored", VA, "r", (U, U, U, U), ok(PA_4K, SZ_4K), frame=F4K,
         user=True, cr3_bits=bit(63) | 0x5A5),
    Case("bit63_ignored_on_fault", VA, "r", (U, U, U, 0), pf(VA, 0x4, L1),
         user=True, cr3_bits=bit(63) | 0xFFF),
    Case("la57_low_bits_and_bit63_ignored", VA57, "r", (K, K, K, K, K),
         ok(0xABCD_EABC, SZ_4K), frame=F4K, cr3_bits=bit(63) | PWT | PCD | 0x7,
         ctrl={"la57": True}),
    Case("bit63_ignored_maxphyaddr36", VA, "r", (K, K, K | PS), ok(PA_2M, SZ_2M),
         frame=F2M, cr3_bits=bit(63) | 0x800, ctrl={"maxphyaddr": 36}),
]
# fmt: on


@pytest.mark.parametrize("case", params(CR3_BITS))
def test_cr3_pcid_pwt_pcd_and_bit63_do_not_move_the_root(impl: Any, case: Case) -> None:
    run_case(impl, case)


# --- accessed and dirty bits ------------------------------------------------------

QEMU = {"a_policy": "qemu"}
SUCCESS = {"a_policy": "success"}

# fmt: off
ACCESSED_DIRTY = [
    # "success": A on every entry used and D on the leaf, only for allowed accesses.
    Case("success_read_4k", VA, "r", (K, K, K, K), ok(PA_4K, SZ_4K), frame=F4K,
         ctrl=SUCCESS, sets={L4: A, L3: A, L2: A, L1: A}),
    Case("success_write_4k", VA, "w", (K, K, K, K), ok(PA_4K, SZ_4K), frame=F4K,
         ctrl=SUCCESS, sets={L4: A, L3: A, L2: A, L1: A | D}),
    Case("success_fetch_4k", VA, "x", (K, K, K, K), ok(PA_4K, SZ_4K), frame=F4K,
         sets={L4: A, L3: A, L2: A, L1: A}),
    Case("success_write_2m", VA, "w", (K, K, K | PS), ok(PA_2M, SZ_2M), frame=F2M,
         sets={L4: A, L3: A, L2: A | D}),
    Case("success_write_1g", VA, "w", (K, K | PS), ok(PA_1G, SZ_1G), frame=F1G,
         sets={L4: A, L3: A | D}),
    Case("success_write_2m_la57", VA57, "w", (K, K, K, K | PS),
         ok(0x4_0078_9ABC, SZ_2M), frame=F2M, ctrl={"la57": True},
         sets={L5: A, L4: A, L3: A, L2: A | D}),
    Case("success_already_accessed_and_dirty", VA, "w",
         (K | A, K | A, K | A, K | A | D), ok(PA_4K, SZ_4K), frame=F4K, sets={}),
    Case("success_read_keeps_dirty_clear", VA, "r", (K | A, K, K | A, K),
         ok(PA_4K, SZ_4K), frame=F4K, sets={L3: A, L1: A}),
    Case("success_wp0_write_to_ro_page_sets_dirty", VA, "w", (K, K, K, KRO),
         ok(PA_4K, SZ_4K), frame=F4K, ctrl={"wp": False},
         sets={L4: A, L3: A, L2: A, L1: A | D}),
    Case("success_refused_write_writes_nothing", VA, "w", (U, U, U, URO),
         pf(VA, 0x7, L1), frame=F4K, user=True, sets={}),
    Case("success_not_present_pd_writes_nothing", VA, "r", (K, K, 0),
         pf(VA, 0x0, L2), sets={}),
    Case("success_reserved_pte_writes_nothing", VA, "w", (K, K, K, K | bit(51)),
         pf(VA, 0xB, L1), frame=F4K, ctrl={"maxphyaddr": 40}, sets={}),
    Case("success_refused_1g_writes_nothing", VA, "w", (K, KRO | PS),
         pf(VA, 0x3, L3), frame=F1G, sets={}),
    Case("success_1g_alignment_bits_write_nothing", VA, "r", (K, K | PS),
         pf(VA, 0x9, L3), frame=F1G | bit(20), sets={}),
    # "qemu": A on non-leaf entries as the walk passes them, leaf A/D on success only,
    # and the 1 GiB PDPTE quirk.
    Case("qemu_read_4k", VA, "r", (K, K, K, K), ok(PA_4K, SZ_4K), frame=F4K,
         ctrl=QEMU, sets={L4: A, L3: A, L2: A, L1: A}),
    Case("qemu_write_4k", VA, "w", (K, K, K, K), ok(PA_4K, SZ_4K), frame=F4K,
         ctrl=QEMU, sets={L4: A, L3: A, L2: A, L1: A | D}),
    Case("qemu_write_1g", VA, "w", (K, K | PS), ok(PA_1G, SZ_1G), frame=F1G,
         ctrl=QEMU, sets={L4: A, L3: A | D}),
    Case("qemu_not_present_pml4_writes_nothing", VA, "r", (0,), pf(VA, 0x0, L4),
         ctrl=QEMU, sets={}),
    Case("qemu_not_present_pd", VA, "w", (K, K, 0), pf(VA, 0x2, L2), ctrl=QEMU,
         sets={L4: A, L3: A}),
    Case("qemu_not_present_pt", VA, "r", (U, U, U, 0), pf(VA, 0x4, L1), user=True,
         ctrl=QEMU, sets={L4: A, L3: A, L2: A}),
    Case("qemu_not_present_pml4_la57", VA57, "r", (K, 0), pf(VA57, 0x0, L4),
         ctrl={"a_policy": "qemu", "la57": True}, sets={L5: A}),
    Case("qemu_reserved_pml4_writes_nothing", VA, "r", (K | PS, K, K, K),
         pf(VA, 0x9, L4), frame=F4K, ctrl=QEMU, sets={}),
    Case("qemu_reserved_pte", VA, "r", (K, K, K, K | NX), pf(VA, 0x9, L1), frame=F4K,
         ctrl={"a_policy": "qemu", "nxe": False}, sets={L4: A, L3: A, L2: A}),
    Case("qemu_2m_alignment_bits_leave_pde", VA, "r", (K, K, K | PS),
         pf(VA, 0x9, L2), frame=F2M | bit(13), ctrl=QEMU, sets={L4: A, L3: A}),
    Case("qemu_refused_write_4k_leaves_pte", VA, "w", (U, U, U, URO),
         pf(VA, 0x7, L1), frame=F4K, user=True, ctrl=QEMU,
         sets={L4: A, L3: A, L2: A}),
    Case("qemu_refused_read_2m_leaves_pde", VA, "r", (U, U, K | PS), pf(VA, 0x5, L2),
         frame=F2M, user=True, ctrl=QEMU, sets={L4: A, L3: A}),
    Case("qemu_smap_refused_leaves_pte", VA, "r", (U, U, U, U), pf(VA, 0x1, L1),
         frame=F4K, ctrl={"a_policy": "qemu", "smap": True},
         sets={L4: A, L3: A, L2: A}),
    Case("qemu_refused_1g_sets_pdpte_a", VA, "w", (K, KRO | PS), pf(VA, 0x3, L3),
         frame=F1G, ctrl=QEMU, sets={L4: A, L3: A}),
    Case("qemu_key_refused_1g_sets_pdpte_a", VA, "r", (U, U | PS | key(2)),
         pf(VA, 0x25, L3), frame=F1G, user=True,
         ctrl={"a_policy": "qemu", "pke": True, "pkru": ad(2)}, sets={L4: A, L3: A}),
    Case("qemu_1g_alignment_bits_set_pdpte_a", VA, "r", (K, K | PS), pf(VA, 0x9, L3),
         frame=F1G | bit(13), ctrl=QEMU, sets={L4: A, L3: A}),
    Case("qemu_1g_alignment_bit29_user_write", VA, "w", (U, U | PS),
         pf(VA, 0xF, L3), frame=F1G | bit(29), user=True, ctrl=QEMU,
         sets={L4: A, L3: A}),
    Case("qemu_1g_bit51_reserved_before_a", VA, "r", (K, K | PS), pf(VA, 0x9, L3),
         frame=F1G | bit(51), ctrl={"a_policy": "qemu", "maxphyaddr": 46},
         sets={L4: A}),
    Case("qemu_gbpages_off_pdpte_ps_reserved_before_a", VA, "r", (K, K | PS),
         pf(VA, 0x9, L3), frame=F1G, ctrl={"a_policy": "qemu", "gbpages": False},
         sets={L4: A}),
]
# fmt: on


@pytest.mark.parametrize("case", params(ACCESSED_DIRTY))
def test_accessed_and_dirty_bits_follow_the_a_policy(impl: Any, case: Case) -> None:
    run_case(impl, case)


# --- the table itself -------------------------------------------------------------

ALL_CASES = [
    *NOT_PRESENT,
    *RESERVED,
    *RESERVED_LOOKALIKES,
    *TRANSLATIONS,
    *CANONICAL,
    *RIGHTS,
    *SMEP_SMAP,
    *IMPLICIT_AT_CPL3,
    *PKEYS,
    *CR3_BITS,
    *ACCESSED_DIRTY,
]


def test_cases_cover_the_common_error_codes_of_the_reference() -> None:
    # x86-paging.md 2.4 "Common values".
    common = {
        0x0,
        0x2,
        0x4,
        0x6,
        0x3,
        0x5,
        0x7,
        0x9,
        0xB,
        0xD,
        0x11,
        0x15,
        0x25,
        0x23,
        0x27,
    }
    seen = {c.expect.error_code for c in ALL_CASES if c.expect.vector == arch.VEC_PF}
    assert common <= seen
    assert len(ALL_CASES) >= 60
    assert len({c.id for c in ALL_CASES}) == len(ALL_CASES)
