"""Malformed walk arguments: a clear ``emu.EmuValueError`` naming the bad input, and
nothing written to physical memory.

Every test first builds a mapping that the same walk with good arguments would mark
accessed and dirty (checked by the ``*_control`` tests), so a walk that went ahead
anyway would show in memory.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pytest

from emu import EmuValueError, arch
from emu.paging import PageTableBuilder

VA = 0x0000_7F00_0000_1234
PAGE_PA = 0x0004_2000
A_D = arch.PTE_A | arch.PTE_D


def words(mem: Any) -> dict[int, int]:
    """Every non-zero 8-byte word of ``mem``."""
    if hasattr(mem, "words"):
        return {pa: v for pa, v in mem.words.items() if v}
    out = {}
    for pfn in mem.frames():
        base = int(pfn) << 12
        for i, v in enumerate(mem.read_table(base)):
            if v:
                out[base + 8 * i] = int(v)
    return out


def mapped(mem: Any) -> PageTableBuilder:
    """A user, writable 4 KiB page at ``VA`` with every A/D bit clear."""
    b = PageTableBuilder(mem)
    b.map(VA & ~0xFFF, PAGE_PA, flags=arch.PTE_P | arch.PTE_RW | arch.PTE_US)
    return b


@pytest.fixture
def cimpl() -> Any:
    """The C core's PhysMem and walk_batch (skipped as ``impl`` is when unbuilt)."""
    try:
        import emu

        return emu.PhysMem, emu.walk, emu.walk_batch
    except ImportError as exc:
        if os.environ.get("EMU_REQUIRE_C") == "1":
            raise
        pytest.skip(f"C core not importable: {exc}")


# --- scalar walk, both implementations --------------------------------------------

GOOD = {"access": "w", "va": VA, "user": True}


def test_scalar_control_good_arguments_set_a_and_d(impl: Any) -> None:
    mem = impl.PhysMem()
    b = mapped(mem)
    r = impl.walk(mem, VA, "w", cr3=b.cr3, user=True)
    assert r.ok
    assert r.pa == PAGE_PA | 0x234
    assert b.get_entry(VA, arch.LVL_PT) & A_D == A_D


# fmt: off
BAD_SCALAR = [
    # (id, overrides of the good call, name the message must contain)
    ("access_q", {"access": "q"}, "access"),
    ("access_upper_r", {"access": "R"}, "access"),
    ("access_rw", {"access": "rw"}, "access"),
    ("access_empty", {"access": ""}, "access"),
    ("access_none", {"access": None}, "access"),
    ("access_int_code", {"access": 1}, "access"),
    ("access_bytes", {"access": b"r"}, "access"),
    ("va_negative", {"va": -1}, "va"),
    ("va_2_pow_64", {"va": 1 << 64}, "va"),
    ("va_huge", {"va": 1 << 100}, "va"),
    ("va_float", {"va": float(VA)}, "va"),
    ("va_str", {"va": hex(VA)}, "va"),
    ("va_none", {"va": None}, "va"),
    ("va_bool", {"va": True}, "va"),
    ("cr3_float", {"cr3": 4096.0}, "cr3"),
    ("cr3_str", {"cr3": "0x1000"}, "cr3"),
    ("cr3_none", {"cr3": None}, "cr3"),
    ("cr3_negative", {"cr3": -4096}, "cr3"),
    ("cr3_2_pow_64", {"cr3": 1 << 64}, "cr3"),
    ("cr3_bit52_maxphyaddr52", {"cr3": "ROOT", "cr3_or": 1 << 52}, "cr3"),
    ("cr3_bit62", {"cr3": "ROOT", "cr3_or": 1 << 62}, "cr3"),
    ("cr3_bit39_maxphyaddr39", {"cr3": "ROOT", "cr3_or": 1 << 39, "maxphyaddr": 39},
     "cr3"),
    ("cr3_bit36_maxphyaddr36", {"cr3": "ROOT", "cr3_or": 1 << 36, "maxphyaddr": 36},
     "cr3"),
    ("maxphyaddr_31", {"maxphyaddr": 31}, "maxphyaddr"),
    ("maxphyaddr_53", {"maxphyaddr": 53}, "maxphyaddr"),
    ("maxphyaddr_0", {"maxphyaddr": 0}, "maxphyaddr"),
    ("maxphyaddr_64", {"maxphyaddr": 64}, "maxphyaddr"),
    ("maxphyaddr_negative", {"maxphyaddr": -48}, "maxphyaddr"),
    ("maxphyaddr_str", {"maxphyaddr": "48"}, "maxphyaddr"),
    ("maxphyaddr_float", {"maxphyaddr": 48.0}, "maxphyaddr"),
    ("a_policy_bochs", {"a_policy": "bochs"}, "a_policy"),
    ("a_policy_upper", {"a_policy": "QEMU"}, "a_policy"),
    ("a_policy_empty", {"a_policy": ""}, "a_policy"),
    ("a_policy_none", {"a_policy": None}, "a_policy"),
    ("pkru_negative", {"pkru": -1}, "pkru"),
    ("pkru_33_bits", {"pkru": 1 << 32}, "pkru"),
]
# fmt: on


