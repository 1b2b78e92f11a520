"""The one exception hierarchy of mmulab (emu and kernel_model alike)."""

from __future__ import annotations


class EmuError(Exception):
    """Base of every error mmulab raises.

    Attributes:
        code: the C core's negative ``EMU_E_*`` return code, when one caused it.
    """

    code: int | None = None


class EmuValueError(EmuError, ValueError):
    """An argument is malformed or out of range."""


class EmuMemoryError(EmuError, MemoryError):
    """The host (or the simulated machine) ran out of memory."""


class StaleBuildError(EmuError, ImportError):
    """The compiled core was built from other sources than the checkout holds."""


class PageFault(EmuError):
    """An architectural #PF raised by the scalar translation API.

    Attributes:
        va: the faulting linear address (what CR2 receives).
        error_code: the #PF error code (``arch.PF_*`` bits).
        level: the paging level whose entry decided the fault.
    """

    def __init__(self, va: int, error_code: int, level: int = 0) -> None:
        super().__init__(f"#PF at {va:#x}, error code {error_code:#x}, level {level}")
        self.va = va
        self.error_code = error_code
        self.level = level


class GeneralProtection(EmuError):
    """An architectural #GP(0), e.g. a non-canonical linear address."""

    def __init__(self, va: int) -> None:
        super().__init__(f"#GP(0): non-canonical address {va:#x}")
        self.va = va
        self.error_code = 0
