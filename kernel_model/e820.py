"""The physical memory layout: Linux's E820 table and the texts that describe it.

Models arch/x86/kernel/e820.c (Linux 7.0): a table of physical ranges, each with an
E820 type, kept sorted and non-overlapping by ``e820__update_table()``, and the
boot-time edits made to it (``e820__range_update()``, ``e820__range_remove()``,
``trim_bios_range()``).  A table comes from one of four sources:

* :meth:`E820Table.from_ram_size`: a PC-like layout for a RAM size (``"16G"``);
* :meth:`E820Table.parse_dmesg`: the ``BIOS-e820:`` lines of a boot log and the
  ``e820: update`` / ``e820: remove`` lines that follow them;
* :meth:`E820Table.parse_firmware_memmap`: a ``/sys/firmware/memmap`` directory or a
  text dump of it (format in that method's docstring);
* :meth:`E820Table.parse_iomem`: ``/proc/iomem``, which also gives the physical
  location of the kernel image (:class:`KernelImage`).

Addresses are byte addresses; every range is half-open ``[start, end)``, whereas
Linux prints inclusive ends.  Tables are immutable values: every edit returns a new
table.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, overload

from emu.errors import EmuValueError

__all__ = [
    "ISA_END_ADDRESS",
    "MAX_ARCH_PFN",
    "MAX_ARCH_PFN_LA57",
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "E820Entry",
    "E820Table",
    "E820Type",
    "KernelImage",
    "PhysRange",
    "e820__update_table",
    "e820_type_name",
    "e820_type_to_string",
    "parse_size",
]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
ISA_END_ADDRESS = 0x100000  # 1 MiB: end of the legacy ISA/BIOS area
BIOS_BEGIN = 0xA0000  # 640 KiB: start of the legacy VGA/ROM hole
BIOS_END = 0x100000
#: MAXMEM >> PAGE_SHIFT with 4-level paging (MAX_PHYSMEM_BITS = 46), as dmesg's
#: "max_arch_pfn = 0x400000000" shows.
MAX_ARCH_PFN = 1 << (46 - PAGE_SHIFT)
#: The same with 5-level paging (MAX_PHYSMEM_BITS = 52).
MAX_ARCH_PFN_LA57 = 1 << (52 - PAGE_SHIFT)
_ADDR_LIMIT = 1 << 64

_SZ_1M = 1 << 20
_SZ_1G = 1 << 30
_SZ_4G = 1 << 32
#: where from_ram_size() stops low RAM and starts the 32-bit PCI hole
_PCI_HOLE_START = 3 * _SZ_1G
#: the IOAPIC / local APIC / firmware-flash area every PC reserves below 4 GiB
_APIC_FIRMWARE_START = 0xFEC00000
#: from_ram_size(): 640 KiB minus a 1 KiB EBDA, as on the captured machine
_LOW_RAM_END = 0x9FC00


class E820Type(enum.IntEnum):
    """The E820 types of arch/x86/include/asm/e820/types.h (Linux 7.0).

    ``e820__update_table()`` resolves overlaps in favour of the highest number.
    ``E820_TYPE_RESERVED_KERN`` (128) no longer exists in 7.0; a table that still
    carries it (from an old boot log) keeps it as an unknown type.
    """

    RAM = 1
    RESERVED = 2
    ACPI = 3
    NVS = 4
    UNUSABLE = 5
    PMEM = 7
    PRAM = 12
    SOFT_RESERVED = 0xEFFFFFFF


#: Names e820_print_type() prints in dmesg (the long-standing spelling).
_DMESG_NAMES: dict[int, str] = {
    E820Type.RAM: "usable",
    E820Type.RESERVED: "reserved",
    E820Type.SOFT_RESERVED: "soft reserved",
    E820Type.ACPI: "ACPI data",
    E820Type.NVS: "ACPI NVS",
    E820Type.UNUSABLE: "unusable",
}
#: Spellings from the 2025 e820 printing rework (Ingo Molnar's series); accepted
#: when parsing, never produced.  Which release first prints them is unverified.
_DMESG_NAMES_NEW: dict[str, int] = {
    "System RAM": E820Type.RAM,
    "kernel usable RAM": E820Type.RAM,
    "device reserved": E820Type.RESERVED,
}
#: Names e820_type_to_string() gives /proc/iomem and /sys/firmware/memmap.
_RESOURCE_NAMES: dict[int, str] = {
    E820Type.RAM: "System RAM",
    E820Type.ACPI: "ACPI Tables",
    E820Type.NVS: "ACPI Non-volatile Storage",
    E820Type.UNUSABLE: "Unusable memory",
    E820Type.PRAM: "Persistent Memory (legacy)",
    E820Type.PMEM: "Persistent Memory",
    E820Type.RESERVED: "Reserved",
    E820Type.SOFT_RESERVED: "Soft Reserved",
}
_RESOURCE_TYPES: dict[str, int] = {v: k for k, v in _RESOURCE_NAMES.items()}
#: e820_type_to_string()'s default; the real number is lost, so treat it as reserved.
_RESOURCE_TYPES["Unknown E820 type"] = E820Type.RESERVED

_NUMBERED_TYPE = re.compile(r"(?:persistent(?: RAM)? \(type (\d+)\)|type (\d+))")
_SIZE_UNITS = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}
_SIZE_RE = re.compile(
    r"\s*(?P<num>0[xX][0-9a-fA-F]+|\d+)\s*(?P<unit>[kKmMgGtTpPeE]?)(?:i?[bB])?\s*"
)


def e820_type_name(e820_type: int) -> str:
    """Models e820_print_type() (arch/x86/kernel/e820.c, Linux 7.0).

    Args:
        e820_type: an E820 type number.

    Returns:
        The name dmesg prints for the type (``"usable"``, ``"ACPI NVS"``, ...).
    """
    name = _DMESG_NAMES.get(e820_type)
    if name is not None:
        return name
    if e820_type in (E820Type.PMEM, E820Type.PRAM):
        return f"persistent (type {e820_type})"
    return f"type {e820_type}"


def e820_type_to_string(e820_type: int) -> str:
    """Models e820_type_to_string in arch/x86/kernel/e820.c (Linux 7.0).

    Args:
        e820_type: an E820 type number.

    Returns:
        The resource name used by ``/proc/iomem`` and ``/sys/firmware/memmap``.
    """
    return _RESOURCE_NAMES.get(e820_type, "Unknown E820 type")


def _dmesg_type(text: str) -> int | None:
    """The type number for a dmesg type name, or None if it is not one."""
    text = text.strip()
    for number, name in _DMESG_NAMES.items():
        if text == name:
            return number
    if text in _DMESG_NAMES_NEW:
        return _DMESG_NAMES_NEW[text]
    m = _NUMBERED_TYPE.fullmatch(text)
    if m is not None:
        number = int(m.group(1) or m.group(2))
        return number if number > 0 else None
    return None


def parse_size(size: int | str) -> int:
    """Models memparse() (lib/cmdline.c, Linux 7.0) for sizes such as ``"16G"``.

    Args:
        size: bytes as an int, or a decimal or ``0x`` number with an optional
            binary unit K, M, G, T, P or E (``"512M"``, ``"1T"``, ``"64GiB"``).

    Returns:
        The size in bytes.

    Raises:
        EmuValueError: the size is not a non-negative int or such a string.
    """
    if isinstance(size, bool) or not isinstance(size, int | str):
        raise EmuValueError(f"size {size!r}: expected an int or a string like '16G'")
    if isinstance(size, int):
        if size < 0:
            raise EmuValueError(f"size {size}: must not be negative")
        return size
    m = _SIZE_RE.fullmatch(size)
    if m is None:
        raise EmuValueError(
            f"size {size!r}: expected a number with an optional unit "
            "K, M, G, T, P or E (e.g. '16G')"
        )
    return int(m.group("num"), 0) << _SIZE_UNITS[m.group("unit").upper()]


class PhysRange(NamedTuple):
    """A half-open physical address range ``[start, end)``."""

    start: int
    end: int

    @property
    def size(self) -> int:
        """Length in bytes."""
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class E820Entry:
    """Models struct e820_entry (arch/x86/include/asm/e820/types.h, Linux 7.0).

    Linux stores ``addr`` and ``size``; this stores the half-open range.

    Attributes:
        start: first byte address.
        end: one past the last byte address (``addr + size`` in Linux).
        type: E820 type number (see :class:`E820Type`).
    """

    start: int
    end: int
    type: int

    def __post_init__(self) -> None:
        for name in ("start", "end", "type"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise EmuValueError(f"E820 entry {name} {value!r}: expected an int")
        if not 0 <= self.start <= self.end <= _ADDR_LIMIT:
            raise EmuValueError(
                f"E820 entry [{self.start:#x}, {self.end:#x}): need "
                "0 <= start <= end <= 2**64"
            )
        if not 0 < self.type < 1 << 32:
            raise EmuValueError(f"E820 entry type {self.type}: must be 1..2**32-1")

    @property
    def size(self) -> int:
        """Length in bytes (``entry->size``)."""
        return self.end - self.start

    @property
    def last(self) -> int:
        """The inclusive end address, as Linux prints it."""
        return self.end - 1

    @property
    def type_name(self) -> str:
        """The type as dmesg prints it (``"usable"``, ``"reserved"``, ...)."""
        return e820_type_name(self.type)

    @property
    def resource_name(self) -> str:
        """The type as ``/proc/iomem`` and ``/sys/firmware/memmap`` name it."""
        return e820_type_to_string(self.type)

    def __str__(self) -> str:
        return f"[mem {self.start:#018x}-{self.last:#018x}] {self.type_name}"


def _mergeable(e820_type: int) -> bool:
    """Models e820_type_mergeable() (arch/x86/kernel/e820.c, Linux 7.0)."""
    return e820_type not in (E820Type.PRAM, E820Type.SOFT_RESERVED)


def e820__update_table(entries: Iterable[E820Entry]) -> list[E820Entry]:
    """Models e820__update_table in arch/x86/kernel/e820.c (Linux 7.0).

    Sorts the entries, resolves overlaps in favour of the highest type number and
    merges adjacent or overlapping entries of the same type, except the types
    Linux never merges (persistent legacy memory and soft-reserved), which are cut
    at every boundary of an input entry.  Empty entries vanish.

    Args:
        entries: entries in any order, possibly overlapping.

    Returns:
        The sanitised entries, sorted by address.
    """
    items = [e for e in entries if e.size]
    points: list[tuple[int, int, int]] = []  # (addr, 0 = start / 1 = end, index)
    for i, e in enumerate(items):
        points.append((e.start, 0, i))
        points.append((e.end, 1, i))
    # At one address starts sort before ends, as cpcompare() orders change points.
    points.sort()
    active: dict[int, int] = {}
    out: list[E820Entry] = []
    last_type = 0
    last_addr = 0
    for addr, kind, i in points:
        if kind == 0:
            active[i] = items[i].type
        else:
            del active[i]
        current_type = max(active.values(), default=0)
        if current_type != last_type or not _mergeable(current_type):
            if last_type and addr > last_addr:
                out.append(E820Entry(last_addr, addr, last_type))
            if current_type:
                last_addr = addr
            last_type = current_type
    return out


def _parse_hex(text: str, what: str) -> int:
    try:
        return int(text, 16)
    except ValueError:
        raise EmuValueError(f"{what} {text!r} is not a hexadecimal number") from None


def _line_error(source: str, lineno: int, line: str, what: str) -> EmuValueError:
    return EmuValueError(f"{source} line {lineno}: {what}: {line.strip()!r}")


# dmesg lines.  Table prints come from e820__print_table(who): who is "BIOS-e820"
# (or "BIOS-e801"/"BIOS-88" without an E820 BIOS), "extended", "modified", "user"
# or older kernels' "reserve setup_data".  (Old kernels' "e820: [mem ...] available
# for PCI devices" is not a table line and is ignored.)
_WHO = (
    r"(?P<who>BIOS-e820|BIOS-e801|BIOS-88|extended|modified|user"
    r"|reserve setup_data)"
)
_HEX = r"0[xX][0-9a-fA-F]+"
_TABLE_HINT = re.compile(r"(?<![\w-])" + _WHO + r": \[(?:mem|gap)\b")
_TABLE_LINE = re.compile(
    r"(?<![\w-])"
    + _WHO
    + r": \[mem (?P<start>"
    + _HEX
    + r")-(?P<last>"
    + _HEX
    + r")\]\s*(?:\d+(?:\.\d)?\s+[KMGT]B\s+)?(?P<type>\S.*?)\s*$"
)
_GAP_LINE = re.compile(r"(?<![\w-])" + _WHO + r": \[gap " + _HEX + "-" + _HEX + r"\]")
_UPDATE_HINT = re.compile(r"\be820: update \[")
_UPDATE_LINE = re.compile(
    r"\be820: update \[mem (?P<start>"
    + _HEX
    + r")-(?P<last>"
    + _HEX
    + r")\]\s*(?P<old>\S.*?)\s*==>\s*(?P<new>\S.*?)\s*$"
)
_REMOVE_HINT = re.compile(r"\be820: remove \[")
_REMOVE_LINE = re.compile(
    r"\be820: remove \[mem (?P<start>"
    + _HEX
    + r")-(?P<last>"
    + _HEX
    + r")\]\s*(?P<old>.*?)\s*$"
)
_KEXEC_ONLY = re.compile(r"\bupdate e820_table_kexec\b")

_IOMEM_LINE = re.compile(
    r"(?P<indent> *)(?P<start>[0-9a-fA-F]+)-(?P<last>[0-9a-fA-F]+)"
    r" : (?P<name>.*)"
)
_KERNEL_PARTS = {
    "Kernel code": "code",
    "Kernel rodata": "rodata",
    "Kernel data": "data",
    "Kernel bss": "bss",
}


@dataclass(frozen=True, slots=True)
class KernelImage:
    """The kernel image's physical location, from ``/proc/iomem``.

    Models the ``code_resource``, ``rodata_resource``, ``data_resource`` and
    ``bss_resource`` that setup_arch() (arch/x86/kernel/setup.c, Linux 7.0) inserts
    under "System RAM": ``Kernel code`` is ``[_text, _etext)``, ``Kernel rodata``
    ``[__start_rodata, __end_rodata)``, ``Kernel data`` ``[_sdata, _edata)`` and
    ``Kernel bss`` ``[__bss_start, __bss_stop)``, all physical.  A part the input
    does not list (older kernels have no rodata line) is None.

    Attributes:
        code: physical range of the kernel text.
        rodata: physical range of the read-only data.
        data: physical range of the initialised data.
        bss: physical range of the bss.
    """

    code: PhysRange | None = None
    rodata: PhysRange | None = None
    data: PhysRange | None = None
    bss: PhysRange | None = None

    def parts(self) -> list[tuple[str, PhysRange]]:
        """The listed parts in address order, as (name, range) pairs."""
        named = [
            ("code", self.code),
            ("rodata", self.rodata),
            ("data", self.data),
            ("bss", self.bss),
        ]
        return sorted(
            ((n, r) for n, r in named if r is not None), key=lambda item: item[1].start
        )

    @property
    def start(self) -> int:
        """Lowest physical address of any listed part."""
        return min(r.start for _, r in self.parts())

    @property
    def end(self) -> int:
        """One past the highest physical address of any listed part."""
        return max(r.end for _, r in self.parts())


class E820Table(Sequence[E820Entry]):
    """Models struct e820_table (arch/x86/kernel/e820.c, Linux 7.0) as a value.

    Built from entries in any order; the constructor sanitises them with
    :func:`e820__update_table`, so a table is always sorted and non-overlapping.
    Editing methods (:meth:`range_add`, :meth:`range_update`, :meth:`range_remove`,
    :meth:`trim_bios_range`) return new tables.

    Args:
        entries: :class:`E820Entry` objects or ``(start, end, type)`` triples with
            half-open ``[start, end)`` byte ranges.

    Raises:
        EmuValueError: an entry is malformed.
    """

    __slots__ = ("_entries",)

    def __init__(
        self, entries: Iterable[E820Entry | tuple[int, int, int]] = ()
    ) -> None:
        items = [e if isinstance(e, E820Entry) else E820Entry(*e) for e in entries]
        self._entries: tuple[E820Entry, ...] = tuple(e820__update_table(items))

    # --- Sequence protocol -----------------------------------------------------------

    @overload
    def __getitem__(self, index: int) -> E820Entry: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[E820Entry]: ...
    def __getitem__(self, index: int | slice) -> E820Entry | Sequence[E820Entry]:
        return self._entries[index]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[E820Entry]:
        return iter(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, E820Table):
            return NotImplemented
        return self._entries == other._entries

    def __hash__(self) -> int:
        return hash(self._entries)

    def __repr__(self) -> str:
        inner = ", ".join(
            f"({e.start:#x}, {e.end:#x}, {e.type_name!r})" for e in self._entries
        )
        return f"E820Table([{inner}])"

    @property
    def entries(self) -> tuple[E820Entry, ...]:
        """The sanitised entries, sorted by address."""
        return self._entries

    # --- constructors ----------------------------------------------------------------

    @classmethod
    def from_ram_size(cls, size: int | str) -> E820Table:
        """Builds a PC-like firmware table for a RAM size, as a QEMU/KVM BIOS does.

        The layout (all "usable" unless said otherwise), for RAM size S:

        * ``[0, 0x9fc00)``: low memory, 640 KiB minus a 1 KiB EBDA;
        * ``[0x9fc00, 1M)`` reserved: EBDA, VGA memory and the BIOS ROMs;
        * ``[1M, min(S, 3G))``: RAM below the 32-bit PCI hole;
        * ``[3G, 4G)``: the PCI hole, not listed except
          ``[0xfec00000, 4G)`` reserved (IOAPIC, local APIC, firmware flash);
        * ``[4G, 4G + S - 3G)`` when S > 3G: the rest of the RAM, above 4 GiB.

        As on a real PC the legacy hole overlays RAM, so the table lists 385 KiB
        less than S.  This is the firmware's view (the ``BIOS-e820:`` lines);
        :meth:`trim_bios_range` gives what the kernel makes of it.

        Args:
            size: RAM size: bytes or a string such as ``"16G"``, ``"512M"``,
                ``"1T"``.  A multiple of 4 KiB, at least 2 MiB.

        Returns:
            The table.

        Raises:
            EmuValueError: the size is malformed, too small, not page aligned, or
                too large for 52-bit physical addresses.
        """
        ram = parse_size(size)
        if ram < 2 * _SZ_1M or ram % PAGE_SIZE:
            raise EmuValueError(
                f"RAM size {size!r} ({ram} bytes): need a multiple of 4 KiB, at least"
                " 2 MiB"
            )
        high = ram - _PCI_HOLE_START if ram > _PCI_HOLE_START else 0
        if _SZ_4G + high > 1 << 52:
            raise EmuValueError(f"RAM size {size!r}: above the 52-bit physical limit")
        entries = [
            E820Entry(0, _LOW_RAM_END, E820Type.RAM),
            E820Entry(_LOW_RAM_END, ISA_END_ADDRESS, E820Type.RESERVED),
            E820Entry(ISA_END_ADDRESS, min(ram, _PCI_HOLE_START), E820Type.RAM),
            E820Entry(_APIC_FIRMWARE_START, _SZ_4G, E820Type.RESERVED),
        ]
        if high:
            entries.append(E820Entry(_SZ_4G, _SZ_4G + high, E820Type.RAM))
        return cls(entries)

    @classmethod
    def parse_dmesg(cls, text: str) -> E820Table:
        """Models e820__memory_setup() and the later e820 edits, read from dmesg.

        Reads, in order:

        * a table print, ``<who>: [mem 0x...-0x...] <type>`` lines with inclusive
          ends, from e820__print_table() (arch/x86/kernel/e820.c, Linux 7.0); who is
          ``BIOS-e820`` (or ``BIOS-e801``/``BIOS-88``), ``extended``, ``modified``,
          ``user`` or older kernels' ``reserve setup_data``.  Each print
          is the whole table at that moment, so it replaces what came before;
        * ``e820: update [mem ...] <old> ==> <new>`` (e820__range_update()) and
          ``e820: remove [mem ...] [<type>]`` (e820__range_remove()) lines,
          applied in order to the table.  An update followed by Linux's
          ``update e820_table_kexec for ...`` line changed only the kexec table and
          is undone.

        Type names may be the classic ones (``usable``, ``reserved``, ``ACPI data``,
        ``ACPI NVS``, ``unusable``, ``persistent (type N)``, ``soft reserved``,
        ``type N``) or those of the 2025 e820 printing rework (``System RAM``,
        ``device reserved``, ``persistent RAM (type N)``, with an optional size
        column); ``[gap ...]`` lines are skipped.  Timestamps, syslog prefixes and
        every other line are ignored, including ``e820: reserve RAM buffer``
        (a /proc/iomem resource, not a table edit), ``PCI: ... reserved as E820
        entry`` (a check only), memblock and zone lines.  Updates that the
        kernel applies only to the kexec/firmware tables without saying so cannot
        be told apart and are applied to the table.

        Args:
            text: the output of ``dmesg`` (or ``journalctl -k``), whole or
                filtered.

        Returns:
            The table after the last line read.

        Raises:
            EmuValueError: a table, update or remove line is malformed (the error
                names the line number and text), an edit comes before any table, or
                there is no table print at all.
        """
        table: E820Table | None = None
        before_update: E820Table | None = None
        group_who: str | None = None
        group: list[E820Entry] = []

        def close_group() -> None:
            nonlocal table, group_who, group
            if group_who is not None:
                table = cls(group)
                group_who, group = None, []

        for lineno, line in enumerate(text.splitlines(), start=1):
            if _GAP_LINE.search(line):
                continue
            hint = _TABLE_HINT.search(line)
            if hint:
                m = _TABLE_LINE.search(line)
                if m is None:
                    raise _line_error("dmesg", lineno, line, "malformed table line")
                start, end = _dmesg_range(m, lineno, line)
                e820_type = _dmesg_type(m.group("type"))
                if e820_type is None:
                    raise _line_error(
                        "dmesg", lineno, line, f"unknown E820 type {m.group('type')!r}"
                    )
                if m.group("who") != group_who:
                    close_group()
                    group_who = m.group("who")
                    before_update = None
                group.append(E820Entry(start, end, e820_type))
                continue
            if _KEXEC_ONLY.search(line):
                if before_update is not None:
                    table = before_update
                    before_update = None
                continue
            if _UPDATE_HINT.search(line):
                close_group()
                m = _UPDATE_LINE.search(line)
                if m is None:
                    raise _line_error("dmesg", lineno, line, "malformed update line")
                start, end = _dmesg_range(m, lineno, line)
                old, new = _dmesg_type(m.group("old")), _dmesg_type(m.group("new"))
                if old is None or new is None:
                    raise _line_error("dmesg", lineno, line, "unknown E820 type")
                if table is None:
                    raise _line_error(
                        "dmesg", lineno, line, "e820 update before any BIOS-e820 table"
                    )
                before_update = table
                table = table.range_update(start, end - start, old, new)
                continue
            if _REMOVE_HINT.search(line):
                close_group()
                m = _REMOVE_LINE.search(line)
                if m is None:
                    raise _line_error("dmesg", lineno, line, "malformed remove line")
                start, end = _dmesg_range(m, lineno, line)
                old_text = m.group("old")
                old_type = _dmesg_type(old_text) if old_text else None
                if old_text and old_type is None:
                    raise _line_error(
                        "dmesg", lineno, line, f"unknown E820 type {old_text!r}"
                    )
                if table is None:
                    raise _line_error(
                        "dmesg", lineno, line, "e820 remove before any BIOS-e820 table"
                    )
                before_update = None
                table = table.range_remove(start, end - start, old_type)
                continue
        close_group()
        if table is None:
            raise EmuValueError("dmesg: no 'BIOS-e820: [mem ...]' table lines found")
        return table

    @classmethod
    def parse_firmware_memmap(cls, source: str | os.PathLike[str]) -> E820Table:
        """Reads /sys/firmware/memmap (drivers/firmware/memmap.c, Linux 7.0).

        The directory holds one subdirectory per entry, ``N/start``, ``N/end`` and
        ``N/type``, with ``0x%llx`` addresses, an inclusive end, and the type
        string of e820_type_to_string() ("System RAM", "Reserved", "ACPI Tables",
        ...).  On x86 it shows the kexec E820 table, which misses some of the
        kernel's own edits (for instance the first page turned "reserved").

        The text dump format (what ``tests/data/machine/firmware-memmap`` holds):
        one entry per line, in ascending ``N``, as three fields separated by
        whitespace: ``<start> <end> <type>``, where start and end are hexadecimal
        (``0x`` optional) with the end inclusive, exactly as the sysfs files show
        them, and the type is the rest of the line (it may contain spaces).
        Blank lines and lines starting with ``#`` are ignored.  It is what this
        shell loop prints::

            cd /sys/firmware/memmap && for n in $(ls | sort -n); do
                echo "$(cat $n/start) $(cat $n/end) $(cat $n/type)"; done

        Args:
            source: the text dump as a ``str``; or a path (any ``os.PathLike``, or
                a one-line ``str`` naming an existing file or directory) to a
                directory laid out like /sys/firmware/memmap or to a dump file.

        Returns:
            The sanitised table.

        Raises:
            EmuValueError: a line or file is malformed (named with its line number
                or path), a type string is unknown, or a path cannot be read.
        """
        if isinstance(source, str) and ("\n" in source or not os.path.exists(source)):
            return cls(_memmap_text_entries(source))
        root = Path(source)
        if root.is_file():
            try:
                return cls(_memmap_text_entries(root.read_text()))
            except OSError as exc:
                raise EmuValueError(f"{root}: {exc}") from None
        if not root.is_dir():
            raise EmuValueError(f"{root}: not a directory like /sys/firmware/memmap")
        entries: list[E820Entry] = []
        names = [p.name for p in root.iterdir() if p.is_dir()]
        bad = [n for n in names if not n.isdigit()]
        if bad:
            raise EmuValueError(f"{root}: unexpected entry {sorted(bad)[0]!r}")
        for name in sorted(names, key=int):
            entry_dir = root / name
            try:
                fields = [
                    (entry_dir / f).read_text().strip()
                    for f in ("start", "end", "type")
                ]
            except OSError as exc:
                raise EmuValueError(f"{entry_dir}: {exc}") from None
            entries.append(_memmap_entry(fields, str(entry_dir)))
        return cls(entries)

    @classmethod
    def parse_iomem(cls, text: str) -> tuple[E820Table, KernelImage | None]:
        """Reads /proc/iomem as r_show() (kernel/resource.c, Linux 7.0) prints it.

        Top-level lines (no indentation) whose name is one of the E820 resource
        names of e820__reserve_resources() ("System RAM", "Reserved", "ACPI
        Tables", "ACPI Non-volatile Storage", "Unusable memory", "Persistent
        Memory", "Persistent Memory (legacy)", "Soft Reserved") become entries;
        other top-level lines (PCI windows, "IOAPIC 0", "RAM buffer", ...) are not
        E820 entries and are skipped.  E820 reserved ranges that the kernel
        inserted under another resource (e.g. under "PCI MMCONFIG") are nested
        and therefore missed; they are holes either way.  Nested ``Kernel code``,
        ``Kernel rodata``, ``Kernel data`` and ``Kernel bss`` lines give the
        kernel image.  The file shows all-zero addresses unless read by root.

        Args:
            text: the contents of /proc/iomem.

        Returns:
            The table and the kernel image (None if no ``Kernel ...`` line).

        Raises:
            EmuValueError: a line is malformed (named with its number and text),
                or every address is zero (the file was read without root).
        """
        entries: list[E820Entry] = []
        parts: dict[str, PhysRange] = {}
        all_zero = True
        nlines = 0
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            m = _IOMEM_LINE.fullmatch(line.rstrip("\n"))
            if m is None:
                raise _line_error(
                    "/proc/iomem", lineno, line, "expected '<start>-<end> : <name>'"
                )
            start = int(m.group("start"), 16)
            last = int(m.group("last"), 16)
            nlines += 1
            if start or last:
                all_zero = False
            if last < start:
                raise _line_error("/proc/iomem", lineno, line, "end below start")
            name = m.group("name")
            if not m.group("indent") and name in _RESOURCE_TYPES:
                entries.append(E820Entry(start, last + 1, _RESOURCE_TYPES[name]))
            elif name in _KERNEL_PARTS:
                parts[_KERNEL_PARTS[name]] = PhysRange(start, last + 1)
        if nlines and all_zero:
            raise EmuValueError(
                "/proc/iomem: every address is 0: the file must be read"
                " as root (CAP_SYS_ADMIN) to show addresses"
            )
        if not entries:
            raise EmuValueError("/proc/iomem: no 'System RAM' or other E820 lines")
        kernel = KernelImage(**parts) if parts else None
        return cls(entries), kernel

    # --- edits -----------------------------------------------------------------------

    def range_add(self, start: int, size: int, e820_type: int) -> E820Table:
        """Models e820__range_add() followed by e820__update_table() (Linux 7.0).

        Args:
            start: first byte address.
            size: length in bytes.
            e820_type: type of the added range; overlaps resolve by type number.

        Returns:
            The new table.
        """
        end = min(start + size, _ADDR_LIMIT)
        return E820Table([*self._entries, E820Entry(start, end, e820_type)])

    def range_update(
        self, start: int, size: int, old_type: int, new_type: int
    ) -> E820Table:
        """Models e820__range_update() then e820__update_table() (Linux 7.0).

        The parts of ``old_type`` entries inside ``[start, start + size)`` become
        ``new_type``; everything else is unchanged.  Linux BUG()s on
        ``old_type == new_type``; here that is a no-op (old boot logs print
        ``usable ==> usable`` for the retired E820_TYPE_RESERVED_KERN).

        Args:
            start: first byte address.
            size: length in bytes (clamped at 2**64 as Linux clamps it).
            old_type: only entries of this type change.
            new_type: their new type.

        Returns:
            The new table.
        """
        end = min(start + size, _ADDR_LIMIT)
        out: list[E820Entry] = []
        for e in self._entries:
            if (
                e.type != old_type
                or e.end <= start
                or e.start >= end
                or old_type == new_type
            ):
                out.append(e)
                continue
            lo, hi = max(e.start, start), min(e.end, end)
            if e.start < lo:
                out.append(E820Entry(e.start, lo, e.type))
            out.append(E820Entry(lo, hi, new_type))
            if hi < e.end:
                out.append(E820Entry(hi, e.end, e.type))
        return E820Table(out)

    def range_remove(
        self, start: int, size: int, filter_type: int | None = None
    ) -> E820Table:
        """Models e820__range_remove() then e820__update_table() (Linux 7.0).

        Args:
            start: first byte address.
            size: length in bytes (clamped at 2**64).
            filter_type: remove only from entries of this type; None removes from
                every entry.

        Returns:
            The new table.
        """
        end = min(start + size, _ADDR_LIMIT)
        out: list[E820Entry] = []
        for e in self._entries:
            if (
                (filter_type is not None and e.type != filter_type)
                or e.end <= start
                or e.start >= end
            ):
                out.append(e)
                continue
            if e.start < start:
                out.append(E820Entry(e.start, start, e.type))
            if end < e.end:
                out.append(E820Entry(end, e.end, e.type))
        return E820Table(out)

    def trim_bios_range(self) -> E820Table:
        """Models trim_bios_range in arch/x86/kernel/setup.c (Linux 7.0).

        The first 4 KiB become reserved (BIOS data) and RAM in the legacy hole
        ``[640K, 1M)`` is removed.  Applying it twice changes nothing, so a table
        parsed from a dmesg that already shows these edits is unchanged.

        Returns:
            The new table.
        """
        return self.range_update(
            0, PAGE_SIZE, E820Type.RAM, E820Type.RESERVED
        ).range_remove(BIOS_BEGIN, BIOS_END - BIOS_BEGIN, E820Type.RAM)

    # --- queries ---------------------------------------------------------------------

    def ram_ranges(self) -> list[PhysRange]:
        """The "usable" (E820_TYPE_RAM) ranges, byte-exact, in address order.

        Returns:
            Half-open byte ranges.
        """
        return [
            PhysRange(e.start, e.end) for e in self._entries if e.type == E820Type.RAM
        ]

    def total_ram_bytes(self) -> int:
        """Total bytes of "usable" RAM, byte-exact.

        Returns:
            The sum of :meth:`ram_ranges` sizes.
        """
        return sum(r.size for r in self.ram_ranges())

    def pfn_ranges(self) -> list[tuple[int, int]]:
        """Models for_each_mem_pfn_range() over memblock.memory (Linux 7.0).

        e820__memblock_setup() adds every RAM entry to memblock and
        memblock_trim_memory(PAGE_SIZE) drops partial pages, so each range is
        ``[PFN_UP(start), PFN_DOWN(end))``; empty ones vanish and touching ones
        merge, as memblock merges them.

        Returns:
            Half-open page-frame-number ranges.
        """
        out: list[tuple[int, int]] = []
        for r in self.ram_ranges():
            lo = (r.start + PAGE_SIZE - 1) >> PAGE_SHIFT
            hi = r.end >> PAGE_SHIFT
            if lo >= hi:
                continue
            if out and out[-1][1] == lo:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        return out

    def total_pages(self) -> int:
        """Pages of RAM in :meth:`pfn_ranges` (what the zones call present)."""
        return sum(hi - lo for lo, hi in self.pfn_ranges())

    def end_of_ram_pfn(self, limit_pfn: int = MAX_ARCH_PFN) -> int:
        """Models e820__end_ram_pfn() (arch/x86/kernel/e820.c, Linux 7.0).

        The end PFN of the highest RAM or ACPI-data entry (ACPI counts since 6.11),
        clamped to ``limit_pfn``.

        Args:
            limit_pfn: ``MAX_ARCH_PFN`` for max_pfn, ``1 << 20`` for max_low_pfn.

        Returns:
            The PFN.
        """
        last_pfn = 0
        for e in self._entries:
            if e.type not in (E820Type.RAM, E820Type.ACPI):
                continue
            start_pfn, end_pfn = e.start >> PAGE_SHIFT, e.end >> PAGE_SHIFT
            if start_pfn >= limit_pfn:
                continue
            if end_pfn > limit_pfn:
                last_pfn = limit_pfn
                break
            last_pfn = max(last_pfn, end_pfn)
        return min(last_pfn, limit_pfn)

    @property
    def max_pfn(self) -> int:
        """max_pfn as setup_arch() sets it: ``e820__end_of_ram_pfn()``."""
        return self.end_of_ram_pfn(MAX_ARCH_PFN)

    @property
    def max_low_pfn(self) -> int:
        """max_low_pfn: ``e820__end_of_low_ram_pfn()`` (RAM below 4 GiB)."""
        return self.end_of_ram_pfn(1 << (32 - PAGE_SHIFT))

    def holes(self) -> list[PhysRange]:
        """The parts of ``[0, end of the highest RAM)`` that are not usable RAM.

        These are the ranges the direct map leaves unmapped above 1 MiB: reserved,
        ACPI and other non-RAM entries as well as addresses no entry lists.

        Returns:
            Half-open byte ranges in address order.
        """
        out: list[PhysRange] = []
        pos = 0
        for r in self.ram_ranges():
            if r.start > pos:
                out.append(PhysRange(pos, r.start))
            pos = r.end
        return out

    def mapped_any(self, start: int, end: int, e820_type: int | None = None) -> bool:
        """Models e820__mapped_any() (arch/x86/kernel/e820.c, Linux 7.0).

        Args:
            start: first byte address.
            end: one past the last byte address.
            e820_type: the type to look for; None for any type.

        Returns:
            True if an entry of that type overlaps ``[start, end)``.
        """
        return any(
            (e820_type is None or e.type == e820_type)
            and e.start < end
            and e.end > start
            for e in self._entries
        )

    def mapped_all(self, start: int, end: int, e820_type: int) -> bool:
        """Models e820__mapped_all() (arch/x86/kernel/e820.c, Linux 7.0).

        Args:
            start: first byte address.
            end: one past the last byte address.
            e820_type: the type every byte must have.

        Returns:
            True if entries of that type cover all of ``[start, end)``.
        """
        for e in self._entries:
            if e.type != e820_type or e.end <= start or e.start >= end:
                continue
            if e.start <= start:
                start = e.end
            if start >= end:
                return True
        return start >= end

    def type_at(self, addr: int) -> int | None:
        """The E820 type of the entry holding ``addr``, or None in a gap."""
        for e in self._entries:
            if e.start <= addr < e.end:
                return e.type
        return None

    # --- output ----------------------------------------------------------------------

    def format_dmesg(self, who: str = "BIOS-e820") -> str:
        """Models e820__print_table() (arch/x86/kernel/e820.c, Linux 7.0).

        Args:
            who: the prefix (``"BIOS-e820"``, ``"modified"``, ...).

        Returns:
            One ``<who>: [mem 0x...-0x...] <type>`` line per entry, in the
            classic spelling, without timestamps.
        """
        return "".join(f"{who}: {e}\n" for e in self._entries)

    def format_firmware_memmap(self) -> str:
        """The text dump format of :meth:`parse_firmware_memmap` for this table.

        Returns:
            One ``0x<start> 0x<last> <type string>`` line per entry.
        """
        return "".join(
            f"{e.start:#x} {e.last:#x} {e.resource_name}\n" for e in self._entries
        )


def _dmesg_range(m: re.Match[str], lineno: int, line: str) -> tuple[int, int]:
    start = int(m.group("start"), 16)
    last = int(m.group("last"), 16)
    if last < start or last >= _ADDR_LIMIT:
        raise _line_error("dmesg", lineno, line, "end below start or above 2**64")
    return start, last + 1


def _memmap_entry(fields: list[str], where: str) -> E820Entry:
    start = _parse_hex(fields[0], f"{where}: start")
    last = _parse_hex(fields[1], f"{where}: end")
    if last < start or last >= _ADDR_LIMIT:
        raise EmuValueError(f"{where}: end {last:#x} below start {start:#x}")
    e820_type = _RESOURCE_TYPES.get(fields[2])
    if e820_type is None:
        raise EmuValueError(f"{where}: unknown memmap type {fields[2]!r}")
    return E820Entry(start, last + 1, e820_type)


def _memmap_text_entries(text: str) -> list[E820Entry]:
    entries: list[E820Entry] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = stripped.split(None, 2)
        if len(fields) != 3:
            raise _line_error(
                "firmware memmap", lineno, line, "expected '<start> <end> <type>'"
            )
        try:
            entries.append(_memmap_entry(fields, f"firmware memmap line {lineno}"))
        except EmuValueError as exc:
            raise EmuValueError(f"{exc}: {line.strip()!r}") from None
    if not entries:
        raise EmuValueError("firmware memmap: no entries found")
    return entries
