"""mmulab's model of the Linux kernel's memory management (Linux 7.0 behaviour).

Files mirror the kernel files they model: ``e820`` (arch/x86/kernel/e820.c),
``page_alloc`` (mm/page_alloc.c), ``pgtable``, ``init`` (arch/x86/mm/init*.c),
``ptdump`` (arch/x86/mm/dump_pagetables.c), ``meminfo``; ``machine`` ties them to the
``emu`` hardware.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Machine"]


def __getattr__(name: str) -> Any:
    if name == "Machine":
        from kernel_model.machine import Machine

        return Machine
    raise AttributeError(f"module 'kernel_model' has no attribute {name!r}")