def call_with(impl: Any, mem: Any, root: int, overrides: dict[str, Any]) -> Any:
    kw = dict(overrides)
    va = kw.pop("va", VA)
    access = kw.pop("access", "w")
    cr3 = kw.pop("cr3", "ROOT")
    if cr3 == "ROOT":
        cr3 = root | kw.pop("cr3_or", 0)
    return impl.walk(mem, va, access, cr3=cr3, user=True, **kw)


@pytest.mark.parametrize(
    ("overrides", "name"), [pytest.param(o, n, id=i) for i, o, n in BAD_SCALAR]
)
def test_bad_argument_raises_naming_it_and_writes_nothing(
    impl: Any, overrides: dict[str, Any], name: str
) -> None:
    mem = impl.PhysMem()
    b = mapped(mem)
    before = words(mem)
    with pytest.raises(EmuValueError, match=rf"\b{name}\b"):
        call_with(impl, mem, b.cr3, overrides)
    assert words(mem) == before


@pytest.mark.parametrize("policy", ["qemu", "success"])
def test_bad_va_under_either_a_policy_writes_nothing(impl: Any, policy: str) -> None:
    mem = impl.PhysMem()
    b = mapped(mem)
    before = words(mem)
    with pytest.raises(EmuValueError, match=r"\bva\b"):
        impl.walk(mem, -VA, "r", cr3=b.cr3, a_policy=policy)
    assert words(mem) == before


@pytest.mark.parametrize("m", [32, 52])
def test_maxphyaddr_bounds_are_accepted(impl: Any, m: int) -> None:
    mem = impl.PhysMem()
    b = mapped(mem)
    assert impl.walk(mem, VA, "r", cr3=b.cr3, maxphyaddr=m).ok


# --- the C walker given the reference memory --------------------------------------


def test_c_walk_refuses_reference_physmem_and_writes_nothing(cimpl: Any) -> None:
    import emu.ref

    _, walk, walk_batch = cimpl
    mem = emu.ref.PhysMem()
    b = mapped(mem)
    before = words(mem)
    with pytest.raises(EmuValueError, match=r"\bmem\b"):
        walk(mem, VA, "w", cr3=b.cr3, user=True)
    with pytest.raises(EmuValueError, match=r"\bmem\b"):
        walk_batch(mem, np.array([VA], dtype=np.uint64), "w", cr3=b.cr3)
    assert words(mem) == before


@pytest.mark.parametrize("mem", [None, {}, 0x1000], ids=["None", "dict", "int"])
def test_c_walk_refuses_non_physmem(cimpl: Any, mem: Any) -> None:
    _, walk, _ = cimpl
    with pytest.raises(EmuValueError, match=r"\bmem\b"):
        walk(mem, VA, "r", cr3=0x1000)


# --- walk_batch (C) ---------------------------------------------------------------


def test_batch_control_good_arrays_set_a_and_d(cimpl: Any) -> None:
    physmem, _, walk_batch = cimpl
    mem = physmem()
    b = mapped(mem)
    out = walk_batch(
        mem,
        np.array([VA, VA + 8], dtype=np.uint64),
        np.array([arch.ACC_READ, arch.ACC_WRITE], dtype=np.uint8),
        cr3=b.cr3,
    )
    assert out["vector"].tolist() == [0, 0]
    assert out["pa"].tolist() == [PAGE_PA | 0x234, PAGE_PA | 0x23C]
    assert b.get_entry(VA, arch.LVL_PT) & A_D == A_D


U8 = np.uint8
GOOD_VAS = np.array([VA, VA + 8, VA + 16], dtype=np.uint64)
GOOD_ACC = np.array([arch.ACC_WRITE] * 3, dtype=U8)

