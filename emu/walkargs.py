"""Walk arguments and results shared by the C walker and the pure-Python reference."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from emu import arch
from emu._check import as_int, u64
from emu.errors import EmuValueError


@dataclass(frozen=True)
class WalkConfig:
    """Control state of one walk, normalised and checked.

    Attributes:
        cr3: CR3 as given (bits 11:0 and 63 are ignored by the walk).
        flags: ``arch.WF_*`` bits.
        pkru: the PKRU register.
        maxphyaddr: M, 32..52.
    """

    cr3: int
    flags: int
    pkru: int
    maxphyaddr: int

    @property
    def la57(self) -> bool:
        """Whether the walk uses 5-level paging."""
        return bool(self.flags & arch.WF_LA57)


def make_config(
    *,
    cr3: Any,
    wp: bool = True,
    nxe: bool = True,
    smep: bool = False,
    smap: bool = False,
    ac: bool = False,
    la57: bool = False,
    pke: bool = False,
    pkru: Any = 0,
    maxphyaddr: Any = arch.PA_BITS_MAX,
    a_policy: str = "success",
    gbpages: bool = True,
    amd: bool = False,
) -> WalkConfig:
    """Check the walk keywords and fold them into a :class:`WalkConfig`.

    Raises:
        EmuValueError: a value is of the wrong type or out of its range.
    """
    m = as_int(maxphyaddr, "maxphyaddr")
    if not 32 <= m <= arch.PA_BITS_MAX:
        raise EmuValueError(f"maxphyaddr={m} must lie in 32..{arch.PA_BITS_MAX}")
    c = u64(cr3, "cr3")
    if (c & ~(1 << 63)) >> m:
        raise EmuValueError(f"cr3={c:#x} sets reserved bits 62:{m}")
    p = as_int(pkru, "pkru")
    if not 0 <= p < 1 << 32:
        raise EmuValueError(f"pkru={p:#x} must fit in 32 bits")
    if a_policy not in arch.A_POLICIES:
        raise EmuValueError(f"a_policy={a_policy!r} must be one of {arch.A_POLICIES}")
    flags = 0
    for on, bit in (
        (wp, arch.WF_WP),
        (nxe, arch.WF_NXE),
        (smep, arch.WF_SMEP),
        (smap, arch.WF_SMAP),
        (ac, arch.WF_AC),
        (la57, arch.WF_LA57),
        (pke, arch.WF_PKE),
        (a_policy == "qemu", arch.WF_A_QEMU),
        (not gbpages, arch.WF_NO_1G),
        (amd, arch.WF_AMD),
    ):
        if on:
            flags |= bit
    return WalkConfig(cr3=c, flags=flags, pkru=p, maxphyaddr=m)


def access_code(access: Any, user: bool = False, implicit: bool = False) -> int:
    """``"r"``/``"w"``/``"x"`` plus modifiers as an ``arch.ACC_*`` code.

    Raises:
        EmuValueError: ``access`` is not one of the three kinds.
    """
    if not isinstance(access, str) or access not in arch.ACCESS_CODES:
        raise EmuValueError(f"access={access!r} must be 'r', 'w' or 'x'")
    code = arch.ACCESS_CODES[access]
    if user:
        code |= arch.ACC_USER
    if implicit:
        code |= arch.ACC_IMPLICIT
    return code


@dataclass(frozen=True)
class WalkResult:
    """Outcome of one walk.

    Attributes:
        ok: the access is allowed and translated.
        pa: the physical address, or None on a fault.
        page_size: 4096, 2 MiB or 1 GiB, or None on a fault.
        vector: None, 14 (#PF) or 13 (#GP).
        error_code: the #PF error code, 0 for #GP, None when ok.
        cr2: the faulting linear address for #PF, else None.
        level: leaf level when ok, the level that decided a #PF, 0 for #GP.
        path: the entries read, top down, as (level, entry address, value before any
            A/D update).
    """

    ok: bool
    pa: int | None
    page_size: int | None
    vector: int | None
    error_code: int | None
    cr2: int | None
    level: int
    path: tuple[tuple[int, int, int], ...] = ()

    @classmethod
    def fault(
        cls,
        vector: int,
        error_code: int,
        va: int,
        level: int,
        path: tuple[tuple[int, int, int], ...] = (),
    ) -> WalkResult:
        """A faulting result (#PF writes CR2, #GP does not)."""
        cr2 = va if vector == arch.VEC_PF else None
        return cls(False, None, None, vector, error_code, cr2, level, path)
