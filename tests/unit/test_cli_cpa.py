"""What the CLI shows of the CPA work done at boot (mark_rodata_ro, kfence, freed gaps).

The expected texts are derived by hand from reference/linux-mm.md 1.7, 2.7 and 5 for
the default 16 GiB machine (see test_cpa_aliases.py for the step-by-step derivation):
one 1G split (kfence) and eight 2M splits, none of them a vm event (booting).
"""

from __future__ import annotations

import pytest

from kernel_model.cli import main

HIGH_KERNEL_MAPPING = """\
---[ High Kernel Mapping ]---
0xffffffff80000000-0xffffffff81000000          16M                               pmd
0xffffffff81000000-0xffffffff82200000          18M     ro         PSE     GLB x  pmd
0xffffffff82200000-0xffffffff8220a000          40K     ro                 GLB x  pte
0xffffffff8220a000-0xffffffff82400000        2008K     RW                 GLB NX pte
0xffffffff82400000-0xffffffff82e00000          10M     ro         PSE     GLB NX pmd
0xffffffff82e00000-0xffffffff82e0a000          40K     ro                 GLB NX pte
0xffffffff82e0a000-0xffffffff83000000        2008K     RW                 GLB NX pte
0xffffffff83000000-0xffffffff83600000           6M     RW         PSE     GLB NX pmd
0xffffffff83600000-0xffffffff83800000           2M     RW                 GLB NX pte
0xffffffff83800000-0xffffffff83a00000           2M     RW         PSE     GLB NX pmd
0xffffffff83a00000-0xffffffff83c00000           2M     RW                 GLB NX pte
0xffffffff83c00000-0xffffffff83e00000           2M     RW         PSE     GLB NX pmd
0xffffffff83e00000-0xffffffffa0000000         450M                               pmd
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_meminfo_shows_the_boot_splits(capsys):
    assert run(capsys, "meminfo") == (
        "DirectMap4k:       18432 kB\n"
        "DirectMap2M:     2078720 kB\n"
        "DirectMap1G:    16777216 kB\n"
    )


def test_meminfo_without_gbpages_has_no_1g_line(capsys):
    # 8191 2M leaves at boot (no 1G, no double count); kfence splits two of them and
    # the image six more
    assert run(capsys, "meminfo", "--no-gbpages") == (
        "DirectMap4k:       18432 kB\nDirectMap2M:    16758784 kB\n"
    )


def test_ptdump_high_kernel_mapping_after_mark_rodata_ro(capsys):
    assert (
        run(capsys, "ptdump", "--section", "High Kernel Mapping") == HIGH_KERNEL_MAPPING
    )


def test_boot_reports_no_split_events(capsys):
    lines = run(capsys, "boot").splitlines()
    # the meminfo lines, then the vmstat lines (1.7 names; their order is not given)
    assert lines[-5] == "DirectMap1G:    16777216 kB"
    assert sorted(lines[-4:]) == [
        "direct_map_level2_collapses 0",
        "direct_map_level2_splits 0",
        "direct_map_level3_collapses 0",
        "direct_map_level3_splits 0",
    ]
