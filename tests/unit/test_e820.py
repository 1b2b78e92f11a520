"""kernel_model.e820: sanitising, edits, the four input formats, the real machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu.errors import EmuValueError
from kernel_model.e820 import (
    E820Entry,
    E820Table,
    E820Type,
    KernelImage,
    PhysRange,
    e820__update_table,
    parse_size,
)

RAM, RES, ACPI, NVS, UNUSABLE = (E820Type.RAM, E820Type.RESERVED, E820Type.ACPI,
                                 E820Type.NVS, E820Type.UNUSABLE)
PRAM, PMEM, SOFT = E820Type.PRAM, E820Type.PMEM, E820Type.SOFT_RESERVED
G = 1 << 30
M = 1 << 20
MACHINE = Path(__file__).resolve().parents[1] / "data" / "machine"


def triples(table: E820Table) -> list[tuple[int, int, int]]:
    return [(e.start, e.end, e.type) for e in table]


# --- sizes and from_ram_size ----------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("16G", 16 * G), ("512M", 512 * M), ("1T", 1 << 40), ("64G", 64 * G),
    ("64GiB", 64 * G), ("2m", 2 * M), ("4096", 4096), ("0x200000", 2 * M),
    (" 8 G ", 8 * G), (12345, 12345),
])
def test_parse_size_accepts_memparse_units(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["", "16X", "G", "1.5G", "-1G", -5, True, 3.0])
def test_parse_size_rejects_malformed(bad: object) -> None:
    with pytest.raises(EmuValueError):
        parse_size(bad)  # type: ignore[arg-type]


def test_from_ram_size_16g_is_pc_layout_with_pci_hole() -> None:
    assert triples(E820Table.from_ram_size("16G")) == [
        (0, 0x9FC00, RAM),
        (0x9FC00, 0x100000, RES),
        (0x100000, 3 * G, RAM),
        (0xFEC00000, 4 * G, RES),
        (4 * G, 17 * G, RAM),
    ]


def test_from_ram_size_512m_has_no_ram_above_4g() -> None:
    table = E820Table.from_ram_size("512M")
    assert triples(table) == [
        (0, 0x9FC00, RAM), (0x9FC00, 0x100000, RES), (0x100000, 512 * M, RAM),
        (0xFEC00000, 4 * G, RES),
    ]
    assert table.max_pfn == (512 * M) >> 12
    assert table.total_ram_bytes() == 0x9FC00 + 511 * M


@pytest.mark.parametrize(("size", "top"), [("1T", (1 << 40) + G), ("64G", 65 * G),
                                           (3 * G, None), (4 * G, 5 * G)])
def test_from_ram_size_puts_ram_above_3g_after_4g(size: int | str,
                                                  top: int | None) -> None:
    table = E820Table.from_ram_size(size)
    ram = table.ram_ranges()
    assert ram[1] == PhysRange(M, 3 * G)
    if top is None:
        assert len(ram) == 2
    else:
        assert ram[2] == PhysRange(4 * G, top)
    # the firmware table lists RAM minus the legacy hole overlaying it
    assert table.total_ram_bytes() == parse_size(size) - (M - 0x9FC00)


@pytest.mark.parametrize("bad", ["1M", 4095, "2M1", 2 * M + 1, "8P"])
def test_from_ram_size_rejects_bad_sizes(bad: int | str) -> None:
    with pytest.raises(EmuValueError):
        E820Table.from_ram_size(bad)


# --- e820__update_table ---------------------------------------------------------------

# The sample map of the comment above e820__update_table() (arch/x86/kernel/e820.c),
# one character per 4 KiB page: digits are types, '_' is nothing.
_LINUX_SAMPLE = """
____22__________________
______________________4_
____1111________________
_44_____________________
11111111________________
____________________33__
___________44___________
__________33333_________
______________22________
___________________2222_
_________111111111______
_____________________11_
_________________4______
"""
_LINUX_SANITISED = """
1_______________________
_44_____________________
___1____________________
____22__________________
______11________________
_________1______________
__________3_____________
___________44___________
_____________33_________
_______________2________
________________1_______
_________________4______
___________________2____
____________________33__
______________________4_
"""


def _art(text: str) -> list[E820Entry]:
    out = []
    for row in text.split():
        m = re.fullmatch(r"(_*)(\d+)_*", row)
        assert m is not None
        start, n = len(m.group(1)), len(m.group(2))
        out.append(E820Entry(start * 4096, (start + n) * 4096, int(m.group(2)[0])))
    return out


def test_update_table_reproduces_linux_sample_map() -> None:
    assert e820__update_table(_art(_LINUX_SAMPLE)) == _art(_LINUX_SANITISED)


def test_update_table_merges_adjacent_and_overlapping_same_type() -> None:
    table = E820Table([(0x2000, 0x5000, RAM), (0, 0x1000, RAM), (0x1000, 0x3000, RAM),
                       (0x8000, 0x9000, RES), (0x9000, 0xA000, RES)])
    assert triples(table) == [(0, 0x5000, RAM), (0x8000, 0xA000, RES)]


def test_update_table_highest_type_wins_overlaps() -> None:
    table = E820Table([(0, 0x10000, RAM), (0x4000, 0x6000, ACPI), (0x5000, 0x8000, RES),
                       (0x7000, 0x9000, NVS)])
    # ACPI (3) beats reserved (2) in [0x5000, 0x6000); NVS (4) beats reserved after
    assert triples(table) == [(0, 0x4000, RAM), (0x4000, 0x6000, ACPI),
                              (0x6000, 0x7000, RES), (0x7000, 0x9000, NVS),
                              (0x9000, 0x10000, RAM)]


def test_update_table_never_merges_pram_or_soft_reserved() -> None:
    table = E820Table([(0, 0x2000, PRAM), (0x2000, 0x4000, PRAM),
                       (0x1000, 0x3000, PRAM),
                       (0x10000, 0x11000, SOFT), (0x11000, 0x12000, SOFT),
                       (0x20000, 0x21000, PMEM), (0x21000, 0x22000, PMEM)])
    assert triples(table) == [
        (0, 0x1000, PRAM), (0x1000, 0x2000, PRAM), (0x2000, 0x3000, PRAM),
        (0x3000, 0x4000, PRAM), (0x10000, 0x11000, SOFT), (0x11000, 0x12000, SOFT),
        (0x20000, 0x22000, PMEM),
    ]


def test_update_table_drops_empty_entries() -> None:
    assert triples(E820Table([(0x1000, 0x1000, RAM), (0, 0x1000, RES)])) == [
        (0, 0x1000, RES)]


@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 8), st.integers(1, 5)),
                max_size=12))
def test_update_table_matches_cell_by_cell_model(
        cells: list[tuple[int, int, int]]) -> None:
    entries = [E820Entry(s * 4096, (s + n) * 4096, t) for s, n, t in cells]
    grid = [0] * 40
    for s, n, t in cells:
        for i in range(s, s + n):
            grid[i] = max(grid[i], t)
    expected: list[tuple[int, int, int]] = []
    for i, t in enumerate(grid):
        if not t:
            continue
        if expected and expected[-1][1] == i * 4096 and expected[-1][2] == t:
            expected[-1] = (expected[-1][0], (i + 1) * 4096, t)
        else:
            expected.append((i * 4096, (i + 1) * 4096, t))
    assert triples(E820Table(entries)) == expected


@pytest.mark.parametrize("bad", [(0x2000, 0x1000, RAM), (-1, 0x1000, RAM),
                                 (0, 0x1000, 0), (0, 1 << 65, RAM), (0, 0x1000, "RAM")])
def test_entry_rejects_malformed(bad: tuple[object, object, object]) -> None:
    with pytest.raises(EmuValueError):
        E820Entry(*bad)  # type: ignore[arg-type]


# --- edits ----------------------------------------------------------------------------

def test_range_update_splits_an_entry_in_three() -> None:
    table = E820Table([(0, 0x10000, RAM), (0x10000, 0x20000, RES)])
    assert triples(table.range_update(0x4000, 0x2000, RAM, RES)) == [
        (0, 0x4000, RAM), (0x4000, 0x6000, RES), (0x6000, 0x10000, RAM),
        (0x10000, 0x20000, RES)]


def test_range_update_touches_only_old_type_and_merges_result() -> None:
    table = E820Table([(0, 0x1000, RAM), (0x1000, 0x2000, ACPI), (0x2000, 0x3000, RAM)])
    assert triples(table.range_update(0, 0x3000, RAM, ACPI)) == [(0, 0x3000, ACPI)]
    assert table.range_update(0, 0x3000, NVS, RES) == table
    assert table.range_update(0, 0x3000, RAM, RAM) == table


def test_range_remove_with_and_without_type_filter() -> None:
    table = E820Table([(0, 0x4000, RAM), (0x4000, 0x8000, RES)])
    assert triples(table.range_remove(0x2000, 0x4000, RAM)) == [
        (0, 0x2000, RAM), (0x4000, 0x8000, RES)]
    assert triples(table.range_remove(0x2000, 0x4000)) == [
        (0, 0x2000, RAM), (0x6000, 0x8000, RES)]
    assert triples(table.range_remove(0x1000, 0x1000)) == [
        (0, 0x1000, RAM), (0x2000, 0x4000, RAM), (0x4000, 0x8000, RES)]


def test_range_add_resolves_overlap_by_type() -> None:
    table = E820Table([(0, 0x8000, RAM)]).range_add(0x2000, 0x1000, RES)
    assert triples(table) == [(0, 0x2000, RAM), (0x2000, 0x3000, RES),
                              (0x3000, 0x8000, RAM)]


def test_trim_bios_range_reserves_page_zero_and_drops_legacy_ram() -> None:
    table = E820Table([(0, 0xA0000, RAM), (0xA0000, 0xC0000, RAM),
                       (0xF0000, 0x100000, RES), (0x100000, 0x800000, RAM)])
    trimmed = table.trim_bios_range()
    assert triples(trimmed) == [(0, 0x1000, RES), (0x1000, 0xA0000, RAM),
                                (0xF0000, 0x100000, RES), (0x100000, 0x800000, RAM)]
    assert trimmed.trim_bios_range() == trimmed


# --- queries --------------------------------------------------------------------------

def test_pfn_ranges_drop_partial_pages_and_queries() -> None:
    table = E820Table([(0x800, 0x9FC00, RAM), (0x9FC00, 0x100000, RES),
                       (0x100000, 0x1FF800, RAM), (0x1FF800, 0x300000, ACPI),
                       (0x400000, 0x500000, RAM)])
    assert table.pfn_ranges() == [(1, 0x9F), (0x100, 0x1FF), (0x400, 0x500)]
    assert table.holes() == [PhysRange(0, 0x800), PhysRange(0x9FC00, 0x100000),
                             PhysRange(0x1FF800, 0x400000)]
    assert table.max_pfn == 0x500
    assert table.max_low_pfn == 0x500
    assert table.total_pages() == 0x9E + 0xFF + 0x100
    assert table.mapped_any(0x300000, 0x400000) is False
    assert table.mapped_any(0x2FF000, 0x400000) is True
    assert table.mapped_any(0x2FF000, 0x400000, RAM) is False
    assert table.mapped_all(0x100000, 0x1FF800, RAM) is True
    assert table.mapped_all(0x100000, 0x200000, RAM) is False
    assert table.type_at(0x200000) == ACPI
    assert table.type_at(0x350000) is None


def test_max_pfn_counts_acpi_data_and_clamps_at_limit() -> None:
    table = E820Table([(0, 0x100000, RAM), (0x100000, 0x200000, ACPI),
                       (0x200000, 0x300000, NVS)])
    assert table.max_pfn == 0x200
    assert table.end_of_ram_pfn(0x80) == 0x80


def test_format_dmesg_round_trips_through_parse_dmesg() -> None:
    table = E820Table.from_ram_size("6G").range_add(0x7FFF0000, 0x10000, ACPI) \
        .range_add(0x8000000000, 0x1000, PMEM)
    text = table.format_dmesg()
    assert text.splitlines()[0] == \
        "BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff] usable"
    assert "persistent (type 7)" in text
    assert E820Table.parse_dmesg(text) == table
    assert E820Table.parse_firmware_memmap(table.format_firmware_memmap()) == table


# --- parse_dmesg ----------------------------------------------------------------------

DMESG = """\
[    0.000000] Linux version 7.0.0 (builder@host)
[    0.000000] BIOS-provided physical RAM map:
[    0.000000] BIOS-e820: [mem 0x0000000000000000-0x000000000009efff] usable
[    0.000000] BIOS-e820: [mem 0x000000000009f000-0x00000000000fffff] reserved
[    0.000000] BIOS-e820: [mem 0x0000000000100000-0x000000007fffffff] usable
[    0.000000] BIOS-e820: [mem 0x0000000040000000-0x0000000040ffffff] reserved
[    0.000000] BIOS-e820: [mem 0x000000007ff00000-0x000000007fffffff] ACPI NVS
[    0.000000] BIOS-e820: [mem 0x00000000fed1c000-0x00000000fed1ffff] type 20
[    0.000000] BIOS-e820: [mem 0x0000000100000000-0x000000027fffffff] usable
[    0.000000] NX (Execute Disable) protection: active
[    0.004000] e820: update [mem 0x00000000-0x00000fff] usable ==> reserved
[    0.004001] e820: remove [mem 0x000a0000-0x000fffff] usable
[    0.004002] e820: update [mem 0x20000000-0x201fffff] usable ==> ACPI data
[    0.004003] e820: update [mem 0x3f000000-0x3f000fff] usable ==> reserved
[    0.004004] update e820_table_kexec for e820__memblock_alloc_reserved()
[    0.004005] e820: remove [mem 0x200000000-0x27fffffff]
[    0.090000] e820: reserve RAM buffer [mem 0x0009f000-0x0009ffff]
[    0.090001] e820: [mem 0xc0000000-0xfebfffff] available for PCI devices
[    0.091000] PCI: ECAM [mem 0xe0000000-0xefffffff] reserved as E820 entry
"""


def test_parse_dmesg_applies_updates_and_removes_in_order() -> None:
    table = E820Table.parse_dmesg(DMESG)
    assert triples(table) == [
        (0, 0x1000, RES),
        (0x1000, 0x9F000, RAM),
        (0x9F000, 0x100000, RES),
        (0x100000, 0x20000000, RAM),
        (0x20000000, 0x20200000, ACPI),
        (0x20200000, 0x40000000, RAM),
        (0x40000000, 0x41000000, RES),  # reserved (2) beat usable (1) in the overlap
        (0x41000000, 0x7FF00000, RAM),
        (0x7FF00000, 0x80000000, NVS),  # NVS (4) beat usable
        (0xFED1C000, 0xFED20000, 20),
        (0x100000000, 0x200000000, RAM),
    ]
    assert table[-1].type_name == "usable"
    assert table[-2].type_name == "type 20"
    assert table.max_pfn == 0x200000


def test_parse_dmesg_later_table_print_replaces_earlier() -> None:
    text = """\
