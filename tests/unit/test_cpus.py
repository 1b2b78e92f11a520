"""CPU presets and custom configurations (emu/cpus.py).

Every preset checks and builds an MMU (C and reference); dicts override a ``base``
preset; ``to_dict``/``from_dict`` and TOML files round-trip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import emu.ref
from emu import arch
from emu.cpus import POLICIES, PRESETS, ROLES, TLBArray, TLBConfig, preset, resolve
from emu.errors import EmuValueError
from emu.ref.mmu import RefMMU


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"no TOML for {v!r}")


def to_toml(d: dict[str, Any]) -> str:
    """The ``to_dict`` format as a TOML document (None values are left out)."""
    lines = [
        f"{k} = {_toml_value(v)}"
        for k, v in d.items()
        if v is not None and not isinstance(v, dict) and k != "arrays"
    ]
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{json.dumps(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
    for a in d.get("arrays", []):
        lines.append("\n[[arrays]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in a.items()]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_checks_and_builds(name: str) -> None:
    cfg = preset(name)
    cfg.check()
    assert cfg.name == name
    assert cfg.source
    roles = {a.role for a in cfg.arrays}
    assert {"l1i", "l1d"} <= roles <= set(ROLES)
    assert all(a.policy in POLICIES for a in cfg.arrays)
    assert len({a.name for a in cfg.arrays}) == len(cfg.arrays)
    ref = RefMMU(emu.ref.PhysMem(), name)
    assert ref.config is cfg
    mmu_mod = pytest.importorskip("emu.mmu")
    c = mmu_mod.MMU(emu.PhysMem(), name)
    assert c.config is cfg
    assert c.stats == ref.stats


@pytest.mark.parametrize(
    ("name", "array", "entries", "ways", "sizes"),
    [
        ("skylake", "L1D-4K", 64, 4, ("4K",)),
        ("skylake", "STLB", 1536, 12, ("4K", "2M")),
        ("skylake", "STLB-1G", 16, 4, ("1G",)),
        ("icelake", "L1S", 16, 16, ("4K", "2M", "1G")),
        ("goldencove", "L1D-4K", 96, 6, ("4K",)),
        ("zen2", "L1D", 64, 64, ("4K", "2M", "1G")),
        ("zen2", "L2D", 2048, 16, ("4K", "2M")),
        ("zen4", "L1D", 72, 72, ("4K", "2M", "1G")),
        ("zen4", "L2D", 3072, 24, ("4K", "2M")),
        ("champsim-default", "STLB", 1536, 12, ("4K",)),
    ],
)
def test_preset_geometries_follow_the_reference(
    name: str, array: str, entries: int, ways: int, sizes: tuple[str, ...]
) -> None:
    a = next(a for a in preset(name).arrays if a.name == array)
    assert (a.entries, a.ways, a.sizes) == (entries, ways, sizes)


def test_amd_presets_are_amd_and_intel_ones_intel() -> None:
    for name, cfg in PRESETS.items():
        assert cfg.vendor == ("amd" if name.startswith("zen") else "intel")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_to_dict_from_dict_round_trip(name: str) -> None:
    cfg = preset(name)
    d = cfg.to_dict()
    json.dumps(d)  # plain data only
    assert TLBConfig.from_dict(d) == cfg


def test_round_trip_without_line_cache() -> None:
    cfg = preset("zen3").with_overrides(pte_cache=None, name="zen3-noline")
    assert cfg.to_dict()["pte_cache"] is None
    assert TLBConfig.from_dict(cfg.to_dict()) == cfg


def test_from_dict_base_preset_with_overrides() -> None:
    cfg = TLBConfig.from_dict(
        {"base": "skylake", "l2_hit": 12, "name": "skl-slow", "psc": {"2": [8, 4]}}
    )
    sky = preset("skylake")
    assert (cfg.name, cfg.l2_hit, cfg.arrays) == ("skl-slow", 12, sky.arrays)
    assert cfg.psc == {arch.LVL_PD: (8, 4)}
    assert cfg.pte_cache == sky.pte_cache
    assert cfg.walk_ref == sky.walk_ref
    kept = TLBConfig.from_dict({"base": "zen2"})
    assert kept == preset("zen2")


def test_from_dict_arrays_replace_the_base_arrays() -> None:
    cfg = TLBConfig.from_dict(
        {
            "base": "skylake",
            "arrays": [
                {"name": "I", "role": "l1i", "sizes": ["4K"], "entries": 8},
                {
                    "name": "D",
                    "role": "l1d",
                    "sizes": ["4K", "2M"],
                    "entries": 16,
                    "ways": 4,
                    "policy": "srrip",
                },
            ],
        }
    )
    assert cfg.arrays == (
        TLBArray("I", "l1i", ("4K",), 8, 8, "lru"),
        TLBArray("D", "l1d", ("4K", "2M"), 16, 4, "srrip"),
    )
    assert cfg.arrays[1].sets == 4


def test_from_dict_without_arrays_or_base_is_refused() -> None:
    with pytest.raises(EmuValueError, match="needs 'arrays'"):
        TLBConfig.from_dict({"l2_hit": 3})
    with pytest.raises(EmuValueError, match="bad TLB array"):
        TLBConfig.from_dict({"arrays": [{"role": "l1d"}]})
    with pytest.raises(EmuValueError, match="unknown CPU preset"):
        TLBConfig.from_dict({"base": "k6"})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_from_toml_round_trip(name: str, tmp_path: Path) -> None:
    cfg = preset(name)
    path = tmp_path / f"{name}.toml"
    path.write_text(to_toml(cfg.to_dict()))
    assert TLBConfig.from_toml(path) == cfg
    assert resolve(str(path)) == cfg


def test_from_toml_with_base_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "small.toml"
    path.write_text(
        'base = "zen2"\nname = "tiny"\nl1_hit = 2\n\n'
        '[[arrays]]\nname = "IT"\nrole = "l1i"\nsizes = ["4K"]\nentries = 4\n\n'
        '[[arrays]]\nname = "DT"\nrole = "l1d"\nsizes = ["4K", "2M", "1G"]\n'
        'entries = 8\nways = 2\npolicy = "plru"\n'
    )
    cfg = TLBConfig.from_toml(path)
    assert (cfg.name, cfg.l1_hit, cfg.vendor, len(cfg.arrays)) == ("tiny", 2, "amd", 2)
    assert cfg.arrays[1] == TLBArray("DT", "l1d", ("4K", "2M", "1G"), 8, 2, "plru")


def test_from_toml_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmuValueError, match="cannot read CPU config"):
        TLBConfig.from_toml(tmp_path / "absent.toml")


def test_with_overrides_checks_the_result() -> None:
    cfg = preset("skylake").with_overrides(l1_hit=3)
    assert cfg.l1_hit == 3
    with pytest.raises(EmuValueError, match="l2_hit"):
        preset("skylake").with_overrides(l2_hit=-1)
    with pytest.raises(EmuValueError, match="vendor"):
        preset("skylake").with_overrides(vendor="via")


def test_resolve_accepts_every_form() -> None:
    sky = preset("skylake")
    assert resolve() is sky
    assert resolve("skylake") is sky
    assert resolve(sky) is sky
    assert resolve({"base": "skylake"}) == sky
    assert resolve("skylake", config={"base": "zen4"}) == preset("zen4")
    with pytest.raises(EmuValueError, match="cpu must be"):
        resolve(42)  # type: ignore[arg-type]
