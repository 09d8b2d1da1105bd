"""The learning result: trained agents against the strongest baseline, every training seed reported.

For each scenario:

1. **The strongest baseline** is chosen on *training* seeds (``--select-seeds``, default 0-29):
   every heuristic with a batched form (``adaptive`` and ``priced`` with their tuned
   parameters) is evaluated there and the best on the primary metric is kept. It is the
   behaviour-cloning teacher of every run (``pretrain.heuristic``) and the reference of the
   comparison. The held-out seeds play no part in any choice.
2. **One training run per training seed** (``--train-seeds``, default 0-4): ``train.py
   --vec batched --seed S --timesteps T --no-final-eval`` with the scenario's recipe
   (``agents/hyperparams/maskable_ppo.yml``) and the ``-p`` overrides given here; each run is
   a normal run folder under ``--logdir`` (config, TensorBoard, checkpoints). A run whose folder
   already holds a finished ``train_summary.json`` is reused (the study resumes).
3. **Held-out evaluation** (``--eval-seeds``, default 1000-1029, batched backend): the final
   model of every run (``model.zip``; no checkpoint selection) and the reference, on the same
   seeds (common random numbers).

It prints and writes (``<out>/summary.json``, ``<out>/summary.md``) per run: the primary
metric [95% Student-t CI over the evaluation seeds], the paired difference against the
reference, and the share of the gap to the ideal bound the agent closes ((agent - reference) /
(bound - reference)); per scenario, the mean paired difference over the training seeds with a
Student-t interval *over training seeds* (run-to-run variability) and the number of runs that
beat the reference with a paired interval above zero. Every run is reported; none is dropped.

    .venv/bin/python benchmarks/agent_study.py                      # 3 scenarios x 5 seeds, the recipes as stored
    .venv/bin/python benchmarks/agent_study.py --scenario serving-small --train-seeds 0-1 --timesteps 16384
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from baselines.files import write_text  # noqa: E402
from baselines.rollout import policy_labels  # noqa: E402
from baselines.stats import t_interval  # noqa: E402

SCENARIOS = ("serving-small", "serving-hetero", "faulty-cluster")
#: Heuristics without a batched form (they would run on the reference simulator: slow), and
#: references that are not baselines.
NOT_CANDIDATES = ("genetic", "planner", "clairvoyant")


def seed_list(items: list[str]) -> list[int]:
    out: list[int] = []
    for it in items:
        for part in str(it).split(","):
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    return out


def run(cmd: list[str], log: Path) -> None:
    """Run ``cmd`` from the repository root, its output appended to ``log``; raise on failure
    with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.call(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-20:])
        raise SystemExit(f"agent_study: command failed (rc {rc}): {' '.join(cmd)}\n--- {log} (tail) ---\n{tail}")


def evaluate(scenario: str, policies: list[str], seeds: list[int], out: Path, log: Path) -> dict:
    if not (out / "results.json").exists():
        run([sys.executable, "evaluate.py", "--scenario", scenario, "--policies", *policies,
             "--seeds", *map(str, seeds), "--backend", "batched", "--out", str(out), "--no-progress"], log)
    res = json.loads((out / "results.json").read_text())
    return res["scenarios"][0] if "scenarios" in res else res  # one scenario: the summary itself


def strongest_baseline(scenario: str, seeds: list[int], out: Path, log: Path) -> tuple[str, dict]:
    from baselines import names

    candidates = [n for n in names() if n not in NOT_CANDIDATES]
    res = evaluate(scenario, candidates, seeds, out / f"select-{scenario}", log)
    pm = res["primary_metric"]
    means = {lbl: p["metrics"][pm]["mean"] for lbl, p in res["policies"].items() if p["kind"] == "heuristic"}
    return res["best_heuristic"], dict(sorted(means.items(), key=lambda kv: -kv[1]))


def train(scenario: str, seed: int, teacher: str, args, log: Path) -> Path:
    name = f"{scenario}__s{seed}"
    folder = Path(args.logdir) / name
    summary = folder / "train_summary.json"
    if summary.exists() and json.loads(summary.read_text()).get("phase") == "done":
        return folder
    last = folder / "checkpoints" / "last.zip"
    if last.exists():  # an interrupted run: continue it exactly (its own args.yml; no overrides)
        cmd = [sys.executable, "train.py", "--resume", str(folder), "--no-final-eval", "--no-progress-bar"]
    else:
        if folder.exists():  # stopped before its first checkpoint: start again
            shutil.rmtree(folder)
        cmd = [sys.executable, "train.py", "--scenario", scenario, "--seed", str(seed), "--vec", "batched",
               "--logdir", str(args.logdir), "--run-name", name, "--no-final-eval", "--no-progress-bar",
               "--eval-freq", str(args.eval_freq), "-p", f"pretrain.heuristic={teacher}"]
        if args.timesteps:
            cmd += ["--timesteps", str(args.timesteps)]
        for ov in args.param:
            cmd += ["-p", ov]
    run(cmd, log)
    return folder


