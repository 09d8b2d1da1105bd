"""``train.py --sweep SWEEP.yml``: SB3 recipes x seeds x hyperparameters as Ray Tune trials.

A sweep file (every key checked; an unknown one is an error naming the key and the file)::

    name: lr-sweep                  # the sweep's folder in --logdir (default: the file's name)
    scenario: serving-small         # or a list: every scenario
    algo: maskable_ppo              # or a list: every algorithm
    seeds: [0, 1, 2]                # root seeds
    timesteps: 20000                # RL steps per trial (default: the hyperparameters')
    grid:                           # hyperparameters: every combination of the listed values
      learning_rate: [1.0e-4, 3.0e-4]
    params:                         # hyperparameters fixed for every trial (as -p key=value)
      n_steps: 1024
    train:                          # other train.py options, by their TrainConfig names
      eval_freq: 10000
      final_eval: false
    cpus_per_trial: 1               # Ray resources of one trial

Each trial is one ordinary ``train.py`` run (``agents.training.train``) in
``<logdir>/<name>/runs/<scenario>__<algo>__s<seed>__<grid values>/``: config, TensorBoard,
checkpoints, ``train_summary.json``, as a run started by hand. Ray Tune schedules the trials
on the cluster's CPUs (a local Ray instance, or ``--ray auto`` / ``HOST:PORT``) and keeps its
experiment state in ``<logdir>/<name>/``. Stopped (Ctrl-C, a lost node), the same command
continues it: Tune restores the experiment, finished trials are kept, and an unfinished trial
resumes its run folder exactly from its last checkpoint (``train.py --resume``). When every
trial has finished, ``sweep_summary.md`` / ``.csv`` / ``.json`` give one row per trial: its
settings, steps, training speed, the best periodic evaluation score and the final evaluation.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from agents.files import write_text

#: Top-level keys of a sweep file.
SWEEP_KEYS = ("name", "scenario", "algo", "seeds", "timesteps", "grid", "params", "train", "cpus_per_trial")
#: TrainConfig fields a sweep sets itself (not allowed under ``train:``).
SWEEP_OWNED = ("scenario", "algo", "seed", "timesteps", "overrides", "logdir", "run_name", "resume", "init_from",
               "command", "progress_bar")
#: The trial list of a sweep, kept in its folder: a restart must run the same trials.
TRIALS_FILE = "sweep_trials.json"


class SweepError(ValueError):
    """A malformed sweep file, or one that does not match the sweep already in its folder."""


@dataclasses.dataclass(frozen=True)
class Sweep:
    name: str
    trials: list[dict]
    cpus_per_trial: float
    source: Path


def _listed(value, key: str, where: str) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise SweepError(f"{where}: key '{key}' is an empty list")
    return values


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; raises :class:`SweepError` naming the file and the key."""
    from agents.training import TrainConfig
    from envs.config import did_you_mean

    path = Path(path)
    if not path.is_file():
        raise SweepError(f"--sweep: no sweep file {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: a sweep file is a mapping of {', '.join(SWEEP_KEYS)}")
    for key in data:
        if key not in SWEEP_KEYS:
            raise SweepError(f"{path}: unknown key '{key}'{did_you_mean(key, SWEEP_KEYS)} "
                             f"(known: {', '.join(SWEEP_KEYS)})")
    if "seeds" not in data:
        raise SweepError(f"{path}: missing key 'seeds' (a list of root seeds)")
    seeds = _listed(data["seeds"], "seeds", str(path))
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise SweepError(f"{path}: key 'seeds' must list non-negative integers, got {data['seeds']!r}")
    scenarios = _listed(data.get("scenario", "serving-small"), "scenario", str(path))
    algos = _listed(data.get("algo", "maskable_ppo"), "algo", str(path))
    grid = data.get("grid") or {}
    params = data.get("params") or {}
    train = data.get("train") or {}
    for key, value in (("grid", grid), ("params", params), ("train", train)):
        if not isinstance(value, dict):
            raise SweepError(f"{path}: key '{key}' must be a mapping, got {value!r}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid key '{key}' must be a non-empty list of values, got {values!r}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - set(SWEEP_OWNED)
    for key in train:
        if key not in fields:
            owned = " (the sweep sets it: use the top-level keys)" if key in SWEEP_OWNED else ""
            raise SweepError(f"{path}: train: unknown key '{key}'{did_you_mean(key, fields)}{owned}")
    timesteps = data.get("timesteps")
    if timesteps is not None and (not isinstance(timesteps, int) or timesteps < 1):
        raise SweepError(f"{path}: key 'timesteps' must be a positive integer, got {timesteps!r}")
    cpus = data.get("cpus_per_trial", 1)
    if not isinstance(cpus, (int, float)) or isinstance(cpus, bool) or cpus <= 0:
        raise SweepError(f"{path}: key 'cpus_per_trial' must be > 0, got {cpus!r}")
    for key in ("eval_seeds", "eval_heuristics", "test_seeds"):
        if isinstance(train.get(key), list):
            train[key] = tuple(train[key])
    name = str(data.get("name") or path.stem)
    if not name or "/" in name or name in (".", ".."):
        raise SweepError(f"{path}: key 'name' must be a plain folder name, got {name!r}")
    trials = []
    for scenario, algo, seed, combo in itertools.product(scenarios, algos, seeds,
                                                         itertools.product(*grid.values()) if grid else [()]):
        point = dict(zip(grid, combo))
        scen = str(scenario)
        if Path(scen).suffix in (".yaml", ".yml") and not Path(scen).is_absolute():
            scen = str((path.parent / scen).resolve()) if (path.parent / scen).is_file() else str(Path(scen).resolve())
        tag = "__".join(f"{k}={_tag(v)}" for k, v in point.items())
        run_name = f"{Path(scen).stem}__{algo}__s{seed}" + (f"__{tag}" if tag else "")
        trials.append({"run_name": run_name, "scenario": scen, "algo": str(algo), "seed": int(seed),
                       "timesteps": timesteps, "grid": point, "params": dict(params),
                       "train": {k: list(v) if isinstance(v, tuple) else v for k, v in train.items()}})
    names = [t["run_name"] for t in trials]
    if len(set(names)) != len(names):
        raise SweepError(f"{path}: two trials would share a run folder: {sorted({n for n in names if names.count(n) > 1})}")
    sweep = Sweep(name, trials, float(cpus), path)
    for t in trials:  # every trial's hyperparameters resolved now: a bad key fails before Ray starts
        try:
            from agents.training import resolve_hyperparams

            resolve_hyperparams(trial_config(t, Path("."), ""))
        except (ValueError, KeyError) as e:
            raise SweepError(f"{path}: trial {t['run_name']}: {e}") from None
    return sweep


def _tag(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return "".join(c if c.isalnum() or c in "-_.,=+" else "_" for c in text.strip('"'))


def trial_config(trial: dict, runs_dir: Path, command: str):
    """The ``TrainConfig`` of one trial (run folder ``runs_dir/<run_name>``)."""
    from agents.training import TrainConfig

    overrides = [f"{k}={json.dumps(v)}" for k, v in {**trial["params"], **trial["grid"]}.items()]
    train = dict(trial["train"])
    for key in ("eval_seeds", "eval_heuristics", "test_seeds"):
        if isinstance(train.get(key), list):
            train[key] = tuple(train[key])
    return TrainConfig(scenario=trial["scenario"], algo=trial["algo"], seed=trial["seed"],
                       timesteps=trial["timesteps"], overrides=overrides, logdir=str(runs_dir),
                       run_name=trial["run_name"], command=command, progress_bar=False, **train)


def run_state(run_dir: Path) -> str:
    """``done`` (finished), ``started`` (a folder to resume) or ``new``."""
    summary = run_dir / "train_summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        if data.get("phase") == "done" and not data.get("interrupted"):
            return "done"
    return "started" if (run_dir / "args.yml").is_file() else "new"


def run_trial(config: dict) -> None:
    """Ray Tune's trainable: one trial, one ``train.py`` run (resumed if its folder was started)."""
    from ray import tune

    from agents.training import train

    trial, runs_dir = config["trial"], Path(config["runs_dir"])
    run_dir = runs_dir / trial["run_name"]
    state = run_state(run_dir)
    if state != "done":
        cfg = trial_config(trial, runs_dir, config["command"])
        if state == "started":  # continued exactly from its last checkpoint, with its own arguments
            from agents.training import TrainConfig

            cfg = TrainConfig(resume=str(run_dir), timesteps=None, device=None, threads=None, final_eval=None,
                              progress_bar=False, command=config["command"] + "  # resumed by the sweep")
        result = train(cfg)
        if result.interrupted:
            raise RuntimeError(f"{run_dir}: training was interrupted")
    tune.report(trial_metrics(run_dir))


def trial_metrics(run_dir: Path) -> dict:
    """One row of the summary, from the run folder's files."""
    row: dict[str, Any] = {}
    summary = json.loads((run_dir / "train_summary.json").read_text())
    row["timesteps"] = summary.get("num_timesteps")
    row["fps"] = summary.get("fps")
    row["wall_s"] = summary.get("wall_s")
    config = yaml.safe_load((run_dir / "config.yml").read_text())
    metric = config.get("primary_metric")
    row["metric"] = metric
    best = None
    evals = run_dir / "evaluations.jsonl"
    if evals.is_file():
        from envs.sim.metrics import HIGHER_IS_BETTER

        sign = 1.0 if metric in HIGHER_IS_BETTER else -1.0
        scores = [json.loads(x)["agent"].get(metric) for x in evals.read_text().splitlines() if x.strip()]
        scores = [s for s in scores if s is not None and math.isfinite(s)]
        best = max(scores, key=lambda s: sign * s) if scores else None
    row["best_eval"] = best
    final = run_dir / "final_eval.json"
    if final.is_file():
        fe = json.loads(final.read_text())
        agent = fe["policies"].get("agent:best_model", {})
        row["final_eval"] = agent.get("mean")
        row["final_vs_best_heuristic"] = (agent.get("diff_vs_best") or {}).get("mean")
        row["best_heuristic"] = fe.get("best_heuristic")
    else:
        row["final_eval"] = row["final_vs_best_heuristic"] = row["best_heuristic"] = None
    return row


def summary_table(sweep: Sweep, rows: list[dict]) -> tuple[str, str]:
    """The summary as Markdown and CSV (one row per trial, in the sweep's order)."""
    keys = list(dict.fromkeys(k for t in sweep.trials for k in t["grid"]))
    cols = ["run", "scenario", "algo", "seed", *keys, "timesteps", "fps", "metric", "best_eval", "final_eval",
            "final_vs_best_heuristic", "best_heuristic"]

    def fmt(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    table = []
    for t, r in zip(sweep.trials, rows):
        table.append([t["run_name"], Path(t["scenario"]).stem, t["algo"], t["seed"],
                      *(t["grid"].get(k) for k in keys), r.get("timesteps"), r.get("fps"), r.get("metric"),
                      r.get("best_eval"), r.get("final_eval"), r.get("final_vs_best_heuristic"),
                      r.get("best_heuristic")])
    md = [f"## sweep {sweep.name} ({len(rows)} trials, {sweep.source})", "",
          "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    md += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in table]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    w.writerows([["" if v is None else v for v in row] for row in table])
    return "\n".join(md) + "\n", buf.getvalue()


def _trial_dirname(trial) -> str:
    """Tune's folder of a trial: its run's name (the run folder itself is in ``runs/``)."""
    return "trial__" + trial.config["trial"]["run_name"]


def run_sweep(path: str | Path, logdir: str | Path = "runs", address: str | None = None,
              command: str = "") -> int:
    """Run (or continue) the sweep of ``path``; returns train.py's exit code (0 when every trial
    finished, 130 if interrupted, 1 if a trial failed)."""
    from modelsched.ray_cluster import connect

    sweep = load_sweep(path)
    exp = (Path(logdir) / sweep.name).resolve()
    trials_file = exp / TRIALS_FILE
    if trials_file.is_file():
        if json.loads(trials_file.read_text()) != sweep.trials:
            raise SweepError(f"{path}: {exp} holds a sweep with other trials (the sweep file changed since it "
                             f"ran): give the sweep another 'name', or remove {exp}")
    started = connect(address, "--ray")
    import ray
    from ray import tune

    try:
        trainable = tune.with_resources(run_trial, {"cpu": sweep.cpus_per_trial})
        runs_dir = exp / "runs"
        if tune.Tuner.can_restore(str(exp)):
            print(f"train.py --sweep: continuing {exp} (finished trials are kept, unfinished runs resume)")
            tuner = tune.Tuner.restore(str(exp), trainable=trainable, resume_unfinished=True, resume_errored=True,
                                       restart_errored=False)
        else:
            exp.mkdir(parents=True, exist_ok=True)
            write_text(trials_file, json.dumps(sweep.trials, indent=1) + "\n")
            write_text(exp / "sweep.yml", Path(path).read_text())
            space = {"trial": tune.grid_search(sweep.trials), "runs_dir": str(runs_dir), "command": command}
            tuner = tune.Tuner(trainable, param_space=space,
                               run_config=tune.RunConfig(name=sweep.name, storage_path=str(exp.parent), verbose=1),
                               tune_config=tune.TuneConfig(num_samples=1, trial_dirname_creator=_trial_dirname))
        print(f"train.py --sweep: {len(sweep.trials)} trial(s) of {path} on Ray "
              f"({ray.cluster_resources().get('CPU', 0):.0f} CPU(s), {sweep.cpus_per_trial:g} per trial) -> {exp}")
        grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    states = {t["run_name"]: run_state(runs_dir / t["run_name"]) for t in sweep.trials}
    missing = [n for n, s in states.items() if s != "done"]
    if missing:
        errors = [str(r.error).strip().splitlines()[-1] for r in grid if r.error is not None]
        print(f"train.py --sweep: {len(sweep.trials) - len(missing)} of {len(sweep.trials)} trials finished; "
              f"not finished: {', '.join(missing)}" + (f"; errors: {'; '.join(errors[:3])}" if errors else "")
              + ". No summary written; run the same command again to continue.", file=sys.stderr)
        return 1 if errors else 130
    rows = [trial_metrics(runs_dir / t["run_name"]) for t in sweep.trials]
    md, text = summary_table(sweep, rows)
    write_text(exp / "sweep_summary.json", json.dumps(
        {"sweep": sweep.name, "file": str(sweep.source), "trials": [{**t, **r} for t, r in zip(sweep.trials, rows)]},
        indent=2) + "\n")
    write_text(exp / "sweep_summary.csv", text)
    write_text(exp / "sweep_summary.md", md)
    print(md)
    print(f"sweep summary written to {exp / 'sweep_summary.md'}")
    return 0
