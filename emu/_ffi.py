"""The only importer of the compiled core ``emu._core``.

At import it checks that the build matches the sources of a checkout (staleness guard),
that every numpy structured dtype mirrors its C struct field by field, and that every
``arch`` constant equals its C twin.  Any mismatch raises ``ImportError`` naming it.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Any

import numpy as np

from emu import arch
from emu.errors import EmuError, EmuMemoryError, EmuValueError, StaleBuildError

try:
    from emu._core import ffi as ffi
    from emu._core import lib as lib
except ImportError as exc:  # pragma: no cover - exercised only without a build
    raise ImportError(
        f"mmulab's C core is not built ({exc}); run: pip install -e ."
    ) from exc

_CSRC = pathlib.Path(__file__).resolve().parent.parent / "csrc"


def _source_hash(csrc: pathlib.Path) -> str:
    """Same digest as csrc/build_ffi.py:src_hash (checked by tests/regress)."""
    h = hashlib.sha256()
    for p in sorted(q for q in csrc.iterdir() if q.suffix in (".c", ".h")):
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


BUILD_HASH: str = ffi.string(lib.emu_src_hash()).decode()
if (_CSRC / "emu_api.h").exists() and not os.environ.get("EMU_SKIP_STALE_CHECK"):
    _now = _source_hash(_CSRC)
    if _now != BUILD_HASH:
        raise StaleBuildError(
            f"emu._core was built from csrc/ hash {BUILD_HASH} but the checkout has "
            f"{_now}; rerun: pip install -e ."
        )

WALK_RESULT_DTYPE = np.dtype(
    [
        ("pa", np.uint64),
        ("page_size", np.uint64),
        ("cr2", np.uint64),
        ("error_code", np.uint32),
        ("vector", np.uint8),
        ("level", np.uint8),
        ("rights", np.uint8),
        ("pkey", np.uint8),
    ]
)

_STRUCT_DTYPES: dict[str, np.dtype[Any]] = {"emu_walk_result": WALK_RESULT_DTYPE}


def register_dtype(cname: str, dtype: np.dtype[Any]) -> np.dtype[Any]:
    """Check ``dtype`` against C struct ``cname`` field by field and remember it."""
    _check_layout(cname, dtype)
    _STRUCT_DTYPES[cname] = dtype
    return dtype


def _check_layout(cname: str, dtype: np.dtype[Any]) -> None:
    ctype = ffi.typeof(cname)
    if ffi.sizeof(ctype) != dtype.itemsize:
        raise ImportError(
            f"{cname}: C size {ffi.sizeof(ctype)} != numpy itemsize {dtype.itemsize}"
        )
    cfields = [name for name, _ in ctype.fields]
    names = dtype.names or ()
    if list(names) != cfields:
        raise ImportError(f"{cname}: C fields {cfields} != numpy fields {names}")
    for name in names:
        ftype, off = dtype.fields[name][:2]  # type: ignore[index]
        if ffi.offsetof(cname, name) != off:
            raise ImportError(f"{cname}.{name}: C offset != numpy offset {off}")
        csize = ffi.sizeof(dict(ctype.fields)[name].type)
        if csize != ftype.itemsize:
            raise ImportError(
                f"{cname}.{name}: C size {csize} != numpy {ftype.itemsize}"
            )


def _check_constants() -> None:
    pairs = {
        "LVL_PT": "EMU_LVL_PT",
        "LVL_PD": "EMU_LVL_PD",
        "LVL_PDPT": "EMU_LVL_PDPT",
        "LVL_PML4": "EMU_LVL_PML4",
        "LVL_PML5": "EMU_LVL_PML5",
        "PTE_P": "EMU_PTE_P",
        "PTE_RW": "EMU_PTE_RW",
        "PTE_US": "EMU_PTE_US",
        "PTE_PWT": "EMU_PTE_PWT",
        "PTE_PCD": "EMU_PTE_PCD",
        "PTE_A": "EMU_PTE_A",
        "PTE_D": "EMU_PTE_D",
        "PTE_PS": "EMU_PTE_PS",
        "PTE_PAT": "EMU_PTE_PAT",
        "PTE_G": "EMU_PTE_G",
        "PTE_PAT_LARGE": "EMU_PTE_PAT_LARGE",
        "PTE_PKEY_SHIFT": "EMU_PTE_PKEY_SHIFT",
        "PTE_NX_SHIFT": "EMU_PTE_NX_SHIFT",
        "PA_BITS_MAX": "EMU_PA_BITS_MAX",
        "ACC_READ": "EMU_ACC_READ",
        "ACC_WRITE": "EMU_ACC_WRITE",
        "ACC_FETCH": "EMU_ACC_FETCH",
        "ACC_KIND_MASK": "EMU_ACC_KIND_MASK",
        "ACC_USER": "EMU_ACC_USER",
        "ACC_IMPLICIT": "EMU_ACC_IMPLICIT",
        "PF_P": "EMU_PF_P",
        "PF_W": "EMU_PF_W",
        "PF_U": "EMU_PF_U",
        "PF_RSVD": "EMU_PF_RSVD",
        "PF_I": "EMU_PF_I",
        "PF_PK": "EMU_PF_PK",
        "VEC_NONE": "EMU_VEC_NONE",
        "VEC_GP": "EMU_VEC_GP",
        "VEC_PF": "EMU_VEC_PF",
        "WF_WP": "EMU_WF_WP",
        "WF_NXE": "EMU_WF_NXE",
        "WF_SMEP": "EMU_WF_SMEP",
        "WF_SMAP": "EMU_WF_SMAP",
        "WF_AC": "EMU_WF_AC",
        "WF_LA57": "EMU_WF_LA57",
        "WF_PKE": "EMU_WF_PKE",
        "WF_A_QEMU": "EMU_WF_A_QEMU",
        "WF_NO_1G": "EMU_WF_NO_1G",
        "WF_AMD": "EMU_WF_AMD",
    }
    for py, c in pairs.items():
        if getattr(arch, py) != getattr(lib, c):
            raise ImportError(
                f"arch.{py}={getattr(arch, py)} but C {c}={getattr(lib, c)}"
            )


_check_constants()
for _name, _dt in list(_STRUCT_DTYPES.items()):
    _check_layout(_name, _dt)

_ERRORS: dict[int, type[EmuError]] = {
    lib.EMU_E_INVAL: EmuValueError,
    lib.EMU_E_RANGE: EmuValueError,
    lib.EMU_E_ALIGN: EmuValueError,
    lib.EMU_E_SHORT: EmuValueError,
    lib.EMU_E_NOMEM: EmuMemoryError,
}


def check(rc: int, what: str) -> int:
    """Raise the exception for a negative C return code; ``what`` names the call."""
    if rc >= 0:
        return rc
    text = ffi.string(lib.emu_strerror(rc)).decode()
    exc = _ERRORS.get(rc, EmuError)(f"{what}: {text}")
    exc.code = rc
    raise exc


def from_array(ctype: str, arr: np.ndarray[Any, Any], writable: bool = False) -> Any:
    """Lend a C-contiguous numpy array to C for one call as ``ctype[]``."""
    if not arr.flags["C_CONTIGUOUS"]:
        raise EmuValueError(f"array for {ctype} must be C-contiguous")
    return ffi.from_buffer(ctype, arr, require_writable=writable)