BIOS-e820: [mem 0x0000000000000000-0x000000000009ffff] usable
BIOS-e820: [mem 0x0000000000100000-0x00000000bfffffff] usable
e820: update [mem 0x00000000-0x00000fff] usable ==> reserved
e820: update [mem 0x0bad0000-0x0bad0fff] usable ==> usable
extended physical RAM map:
reserve setup_data: [mem 0x0000000000000000-0x0000000000000fff] reserved
reserve setup_data: [mem 0x0000000000001000-0x000000000009ffff] usable
reserve setup_data: [mem 0x0000000000100000-0x000000001fffffff] usable
e820: remove [mem 0x10000000-0x10000fff] usable
"""
    assert triples(E820Table.parse_dmesg(text)) == [
        (0, 0x1000, RES), (0x1000, 0xA0000, RAM), (0x100000, 0x10000000, RAM),
        (0x10001000, 0x20000000, RAM)]


def test_parse_dmesg_accepts_journalctl_and_2025_spellings() -> None:
    text = """\
Nov 30 05:00:00 host kernel: BIOS-e820: [mem 0x0000000000000000-0x000000000009fbff]  639.0 KB System RAM
Nov 30 05:00:00 host kernel: BIOS-e820: [gap 0x000000000009fc00-0x00000000000fffff]
Nov 30 05:00:00 host kernel: BIOS-e820: [mem 0x0000000000100000-0x000000003fffffff] 1023   MB System RAM
Nov 30 05:00:00 host kernel: BIOS-e820: [mem 0x0000000040000000-0x000000007fffffff]    1   GB device reserved
Nov 30 05:00:00 host kernel: BIOS-e820: [mem 0x0000000080000000-0x00000000bfffffff]    1   GB persistent RAM (type 12)
Nov 30 05:00:00 host kernel: e820: update [mem 0x00000000-0x00000fff] System RAM ==> device reserved
"""  # noqa: E501
    assert triples(E820Table.parse_dmesg(text)) == [
        (0, 0x1000, RES), (0x1000, 0x9FC00, RAM), (0x100000, 0x40000000, RAM),
        (0x40000000, 0x80000000, RES), (0x80000000, 0xC0000000, PRAM)]


@pytest.mark.parametrize(("lineno", "line", "what"), [
    (3, "[    0.000000] BIOS-e820: [mem 0x0000000000100000-0x000000007fffffff usable",
     "malformed table line"),
    (3, "[    0.000000] BIOS-e820: [mem 0x0000000000100000-0x000000007fffffff] magic",
     "unknown E820 type"),
    (3, "[    0.000000] BIOS-e820: [mem 0x0000000000200000-0x00000000001fffff] usable",
     "end below start"),
    (3, "[    0.004000] e820: update [mem 0x00000000-0x00000fff] usable -> reserved",
     "malformed update line"),
    (3, "[    0.004000] e820: update [mem 0x00000000-0x00000fff] usable ==> bogus",
     "unknown E820 type"),
    (3, "[    0.004001] e820: remove [mem 0x000a0000-0x000fffff] sideways",
     "unknown E820 type"),
    (3, "[    0.004001] e820: remove [mem 0x000a0000-] usable",
     "malformed remove line"),
])
def test_parse_dmesg_malformed_line_names_number_and_text(lineno: int, line: str,
                                                          what: str) -> None:
    text = ("[    0.000000] BIOS-provided physical RAM map:\n"
            "[    0.000000] BIOS-e820: "
            "[mem 0x0000000000000000-0x000000000009fbff] usable\n"
            f"{line}\n")
    with pytest.raises(EmuValueError) as exc:
        E820Table.parse_dmesg(text)
    message = str(exc.value)
    assert f"line {lineno}" in message
    assert what in message
    assert line.strip() in message


def test_parse_dmesg_needs_a_table_before_edits() -> None:
    with pytest.raises(EmuValueError, match="line 1: e820 update before any"):
        E820Table.parse_dmesg("e820: update [mem 0x0-0xfff] usable ==> reserved\n")
    with pytest.raises(EmuValueError, match="no 'BIOS-e820"):
        E820Table.parse_dmesg("Linux version 7.0\nMemory: 1K available\n")


# --- firmware memmap ------------------------------------------------------------------

def test_parse_firmware_memmap_text_with_comments_and_spaces_in_types() -> None:
    text = """\
