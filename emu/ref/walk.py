"""Reference x86-64 page walker, written as plainly as the SDM reads (3A 4.5 - 4.8)."""

from __future__ import annotations

from typing import Any, Protocol

from emu import arch
from emu._check import u64
from emu.walkargs import WalkConfig, WalkResult, access_code, make_config


class Memory(Protocol):
    """What the walker needs of physical memory."""

    def read_u64(self, pa: int) -> int: ...  # noqa: D102
    def write_u64(self, pa: int, value: int) -> None: ...  # noqa: D102


def bit(value: int, n: int) -> int:
    """Bit ``n`` of ``value``."""
    return (value >> n) & 1


def bits(value: int, hi: int, lo: int) -> int:
    """Bits ``hi:lo`` of ``value``, shifted down."""
    return (value >> lo) & ((1 << (hi - lo + 1)) - 1)


def reserved_bits(cfg: WalkConfig, level: int, entry: int) -> int:
    """The bits of a present ``entry`` at ``level`` that must be zero."""
    mask = 0
    for b in range(cfg.maxphyaddr, 52):  # bits 51:M
        mask |= 1 << b
    if not cfg.flags & arch.WF_NXE:
        mask |= arch.PTE_NX  # XD is reserved without EFER.NXE
    is_large = bool(entry & arch.PTE_PS)
    if level in (arch.LVL_PML5, arch.LVL_PML4):
        mask |= arch.PTE_PS
        if cfg.flags & arch.WF_AMD:
            mask |= arch.PTE_G
    elif level == arch.LVL_PDPT and is_large:
        if cfg.flags & arch.WF_NO_1G:
            mask |= arch.PTE_PS
        else:
            for b in range(13, 30):
                mask |= 1 << b
    elif level == arch.LVL_PD and is_large:
        for b in range(13, 21):
            mask |= 1 << b
    return mask


def alignment_bits(cfg: WalkConfig, level: int, entry: int) -> int:
    """The 1 GiB alignment bits 29:13, which QEMU checks only after setting A."""
    if level == arch.LVL_PDPT and entry & arch.PTE_PS and not cfg.flags & arch.WF_NO_1G:
        return sum(1 << b for b in range(13, 30))
    return 0


def rights_fault(
    cfg: WalkConfig, acc: int, rw: bool, us: bool, xd: bool, pkey: int
) -> int:
    """0 if allowed, else the P (and PK) bits of the #PF error code."""
    kind = acc & arch.ACC_KIND_MASK
    # an implicit access is a supervisor access even at CPL 3 (SDM 3A 4.6)
    user = bool(acc & arch.ACC_USER) and not acc & arch.ACC_IMPLICIT
    write = kind == arch.ACC_WRITE
    fetch = kind == arch.ACC_FETCH
    wp = bool(cfg.flags & arch.WF_WP)
    if user:
        allowed = us and not (write and not rw) and not (fetch and xd)
    elif fetch:
        smep_refuses = bool(cfg.flags & arch.WF_SMEP) and us
        allowed = not xd and not smep_refuses
    else:
        ac_lets = bool(cfg.flags & arch.WF_AC) and not acc & arch.ACC_IMPLICIT
        smap_refuses = us and bool(cfg.flags & arch.WF_SMAP) and not ac_lets
        allowed = not smap_refuses and not (write and not rw and wp)
    if not fetch and us and cfg.flags & arch.WF_PKE:
        access_disable = bit(cfg.pkru, 2 * pkey)
        write_disable = bit(cfg.pkru, 2 * pkey + 1)
        if access_disable or (write_disable and write and (user or wp)):
            return arch.PF_P | arch.PF_PK
    return 0 if allowed else arch.PF_P


def translate(mem: Memory, cfg: WalkConfig, va: int, acc: int) -> WalkResult:
    """Walk ``va`` for access code ``acc`` under ``cfg``."""
    if not arch.is_canonical(va, cfg.la57):
        return WalkResult.fault(arch.VEC_GP, 0, va, 0)
    kind = acc & arch.ACC_KIND_MASK
    qemu = bool(cfg.flags & arch.WF_A_QEMU)
    ec = 0
    if kind == arch.ACC_WRITE:
        ec |= arch.PF_W
    if acc & arch.ACC_USER and not acc & arch.ACC_IMPLICIT:
        ec |= arch.PF_U
    if kind == arch.ACC_FETCH and cfg.flags & (arch.WF_NXE | arch.WF_SMEP):
        ec |= arch.PF_I

    levels = [arch.LVL_PML5, 4, 3, 2, 1] if cfg.la57 else [4, 3, 2, 1]
    table = bits(cfg.cr3, 51, 12) << 12
    rw, us, xd = True, True, False
    used: list[tuple[int, int, int]] = []
    for level in levels:
        entry_pa = table + 8 * arch.va_index(va, level)
        entry = mem.read_u64(entry_pa)
        used.append((level, entry_pa, entry))
        path = tuple(used)
        if not entry & arch.PTE_P:
            return WalkResult.fault(arch.VEC_PF, ec, va, level, path)
        rsvd = reserved_bits(cfg, level, entry)
        if qemu:
            rsvd &= ~alignment_bits(cfg, level, entry)
        if entry & rsvd:
            return WalkResult.fault(
                arch.VEC_PF, ec | arch.PF_P | arch.PF_RSVD, va, level, path
            )
        rw = rw and bool(entry & arch.PTE_RW)
        us = us and bool(entry & arch.PTE_US)
        if cfg.flags & arch.WF_NXE:
            xd = xd or bool(entry & arch.PTE_NX)
        leaf = level == arch.LVL_PT or (
            level in (arch.LVL_PD, arch.LVL_PDPT) and bool(entry & arch.PTE_PS)
        )
        if qemu and (not leaf or level == arch.LVL_PDPT):
            mem.write_u64(entry_pa, mem.read_u64(entry_pa) | arch.PTE_A)
        if leaf:
            break
        table = bits(entry, 51, 12) << 12

    if qemu and entry & alignment_bits(cfg, level, entry):
        return WalkResult.fault(
            arch.VEC_PF, ec | arch.PF_P | arch.PF_RSVD, va, level, tuple(used)
        )
    refused = rights_fault(cfg, acc, rw, us, xd, arch.pte_pkey(entry))
    if refused:
        return WalkResult.fault(arch.VEC_PF, ec | refused, va, level, tuple(used))

    for lvl, pa, _ in used:
        new = mem.read_u64(pa) | arch.PTE_A
        if lvl == level and kind == arch.ACC_WRITE:
            new |= arch.PTE_D
        if new != mem.read_u64(pa):
            mem.write_u64(pa, new)

    size = arch.page_size_of_level(level)
    if level == arch.LVL_PT:
        base = bits(entry, 51, 12) << 12
    else:
        base = (bits(entry, 51, 12) << 12) & ~(size - 1)  # drops PAT (bit 12)
    return WalkResult(
        True, base | (va & (size - 1)), size, None, None, None, level, tuple(used)
    )


def walk(
    mem: Memory,
    va: int,
    access: str,
    *,
    cr3: int,
    user: bool = False,
    implicit: bool = False,
    **control: Any,
) -> WalkResult:
    """Reference twin of :func:`emu.walk`: same arguments, same result fields."""
    cfg = make_config(cr3=cr3, **control)
    v = u64(va, "va")
    return translate(mem, cfg, v, access_code(access, user, implicit))
