"""How much the start-up transient decides a scenario's heuristic ranking.

Evaluates the heuristics (batched backend, tuned parameters of ``baselines/tuned.yml`` as
stored, the same for every configuration) on copies of a scenario that differ only in the
episode length (``workload.num_jobs``) and the warm-up period (``warmup_s``), on the same
seeds, and prints each configuration's ranking, its Kendall tau against the last (longest)
configuration, and the paired difference between the two best policies.

    .venv/bin/python benchmarks/warmup_sensitivity.py                      # serving-small, seeds 0-29
    .venv/bin/python benchmarks/warmup_sensitivity.py --configs 0:600 1:600 1:1200 2:2400

A configuration is ``WARMUP_S:NUM_JOBS``. Seeds default to training seeds (0..29): the
choice of a scenario's warm-up is a design choice made on training seeds, never on the
held-out evaluation seeds.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baselines.evaluation import main as evaluate_main  # noqa: E402


def kendall_tau(a: list[str], b: list[str]) -> float:
    """Kendall's tau-a between two orderings of the same items."""
    pos = {x: i for i, x in enumerate(b)}
    n, s = len(a), 0
    for i in range(n):
        for j in range(i + 1, n):
            s += 1 if pos[a[i]] < pos[a[j]] else -1
    return s / (n * (n - 1) / 2) if n > 1 else 1.0


def config_arg(text: str) -> tuple[float, int]:
    try:
        w, n = text.split(":")
        w, n = float(w), int(n)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a configuration is WARMUP_S:NUM_JOBS, e.g. 1:1200") from None
    if not (w >= 0 and math.isfinite(w)) or n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: warm-up must be >= 0 and num_jobs >= 1")
    return w, n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", default="serving-small", help="built-in scenario (default serving-small)")
    ap.add_argument("--configs", nargs="+", type=config_arg, default=None, metavar="W:N",
                    help="warm-up seconds and number of jobs (default 0:N 1:N 1:2N 2:4N, N the scenario's)")
    ap.add_argument("--seeds", default="0-29", help="seeds (default 0-29, training seeds)")
    ap.add_argument("--exclude", nargs="*", default=["genetic", "planner"],
                    help="policies left out (default genetic planner: no batched form, slow on the reference)")
    args = ap.parse_args(argv)
    src = REPO / "envs" / "scenarios" / f"{args.scenario}.yaml"
    if not src.is_file():
        ap.error(f"--scenario: no built-in scenario {args.scenario!r}")
    raw = yaml.safe_load(src.read_text())
    n0 = int(raw["workload"].get("num_jobs", 0)) or 600
    configs = args.configs or [(0.0, n0), (1.0, n0), (1.0, 2 * n0), (2.0, 4 * n0)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for w, n in configs:
            cfg = dict(raw, warmup_s=w, workload=dict(raw["workload"], num_jobs=n))
            path = Path(tmp) / f"{args.scenario}-w{w:g}-n{n}.yaml"
            path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            out = Path(tmp) / f"out-w{w:g}-n{n}"
            with contextlib.redirect_stdout(io.StringIO()):
                rc = evaluate_main(["--scenario", str(path), "--policies", "all", "--exclude", *args.exclude,
                                    "--seeds", args.seeds, "--backend", "batched", "--out", str(out),
                                    "--no-progress", "--no-resume"])
            if rc:
                print(f"evaluation of {path.name} failed with exit code {rc}", file=sys.stderr)
                return rc
            s = json.loads((out / "results.json").read_text())
            s = s["scenarios"][0] if "scenarios" in s else s  # (one scenario: the file is its summary)
            metric = s["primary_metric"]
            pols = s["policies"]
            order = sorted(pols, key=lambda p: -pols[p]["metrics"][metric]["mean"])
            means = {p: pols[p]["metrics"][metric]["mean"] for p in pols}
            second = order[1]
            rows.append((w, n, order, means, s["policies"][second].get("paired_vs_best_heuristic")))
    last = rows[-1][2]
    print(f"{args.scenario}: {metric} on seeds {args.seeds}; configuration = warm-up s : jobs per episode")
    print(f"{'config':>10} | {'tau vs last':>11} | top five (mean) | 2nd - 1st [95% paired CI]")
    for w, n, order, means, pair in rows:
        top = ", ".join(f"{p} {means[p]:.4f}" for p in order[:5])
        d = (f"{pair['mean']:+.4f} [{pair['ci95'][0]:+.4f}, {pair['ci95'][1]:+.4f}]" if pair else "n/a")
        print(f"{w:>5g}:{n:<4d} | {kendall_tau(order, last):>11.3f} | {top} | {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
