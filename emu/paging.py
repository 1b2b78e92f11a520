"""A small page-table builder for tests, examples and users.

It writes real x86-64 entries into any physical memory with ``read_u64``/``write_u64``
(``emu.PhysMem`` or ``emu.ref.PhysMem``) and takes table frames from a bump allocator.
The kernel model builds its own tables; this one is for hand-made address spaces.
"""

from __future__ import annotations

from typing import Protocol

from emu import arch
from emu._check import u64
from emu.errors import EmuMemoryError, EmuValueError

TABLE_FLAGS = arch.PTE_P | arch.PTE_RW | arch.PTE_US
LEAF_FLAGS = arch.PTE_P | arch.PTE_RW


class Memory(Protocol):
    """What the builder needs of physical memory."""

    def read_u64(self, pa: int) -> int: ...  # noqa: D102
    def write_u64(self, pa: int, value: int) -> None: ...  # noqa: D102


_LEVEL_OF_SIZE = {
    arch.PAGE_SIZE: arch.LVL_PT,
    arch.PMD_SIZE: arch.LVL_PD,
    arch.PUD_SIZE: arch.LVL_PDPT,
}


class PageTableBuilder:
    """Builds a 4- or 5-level hierarchy in ``mem``.

    Args:
        mem: physical memory to write the tables into.
        la57: build 5-level tables (a PML5 root).
        table_base: first physical address of the bump allocator for table frames.
        table_limit: the allocator refuses to go past this address.

    Attributes:
        cr3: the value to load into CR3 (the root table's address).
        tables: physical addresses of every table frame allocated, in order.
    """

    def __init__(
        self,
        mem: Memory,
        *,
        la57: bool = False,
        table_base: int = 0x100000,
        table_limit: int = 1 << 40,
    ) -> None:
        if table_base % arch.PAGE_SIZE:
            raise EmuValueError(f"table_base={table_base:#x} is not 4 KiB aligned")
        self.mem = mem
        self.la57 = la57
        self._next = table_base
        self._limit = table_limit
        self.tables: list[int] = []
        self.cr3 = self._new_table()

    @property
    def top_level(self) -> int:
        """The root level: PML5 with LA57, else PML4."""
        return arch.LVL_PML5 if self.la57 else arch.LVL_PML4

    def _new_table(self) -> int:
        if self._next + arch.PAGE_SIZE > self._limit:
            raise EmuMemoryError(f"table allocator exhausted at {self._next:#x}")
        pa = self._next
        self._next += arch.PAGE_SIZE
        self.tables.append(pa)
        return pa

    def entry_address(
        self,
        va: int,
        level: int,
        *,
        create: bool = False,
        table_flags: int = TABLE_FLAGS,
    ) -> int:
        """Physical address of the entry for ``va`` at ``level``.

        Args:
            va: the linear address.
            level: ``arch.LVL_*`` of the entry wanted.
            create: allocate missing intermediate tables (with ``table_flags``).
            table_flags: flags of newly created non-leaf entries.

        Raises:
            EmuValueError: a leaf or a non-present entry above ``level`` is in the way
                (with ``create=False`` only the latter).
        """
        va = u64(va, "va")
        if not arch.is_canonical(va, self.la57):
            raise EmuValueError(f"va={va:#x} is not canonical")
        if not arch.LVL_PT <= level <= self.top_level:
            raise EmuValueError(f"level={level} is outside 1..{self.top_level}")
        table = self.cr3
        for lvl in range(self.top_level, level, -1):
            epa = table + 8 * arch.va_index(va, lvl)
            e = self.mem.read_u64(epa)
            if not e & arch.PTE_P:
                if not create:
                    raise EmuValueError(f"no table below level {lvl} for va={va:#x}")
                nt = self._new_table()
                e = nt | table_flags
                self.mem.write_u64(epa, e)
            elif lvl in (arch.LVL_PD, arch.LVL_PDPT) and e & arch.PTE_PS:
                raise EmuValueError(
                    f"va={va:#x} is mapped by a {arch.LEVEL_NAMES[lvl]} leaf"
                )
            table = e & arch.PTE_ADDR_MASK
        return table + 8 * arch.va_index(va, level)

    def map(
        self,
        va: int,
        pa: int,
        size: int = arch.PAGE_SIZE,
        flags: int = LEAF_FLAGS,
        table_flags: int = TABLE_FLAGS,
    ) -> int:
        """Map ``va`` to ``pa`` with one leaf of ``size`` bytes.

        Args:
            va: linear address, aligned to ``size``.
            pa: physical address, aligned to ``size``.
            size: 4096, 2 MiB or 1 GiB.
            flags: leaf flags (PS is added for large pages; any bits allowed, so tests
                can plant reserved bits).
            table_flags: flags for intermediate tables created on the way.

        Returns:
            The physical address of the leaf entry.
        """
        if size not in _LEVEL_OF_SIZE:
            raise EmuValueError(f"size={size} must be 4 KiB, 2 MiB or 1 GiB")
        va, pa = u64(va, "va"), u64(pa, "pa")
        if va % size or pa % size:
            raise EmuValueError(f"va={va:#x} and pa={pa:#x} must be {size}-aligned")
        if pa >> arch.PA_BITS_MAX:
            raise EmuValueError(f"pa={pa:#x} is beyond 2^{arch.PA_BITS_MAX}")
        level = _LEVEL_OF_SIZE[size]
        epa = self.entry_address(va, level, create=True, table_flags=table_flags)
        value = pa | flags | (arch.PTE_PS if level != arch.LVL_PT else 0)
        self.mem.write_u64(epa, value)
        return epa

    def set_entry(
        self, va: int, level: int, value: int, table_flags: int = TABLE_FLAGS
    ) -> int:
        """Write a raw ``value`` into the entry for ``va`` at ``level``.

        Intermediate tables are created as needed.  Returns the entry's address.
        """
        epa = self.entry_address(va, level, create=True, table_flags=table_flags)
        self.mem.write_u64(epa, u64(value, "value"))
        return epa

    def get_entry(self, va: int, level: int) -> int:
        """Read the entry for ``va`` at ``level`` (tables above must exist)."""
        return self.mem.read_u64(self.entry_address(va, level))
