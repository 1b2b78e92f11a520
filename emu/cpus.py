"""CPU presets: TLB geometry, paging-structure caches and latencies, with sources.

Marks follow ``reference/x86-paging.md``: [S] read in the vendor manual, [M] from vendor
manuals or reviews as remembered there, [?] uncertain.  Every geometry is sets x ways;
``entries == ways`` means fully associative.

Cost-model latencies (cycles) are rough and documented in docs/mmu-model.md: an L1 TLB
hit costs ``l1_hit`` (0: hidden behind the data-cache access), an L1 miss adds
``l2_hit`` (the STLB lookup), and every memory reference of a walk costs ``pte_hit`` if
its 64-byte line is in the modelled page-table line cache, else ``pte_miss``.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from emu import arch
from emu.errors import EmuValueError

ROLES = ("l1i", "l1d", "l1s", "l2i", "l2")
POLICIES = ("lru", "plru", "fifo", "random", "srrip")
SIZE_NAMES = {"4K": 1, "2M": 2, "1G": 4}


@dataclass(frozen=True)
class TLBArray:
    """One set-associative TLB array.

    Attributes:
        name: label used in reports (``"L1D-4K"``).
        role: ``l1i``, ``l1d`` (loads; stores too without ``l1s``), ``l1s`` (store
            DTLB), ``l2i`` (second-level ITLB) or ``l2`` (shared second level).
        sizes: page sizes it holds, from ``"4K"``, ``"2M"``, ``"1G"``.  A leaf larger
            than every size held is cached as a fractured piece of the largest one.
        entries: total entries.
        ways: associativity (``entries`` for fully associative).
        policy: ``lru``, ``plru``, ``fifo``, ``random`` or ``srrip``.
    """

    name: str
    role: str
    sizes: tuple[str, ...]
    entries: int
    ways: int
    policy: str = "lru"

    @property
    def sets(self) -> int:
        """Number of sets."""
        return self.entries // self.ways

    def check(self) -> None:
        """Raise EmuValueError naming the array if its geometry is unusable."""
        where = f"TLB array {self.name!r}"
        if self.role not in ROLES:
            raise EmuValueError(f"{where}: role {self.role!r} is not one of {ROLES}")
        if not self.sizes or any(s not in SIZE_NAMES for s in self.sizes):
            raise EmuValueError(f"{where}: sizes {self.sizes} must be from 4K, 2M, 1G")
        if self.ways <= 0 or self.entries <= 0:
            raise EmuValueError(f"{where}: entries and ways must be positive")
        if self.entries % self.ways:
            raise EmuValueError(
                f"{where}: {self.entries} entries do not divide into {self.ways} ways"
            )
        sets = self.sets
        if sets & (sets - 1):
            raise EmuValueError(
                f"{where}: {sets} sets is not a power of two (set index uses VA bits)"
            )
        if self.policy not in POLICIES:
            raise EmuValueError(f"{where}: policy {self.policy!r} not in {POLICIES}")
        if self.policy == "plru" and (self.ways & (self.ways - 1) or self.ways > 64):
            raise EmuValueError(
                f"{where}: tree-PLRU needs a power-of-two way count <= 64, "
                f"got {self.ways}"
            )


@dataclass(frozen=True)
class TLBConfig:
    """A CPU's translation hardware and cost model.

    Attributes:
        name: preset name.
        arrays: the TLB arrays, probed within a role in this order.
        psc: paging-structure caches as {level: (sets, ways)} for ``arch.LVL_PD`` (PDE
            cache) up to ``arch.LVL_PML5``.
        pte_cache: (sets, ways) of the page-table line cache, or None to charge
            ``walk_ref`` per reference.
        l1_hit, l2_hit, walk_ref, pte_hit, pte_miss: latencies in cycles.
        walkers: page walkers (reported only; walks are not overlapped).
        vendor: ``intel`` or ``amd`` (AMD reserves bit 8 of PML4E/PML5E).
        maxphyaddr: MAXPHYADDR.
        gbpages: 1 GiB pages supported.
        policy_seed: seed of random replacement.
        source: where the numbers come from.
    """

    name: str
    arrays: tuple[TLBArray, ...]
    psc: dict[int, tuple[int, int]] = field(
        default_factory=lambda: {
            arch.LVL_PML5: (1, 2),
            arch.LVL_PML4: (1, 4),
            arch.LVL_PDPT: (2, 4),
            arch.LVL_PD: (4, 8),
        }
    )
    pte_cache: tuple[int, int] | None = (1024, 16)
    l1_hit: int = 0
    l2_hit: int = 9
    walk_ref: int = 30
    pte_hit: int = 20
    pte_miss: int = 200
    walkers: int = 2
    vendor: str = "intel"
    maxphyaddr: int = 46
    gbpages: bool = True
    policy_seed: int = 1
    source: str = ""

    def check(self) -> None:
        """Raise EmuValueError naming the first problem in the configuration."""
        if not self.arrays or len(self.arrays) > 16:
            raise EmuValueError(f"config {self.name!r}: needs 1..16 TLB arrays")
        for a in self.arrays:
            a.check()
        if not any(a.role == "l1d" for a in self.arrays):
            raise EmuValueError(f"config {self.name!r}: no l1d array")
        if not any(a.role == "l1i" for a in self.arrays):
            raise EmuValueError(f"config {self.name!r}: no l1i array")
        for level, (sets, ways) in self.psc.items():
            if level not in (arch.LVL_PD, arch.LVL_PDPT, arch.LVL_PML4, arch.LVL_PML5):
                raise EmuValueError(f"config {self.name!r}: PSC level {level} invalid")
            if ways < 0 or sets <= 0 or sets & (sets - 1):
                raise EmuValueError(
                    f"config {self.name!r}: PSC level {level} geometry {sets}x{ways} "
                    "needs a power-of-two set count"
                )
        if self.pte_cache is not None:
            sets, ways = self.pte_cache
            if ways <= 0 or sets <= 0 or sets & (sets - 1):
                raise EmuValueError(
                    f"config {self.name!r}: pte_cache {sets}x{ways} invalid"
                )
        if self.vendor not in ("intel", "amd"):
            raise EmuValueError(f"config {self.name!r}: vendor {self.vendor!r}")
        if not 32 <= self.maxphyaddr <= arch.PA_BITS_MAX:
            raise EmuValueError(f"config {self.name!r}: maxphyaddr {self.maxphyaddr}")
        for lat in ("l1_hit", "l2_hit", "walk_ref", "pte_hit", "pte_miss"):
            v = getattr(self, lat)
            if not isinstance(v, int) or v < 0 or v >= 1 << 31:
                raise EmuValueError(f"config {self.name!r}: {lat}={v!r} invalid")

    def with_overrides(self, **changes: Any) -> TLBConfig:
        """A copy with some fields replaced (e.g. latencies), checked."""
        cfg = replace(self, **changes)
        cfg.check()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (the format ``from_dict`` and TOML files use)."""
        return {
            "name": self.name,
            "arrays": [
                {
                    "name": a.name,
                    "role": a.role,
                    "sizes": list(a.sizes),
                    "entries": a.entries,
                    "ways": a.ways,
                    "policy": a.policy,
                }
                for a in self.arrays
            ],
            "psc": {str(k): list(v) for k, v in sorted(self.psc.items())},
            "pte_cache": list(self.pte_cache) if self.pte_cache else None,
            "l1_hit": self.l1_hit,
            "l2_hit": self.l2_hit,
            "walk_ref": self.walk_ref,
            "pte_hit": self.pte_hit,
            "pte_miss": self.pte_miss,
            "walkers": self.walkers,
            "vendor": self.vendor,
            "maxphyaddr": self.maxphyaddr,
            "gbpages": self.gbpages,
            "policy_seed": self.policy_seed,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TLBConfig:
        """Build and check a configuration from a dict.

        ``base`` names a preset to start from; other keys override it.  ``arrays`` is a
        list of dicts with TLBArray's fields; ``psc`` maps level (2..5) to [sets, ways].

        Raises:
            EmuValueError: unknown keys or an unusable geometry.
        """
        d = dict(d)
        base = d.pop("base", None)
        start: dict[str, Any] = preset(base).to_dict() if base else {"name": "custom"}
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise EmuValueError(f"unknown CPU config keys: {sorted(unknown)}")
        start.update(d)
        if "arrays" not in start:
            raise EmuValueError("CPU config needs 'arrays' (or a 'base' preset)")
        try:
            arrays = tuple(
                TLBArray(
                    name=str(a.get("name", f"array{i}")),
                    role=str(a["role"]),
                    sizes=tuple(a["sizes"]),
                    entries=int(a["entries"]),
                    ways=int(a.get("ways", a["entries"])),
                    policy=str(a.get("policy", "lru")),
                )
                for i, a in enumerate(start["arrays"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EmuValueError(f"bad TLB array in CPU config: {exc}") from exc
        psc_raw = start.get("psc", {})
        psc = {int(k): (int(v[0]), int(v[1])) for k, v in psc_raw.items()}
        pc = start.get("pte_cache")
        kwargs = {
            k: v for k, v in start.items() if k not in ("arrays", "psc", "pte_cache")
        }
        cfg = cls(
            arrays=arrays,
            psc=psc,
            pte_cache=(int(pc[0]), int(pc[1])) if pc else None,
            **kwargs,
        )
        cfg.check()
        return cfg

    @classmethod
    def from_toml(cls, path: str | Path) -> TLBConfig:
        """Read a configuration from a TOML file (the dict format of ``from_dict``)."""
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise EmuValueError(f"{path}: cannot read CPU config: {exc}") from exc
        return cls.from_dict(data)


def _a(name: str, role: str, sizes: str, entries: int, ways: int) -> TLBArray:
    return TLBArray(name, role, tuple(sizes.split("+")), entries, ways)


PRESETS: dict[str, TLBConfig] = {
    # Intel opt. manual (doc 248966) Table 2-15: ITLB rows [S], rest [M]; 2 walkers [S].
    "skylake": TLBConfig(
        name="skylake",
        arrays=(
            _a("L1I-4K", "l1i", "4K", 128, 8),
            _a("L1I-2M", "l1i", "2M", 8, 8),  # per thread, FA
            _a("L1D-4K", "l1d", "4K", 64, 4),
            _a("L1D-2M", "l1d", "2M", 32, 4),
            _a("L1D-1G", "l1d", "1G", 4, 4),  # FA
            _a("STLB", "l2", "4K+2M", 1536, 12),
            _a("STLB-1G", "l2", "1G", 16, 4),
        ),
        l2_hit=9,
        walkers=2,
        source="Intel opt. manual Table 2-15 [S/M]; PSCs: ChampSim "
        "defaults [?]; STLB latency [M][?]",
    ),
    # Ice Lake / Sunny Cove [M]; the 1G STLB (1024/8w) and walker count are [?].
    "icelake": TLBConfig(
        name="icelake",
        arrays=(
            _a("L1I-4K", "l1i", "4K", 128, 8),
            _a("L1I-2M", "l1i", "2M", 16, 16),
            _a("L1S", "l1s", "4K+2M+1G", 16, 16),  # store DTLB, FA
            _a("L1D-4K", "l1d", "4K", 64, 4),
            _a("L1D-2M", "l1d", "2M", 32, 4),
            _a("L1D-1G", "l1d", "1G", 8, 8),
            _a("STLB", "l2", "4K+2M", 2048, 16),
            _a("STLB-1G", "l2", "1G", 1024, 8),  # [?]
        ),
        l2_hit=9,
        walkers=2,
        source="reference x86-paging.md section 4 [M], 1G STLB [?]",
    ),
    # Golden Cove (Alder Lake P-core, Sapphire Rapids) [M]: 96-entry L1 DTLB and
    # 2048-entry STLB measured by Chips and Cheese; 1G STLB [?]; 4 walkers [M].
    "goldencove": TLBConfig(
        name="goldencove",
        arrays=(
            _a("L1I-4K", "l1i", "4K", 256, 8),
            _a("L1I-2M", "l1i", "2M", 32, 32),
            _a("L1S", "l1s", "4K+2M+1G", 16, 16),
            _a("L1D-4K", "l1d", "4K", 96, 6),
            _a("L1D-2M", "l1d", "2M", 32, 4),
            _a("L1D-1G", "l1d", "1G", 8, 8),
            _a("STLB", "l2", "4K+2M", 2048, 16),
            _a("STLB-1G", "l2", "1G", 1024, 8),  # [?]
        ),
        l2_hit=8,
        walkers=4,
        source="reference x86-paging.md section 4 [M], 1G STLB [?]",
    ),
    # AMD Zen 2 (SOG doc 56305): 64-entry FA L1 TLBs for all sizes; 512/8w L2 ITLB and
    # L2 DTLB for 4K/2M where 1G pages are smashed into 2M entries.  The reference gives
    # the L2 DTLB as 2048 entries 12-way, which is no set-associative geometry (2048 is
    # not a multiple of 12); we use 16 ways x 128 sets [?].  The L2 DTLB also caches
    # PDEs on AMD; here the PSCs are separate arrays [?].
    "zen2": TLBConfig(
        name="zen2",
        arrays=(
            _a("L1I", "l1i", "4K+2M+1G", 64, 64),
            _a("L2I", "l2i", "4K+2M", 512, 8),
            _a("L1D", "l1d", "4K+2M+1G", 64, 64),
            _a("L2D", "l2", "4K+2M", 2048, 16),
        ),
        l2_hit=7,
        walkers=2,
        vendor="amd",
        maxphyaddr=48,
        source="AMD SOG 56305 via 7-cpu/WikiChip [S-ish]; L2 ways [?]",
    ),
    # Zen 3 (doc 56665): as Zen 2, 6 walkers [M]; L2 DTLB 16-way [?], 1G smashed [?].
    "zen3": TLBConfig(
        name="zen3",
        arrays=(
            _a("L1I", "l1i", "4K+2M+1G", 64, 64),
            _a("L2I", "l2i", "4K+2M", 512, 8),
            _a("L1D", "l1d", "4K+2M+1G", 64, 64),
            _a("L2D", "l2", "4K+2M", 2048, 16),
        ),
        l2_hit=7,
        walkers=6,
        vendor="amd",
        maxphyaddr=48,
        source="reference x86-paging.md section 4 [M]; L2 ways [?]",
    ),
    # Zen 4 (doc 57647): 72-entry FA L1 DTLB, 3072/24w L2 DTLB [M]; 1G handling [?].
    "zen4": TLBConfig(
        name="zen4",
        arrays=(
            _a("L1I", "l1i", "4K+2M+1G", 64, 64),
            _a("L2I", "l2i", "4K+2M", 512, 8),
            _a("L1D", "l1d", "4K+2M+1G", 72, 72),
            _a("L2D", "l2", "4K+2M", 3072, 24),
        ),
        l2_hit=7,
        walkers=6,
        vendor="amd",
        maxphyaddr=48,
        source="reference x86-paging.md section 4; Chips and Cheese [M]; 1G [?]",
    ),
    # ChampSim's champsim_config.json defaults [C]: ITLB/DTLB 16x4, STLB 128x12, one
    # page size (4K: larger leaves are cached as 4K pieces), PSCs 5:1x2 4:1x4 3:2x4
    # 2:4x8.
    "champsim-default": TLBConfig(
        name="champsim-default",
        arrays=(
            _a("ITLB", "l1i", "4K", 64, 4),
            _a("DTLB", "l1d", "4K", 64, 4),
            _a("STLB", "l2", "4K", 1536, 12),
        ),
        l1_hit=1,
        l2_hit=8,
        walkers=5,
        source="ChampSim champsim_config.json defaults [C]",
    ),
}


def preset(name: str) -> TLBConfig:
    """The preset called ``name``.

    Raises:
        EmuValueError: no such preset.
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise EmuValueError(
            f"unknown CPU preset {name!r}; choose from {', '.join(sorted(PRESETS))}"
        ) from None


def resolve(
    cpu: str | TLBConfig | dict[str, Any] | None = None,
    config: TLBConfig | dict[str, Any] | None = None,
) -> TLBConfig:
    """Turn a preset name, a TLBConfig or a dict into a checked TLBConfig."""
    src = config if config is not None else cpu
    if src is None:
        src = "skylake"
    if isinstance(src, TLBConfig):
        src.check()
        return src
    if isinstance(src, dict):
        return TLBConfig.from_dict(src)
    if isinstance(src, str):
        if src.endswith(".toml"):
            return TLBConfig.from_toml(src)
        return preset(src)
    raise EmuValueError(f"cpu must be a preset name, TLBConfig or dict, got {src!r}")


for _cfg in PRESETS.values():
    _cfg.check()
