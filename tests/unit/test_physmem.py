"""Simulated physical memory: the C ``emu.PhysMem`` and, where it applies, the
dict-based ``emu.ref.PhysMem``.

Memory is sparse: 4 KiB frames, zero until written, addresses below 2^52, and a
malformed address is an ``emu.EmuValueError`` that changes nothing.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emu import EmuValueError

PA_LIMIT = 1 << 52
TOP_WORD = PA_LIMIT - 8
FRAME = 4096
TIB = 1 << 40


@pytest.fixture
def cmem() -> Any:
    """A fresh C PhysMem (skipped, as ``impl`` is, when the core cannot be built)."""
    try:
        import emu

        cls = emu.PhysMem
    except ImportError as exc:
        if os.environ.get("EMU_REQUIRE_C") == "1":
            raise
        pytest.skip(f"C core not importable: {exc}")
    return cls()


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


# --- both implementations ---------------------------------------------------------


@pytest.mark.parametrize("pa", [0, 8, 0x1000, 0xDEAD_BEE8, 1 << 40, TOP_WORD], ids=hex)
def test_unwritten_word_reads_zero(impl: Any, pa: int) -> None:
    assert impl.PhysMem().read_u64(pa) == 0


@pytest.mark.parametrize(
    "value", [0, 1, 0x0123_4567_89AB_CDEF, 1 << 63, (1 << 64) - 1], ids=hex
)
def test_write_u64_then_read_u64_returns_the_value(impl: Any, value: int) -> None:
    mem = impl.PhysMem()
    mem.write_u64(0x7FF8, value)
    assert mem.read_u64(0x7FF8) == value


def test_write_u64_leaves_neighbouring_words_alone(impl: Any) -> None:
    mem = impl.PhysMem()
    mem.write_u64(0x2000, (1 << 64) - 1)
    mem.write_u64(0x2008, 0x1111)
    mem.write_u64(0x2000, 0x42)
    assert (
        mem.read_u64(0x1FF8),
        mem.read_u64(0x2000),
        mem.read_u64(0x2008),
        mem.read_u64(0x2010),
    ) == (0, 0x42, 0x1111, 0)


def test_highest_word_below_2_pow_52_works(impl: Any) -> None:
    mem = impl.PhysMem()
    mem.write_u64(TOP_WORD, 0xFEED_F00D)
    mem.write_u64(0, 7)
    assert mem.read_u64(TOP_WORD) == 0xFEED_F00D
    assert mem.read_u64(TOP_WORD - 8) == 0
    assert mem.read_u64(0) == 7


@pytest.mark.parametrize(
    "pa", [np.uint64(0x3008), np.int64(0x3008)], ids=["uint64", "int64"]
)
def test_numpy_integer_address_is_accepted(impl: Any, pa: Any) -> None:
    mem = impl.PhysMem()
    mem.write_u64(pa, 9)
    assert mem.read_u64(0x3008) == 9


BAD_PA = [
    pytest.param(0x1001, id="misaligned_by_1"),
    pytest.param(0x1004, id="misaligned_by_4"),
    pytest.param(TOP_WORD + 4, id="misaligned_near_top"),
    pytest.param(-8, id="negative"),
    pytest.param(PA_LIMIT, id="2^52"),
    pytest.param(PA_LIMIT + 8, id="above_2^52"),
    pytest.param(1 << 63, id="2^63"),
    pytest.param(1 << 64, id="2^64"),
    pytest.param(4096.0, id="float"),
    pytest.param("0x1000", id="str"),
    pytest.param(None, id="None"),
    pytest.param(True, id="bool"),
]


@pytest.mark.parametrize("pa", BAD_PA)
def test_bad_address_raises_emu_value_error_and_changes_nothing(
    impl: Any, pa: Any
) -> None:
    mem = impl.PhysMem()
    mem.write_u64(0x1000, 0xAAAA)
    before = words(mem)
    with pytest.raises(EmuValueError, match=r"\bpa\b"):
        mem.write_u64(pa, 0x5555)
    with pytest.raises(EmuValueError, match=r"\bpa\b"):
        mem.read_u64(pa)
    assert words(mem) == before


@pytest.mark.parametrize(
    "value",
    [-1, 1 << 64, 1.0, "1", None],
    ids=["negative", "2^64", "float", "str", "None"],
)
def test_bad_value_raises_emu_value_error_and_changes_nothing(
    impl: Any, value: Any
) -> None:
    mem = impl.PhysMem()
    mem.write_u64(0x1000, 0xAAAA)
    with pytest.raises(EmuValueError, match="value"):
        mem.write_u64(0x1000, value)
    with pytest.raises(EmuValueError, match="value"):
        mem.write_u64(0x2000, value)
    assert words(mem) == {0x1000: 0xAAAA}


def test_emu_value_error_is_a_value_error() -> None:
    assert issubclass(EmuValueError, ValueError)


# --- C PhysMem: bytes -------------------------------------------------------------


def test_write_bytes_across_a_frame_boundary_lands_in_both_frames(cmem: Any) -> None:
    cmem.write_bytes(0x1FFC, bytes(range(1, 9)))
    assert cmem.read_u64(0x1FF8) == 0x0403_0201_0000_0000
    assert cmem.read_u64(0x2000) == 0x0000_0000_0807_0605
    assert cmem.read_bytes(0x1FFA, 12) == b"\0\0" + bytes(range(1, 9)) + b"\0\0"
    assert cmem.frame_count == 2
    assert cmem.frames().tolist() == [1, 2]


def test_write_bytes_spanning_three_frames(cmem: Any) -> None:
    data = bytes(i % 251 for i in range(FRAME + 2))
    cmem.write_bytes(0xFFF, data)
    assert cmem.frames().tolist() == [0, 1, 2]
    assert cmem.read_bytes(0xFFF, len(data)) == data
    assert cmem.read_bytes(0xFF8, 8) == b"\0" * 7 + data[:1]
    assert cmem.read_bytes(0x3000 - 8, 8) == b"\0" * 8  # 0x2001.. past the data
    assert cmem.read_bytes(0x2000, 1) == data[-1:]


def test_words_are_little_endian_bytes(cmem: Any) -> None:
    cmem.write_u64(0x7008, 0x0102_0304_0506_0708)
    assert cmem.read_bytes(0x7008, 8) == bytes([8, 7, 6, 5, 4, 3, 2, 1])


def test_read_bytes_of_unwritten_memory_is_zero_and_creates_no_frame(cmem: Any) -> None:
    assert cmem.read_bytes(0x5FF0, 64) == bytes(64)
    assert cmem.read_bytes(0x5FF0, 0) == b""
    assert cmem.frame_count == 0


def test_write_bytes_reaching_2_pow_52_raises_and_writes_nothing(cmem: Any) -> None:
    cmem.write_bytes(PA_LIMIT - 4, b"\x01\x02\x03\x04")
    assert cmem.read_u64(TOP_WORD) == 0x0403_0201_0000_0000
    before = words(cmem)
    with pytest.raises(EmuValueError, match=r"\bpa\b"):
        cmem.write_bytes(PA_LIMIT - 4, b"\xff" * 8)
    with pytest.raises(EmuValueError, match=r"\bpa\b"):
        cmem.read_bytes(PA_LIMIT - 4, 8)
    assert words(cmem) == before


@pytest.mark.parametrize(
    "n", [-1, 1.5, "8", None], ids=["negative", "float", "str", "None"]
)
def test_read_bytes_with_bad_length_raises(cmem: Any, n: Any) -> None:
    with pytest.raises(EmuValueError, match=r"\bn\b"):
        cmem.read_bytes(0x1000, n)


# --- C PhysMem: tables ------------------------------------------------------------


def test_write_table_then_read_table_and_read_u64_agree(cmem: Any) -> None:
    entries = np.arange(512, dtype=np.uint64) * np.uint64(0x1001) + np.uint64(1)
    entries[511] = np.uint64((1 << 64) - 1)
    cmem.write_table(0x7000, entries)
    got = cmem.read_table(0x7000)
    assert got.dtype == np.uint64
    assert got.shape == (512,)
    assert np.array_equal(got, entries)
    assert cmem.read_u64(0x7000) == 1
    assert cmem.read_u64(0x7000 + 8 * 5) == 5 * 0x1001 + 1
    assert cmem.read_u64(0x7FF8) == (1 << 64) - 1
    assert cmem.frames().tolist() == [7]


def test_write_table_accepts_a_list_of_ints(cmem: Any) -> None:
    cmem.write_table(0x3000, [i << 12 | 3 for i in range(512)])
    assert cmem.read_u64(0x3000 + 8 * 100) == 100 << 12 | 3


def test_read_table_of_unwritten_frame_is_zero_and_creates_no_frame(cmem: Any) -> None:
    assert not cmem.read_table(0x9000).any()
    assert cmem.frame_count == 0


def test_read_table_returns_a_copy(cmem: Any) -> None:
    cmem.write_u64(0x4000, 5)
    t = cmem.read_table(0x4000)
    t[0] = 6
    assert cmem.read_u64(0x4000) == 5


@pytest.mark.parametrize(
    "pa",
    [0x7008, 0x7800, -0x1000, PA_LIMIT, 1.0],
    ids=["misaligned_8", "misaligned_2048", "negative", "2^52", "float"],
)
def test_table_at_bad_address_raises_and_writes_nothing(cmem: Any, pa: Any) -> None:
    cmem.write_u64(0x1000, 1)
    with pytest.raises(EmuValueError, match=r"\bpa\b"):
        cmem.write_table(pa, np.ones(512, dtype=np.uint64))
    with pytest.raises(EmuValueError, match=r"\bpa\b"):
        cmem.read_table(pa)
    assert words(cmem) == {0x1000: 1}


@pytest.mark.parametrize(
    "shape", [(511,), (513,), (0,), (2, 256)], ids=["511", "513", "empty", "2x256"]
)
def test_write_table_with_wrong_shape_raises_and_writes_nothing(
    cmem: Any, shape: Any
) -> None:
    with pytest.raises(EmuValueError, match="512"):
        cmem.write_table(0x7000, np.ones(shape, dtype=np.uint64))
    assert cmem.frame_count == 0


def test_highest_table_below_2_pow_52_works(cmem: Any) -> None:
    top = PA_LIMIT - FRAME
    cmem.write_table(top, np.full(512, 0xAB, dtype=np.uint64))
    assert cmem.read_u64(TOP_WORD) == 0xAB
    assert cmem.frames().tolist() == [(PA_LIMIT >> 12) - 1]


# --- C PhysMem: frames, discard, host memory --------------------------------------


def test_frame_count_counts_frames_written_not_words_or_reads(cmem: Any) -> None:
    for pa in range(0x1000, 0x2000, 8):
        cmem.write_u64(pa, pa)
    for pa in range(0, 1 << 30, 1 << 20):
        cmem.read_u64(pa)
    cmem.read_bytes(0x10_0000, 3 * FRAME)
    cmem.read_table(0x20_0000)
    assert cmem.frame_count == 1
    cmem.write_u64(0x2000, 1)
    assert cmem.frame_count == 2


def test_frames_are_listed_ascending_whatever_the_write_order(cmem: Any) -> None:
    rng = random.Random(1234)
    pfns = [*rng.sample(range(1 << 40), 300), 0, (1 << 40) - 1]
    rng.shuffle(pfns)
    for pfn in pfns:
        cmem.write_u64((pfn << 12) + 8 * rng.randrange(512), pfn | 1)
    got = cmem.frames()
    assert got.dtype == np.uint64
    assert got.tolist() == sorted(pfns)
    assert cmem.frame_count == len(pfns)


def test_frames_of_empty_memory_is_empty(cmem: Any) -> None:
    assert cmem.frames().tolist() == []
    assert cmem.frame_count == 0


def test_discard_forgets_a_frame(cmem: Any) -> None:
    cmem.write_u64(0x5008, 0x55)
    cmem.write_u64(0x6010, 0x66)
    used = cmem.bytes_used
    cmem.discard(5)
    assert cmem.read_u64(0x5008) == 0
    assert cmem.read_u64(0x6010) == 0x66
    assert cmem.frame_count == 1
    assert cmem.frames().tolist() == [6]
    assert cmem.bytes_used <= used - FRAME
    cmem.write_u64(0x5000, 1)  # a discarded frame can be written again, from zero
    assert cmem.read_u64(0x5008) == 0
    assert cmem.frame_count == 2


def test_discard_of_a_never_written_frame_changes_nothing(cmem: Any) -> None:
    cmem.write_u64(0x5008, 0x55)
    cmem.discard(6)
    cmem.discard((1 << 40) - 1)
    assert words(cmem) == {0x5008: 0x55}
    assert cmem.frame_count == 1


@pytest.mark.parametrize(
    "pfn",
    [-1, 1 << 40, 1 << 52, 5.0, "5", None],
    ids=["negative", "2^40", "2^52", "float", "str", "None"],
)
def test_discard_with_bad_pfn_raises_and_changes_nothing(cmem: Any, pfn: Any) -> None:
    cmem.write_u64(0x5008, 0x55)
    with pytest.raises(EmuValueError, match=r"\bpfn\b"):
        cmem.discard(pfn)
    assert words(cmem) == {0x5008: 0x55}


def test_bytes_used_grows_with_frames_written_only(cmem: Any) -> None:
    n = 2000
    step = (TIB // n) & ~(FRAME - 1)
    empty = cmem.bytes_used
    for pa in range(0, TIB, 1 << 28):  # reading costs nothing
        cmem.read_u64(pa)
    assert cmem.bytes_used == empty
    for i in range(n):
        cmem.write_u64(i * step + 8 * (i % 512), i + 1)
    assert cmem.frame_count == n
    assert n * FRAME <= cmem.bytes_used <= 2 * n * FRAME
    assert cmem.read_u64((n - 1) * step + 8 * ((n - 1) % 512)) == n
    assert cmem.frames()[-1] == ((n - 1) * step) >> 12


# --- read_path: the entries on a walk's path in one call ---------------------------


def path_by_words(mem: Any, table: int, va: int, top: int) -> list[int]:
    """The same path read one word at a time (the definition read_path follows)."""
    out = []
    for level in range(top, 0, -1):
        e = mem.read_u64(table + 8 * ((va >> (12 + 9 * (level - 1))) & 0x1FF))
        out.append(e)
        if e == 0:
            break
        table = e & 0x000F_FFFF_FFFF_F000
    return out


@given(
    entries=st.lists(
        st.sampled_from(
            [0, 0x2003, 0x3003, 0x4083, 0x5002, 0x8000_0000_0000_6063, 0x7FFF_F000_0001]
        ),
        min_size=4,
        max_size=4,
    ),
    va=st.integers(0, (1 << 64) - 1),
    top=st.sampled_from([4, 5]),
)
@settings(max_examples=200, deadline=None)
def test_read_path_equals_reading_word_by_word(entries, va, top) -> None:
    mem = pytest.importorskip("emu.physmem").PhysMem()
    # tables at 0x1000.. 0x7000 chained through whatever the entries name
    for k, e in enumerate(entries):
        for t in range(1, 8):
            mem.write_u64(t * 0x1000 + 8 * ((va >> (12 + 9 * (3 - k))) & 0x1FF), e)
    assert mem.read_path(0x1000, va, top) == path_by_words(mem, 0x1000, va, top)


def test_read_path_stops_after_a_zero_entry_and_reads_unwritten_memory_as_zero(
    cmem: Any,
) -> None:
    va = 0x7F12_3456_7000
    cmem.write_u64(0x1000 + 8 * ((va >> 39) & 0x1FF), 0x2067)
    cmem.write_u64(0x2000 + 8 * ((va >> 30) & 0x1FF), 0x3067)
    assert cmem.read_path(0x1000, va, 4) == [0x2067, 0x3067, 0]
    assert cmem.read_path(0x9000, va, 4) == [0]
    assert cmem.frame_count == 2


@pytest.mark.parametrize(
    ("table", "top", "match"),
    [
        (0x1008, 4, "table_pa=0x1008 is not 4096-byte aligned"),
        (1 << 52, 4, "reaches beyond 2\\^52"),
        (0x1000, 0, "top_level=0 must be 1..5"),
        (0x1000, 6, "top_level=6 must be 1..5"),
        (0x1000, True, "top_level=True must be 1..5"),
    ],
)
def test_read_path_refuses_bad_arguments(cmem: Any, table, top, match) -> None:
    with pytest.raises(EmuValueError, match=match):
        cmem.read_path(table, 0, top)
