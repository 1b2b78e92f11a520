"""mmulab's hardware: physical memory, the x86-64 page walker, TLBs and the MMU.

The compiled core is imported lazily, so ``emu.ref``, ``emu.arch`` and ``emu.paging``
work without it.
"""

from __future__ import annotations

from typing import Any

from emu import arch
from emu.errors import (
    EmuError,
    EmuMemoryError,
    EmuValueError,
    GeneralProtection,
    PageFault,
    StaleBuildError,
)
from emu.walkargs import WalkResult

__all__ = [
    "MMU",
    "CPUSet",
    "EmuError",
    "EmuMemoryError",
    "EmuValueError",
    "GeneralProtection",
    "PageFault",
    "PhysMem",
    "StaleBuildError",
    "TLBConfig",
    "WalkResult",
    "arch",
    "walk",
    "walk_batch",
]

_LAZY: dict[str, tuple[str, str | None]] = {
    "MMU": ("emu.mmu", "MMU"),
    "CPUSet": ("emu.smp", "CPUSet"),
    "TLBConfig": ("emu.cpus", "TLBConfig"),
    "cpus": ("emu.cpus", None),
    "PhysMem": ("emu.physmem", "PhysMem"),
    "walk": ("emu.walker", "walk"),
    "walk_batch": ("emu.walker", "walk_batch"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        mod = importlib.import_module(module)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'emu' has no attribute {name!r}")
