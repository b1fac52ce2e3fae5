"""Hypothesis profiles: `ci` is bounded and chosen when CI=true; `long` is for
a deliberate, slow search (`HYPOTHESIS_PROFILE=long pytest`)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=50,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("long", max_examples=2000, deadline=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE")
    or os.environ.get("RIPL_HYPOTHESIS_PROFILE")  # the same, by ripl's own name
    or ("ci" if os.environ.get("CI") == "true" else "default")
)
