"""Tune the tunable heuristics per built-in scenario on training seeds; write ``baselines/tuned.yml``.

Baselines get the care agents get: each tunable rule (``priced``, ``adaptive``) is run over a
grid of its parameters on training seeds (default 0..29; anything outside the training range
0..999, where every evaluation set lies, is refused) with the batched simulator, and the grid point with the best
*mean - 2 x standard error* of the scenario's primary metric is kept (a point that is good on
average only because most seeds go well while some collapse is not chosen); ties go to the
earlier grid point (the grids list simpler settings first). ``priced`` is tuned after ``adaptive``, on
top of its tuned threshold and occupancy. The file records, per scenario and
rule, the parameters, the score, the runner-up and the command, so a reader can see what chose
them; ``--check`` recomputes everything and fails if the stored parameters differ.

    .venv/bin/python benchmarks/tune_baselines.py                 # all built-in scenarios (~10 min, 2 cores)
    .venv/bin/python benchmarks/tune_baselines.py --check         # reproduce the stored parameters
    .venv/bin/python benchmarks/tune_baselines.py --scenarios serving-small --policies priced --dry-run
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: Grids, simplest settings first (ties go to the earlier point).
GRIDS: dict[str, dict[str, tuple]] = {
    "adaptive": {"threshold": (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, math.inf),
                 "occupancy": (0.1, 0.25, 0.5, 1.0)},
    # with adaptive's tuned threshold and occupancy (price 0 and no skipping is adaptive itself)
    "priced": {"skip_hopeless": (False, True), "price": (0.0, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)},
    # the CP-SAT planner's price on device-seconds (its fallback is priced as tuned above); it has
    # no batched form, so its episodes run on the reference simulator (about a minute each)
    "planner": {"price": (0.5, 1.0, 2.0)},
    # the batching rules (baselines/batching.py), on scenarios with dynamic batching only
    # (elsewhere they are their batch-1 rules); reference simulator (no batched form)
    "clockwork": {"variant": ("any", "fastest", "median", "most_accurate", "adaptive"), "prefer": ("batch", "accuracy"),
                  "threshold": (0.5, 2.0)},  # (threshold: of variant adaptive only)
    "triton": {"variant": ("fastest", "median", "most_accurate"), "max_batch": (4, 8, 16), "max_delay": (0.1, 0.3)},
    "infaas-batch": {"accuracy_first": (False, True)},
    # the continuous-batching router (baselines/continuous.py), on continuous-batching scenarios only
    "vllm": {"variant": ("fastest", "median", "most_accurate", "slo"), "headroom": (0.5, 0.7, 0.9),
             "route": ("held", "kv")},  # (headroom: of variant slo only)
}
#: Policies tuned only on scenarios with dynamic batching (``batching.sizes``).
BATCHING = {"clockwork", "triton", "infaas-batch"}
#: Policies tuned only on scenarios with continuous batching (``continuous_batching``).
CONTINUOUS = {"vllm"}
#: Policies tuned on fewer seeds by default because each episode is slow (see --planner-seeds).
SLOW = {"planner"}
#: Scenarios the planner is tuned on by default (elsewhere it keeps its class defaults): its
#: episodes cost about a minute each, so only serving-small so far.
PLANNER_SCENARIOS = ("serving-small",)
#: Tuning stays in the training range 0..999; every evaluation set (held-out 1000.., validation
#: 10000.., test 20000..: agents.envs) lies above it.
TRAINING_RANGE = range(0, 1000)


def points(policy: str) -> list[dict]:
    grid = GRIDS[policy]
    pts = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    if policy == "vllm":  # headroom matters only to variant slo
        pts = [p for p in pts if p["variant"] == "slo" or p["headroom"] == grid["headroom"][0]]
    return pts


def score_of(values: list[float], sign: float) -> tuple[float, float, float]:
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    mean = float(x.mean()) if x.size else math.nan
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0
    return sign * mean - 2.0 * se, mean, se


def run_reference(scenario: str, policy: str, seeds: list[int], params: dict, jobs: int) -> list[dict]:
    """Episodes of a policy with no batched form, on the reference simulator, as evaluate.py
    runs them (the same reset seeds), over ``jobs`` processes."""
    from baselines.evaluation import WorkItem, run_item

    items = [WorkItem(scenario, policy, policy, s, 0, policy_kwargs=tuple(sorted(params.items()))) for s in seeds]
    if jobs <= 1:
        return [run_item(it) for it in items]
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(jobs) as pool:
        return pool.map(run_item, items, chunksize=1)


def tune(scenario: str, policy: str, seeds: list[int], fixed: dict | None = None, log=print, jobs: int = 1) -> dict:
    from baselines.batched import has_batched
    from baselines.batched_eval import SeedFacts, run_batched
    from envs.env import SchedulingEnv
    from envs.scenarios.loader import load_scenario
    from envs.sim.metrics import HIGHER_IS_BETTER

    sc = load_scenario(scenario)
    metric = sc.primary_metric
    sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
    facts = SeedFacts(lambda: SchedulingEnv(sc))
    rows = []
    t0 = time.perf_counter()
    for params in points(policy):
        params = {**(fixed or {}), **params}
        if has_batched(policy) and sc.reference_only is None:  # (the batched simulator refuses batching)
            res = run_batched(sc, policy, policy, seeds, facts=facts, policy_kwargs=params)
        else:
            res = run_reference(scenario, policy, seeds, params, jobs)
        vals = [r["metrics"][metric] for r in res]
        score, mean, se = score_of(vals, sign)
        rows.append((score, mean, se, params))
        log(f"  {scenario} {policy} {params}: {metric} {mean:.4f} (se {se:.4f}, score {score:.4f})")
    order = sorted(range(len(rows)), key=lambda i: (-rows[i][0], i))  # best score, then grid order
    best, second = rows[order[0]], rows[order[1]] if len(rows) > 1 else None
    out = {"params": dict(best[3]), "metric": metric, "mean": round(best[1], 6), "se": round(best[2], 6), "score": round(best[0], 6),
           "grid_points": len(rows), "seconds": round(time.perf_counter() - t0, 1)}
    if second is not None:
        out["runner_up"] = {"params": second[3], "mean": round(second[1], 6), "score": round(second[0], 6)}
    return out


def main(argv=None) -> int:
    import yaml

    import envs
    from baselines.tuned import TUNED_FILE
    from envs.scenarios.loader import load_scenario

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", nargs="+", default=envs.builtin_scenarios())
    ap.add_argument("--policies", nargs="+", default=list(GRIDS), choices=list(GRIDS))
    ap.add_argument("--seeds", type=int, nargs=2, default=[0, 29], metavar=("FIRST", "LAST"),
                    help="training seed range, inclusive (default 0 29)")
    ap.add_argument("--planner-seeds", type=int, nargs=2, default=[0, 4], metavar=("FIRST", "LAST"),
                    help="training seed range of the slow policies (planner; default 0 4)")
    ap.add_argument("--planner-scenarios", nargs="+", default=list(PLANNER_SCENARIOS),
                    help=f"scenarios the planner is tuned on (default {' '.join(PLANNER_SCENARIOS)})")
    ap.add_argument("--jobs", type=int, default=2, help="processes for the reference-simulator episodes (default 2)")
    ap.add_argument("--check", action="store_true", help="recompute and compare with the stored file (exit 1 if different)")
    ap.add_argument("--dry-run", action="store_true", help="print, do not write the file")
    args = ap.parse_args(argv)
    seeds = list(range(args.seeds[0], args.seeds[1] + 1))
    slow_seeds = list(range(args.planner_seeds[0], args.planner_seeds[1] + 1))
    bad = [s for s in seeds + slow_seeds if s not in TRAINING_RANGE]
    if bad:
        ap.error(f"seeds {bad[0]}..{bad[-1]} are outside the training range 0..999 (evaluation seeds lie "
                 f"above it): tune on training seeds only")
    unknown = sorted(set(args.scenarios) - set(envs.builtin_scenarios()))
    if unknown:
        ap.error(f"unknown built-in scenario(s) {unknown}: one of {envs.builtin_scenarios()}")
    stored = {}
    if TUNED_FILE.is_file():
        stored = yaml.safe_load(TUNED_FILE.read_text()) or {}
    table = dict(stored.get("scenarios", {}))
    t0 = time.perf_counter()
    mismatches = []
    for scenario in args.scenarios:
        entry = dict(table.get(scenario, {}))
        for policy in [p for p in GRIDS if p in args.policies]:  # adaptive first: priced builds on it
            if policy in SLOW and scenario not in args.planner_scenarios:
                continue
            if policy in BATCHING and load_scenario(scenario).batch_sizes == (1,):
                continue
            if policy in CONTINUOUS and load_scenario(scenario).continuous is None:
                continue
            fixed = dict(entry.get("adaptive", {}).get("params", {})) if policy == "priced" else None
            result = tune(scenario, policy, slow_seeds if policy in SLOW else seeds, fixed, jobs=args.jobs)
            print(f"{scenario} {policy}: {result['params']} ({result['metric']} {result['mean']:.4f}, "
                  f"se {result['se']:.4f}; {result['seconds']:.0f}s)", flush=True)
            old = entry.get(policy, {}).get("params")
            if args.check and old != result["params"]:
                mismatches.append(f"{scenario} {policy}: stored {old}, recomputed {result['params']}")
            entry[policy] = result
        table[scenario] = entry
    wall = time.perf_counter() - t0
    if args.check:
        for m in mismatches:
            print("MISMATCH " + m)
        print(f"check: {'the stored parameters reproduce' if not mismatches else f'{len(mismatches)} differ'} "
              f"({wall:.0f}s)")
        return 1 if mismatches else 0
    doc = {
        "written_by": "benchmarks/tune_baselines.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seeds": f"{seeds[0]}..{seeds[-1]} (training seeds; evaluation sets never used); planner "
                 f"{slow_seeds[0]}..{slow_seeds[-1]}",
        "criterion": "best mean - 2 x standard error of the scenario's primary metric (ties: earlier grid point)",
        "grids": {p: {k: list(vals) for k, vals in GRIDS[p].items()} for p in GRIDS},
        "scenarios": table,
    }
    text = ("# Per-scenario parameters of the tunable heuristics (baselines/tuned.py). Written by\n"
            "# benchmarks/tune_baselines.py; do not edit by hand (--check reproduces it).\n"
            + yaml.safe_dump(doc, sort_keys=False))
    if args.dry_run:
        print(text)
    else:
        from baselines.files import write_text

        write_text(TUNED_FILE, text)
        print(f"wrote {TUNED_FILE} ({wall:.0f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