# fmt: off
BAD_BATCH = [
    # (id, vas, accesses, name the message must contain)
    ("accesses_shorter", GOOD_VAS, GOOD_ACC[:2], "accesses"),
    ("accesses_longer", GOOD_VAS, np.ones(4, dtype=U8), "accesses"),
    ("accesses_2d", GOOD_VAS, GOOD_ACC.reshape(3, 1), "accesses"),
    ("accesses_scalar_array", GOOD_VAS, np.array(1, dtype=U8), "accesses"),
    ("code_3_after_a_good_write", GOOD_VAS, np.array([1, 3, 1], dtype=U8),
     "accesses"),
    ("code_3_first", GOOD_VAS, np.array([3, 1, 1], dtype=U8), "accesses"),
    ("code_0x10_last", GOOD_VAS, np.array([1, 1, 0x10], dtype=U8), "accesses"),
    ("code_0xff", GOOD_VAS, np.array([1, 0xFF, 1], dtype=U8), "accesses"),
    ("code_user_fetch_with_stray_bit", GOOD_VAS,
     np.array([1, arch.ACC_FETCH | arch.ACC_USER | 0x40, 1], dtype=U8), "accesses"),
    ("code_negative_int", GOOD_VAS, np.array([1, -1, 1], dtype=np.int64), "accesses"),
    ("code_256_int", GOOD_VAS, np.array([1, 256, 1], dtype=np.int32), "accesses"),
    ("codes_float", GOOD_VAS, np.array([1.0, 1.0, 1.0]), "accesses"),
    ("access_string_q", GOOD_VAS, "q", "access"),
    ("access_string_rw", GOOD_VAS, "rw", "access"),
    ("vas_2d", GOOD_VAS.reshape(3, 1), GOOD_ACC.reshape(3, 1), "vas"),
    ("vas_negative_int64", np.array([VA, -1, VA], dtype=np.int64), GOOD_ACC, "vas"),
    ("vas_float", np.array([float(VA)] * 3), GOOD_ACC, "vas"),
    ("vas_str", np.array(["0x1000"] * 3), GOOD_ACC, "vas"),
]
# fmt: on


@pytest.mark.parametrize(
    ("vas", "accesses", "name"),
    [pytest.param(v, a, n, id=i) for i, v, a, n in BAD_BATCH],
)
def test_batch_bad_arrays_raise_naming_them_and_write_nothing(
    cimpl: Any, vas: Any, accesses: Any, name: str
) -> None:
    physmem, _, walk_batch = cimpl
    mem = physmem()
    b = mapped(mem)
    before = words(mem)
    with pytest.raises(EmuValueError, match=rf"\b{name}\b"):
        walk_batch(mem, vas, accesses, cr3=b.cr3)
    assert words(mem) == before


def test_batch_bad_code_error_names_its_index(cimpl: Any) -> None:
    physmem, _, walk_batch = cimpl
    mem = physmem()
    b = mapped(mem)
    with pytest.raises(EmuValueError, match=r"accesses\[2\]"):
        walk_batch(
            mem,
            np.array([VA] * 4, dtype=np.uint64),
            np.array([0, 1, 3, 1], dtype=U8),
            cr3=b.cr3,
        )


@pytest.mark.parametrize(
    ("control", "name"),
    [
        pytest.param({"cr3_or": 1 << 52}, "cr3", id="cr3_reserved"),
        pytest.param({"maxphyaddr": 60}, "maxphyaddr", id="maxphyaddr_60"),
        pytest.param({"a_policy": "intel"}, "a_policy", id="a_policy_intel"),
        pytest.param({"pkru": -1}, "pkru", id="pkru_negative"),
    ],
)
def test_batch_bad_control_raises_naming_it_and_writes_nothing(
    cimpl: Any, control: dict[str, Any], name: str
) -> None:
    physmem, _, walk_batch = cimpl
    mem = physmem()
    b = mapped(mem)
    before = words(mem)
    kw = dict(control)
    cr3 = b.cr3 | kw.pop("cr3_or", 0)
    with pytest.raises(EmuValueError, match=rf"\b{name}\b"):
        walk_batch(mem, GOOD_VAS, GOOD_ACC, cr3=cr3, **kw)
    assert words(mem) == before


def test_batch_of_zero_accesses_is_fine(cimpl: Any) -> None:
    physmem, _, walk_batch = cimpl
    mem = physmem()
    b = mapped(mem)
    out = walk_batch(
        mem, np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=U8), cr3=b.cr3
    )
    assert len(out) == 0