def fmt(x: float, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:+.4f}" if signed else f"{x:.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario", nargs="+", default=list(SCENARIOS), help="built-in scenarios")
    ap.add_argument("--train-seeds", nargs="+", default=["0-4"], help="training seeds (one run each)")
    ap.add_argument("--select-seeds", nargs="+", default=["0-29"],
                    help="training seeds on which the strongest baseline (teacher and reference) is chosen")
    ap.add_argument("--eval-seeds", nargs="+", default=["1000-1029"], help="held-out evaluation seeds")
    ap.add_argument("--timesteps", type=int, default=None, help="RL steps per run (default: the recipe's)")
    ap.add_argument("--eval-freq", type=int, default=0, help="train.py --eval-freq (default 0: off; the final "
                    "model is evaluated, so validation plays no part)")
    ap.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                    help="hyperparameter override for every run (train.py -p)")
    ap.add_argument("--logdir", default="runs/agent-study", help="parent of the run folders")
    ap.add_argument("--out", default="results/agent-study", help="output folder")
    args = ap.parse_args(argv)
    train_seeds, eval_seeds = seed_list(args.train_seeds), seed_list(args.eval_seeds)
    select_seeds = seed_list(args.select_seeds)
    if set(eval_seeds) & (set(train_seeds) | set(select_seeds)):
        ap.error("--eval-seeds must be disjoint from --train-seeds and --select-seeds")
    if any(s >= 1000 for s in select_seeds):
        ap.error("--select-seeds must be training seeds (0..999)")
    out = Path(args.out)
    log = out / "study.log"
    t0 = time.perf_counter()
    report: dict = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                    "train_seeds": train_seeds, "eval_seeds": eval_seeds, "select_seeds": select_seeds,
                    "overrides": args.param, "timesteps": args.timesteps, "scenarios": {}}
    for sc in args.scenario:
        ref, ranking = strongest_baseline(sc, select_seeds, out, log)
        print(f"{sc}: strongest baseline on training seeds {args.select_seeds}: {ref} "
              f"({', '.join(f'{k} {v:.4f}' for k, v in list(ranking.items())[:3])})", flush=True)
        runs = {}
        for s in train_seeds:
            t1 = time.perf_counter()
            folder = train(sc, s, ref, args, log)
            ts = json.loads((folder / "train_summary.json").read_text())
            runs[s] = folder
            report["train_wall_s"] = report.get("train_wall_s", 0.0) + float(ts.get("wall_s", 0.0))
            print(f"  seed {s}: trained {ts['num_timesteps']} steps (pretrain {ts['pretrain_s']:.0f}s, RL "
                  f"{ts['rl_s']:.0f}s) in {time.perf_counter() - t1:.0f}s", flush=True)
        models = [str(runs[s] / "model.zip") for s in train_seeds]
        res = evaluate(sc, [ref, *models], eval_seeds, out / f"eval-{sc}", log)
        pm = res["primary_metric"]
        bound = res["ideal_bound"]["metrics"][pm]["mean"]
        refm = res["policies"][ref]["metrics"][pm]["mean"]
        rows, diffs = [], []
        for s, path, label in zip(train_seeds, models, policy_labels(models), strict=True):
            p = res["policies"][label]
            d = p["paired_vs_best_heuristic"]
            m = p["metrics"][pm]
            closed = (m["mean"] - refm) / (bound - refm) if bound > refm else math.nan
            rows.append({"seed": s, "model": path, "label": label, "mean": m["mean"], "ci": m["ci95"],
                         "diff": d["mean"], "diff_ci": d["ci95"], "gap_closed": closed})
            diffs.append(d["mean"])
        lo, hi = t_interval(diffs)
        sc_rep = {"primary_metric": pm, "reference": ref, "reference_mean": refm,
                  "reference_ci": res["policies"][ref]["metrics"][pm]["ci95"],
                  "ideal_bound": bound, "selection_ranking": ranking, "runs": rows,
                  "mean_diff": sum(diffs) / len(diffs), "mean_diff_ci_over_runs": [lo, hi],
                  "runs_better": sum(r["diff_ci"][0] > 0 for r in rows),
                  "runs_worse": sum(r["diff_ci"][1] < 0 for r in rows)}
        report["scenarios"][sc] = sc_rep
        print(f"  held-out seeds: {ref} {refm:.4f}, ideal bound {bound:.4f}; agent - {ref} over "
              f"{len(rows)} runs: {sc_rep['mean_diff']:+.4f} [{lo:+.4f}, {hi:+.4f}]", flush=True)
    report["wall_s"] = time.perf_counter() - t0
    write_text(out / "summary.json", json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    write_text(out / "summary.md", md)
    print(md)
    return 0


def markdown(report: dict) -> str:
    n = len(report["eval_seeds"])
    lines = [f"Held-out seeds {report['eval_seeds'][0]}..{report['eval_seeds'][-1]} ({n} seeds); every training "
             f"seed's final model; mean [95% Student-t CI over evaluation seeds]; paired difference against the "
             f"strongest baseline chosen on training seeds; gap closed = (agent - baseline) / (ideal bound - "
             f"baseline). Command: `{report['command']}` (training {report.get('train_wall_s', 0) / 60:.0f} min "
             f"of runs on 2 CPU cores in all).", "",
             "| scenario | run | agent | Δ vs baseline [95% paired CI] | gap closed |", "|---|---|---|---|---|"]
    for sc, r in report["scenarios"].items():
        lines.append(f"| {sc} | **{r['reference']}** (baseline) | {fmt(r['reference_mean'])} "
                     f"[{fmt(r['reference_ci'][0])}, {fmt(r['reference_ci'][1])}] | — | ideal bound "
                     f"{fmt(r['ideal_bound'])} |")
        for row in r["runs"]:
            lines.append(f"| {sc} | seed {row['seed']} | {fmt(row['mean'])} [{fmt(row['ci'][0])}, "
                         f"{fmt(row['ci'][1])}] | {fmt(row['diff'], True)} [{fmt(row['diff_ci'][0], True)}, "
                         f"{fmt(row['diff_ci'][1], True)}] | {row['gap_closed']:+.0%} |")
        lo, hi = r["mean_diff_ci_over_runs"]
        lines.append(f"| {sc} | **all {len(r['runs'])} runs** | | **{fmt(r['mean_diff'], True)}** "
                     f"[{fmt(lo, True)}, {fmt(hi, True)}] over runs; {r['runs_better']} better, "
                     f"{r['runs_worse']} worse (paired CI) | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