# start end type
0x0 0x9fbff System RAM

0x9fc00 0xfffff Reserved
0x100000 0x7fefffff System RAM
0x7ff00000 0x7fffffff ACPI Non-volatile Storage
0x80000000 0x80000fff ACPI Tables
0x100000000 0x17fffffff Persistent Memory (legacy)
"""
    assert triples(E820Table.parse_firmware_memmap(text)) == [
        (0, 0x9FC00, RAM), (0x9FC00, 0x100000, RES), (0x100000, 0x7FF00000, RAM),
        (0x7FF00000, 0x80000000, NVS), (0x80000000, 0x80001000, ACPI),
        (0x100000000, 0x180000000, PRAM)]


@pytest.mark.parametrize(("text", "what"), [
    ("0x0 0x9fbff System RAM\n0x9fc00 Reserved\n", "line 2"),
    ("0x0 0x9fbff System RAM\n0xzz 0xfffff Reserved\n", "line 2"),
    ("0x0 0x9fbff Sytem RAM\n", "unknown memmap type"),
    ("0x1000 0x0fff System RAM\n", "below start"),
    ("# nothing\n", "no entries"),
])
def test_parse_firmware_memmap_text_errors(text: str, what: str) -> None:
    with pytest.raises(EmuValueError, match=what):
        E820Table.parse_firmware_memmap(text)


def _write_memmap(root: Path, rows: list[tuple[str, str, str]]) -> None:
    for i, (start, end, kind) in enumerate(rows):
        d = root / str(i)
        d.mkdir()
        (d / "start").write_text(start + "\n")
        (d / "end").write_text(end + "\n")
        (d / "type").write_text(kind + "\n")


def test_parse_firmware_memmap_directory_in_numeric_order(tmp_path: Path) -> None:
    rows = [(f"{0x100000 * i:#x}", f"{0x100000 * i + 0xFFFFF:#x}",
             "System RAM" if i % 2 == 0 else "Reserved") for i in range(12)]
    _write_memmap(tmp_path, rows)
    table = E820Table.parse_firmware_memmap(tmp_path)
    assert len(table) == 12
    assert table[10] == E820Entry(0xA00000, 0xB00000, RAM)
    assert table[11] == E820Entry(0xB00000, 0xC00000, RES)


def test_parse_firmware_memmap_accepts_a_dump_file_path() -> None:
    path = MACHINE / "firmware-memmap"
    expected = E820Table.parse_firmware_memmap(path.read_text())
    assert E820Table.parse_firmware_memmap(path) == expected
    assert E820Table.parse_firmware_memmap(str(path)) == expected


def test_parse_firmware_memmap_directory_errors_name_the_file(tmp_path: Path) -> None:
    _write_memmap(tmp_path, [("0x0", "0x9fbff", "System RAM"), ("0xq", "0xfffff", "x")])
    with pytest.raises(EmuValueError, match=r"1: start"):
        E820Table.parse_firmware_memmap(tmp_path)
    with pytest.raises(EmuValueError, match="not a directory"):
        E820Table.parse_firmware_memmap(tmp_path / "missing")


# --- iomem ----------------------------------------------------------------------------

IOMEM = """\
00000000-00000fff : Reserved
00001000-0009efff : System RAM
0009f000-000fffff : Reserved
  000a0000-000bffff : PCI Bus 0000:00
  000f0000-000fffff : System ROM
