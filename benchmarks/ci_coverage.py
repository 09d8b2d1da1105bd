"""Coverage of the evaluation's 95% intervals at the seed counts it is used with.

For each population of per-seed values, draws ``--reps`` samples of n seeds (with
replacement) and counts how often each interval covers the population mean: the BCa
bootstrap, the percentile bootstrap and Student's t (the evaluation's default, chosen on
these figures). Populations:
the per-seed primary-metric values of every policy in an ``evaluate.py`` results.json (the
project's own distributions: skewed, with the occasional collapsed seed), or, without one,
three synthetic ones of that shape.

    .venv/bin/python benchmarks/ci_coverage.py                                     # synthetic
    .venv/bin/python benchmarks/ci_coverage.py results/heuristics-200/results.json --n 10 30

Prints, per n, the mean coverage over populations and the worst one (a nominal 95% interval
should give 0.95; with --reps 2000 the Monte-Carlo error is about +-0.005).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from baselines.stats import bootstrap_ci, t_interval  # noqa: E402


def populations(path: Path | None) -> dict[str, np.ndarray]:
    if path is None:
        rng = np.random.default_rng(0)
        good = rng.beta(40, 10, 4000)
        return {"beta(40,10)": good,
                "lognormal latency": rng.lognormal(0.0, 0.6, 4000),
                "5% collapsed seeds": np.where(rng.random(4000) < 0.05, good - 0.08, good)}
    data = json.loads(path.read_text())
    scen = data["scenarios"] if "scenarios" in data else [data]
    out = {}
    for s in scen:
        pm = s["primary_metric"]
        for name, p in s["policies"].items():
            v = np.array([x for x in p["metrics"][pm]["per_seed"] if x is not None], dtype=float)
            if v.size >= 50 and v.std() > 0:
                out[f"{s['scenario']}/{name}"] = v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="?", type=Path, default=None, help="an evaluate.py results.json")
    ap.add_argument("--n", nargs="+", type=int, default=[10, 30, 100], help="seed counts (default 10 30 100)")
    ap.add_argument("--reps", type=int, default=2000, help="samples per population and n (default 2000)")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    ap.add_argument("--max-populations", type=int, default=12)
    args = ap.parse_args(argv)
    pops = populations(args.results)
    if not pops:
        print("no population with >= 50 finite, non-constant per-seed values", file=sys.stderr)
        return 2
    names = sorted(pops)[: args.max_populations]
    rng = np.random.default_rng(1)
    print(f"{len(names)} populations; {args.reps} samples each; {args.resamples} bootstrap resamples")
    print(f"{'n':>4} | {'method':>10} | mean coverage | worst (population)")
    for n in args.n:
        cov = {"bca": [], "percentile": [], "t": []}
        for name in names:
            pop = pops[name]
            mu = pop.mean()
            hits = {k: 0 for k in cov}
            for r in range(args.reps):
                x = rng.choice(pop, size=n, replace=True)
                for method in ("bca", "percentile"):
                    lo, hi = bootstrap_ci(x, method=method, n_resamples=args.resamples, seed=r % 16)
                    hits[method] += lo <= mu <= hi
                lo, hi = t_interval(x)
                hits["t"] += lo <= mu <= hi
            for k in cov:
                cov[k].append((hits[k] / args.reps, name))
        for k, v in cov.items():
            worst = min(v)
            print(f"{n:>4} | {k:>10} | {np.mean([c for c, _ in v]):13.3f} | {worst[0]:.3f} ({worst[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
