"""The final table of a training run: trained models next to every baseline, same seeds.

Uses ``baselines.load_policy`` and ``baselines.run_episode`` (common random numbers). Reports, per
policy, the mean of the scenario's primary metric with a 95% Student-t CI over seeds (as
``evaluate.py``), the paired difference to the best heuristic with its CI, and a few secondary
metrics. Every registered heuristic takes part except the ``planner`` (about a minute per
serving-small episode; ``evaluate.py --policies planner ...`` evaluates it), unless the caller
lists the heuristics.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agents.envs import make_env
from agents.evaluation import higher_is_better, mean_metrics

SECONDARY = ("slo_attainment", "mean_accuracy", "p99_latency", "drops")
#: Registered heuristics the final table leaves out by default (slow: a search per decision);
#: it also leaves out the batching rules (``batching_rule``) on scenarios without that kind of batching.
SLOW_HEURISTICS = ("planner",)


def _ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval of the finite values (nan interval below 2 values)."""
    from baselines.stats import t_interval

    v = np.asarray([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    if v.size < 2:
        return float(v.mean()), math.nan, math.nan
    lo, hi = t_interval(v)
    return float(v.mean()), float(lo), float(hi)


def compare_with_baselines(scenario: str, agents: dict[str, str | Path], seeds: Sequence[int], metric: str,
                           heuristics: Sequence[str] | None = None, device: str = "auto",
                           out_path: str | Path | None = None, show: bool = True, progress: bool = False) -> dict:
    """Evaluate ``agents`` (label -> model zip) and ``heuristics`` (default: all) on ``seeds``.

    Returns ``{"metric", "seeds", "best_heuristic", "policies": {label: {...}}}``, also written to
    ``out_path`` as JSON, and prints a table if ``show``.
    """
    import baselines
    from baselines.progress import Progress

    env = make_env(scenario, monitor=False)
    seeds = [int(s) for s in seeds]
    kind = "dynamic" if getattr(env.unwrapped, "B", 1) > 1 else \
        "continuous" if getattr(env.unwrapped, "continuous", False) else None
    names = list(heuristics) if heuristics is not None else [
        n for n in baselines.names() if n not in SLOW_HEURISTICS
        and getattr(baselines.REGISTRY[n], "batching_rule", None) in (None, kind)]
    episodes: dict[str, list[dict[str, float]]] = {}
    wall: dict[str, float] = {}
    todo = [*((n, n) for n in names), *agents.items()]
    bar = Progress(len(todo) * len(seeds), "final evaluation", "episodes", enabled=progress)
    for label, spec in todo:
        policy = baselines.load_policy(str(spec), env, device=device)
        bar.set_description(f"final evaluation: {label}")
        t0 = time.perf_counter()
        episodes[label] = []
        for s in seeds:
            episodes[label].append(baselines.run_episode(env, policy, s)["metrics"])
            bar.update(1)
        wall[label] = (time.perf_counter() - t0) / max(len(seeds), 1)
    bar.close()
    sign = 1.0 if higher_is_better(metric) else -1.0

    def score(label: str) -> float:
        v = mean_metrics(episodes[label]).get(metric, math.nan)
        return sign * v if math.isfinite(v) else -math.inf

    best = max(names, key=score) if names else None
    out: dict = {"scenario": scenario, "metric": metric, "seeds": seeds, "best_heuristic": best, "policies": {},
                 "left_out": [n for n in baselines.names() if n not in names]}
    for label, eps in episodes.items():
        values = [ep.get(metric, math.nan) for ep in eps]
        mean, lo, hi = _ci(values)
        row = {"kind": "agent" if label in agents else "heuristic", "mean": mean, "ci": [lo, hi],
               "values": values, "s_per_episode": wall[label],
               "secondary": {k: mean_metrics(eps).get(k, math.nan) for k in SECONDARY}}
        if best is not None:
            diffs = [a - b for a, b in zip(values, [ep.get(metric, math.nan) for ep in episodes[best]], strict=True)]
            d, dlo, dhi = _ci(diffs)
            row["diff_vs_best"] = {"mean": d, "ci": [dlo, dhi]}
        out["policies"][label] = row
    if out_path:
        from agents.files import write_text

        write_text(out_path, json.dumps(out, indent=2) + "\n")
    if show:
        print_table(out)
    env.close()
    return out


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    metric, best = result["metric"], result["best_heuristic"]
    arrow = "higher" if higher_is_better(metric) else "lower"
    table = Table(title=f"{result['scenario']}: {metric} ({arrow} is better), seeds {result['seeds']}")
    table.add_column("policy")
    table.add_column(f"{metric} [95% CI]", justify="right")
    table.add_column(f"vs {best} [paired 95% CI]", justify="right")
    for k in SECONDARY:
        table.add_column(k, justify="right")
    table.add_column("s/episode", justify="right")
    sign = 1.0 if higher_is_better(metric) else -1.0
    rows = sorted(result["policies"].items(),
                  key=lambda kv: -sign * kv[1]["mean"] if math.isfinite(kv[1]["mean"]) else math.inf)
    for label, row in rows:
        lo, hi = row["ci"]
        d = row.get("diff_vs_best")
        diff = "" if d is None or label == best else f"{d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
        style = "bold" if row["kind"] == "agent" else None
        table.add_row(label, f"{row['mean']:.4f} [{lo:.4f}, {hi:.4f}]", diff,
                      *(f"{row['secondary'][k]:.4g}" for k in SECONDARY), f"{row['s_per_episode']:.2f}",
                      style=style)
    Console(width=200).print(table)
    if result.get("left_out"):
        print(f"(95% Student-t intervals over {len(result['seeds'])} seeds; not in this table: "
              f"{', '.join(result['left_out'])}, evaluate.py --policies {' '.join(result['left_out'])} ... runs it)")