00100000-3fffffff : System RAM
  01000000-01e03816 : Kernel code
  02000000-0248bfff : Kernel rodata
  02600000-02a2f3ff : Kernel data
  02f83000-031fffff : Kernel bss
40000000-4000ffff : ACPI Tables
40010000-4001ffff : ACPI Non-volatile Storage
40020000-4002ffff : Unusable memory
40030000-4003ffff : RAM buffer
80000000-febfffff : PCI Bus 0000:00
  e0000000-efffffff : PCI MMCONFIG 0000 [bus 00-ff]
    e0000000-efffffff : Reserved
fee00000-fee00fff : Local APIC
100000000-23fffffff : System RAM
240000000-27fffffff : Soft Reserved
"""


def test_parse_iomem_top_level_entries_and_kernel_image() -> None:
    table, kernel = E820Table.parse_iomem(IOMEM)
    assert triples(table) == [
        (0, 0x1000, RES), (0x1000, 0x9F000, RAM), (0x9F000, 0x100000, RES),
        (0x100000, 0x40000000, RAM), (0x40000000, 0x40010000, ACPI),
        (0x40010000, 0x40020000, NVS), (0x40020000, 0x40030000, UNUSABLE),
        (0x100000000, 0x240000000, RAM), (0x240000000, 0x280000000, SOFT)]
    assert kernel == KernelImage(code=PhysRange(0x1000000, 0x1E03817),
                                 rodata=PhysRange(0x2000000, 0x248C000),
                                 data=PhysRange(0x2600000, 0x2A2F400),
                                 bss=PhysRange(0x2F83000, 0x3200000))
    assert (kernel.start, kernel.end) == (0x1000000, 0x3200000)
    assert [name for name, _ in kernel.parts()] == ["code", "rodata", "data", "bss"]


def test_parse_iomem_without_kernel_lines_gives_none() -> None:
    _, kernel = E820Table.parse_iomem("00001000-0009efff : System RAM\n")
    assert kernel is None


def test_parse_iomem_rejects_unprivileged_zeros() -> None:
    text = "00000000-00000000 : Reserved\n00000000-00000000 : System RAM\n"
    with pytest.raises(EmuValueError, match="read as root"):
        E820Table.parse_iomem(text)


@pytest.mark.parametrize(("text", "what"), [
    ("00000000-00000fff : Reserved\n00001000-0009efff System RAM\n", "line 2"),
    ("00000000-00000fff : Reserved\n\n  00002000-00001fff : Kernel code\n", "line 3"),
    ("00000000-00000fff : PCI Bus 0000:00\n", "no 'System RAM'"),
])
def test_parse_iomem_errors_name_the_line(text: str, what: str) -> None:
    with pytest.raises(EmuValueError, match=what):
        E820Table.parse_iomem(text)


# --- the captured machine -------------------------------------------------------------

MACHINE_TABLE = [
    (0, 0x1000, RES),
    (0x1000, 0x9FC00, RAM),
    (0x9FC00, 0x100000, RES),
    (0x100000, 0xC0000000, RAM),
    (0xEEC00000, 0xFEC00000, RES),
    (0x100000000, 0x640000000, RAM),
]


def test_machine_dmesg_gives_table_after_trim_bios_range() -> None:
    table = E820Table.parse_dmesg((MACHINE / "dmesg").read_text())
    assert triples(table) == MACHINE_TABLE
    # the kernel printed these as "last_pfn = 0x640000" and "last_pfn = 0xc0000"
    assert table.max_pfn == 0x640000
    assert table.max_low_pfn == 0xC0000
    assert table.total_ram_bytes() == 24 * G - (M - 0x9FC00) - 0x1000


def test_machine_dmesg_pfn_ranges_equal_early_memory_node_ranges() -> None:
    text = (MACHINE / "dmesg").read_text()
    node = [(int(a, 16) >> 12, (int(b, 16) + 1) >> 12) for a, b in
            re.findall(r"node   0: \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]", text)]
    assert node == [(1, 0x9F), (0x100, 0xC0000), (0x100000, 0x640000)]
    assert E820Table.parse_dmesg(text).pfn_ranges() == node


def test_machine_iomem_gives_same_table_and_kernel_image() -> None:
    table, kernel = E820Table.parse_iomem((MACHINE / "iomem").read_text())
    assert triples(table) == MACHINE_TABLE
    assert table.ram_ranges() == E820Table.parse_dmesg(
        (MACHINE / "dmesg").read_text()).ram_ranges()
    assert kernel == KernelImage(code=PhysRange(0x1000000, 0x2209988),
                                 rodata=PhysRange(0x2400000, 0x2E0A000),
                                 data=PhysRange(0x3000000, 0x327C100),
                                 bss=PhysRange(0x3B34000, 0x3C58000))


def test_machine_firmware_memmap_is_the_table_before_trim_bios_range() -> None:
    memmap = E820Table.parse_firmware_memmap((MACHINE / "firmware-memmap").read_text())
    dmesg = E820Table.parse_dmesg((MACHINE / "dmesg").read_text())
    # /sys/firmware/memmap shows e820_table_kexec, which never got the first page
    # turned reserved; otherwise it is the same table.
    assert memmap.type_at(0) == RAM
    assert memmap != dmesg
    assert memmap.trim_bios_range() == dmesg
