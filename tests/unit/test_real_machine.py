"""The captured machine (tests/data/machine): the modelled boot against /proc/meminfo.

The issue's check: the modelled DirectMap lines after boot should equal what the real
machine shows minus the splits its /proc/vmstat reports since boot.  The real machine
shows DirectMap4k 26624 kB, 2M 2070528 kB, 1G 25165824 kB and 3 direct_map_level2_splits
(no level3); before those 3 runtime splits it had 4k 20480, 2M 2076672, 1G 25165824 kB.

The model reproduces the 1G count and the total exactly (both include the boot-time
double counting of the top gigabyte, which is why they sum to 26 GiB on 24 GiB of RAM),
and makes one boot-time 2M split fewer than the real kernel (8 instead of 9: kfence's 2,
free_initmem's 2, mark_rodata_ro's 4).  The ninth is unexplained (an early boot-time
set_memory_* of this vendor kernel we cannot see); the test pins the measured gap so any
change to it shows.
"""

from __future__ import annotations

from pathlib import Path

from kernel_model.machine import Machine
from kernel_model.meminfo import parse_meminfo_direct_map

DATA = Path(__file__).resolve().parent.parent / "data" / "machine"


def real_before_runtime_splits() -> dict[str, int]:
    real = parse_meminfo_direct_map((DATA / "meminfo").read_text())
    vm = dict(
        (k, int(v))
        for k, v in (
            line.split() for line in (DATA / "vmstat").read_text().splitlines()
        )
    )
    l2, l3 = vm["direct_map_level2_splits"], vm["direct_map_level3_splits"]
    return {
        "DirectMap4k": real["DirectMap4k"] - l2 * 512 * 4,
        "DirectMap2M": real["DirectMap2M"] + l2 * 2048 - l3 * 512 * 2048,
        "DirectMap1G": real["DirectMap1G"] + l3 * 1048576,
    }


def modelled() -> tuple[Machine, dict[str, int]]:
    m = Machine(iomem=DATA / "iomem", init_range=(0x3783000, 0x3783000 + 3728 * 1024))
    return m, parse_meminfo_direct_map(m.meminfo())


def test_real_machine_counts_before_its_runtime_splits() -> None:
    assert real_before_runtime_splits() == {
        "DirectMap4k": 20480,
        "DirectMap2M": 2076672,
        "DirectMap1G": 25165824,
    }


def test_model_matches_1g_count_and_total_of_the_real_machine() -> None:
    real = real_before_runtime_splits()
    m, model = modelled()
    assert model["DirectMap1G"] == real["DirectMap1G"]
    assert sum(model.values()) == sum(real.values()) == 27262976
    assert m.vmstat().splitlines()[:2] == [
        "direct_map_level2_splits 0",
        "direct_map_level3_splits 0",
    ]


def test_model_makes_one_boot_time_2m_split_fewer_than_the_real_kernel() -> None:
    real = real_before_runtime_splits()
    _, model = modelled()
    assert real["DirectMap4k"] - model["DirectMap4k"] == 2048
    assert model["DirectMap2M"] - real["DirectMap2M"] == 2048


def test_boot_messages_match_the_real_dmesg() -> None:
    m, _ = modelled()
    real = (DATA / "dmesg").read_text()
    for line in m.dmesg:
        assert line in real, line
