"""The C page walker (``csrc/walk.c``): scalar and batch entry points."""

from __future__ import annotations

from typing import Any

import numpy as np

from emu import arch
from emu._check import u64, u64_array
from emu._ffi import WALK_RESULT_DTYPE, check, ffi, from_array, lib
from emu.errors import EmuValueError
from emu.physmem import PhysMem
from emu.walkargs import WalkConfig, WalkResult, access_code, make_config


def _cfg(c: WalkConfig) -> Any:
    cfg = ffi.new("emu_walk_cfg *")
    cfg.cr3 = c.cr3
    cfg.flags = c.flags
    cfg.pkru = c.pkru
    cfg.maxphyaddr = c.maxphyaddr
    return cfg


def _need_physmem(mem: object) -> None:
    if not isinstance(mem, PhysMem):
        raise EmuValueError(
            f"mem must be an emu.PhysMem for the C walker, got {type(mem).__name__}"
        )


def walk(
    mem: PhysMem,
    va: int,
    access: str,
    *,
    cr3: int,
    user: bool = False,
    implicit: bool = False,
    **control: Any,
) -> WalkResult:
    """Translate ``va`` for one access, as the processor's page walker would.

    Args:
        mem: the physical memory holding the page tables.
        va: the linear address (0 <= va < 2^64).
        access: ``"r"``, ``"w"`` or ``"x"``.
        cr3: the full CR3 value.
        user: an explicit access at CPL 3.
        implicit: an implicit supervisor access (SMAP ignores EFLAGS.AC).
        **control: ``wp, nxe, smep, smap, ac, la57, pke, pkru, maxphyaddr, a_policy,
            gbpages, amd`` as for :func:`emu.walkargs.make_config`.

    Returns:
        The :class:`WalkResult`.  A and D bits are written into ``mem`` as the A-bit
        policy says.

    Raises:
        EmuValueError: a malformed argument (nothing is written then).
    """
    _need_physmem(mem)
    c = make_config(cr3=cr3, **control)
    v = u64(va, "va")
    acc = access_code(access, user, implicit)
    out = ffi.new("emu_walk_result *")
    path = ffi.new("emu_walk_path *")
    check(lib.emu_walk(mem._h, _cfg(c), v, acc, out, path), "walk")
    steps = tuple(
        (lvl, int(path.entry_pa[lvl - 1]), int(path.entry[lvl - 1]))
        for lvl in range(arch.LVL_PML5, arch.LVL_PT - 1, -1)
        if path.read_mask & (1 << (lvl - 1))
    )
    if out.vector == arch.VEC_NONE:
        return WalkResult(
            True,
            int(out.pa),
            int(out.page_size),
            None,
            None,
            None,
            int(out.level),
            steps,
        )
    return WalkResult.fault(
        int(out.vector), int(out.error_code), v, int(out.level), steps
    )


def walk_batch(
    mem: PhysMem,
    vas: Any,
    accesses: Any,
    *,
    cr3: int,
    user: bool = False,
    **control: Any,
) -> np.recarray[Any, Any]:
    """Walk every address of an array in one C call, in order.

    Args:
        mem: the physical memory holding the page tables.
        vas: uint64 array of linear addresses.
        accesses: uint8 array of ``arch.ACC_*`` codes (0 read, 1 write, 2 fetch,
            optionally or'ed with ``ACC_USER``), or one string ``"r"``/``"w"``/``"x"``
            for all of them.
        cr3: the full CR3 value.
        user: make every access a user-mode access.
        **control: as for :func:`walk`.

    Returns:
        A record array with fields ``pa, page_size, cr2, error_code, vector, level,
        rights, pkey`` (``vector`` 0 when ok, 13 or 14 on a fault).

    Raises:
        EmuValueError: bad arrays or codes (memory is left as it was).
    """
    _need_physmem(mem)
    c = make_config(cr3=cr3, **control)
    va_arr = u64_array(vas, "vas")
    if isinstance(accesses, str):
        acc_arr = np.full(va_arr.shape, access_code(accesses), dtype=np.uint8)
    else:
        acc_arr = np.ascontiguousarray(accesses)
        if acc_arr.shape != va_arr.shape:
            raise EmuValueError(
                f"accesses has shape {acc_arr.shape}, vas has {va_arr.shape}"
            )
        if acc_arr.dtype != np.uint8:
            if acc_arr.dtype.kind not in "iu" or (
                acc_arr.size and (acc_arr.min() < 0 or acc_arr.max() > 0xFF)
            ):
                raise EmuValueError(
                    f"accesses must be uint8 codes, got {acc_arr.dtype}"
                )
            acc_arr = acc_arr.astype(np.uint8)
    if user:
        acc_arr = acc_arr | np.uint8(arch.ACC_USER)
    out = np.zeros(va_arr.shape, dtype=WALK_RESULT_DTYPE)
    rc = lib.emu_walk_batch(
        mem._h,
        _cfg(c),
        from_array("uint64_t[]", va_arr),
        from_array("uint8_t[]", acc_arr),
        va_arr.size,
        from_array("emu_walk_result[]", out, writable=True),
    )
    if rc == lib.EMU_E_INVAL:
        bad = int(np.flatnonzero(out["vector"] == 0xFF)[0])
        raise EmuValueError(
            f"accesses[{bad}]={int(acc_arr[bad])} is not an access code"
        )
    check(rc, "walk_batch")
    return out.view(np.recarray)
