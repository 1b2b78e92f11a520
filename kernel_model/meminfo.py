"""Linux's own text formats for the direct map's state, byte for byte.

``arch_report_meminfo()`` (arch/x86/mm/pat/set_memory.c) and the x86 direct-map
vm events of ``/proc/vmstat`` (mm/vmstat.c), Linux 7.0.
"""

from __future__ import annotations

from kernel_model.pgtable import PG_LEVEL_1G, PG_LEVEL_2M, PG_LEVEL_4K

#: /proc/vmstat names, in the order mm/vmstat.c prints them
VMSTAT_NAMES = (
    "direct_map_level2_splits",
    "direct_map_level3_splits",
    "direct_map_level2_collapses",
    "direct_map_level3_collapses",
)


def direct_map_meminfo(direct_pages_count: list[int], direct_gbpages: bool) -> str:
    """The DirectMap lines of /proc/meminfo (arch_report_meminfo(), Linux 7.0).

    Args:
        direct_pages_count: per PG_LEVEL_* page counts.
        direct_gbpages: 1G pages are in use (only then is DirectMap1G printed).
    """
    lines = [
        f"DirectMap4k:    {direct_pages_count[PG_LEVEL_4K] << 2:8d} kB",
        f"DirectMap2M:    {direct_pages_count[PG_LEVEL_2M] << 11:8d} kB",
    ]
    if direct_gbpages:
        lines.append(f"DirectMap1G:    {direct_pages_count[PG_LEVEL_1G] << 20:8d} kB")
    return "\n".join(lines) + "\n"


def direct_map_vmstat(events: dict[str, int]) -> str:
    """The direct-map lines of /proc/vmstat (``name value``)."""
    return "".join(f"{name} {events.get(name, 0)}\n" for name in VMSTAT_NAMES)


def parse_meminfo_direct_map(text: str) -> dict[str, int]:
    """DirectMap* values (kB) from a /proc/meminfo text, for comparisons."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("DirectMap"):
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0])
    return out
