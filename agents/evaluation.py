"""Evaluate trained agents next to the heuristic baselines on identical seeds.

Everything goes through ``baselines.run_episode`` (one rollout for heuristics and SB3 models,
common random numbers), so the numbers logged during training are the numbers ``evaluate.py``
reports.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from envs.sim.metrics import HIGHER_IS_BETTER


def higher_is_better(metric: str) -> bool:
    return metric in HIGHER_IS_BETTER


def evaluate_on_seeds(env, policy: Any, seeds: Iterable[int]) -> list[dict[str, float]]:
    """Episode metrics of ``policy`` (a heuristic or an SB3 model) on each seed."""
    from baselines import run_episode

    return [run_episode(env, policy, int(s))["metrics"] for s in seeds]


def mean_metrics(episodes: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per-metric mean over episodes (NaN-ignoring; NaN if no finite value)."""
    keys = sorted({k for ep in episodes for k, v in ep.items() if isinstance(v, (int, float))})
    out = {}
    for k in keys:
        vals = np.array([float(ep.get(k, math.nan)) for ep in episodes])
        finite = vals[np.isfinite(vals)]
        out[k] = float(finite.mean()) if finite.size else math.nan
    return out


def strongest_heuristic(env, candidates: Sequence[str], seeds: Sequence[int], metric: str
                        ) -> tuple[str, dict[str, list[dict[str, float]]]]:
    """The candidate with the best mean ``metric`` over ``seeds``, and every candidate's episodes.

    Candidates the baselines registry does not know are skipped (the list is configuration;
    heuristics come and go); if none is known, every registered heuristic is a candidate."""
    import baselines

    known = baselines.names()
    names = [n for n in candidates if n in known] or known
    episodes = {n: evaluate_on_seeds(env, baselines.make(n, env), seeds) for n in names}
    sign = 1.0 if higher_is_better(metric) else -1.0

    def score(n: str) -> float:
        v = mean_metrics(episodes[n]).get(metric, math.nan)
        return sign * v if math.isfinite(v) else -math.inf

    return max(names, key=score), episodes


def paired_ci(diffs: Sequence[float], level: float = 0.95, n_boot: int = 10_000,
              seed: int = 0) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap confidence interval of paired differences (a local,
    seeded generator: the interval is reproducible)."""
    d = np.asarray([x for x in diffs if math.isfinite(x)], dtype=float)
    if d.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if d.size < 2:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return mean, float(lo), float(hi)
