"""Trace format detection: magic bytes first, then content, then the file suffix."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from emu.trace._stream import COMPRESSION_SUFFIXES
from emu.trace.records import TraceFormatError

#: every format ``emu.trace.read`` accepts
FORMATS = (
    "lackey",
    "champsim",
    "champsim-cloudsuite",
    "pinatrace",
    "din",
    "xdin",
    "native",
    "native-bin",
)

NATIVE_MAGIC = b"\x89mmulab\n"
NATIVE_TEXT_HEADER = b"#mmulab-trace"

_SUFFIXES = (
    (".lackey", "lackey"),
    (".champsimtrace", "champsim"),
    (".champsim", "champsim"),
    (".cloudsuite", "champsim-cloudsuite"),
    ("pinatrace.out", "pinatrace"),
    (".pinatrace", "pinatrace"),
    (".xdin", "xdin"),
    (".din", "din"),
    (".mmt", "native"),
    (".mmb", "native-bin"),
)

# One regex per text format, for a line without its newline.
_TEXT_RES = {
    "lackey": re.compile(rb"^(?:I  | [LSM] )[0-9a-fA-F]+,[0-9]+\r?$|^==\d+==|^SB "),
    "pinatrace": re.compile(
        rb"^(?:0x[0-9a-fA-F]+|\(nil\)): [RW] (?:0x[0-9a-fA-F]+|\(nil\))"
    ),
    "din": re.compile(
        rb"^[ \t]*(?:0[xX])?[0-9a-fA-F]+[ \t]+(?:0[xX])?[0-9a-fA-F]+(?:[ \t]|\r?$)"
    ),
    "xdin": re.compile(
        rb"^[ \t]*[rwimcv][ \t]+(?:0[xX])?[0-9a-fA-F]+[ \t]+(?:0[xX])?[0-9a-fA-F]+"
    ),
    "native": re.compile(rb"^[RWXM][ \t]+(?:0[xX])?[0-9a-fA-F]+(?:[ \t]|\r?$)"),
}
_SAMPLE_LINES = 64


def _is_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    sample = head[:4096]
    odd = sum(1 for b in sample if b < 9 or 13 < b < 32 or b == 127)
    return odd * 50 <= len(sample)


def _by_suffix(name: str) -> str | None:
    name = name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    return None


def _by_text(head: bytes) -> str | None:
    lines = head.split(b"\n")
    if len(head) == len(head.rstrip(b"\n")) and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut by the sniff window
    votes = dict.fromkeys(_TEXT_RES, 0)
    seen = 0
    for line in lines:
        if line.startswith(NATIVE_TEXT_HEADER):
            return "native"
        if not line.strip() or (line.startswith(b"#") and not line.startswith(b"#eof")):
            continue
        seen += 1
        for fmt, rx in _TEXT_RES.items():
            if rx.match(line):
                votes[fmt] += 1
        if seen >= _SAMPLE_LINES:
            break
    best = max(votes, key=lambda f: votes[f])
    if votes[best] == 0:
        return None
    if list(votes.values()).count(votes[best]) > 1:
        return None
    return best


def _plausible_champsim(head: bytes, record_bytes: int) -> bool:
    """Whether ``head`` looks like ChampSim records of ``record_bytes`` bytes."""
    from emu.trace.champsim import layout

    dt = layout(record_bytes)
    n = min(len(head) // record_bytes, 64)
    if n == 0:
        return False
    recs = np.frombuffer(head, dtype=dt, count=n)

    def canonical(a: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        top = a >> np.uint64(47)
        ok: np.ndarray[Any, Any] = (top == 0) | (top == np.uint64((1 << 17) - 1))
        return ok

    ok = (recs["is_branch"] <= 1) & (recs["branch_taken"] <= 1)
    ok &= (recs["ip"] != 0) & canonical(recs["ip"])
    ok &= canonical(recs["destination_memory"]).all(axis=1)
    ok &= canonical(recs["source_memory"]).all(axis=1)
    return bool(ok.all())


def detect(head: bytes, name: str) -> str:
    """Name the format of a trace from its first bytes and its name.

    Args:
        head: the first (decompressed) bytes, 64 KiB or the whole input if shorter.
        name: the input's name (its suffix is a hint; .gz/.xz/.bz2 are looked through).

    Returns:
        One of :data:`FORMATS`.

    Raises:
        TraceFormatError: the format cannot be told; pass ``format=`` then.
    """
    if head.startswith(NATIVE_MAGIC):
        return "native-bin"
    hint = _by_suffix(name)
    if not head:
        return hint or "native"
    if _is_text(head):
        found = _by_text(head)
        if found is not None:
            return found
        if hint is not None:
            return hint
        raise TraceFormatError(
            name, "text trace of unknown format; pass format= (--format)", line=1
        )
    if hint in ("champsim", "champsim-cloudsuite"):
        if (
            hint == "champsim"
            and not _plausible_champsim(head, 64)
            and _plausible_champsim(head, 96)
        ):
            return "champsim-cloudsuite"
        return hint
    if hint is not None:
        return hint
    if _plausible_champsim(head, 64):
        return "champsim"
    if _plausible_champsim(head, 96):
        return "champsim-cloudsuite"
    raise TraceFormatError(
        name,
        "binary input of unknown format (not mmulab native, not ChampSim)",
        offset=0,
    )
