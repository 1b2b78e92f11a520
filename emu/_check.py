"""Argument checks shared by the wrappers: clear errors before anything reaches C."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from emu.errors import EmuValueError

U64_MAX = (1 << 64) - 1


def as_int(value: Any, name: str) -> int:
    """``value`` as a Python int; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise EmuValueError(f"{name} must be an integer, got {type(value).__name__}")
    return operator.index(value)


def u64(value: Any, name: str) -> int:
    """An integer in [0, 2^64)."""
    v = as_int(value, name)
    if not 0 <= v <= U64_MAX:
        raise EmuValueError(f"{name}={v:#x} is outside [0, 2^64)")
    return v


def u64_array(arr: Any, name: str) -> np.ndarray[Any, np.dtype[np.uint64]]:
    """A C-contiguous uint64 array; signed input must be non-negative."""
    a = np.asarray(arr)
    if a.ndim != 1:
        raise EmuValueError(f"{name} must be one-dimensional, got shape {a.shape}")
    if a.dtype == np.uint64:
        return np.ascontiguousarray(a)
    if a.dtype.kind == "i":
        if a.size and int(a.min()) < 0:
            raise EmuValueError(f"{name} holds a negative address")
        return np.ascontiguousarray(a, dtype=np.uint64)
    if a.dtype.kind == "u":
        return np.ascontiguousarray(a, dtype=np.uint64)
    if a.dtype == object and a.size == 0:
        return np.zeros(0, dtype=np.uint64)
    raise EmuValueError(f"{name} must hold unsigned 64-bit integers, got {a.dtype}")
