"""Per-scenario parameters of the tunable heuristics, chosen on training seeds.

``baselines/tuned.yml`` is written by ``benchmarks/tune_baselines.py`` (never by hand): for each
built-in scenario and tunable heuristic, the grid point with the best mean - 2 x standard error
of the scenario's primary metric on training seeds (0..N-1, disjoint from every evaluation seed
set), with the command, seeds and score that chose it. A heuristic made for a scenario the file
does not list (a user scenario) uses its class defaults; explicit keyword arguments
(``baselines.make("priced", env, price=0.1)``) win over both.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

TUNED_FILE = Path(__file__).with_name("tuned.yml")


@lru_cache(maxsize=1)
def _table() -> dict:
    if not TUNED_FILE.is_file():
        return {}
    with open(TUNED_FILE) as f:
        data = yaml.safe_load(f) or {}
    return data.get("scenarios", {})


def tuned(policy: str, scenario: str | None) -> dict:
    """The stored parameters of ``policy`` on built-in scenario ``scenario`` ({} if none)."""
    entry = _table().get(scenario or "", {}).get(policy, {})
    return dict(entry.get("params", {}))


def scenario_name(env) -> str | None:
    sc = getattr(getattr(env, "unwrapped", env), "scenario", None)
    return getattr(sc, "name", None)
