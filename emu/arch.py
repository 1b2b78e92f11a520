"""Architectural constants of x86-64 paging (SDM 3A chapter 4).

Each constant has a twin in ``csrc/emu_api.h``; ``emu._ffi`` checks at import that the
two agree.  Importable without the compiled core (``emu.ref`` uses it).
"""

from __future__ import annotations

from typing import NewType

VirtAddr = NewType("VirtAddr", int)
PhysAddr = NewType("PhysAddr", int)
Pfn = NewType("Pfn", int)

# Paging levels (SDM names); never bare integers.
LVL_PT = 1  # page table: PTE maps 4 KiB
LVL_PD = 2  # page directory: PDE with PS=1 maps 2 MiB
LVL_PDPT = 3  # page-directory-pointer table: PDPTE with PS=1 maps 1 GiB
LVL_PML4 = 4
LVL_PML5 = 5  # only with CR4.LA57
LEVEL_NAMES = {
    LVL_PT: "PTE",
    LVL_PD: "PDE",
    LVL_PDPT: "PDPTE",
    LVL_PML4: "PML4E",
    LVL_PML5: "PML5E",
}

# Page-table entry bits (SDM 3A Tables 4-15..4-20).
PTE_P = 1 << 0  # P: present
PTE_RW = 1 << 1  # R/W: writable
PTE_US = 1 << 2  # U/S: user
PTE_PWT = 1 << 3  # PWT
PTE_PCD = 1 << 4  # PCD
PTE_A = 1 << 5  # A: accessed
PTE_D = 1 << 6  # D: dirty (leaves)
PTE_PS = 1 << 7  # PS in PDPTE/PDE; reserved in PML4E/PML5E
PTE_PAT = 1 << 7  # PAT in a 4 KiB PTE
PTE_G = 1 << 8  # G: global (leaves)
PTE_PAT_LARGE = 1 << 12  # PAT in a 2 MiB / 1 GiB leaf
PTE_PKEY_SHIFT = 59  # bits 62:59: protection key
PTE_NX_SHIFT = 63
PTE_NX = 1 << PTE_NX_SHIFT  # XD: execute-disable
PTE_ADDR_MASK = 0x000F_FFFF_FFFF_F000  # bits 51:12
PA_BITS_MAX = 52

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PMD_SIZE = 1 << 21
PUD_SIZE = 1 << 30
ENTRIES_PER_TABLE = 512

# Access kinds (also the trace kinds) and modifiers.
ACC_READ = 0
ACC_WRITE = 1
ACC_FETCH = 2
ACC_KIND_MASK = 3
ACC_USER = 4  # explicit access at CPL 3
ACC_IMPLICIT = 8  # implicit supervisor access: SMAP ignores EFLAGS.AC
ACCESS_CODES = {"r": ACC_READ, "w": ACC_WRITE, "x": ACC_FETCH}

# #PF error-code bits (SDM 3A 4.7).
PF_P = 1 << 0  # protection/reserved/key violation (0: not present)
PF_W = 1 << 1  # write access
PF_U = 1 << 2  # user-mode access
PF_RSVD = 1 << 3  # reserved bit set in a present entry
PF_I = 1 << 4  # instruction fetch (with NXE or SMEP)
PF_PK = 1 << 5  # protection key

VEC_NONE = 0
VEC_GP = 13
VEC_PF = 14

# Walk control flags: the control-register state a walk runs under.
WF_WP = 1 << 0  # CR0.WP
WF_NXE = 1 << 1  # EFER.NXE
WF_SMEP = 1 << 2  # CR4.SMEP
WF_SMAP = 1 << 3  # CR4.SMAP
WF_AC = 1 << 4  # EFLAGS.AC
WF_LA57 = 1 << 5  # CR4.LA57
WF_PKE = 1 << 6  # CR4.PKE
WF_A_QEMU = 1 << 7  # A-bit policy "qemu"
WF_NO_1G = 1 << 8  # no 1 GiB pages: PDPTE.PS is reserved
WF_AMD = 1 << 9  # AMD: bit 8 of PML4E/PML5E reserved

A_POLICIES = ("success", "qemu")


def page_size_of_level(level: int) -> int:
    """Bytes mapped by a leaf at ``level`` (4 KiB, 2 MiB or 1 GiB)."""
    return PAGE_SIZE << (9 * (level - 1))


def va_index(va: int, level: int) -> int:
    """The 9-bit table index that ``va`` selects at ``level`` (SDM 3A 4.5)."""
    return (va >> (PAGE_SHIFT + 9 * (level - 1))) & 0x1FF


def is_canonical(va: int, la57: bool = False) -> bool:
    """Whether ``va`` is canonical for 4-level (48-bit) or 5-level (57-bit) paging."""
    bits = 57 if la57 else 48
    top = va >> (bits - 1)
    return top == 0 or top == (1 << (65 - bits)) - 1


def pte_pfn(pte: int) -> int:
    """Frame number in bits 51:12 of an entry (a large leaf's PAT bit included)."""
    return (pte & PTE_ADDR_MASK) >> PAGE_SHIFT


def pte_pkey(pte: int) -> int:
    """Protection key held in bits 62:59 of a leaf."""
    return (pte >> PTE_PKEY_SHIFT) & 0xF
