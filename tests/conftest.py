"""Shared fixtures: the ``impl`` switch between the C core and the reference."""

from __future__ import annotations

import os
import types

import pytest
from hypothesis import HealthCheck, Phase, settings

settings.register_profile(
    "dev", max_examples=200, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci", max_examples=1000, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# for checking that a deliberately broken build fails fast: report the first failing
# example as found, without shrinking it
settings.register_profile(
    "noshrink", parent=settings.get_profile("dev"),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
settings.load_profile(PROFILE)

#: examples for the few properties the issues ask to run hard (walker differential)
HEAVY_EXAMPLES = 10_000 if PROFILE == "ci" else 500


def _c_impl() -> types.SimpleNamespace:
    try:
        import emu
        from emu import physmem, walk  # noqa: F401  (import the core now)
    except ImportError as exc:
        if os.environ.get("EMU_REQUIRE_C") == "1":
            raise
        pytest.skip(f"C core not importable: {exc}")
    return types.SimpleNamespace(name="c", PhysMem=emu.PhysMem, walk=emu.walk)


def _ref_impl() -> types.SimpleNamespace:
    import emu.ref

    return types.SimpleNamespace(name="ref", PhysMem=emu.ref.PhysMem, walk=emu.ref.walk)


@pytest.fixture(params=["c", "ref"])
def impl(request: pytest.FixtureRequest) -> types.SimpleNamespace:
    """The implementation under test: ``impl.PhysMem`` and ``impl.walk``."""
    return _c_impl() if request.param == "c" else _ref_impl()
