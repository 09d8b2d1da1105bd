"""Benchmark harness behind ``evaluate.py``: policies x scenarios x seeds -> tables and plots.

**Seeds.** Training uses seeds 0..999 (:data:`TRAINING_SEEDS`); the default evaluation set is
1000..1029 (:data:`EVAL_SEEDS`), disjoint from it. Episode ``e`` of seed ``s`` resets the env
with :func:`episode_seed` (``s`` itself for ``e = 0``), so every policy sees the same workload
for a seed (common random numbers; checked at run time with each episode's workload digest).

**Statistics.** Per seed, a metric is the mean over that seed's episodes. Over seeds: the mean
with its 95% Student-t interval, and the interquartile mean (``iqm``); seeds where a metric is
NaN are left out of that metric (``n`` counts the seeds used; all-NaN gives ``null``). Paired
differences against the best heuristic (best mean on the scenario's primary metric) are the
per-seed differences with their own t interval, and the probability of improvement (share of
seeds where the policy's value is larger, percentile-bootstrap CI). The t interval was chosen
by ``benchmarks/ci_coverage.py``: at 10-100 seeds it keeps its 95% coverage on this project's
per-seed distributions, where the percentile and BCa bootstraps (``baselines.stats``) cover
88-94%.

**Backends.** ``--backend reference`` plays each episode on its own ``SchedulingEnv``;
``--backend batched`` plays many seeds at once on the batched simulator
(:mod:`baselines.batched_eval`): heuristics with a batched form and SB3 models run there,
``genetic`` and ``planner`` on the reference (with a notice). Both give the same results and
outputs. With ``--ray [ADDRESS]`` the episodes run as Ray tasks over a cluster, with either
backend inside each task (:mod:`baselines.ray_eval`), with the same results and outputs.

**Outputs** in ``--out`` (one scenario) or ``--out/<scenario>/`` (several; then ``--out`` also
gets ``results.json`` = ``{"scenarios": [...]}``, a combined ``results.csv`` and ``results.md``):
``results.json``, ``results.csv`` (long: scenario, policy, seed, metric, value; the bound's rows
have policy ``ideal_bound``), ``results.md``, ``metrics.png`` (means with 95% CIs on axes zoomed
to the values, bound dashed), ``paired_differences.png`` (each policy minus the best heuristic on
the primary metric, with paired CIs) and ``latency_cdf.png``. Every file is written to a temporary file in the same folder, then renamed.

**Upper bound.** Each policy's ``gap_to_upper_bound``: the ideal bound of the primary metric
(a higher-is-better one) minus the policy's, paired per seed (no schedule does better than the
bound; :mod:`baselines.bound`); ``results.md`` shows it under the table. A policy of kind
``reference`` (a clairvoyant schedule, :mod:`baselines.optimum`) is never the best heuristic,
and the others' ``gap_to_clairvoyant`` is reported beside it.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import io
import json
import math
import multiprocessing as mp
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from baselines.files import atomic_write, write_text

TRAINING_SEEDS = range(0, 1000)
#: 30 seeds by default (benchmarks/ci_coverage.py: the t intervals cover about 93% at 10 seeds on
#: skewed per-seed metrics, 95% at 30).
EVAL_SEEDS = list(range(1000, 1030))
#: Metrics of the tables and bar plots (the scenario's primary metric is added if missing).
MAIN_METRICS = ("effective_accuracy", "slo_attainment", "mean_accuracy", "mean_latency",
                "p99_latency", "mean_slowdown", "utilization")
BOUND = "ideal_bound"


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during the episodes: what finished is kept in the journal."""


#: Sub-folder of ``--out`` holding the journal of finished episodes (:mod:`baselines.journal`).
PARTIAL = ".partial"


#: Registered heuristics that ``--policies all`` leaves out (a CP-SAT search per decision: about a
#: minute per serving-small episode); named, they run.
NOT_IN_ALL = ("planner",)

#: ``--jobs`` above this many processes per core is refused (each is a Python process with torch).
MAX_JOBS_PER_CORE = 4

def without_run_fields(d):
    """A results.json (or any part of it) without what differs between two runs of the same
    evaluation: wall times and the run's settings. Two runs agree iff these are equal."""
    if isinstance(d, dict):
        return {k: without_run_fields(v) for k, v in d.items() if k not in ("wall_s", "wall_s_total", "settings")}
    if isinstance(d, list):
        return [without_run_fields(x) for x in d]
    return d


def episode_seed(seed: int, episode: int) -> int:
    """Reset seed of episode ``episode`` of evaluation seed ``seed`` (``seed`` for episode 0)."""
    if episode == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(episode)]).generate_state(1, np.uint64)[0] >> 1)


# ====================================================================== work items (spawn-safe)
@dataclass(frozen=True)
class WorkItem:
    scenario: str
    policy: str
    label: str
    seed: int
    episode: int
    env_kwargs: tuple = ()
    device: str = "auto"
    policy_kwargs: tuple = ()


_CACHE: dict[tuple, tuple[Any, Any]] = {}


def _make_env(scenario: str, env_kwargs: dict):
    import gymnasium as gym

    import envs  # noqa: F401  (registers the ids)

    return gym.make("modelsched/Scheduling-v1", scenario=scenario, disable_env_checker=True, **env_kwargs)


def _env_and_policy(item: WorkItem):
    from baselines import REGISTRY, load_policy
    from baselines.rollout import env_kwargs_for, is_custom_spec

    key = (item.scenario, item.policy, item.env_kwargs, item.device, item.policy_kwargs)
    if key not in _CACHE:
        env_kwargs = dict(item.env_kwargs)
        if item.policy in REGISTRY or is_custom_spec(item.policy):
            env = _make_env(item.scenario, env_kwargs)
            policy = load_policy(item.policy, env, **dict(item.policy_kwargs))
        else:  # the scenario's env gives a train.py model its spaces (weights-only loading)
            env = _make_env(item.scenario, env_kwargs)
            policy = load_policy(item.policy, env, device=item.device)
            if env_kwargs_for(policy):
                env.close()
                env = _make_env(item.scenario, {**env_kwargs, **env_kwargs_for(policy)})
        _CACHE[key] = (env, policy)
    return _CACHE[key]


def run_item(item: WorkItem) -> dict:
    """Run one episode (top-level so that spawned worker processes can import it)."""
    from baselines.rollout import describe, run_episode

    try:
        env, policy = _env_and_policy(item)
        res = run_episode(env, policy, episode_seed(item.seed, item.episode))
    except Exception as e:
        raise RuntimeError(f"policy '{item.label}' on scenario '{item.scenario}', seed {item.seed}, "
                           f"episode {item.episode} failed: {type(e).__name__}: {e}") from e
    res["kind"] = describe(policy, item.policy)
    res["item"] = item
    res["scenario_name"] = env.unwrapped.scenario.name
    return res


# ====================================================================== aggregation
@dataclass
class ScenarioResult:
    spec: str
    name: str
    primary_metric: str
    seeds: list[int]
    episodes: int
    labels: list[str]
    kinds: dict[str, str] = field(default_factory=dict)
    # label -> seed -> list of per-episode results
    runs: dict[str, dict[int, list[dict]]] = field(default_factory=dict)


def per_seed_values(runs: dict[int, list[dict]], seeds: list[int], metric: str, key: str = "metrics") -> list[float]:
    out = []
    for s in seeds:
        vals = np.array([r[key].get(metric, math.nan) for r in runs.get(s, [])], dtype=float)
        vals = vals[np.isfinite(vals)]
        out.append(float(vals.mean()) if vals.size else math.nan)
    return out


def summarize_scenario(sr: ScenarioResult) -> dict:
    from baselines.stats import N_RESAMPLES, paired_difference, summarize
    from envs.sim.metrics import HIGHER_IS_BETTER

    pm = sr.primary_metric
    higher = pm in HIGHER_IS_BETTER
    metric_names: list[str] = []
    for label in sr.labels:
        for eps in sr.runs[label].values():
            for r in eps:
                metric_names.extend(m for m in r["metrics"] if m not in metric_names)
    policies = {}
    for label in sr.labels:
        runs = sr.runs[label]
        policies[label] = {
            "kind": sr.kinds.get(label, "heuristic"),
            "metrics": {m: summarize(per_seed_values(runs, sr.seeds, m)) for m in metric_names},
            "steps": summarize(per_seed_values(runs, sr.seeds, "steps", key="_extra")),
            "wall_s": float(sum(r["wall_s"] for eps in runs.values() for r in eps)),
        }
    # The bound is policy-independent: take it from the first policy's runs.
    first = sr.runs[sr.labels[0]]
    bound_names = list(dict.fromkeys(m for eps in first.values() for r in eps for m in r["ideal_bound"]))
    bound = {"metrics": {m: summarize(per_seed_values(first, sr.seeds, m, key="ideal_bound")) for m in bound_names}}

    def rank_key(label):
        mean = policies[label]["metrics"].get(pm, {}).get("mean")
        if mean is None:
            return -math.inf
        return mean if higher else -mean

    # The reference of the paired differences is the best *built-in heuristic* in the table;
    # with none (only models or policies of one's own), there are no paired differences.
    heuristics = [lbl for lbl in sr.labels if policies[lbl]["kind"] == "heuristic"]
    best_policy = max(sr.labels, key=rank_key)
    best_heuristic = max(heuristics, key=rank_key) if heuristics else None
    ref = per_seed_values(sr.runs[best_heuristic], sr.seeds, pm) if best_heuristic else None
    for label in sr.labels:
        if ref is None:
            policies[label]["paired_vs_best_heuristic"] = None
            continue
        diff = paired_difference(per_seed_values(sr.runs[label], sr.seeds, pm), ref)
        policies[label]["paired_vs_best_heuristic"] = {"metric": pm, "against": best_heuristic, **diff}
    # Gaps to the references (higher-is-better primary metrics): to the upper bound (the ideal
    # bound: no schedule does better) and, when it is in the table, to ``clairvoyant`` (the
    # best schedule found knowing the whole episode); paired per seed.
    upper = per_seed_values(first, sr.seeds, pm, key="ideal_bound") if higher and pm in bound_names else None
    clair = next((lbl for lbl in sr.labels if policies[lbl]["kind"] == "reference"), None)
    clair_v = per_seed_values(sr.runs[clair], sr.seeds, pm) if clair and higher else None
    for label in sr.labels:
        mine = per_seed_values(sr.runs[label], sr.seeds, pm)
        policies[label]["gap_to_upper_bound"] = (None if upper is None else
                                                 {"metric": pm, **paired_difference(upper, mine)})
        policies[label]["gap_to_clairvoyant"] = (None if clair_v is None or label == clair else
                                                 {"metric": pm, "against": clair, **paired_difference(clair_v, mine)})
    return {
        "scenario": sr.name,
        "scenario_spec": sr.spec,
        "seeds": list(sr.seeds),
        "episodes_per_seed": sr.episodes,
        "primary_metric": pm,
        "primary_higher_is_better": higher,
        "best_policy": best_policy,
        "best_heuristic": best_heuristic,
        "policies": policies,
        "ideal_bound": bound,
        "common_random_numbers": True,
        "statistics": {"ci": "95% Student-t interval of the mean over seeds (paired: of the per-seed differences)",
                       "iqm": "interquartile mean over seeds",
                       "prob_improvement": "share of seeds where the policy beats the best heuristic (ties half; "
                                           "for a lower-is-better metric, 1 minus it), 95% percentile bootstrap",
                       "resamples": N_RESAMPLES,
                       "nan": "seeds with a NaN value are left out of that metric (n = seeds used)"},
    }


# ====================================================================== outputs
def csv_rows(summary: dict) -> list[list]:
    rows = []
    seeds = summary["seeds"]
    groups = [(lbl, p["metrics"]) for lbl, p in summary["policies"].items()]
    groups.append((BOUND, summary["ideal_bound"]["metrics"]))
    for label, metrics in groups:
        for metric, s in metrics.items():
            for seed, v in zip(seeds, s["per_seed"], strict=True):
                rows.append([summary["scenario"], label, seed, metric, "" if v is None else repr(float(v))])
    return rows


def csv_text(rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["scenario", "policy", "seed", "metric", "value"])
    w.writerows(rows)
    return buf.getvalue()


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    v = float(v)
    if v == 0 or 1e-3 <= abs(v) < 1e4:
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return f"{v:.3g}"


def seeds_text(seeds: list[int]) -> str:
    """``Seeds [1000, 1001]``, or ``1000 seeds (1000-1999)`` / ``1000 seeds (0..4999, not
    contiguous)`` for long lists."""
    n = len(seeds)
    if n <= 10:
        return f"Seeds {list(seeds)}"
    lo, hi = min(seeds), max(seeds)
    contiguous = sorted(seeds) == list(range(lo, hi + 1))
    return f"{n} seeds ({lo}-{hi})" if contiguous else f"{n} seeds (between {lo} and {hi}, not contiguous)"


#: Below this many seeds the report notes that its intervals undercover.
ENOUGH_SEEDS = 20


def few_seeds_warning(n: int) -> list[str]:
    """Report lines saying when there are too few seeds for the 95% intervals to mean 95%: a
    warning below 5 seeds (the interval is degenerate or nearly so), a note below
    :data:`ENOUGH_SEEDS` (on skewed per-seed metrics even the t interval undercovers with few
    seeds: about 93% at n = 10, ``benchmarks/ci_coverage.py``)."""
    if n < 5:
        return [f"**Warning: only {n} seed(s).** A 95% interval over fewer than 5 seeds does not "
                f"cover the true mean 95% of the time (it is degenerate for 1 seed); use more seeds "
                f"(e.g. `--seeds 1000-1199`) before drawing conclusions.", ""]
    if n < ENOUGH_SEEDS:
        return [f"*Note: {n} seeds.* With fewer than {ENOUGH_SEEDS} seeds the 95% intervals are too "
                f"narrow on skewed metrics (about 93% coverage at 10 seeds); use `--seeds 1000-1199` "
                f"(and `--backend batched`) for claims.", ""]
    return []


def table_metrics(summary: dict) -> list[str]:
    pm = summary["primary_metric"]
    return [pm] + [m for m in MAIN_METRICS if m != pm]


def _wins(diff: dict | None, metric: str) -> str:
    """``"; better on 62% of seeds"`` from a paired difference's probability of improvement."""
    from envs.sim.metrics import HIGHER_IS_BETTER

    pi = (diff or {}).get("prob_improvement")
    if not pi:
        return ""
    share = pi["mean"] if metric in HIGHER_IS_BETTER else 1.0 - pi["mean"]
    return f"; better on {100 * share:.0f}% of seeds"


def markdown(summary: dict) -> str:
    from envs.sim.metrics import HIGHER_IS_BETTER

    pm = summary["primary_metric"]
    cols = table_metrics(summary)
    pols = summary["policies"]
    best = {}
    for m in cols:
        means = [p["metrics"].get(m, {}).get("mean") for p in pols.values()]
        means = [x for x in means if x is not None]
        if means:
            best[m] = _fmt(max(means) if m in HIGHER_IS_BETTER else min(means))
    arrow = {m: "↑" if m in HIGHER_IS_BETTER else "↓" for m in cols}
    bh = summary["best_heuristic"]
    if bh is None:
        ref_text = ("No built-in heuristic in the table, so no paired differences (add one, e.g. "
                    "`--policies adaptive ...`, to compare against it).")
    else:
        ref_text = (f"best heuristic: **{bh}**. Best value per column in bold. Δ = paired difference in {pm} "
                    f"against {bh} [95% paired t CI].")
    lines = [
        f"## {summary['scenario']}",
        "",
        f"{seeds_text(summary['seeds'])} x {summary['episodes_per_seed']} episode(s); mean [95% t CI] "
        f"over seeds. Primary metric: **{pm}** ({arrow[pm]}). Best policy: **{summary['best_policy']}**; "
        + ref_text,
        "",
        *few_seeds_warning(len(summary["seeds"])),
        "| policy | " + " | ".join(f"{m} {arrow[m]}" for m in cols) + (f" | Δ {pm} vs {bh} |" if bh else " |"),
        "|---|" + "---|" * (len(cols) + (1 if bh else 0)),
    ]

    def cell(s, m=None):
        if not s or s.get("mean") is None:
            return "n/a"
        text = _fmt(s["mean"])
        bold = m is not None and best.get(m) == text
        ci = s.get("ci95")
        ci_text = f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
        return (f"**{text}**" if bold else text) + ci_text

    for label, p in pols.items():
        row = [cell(p["metrics"].get(m), m) for m in cols]
        diff = p["paired_vs_best_heuristic"]
        dtext = "" if bh is None else (" —" if label == bh else " " + cell(diff) + _wins(diff, pm)) + " |"
        lines.append(f"| {label} | " + " | ".join(row) + " |" + dtext)
    b = summary["ideal_bound"]["metrics"]
    lines.append("| *bound (ideal, no queueing)* | " + " | ".join(cell(b.get(m)) for m in cols) + " |"
                 + (" |" if bh else ""))
    lines.append("")
    gaps = [(lbl, p.get("gap_to_upper_bound"), p.get("gap_to_clairvoyant")) for lbl, p in pols.items()]
    if any(g for _, g, _ in gaps):
        clair = next((g["against"] for _, _, g in gaps if g), None)
        lines += [f"Gaps in {pm}, paired per seed [95% t CI]: to `upper_bound` (the ideal bound: no schedule "
                  f"does better)" + (f" and to `{clair}` (the best schedule found knowing the whole episode)"
                                     if clair else "") + ".", "",
                  "| policy | gap to upper_bound |" + (" gap to clairvoyant |" if clair else ""),
                  "|---|---|" + ("---|" if clair else "")]
        for lbl, g, c in gaps:
            lines.append(f"| {lbl} | {cell(g)} |" + ((" — |" if c is None else f" {cell(c)} |") if clair else ""))
        lines.append("")
    return "\n".join(lines)


#: Marker colour of each kind of policy in the plots.
KIND_COLOURS = {"heuristic": "tab:blue", "custom": "tab:purple", "sb3": "tab:orange"}


def _kind_colour(kind: str) -> str:
    return KIND_COLOURS.get(kind.split(":", 1)[0], "tab:gray")


def _short(label: str, most: int = 28) -> str:
    return label if len(label) <= most else "…" + label[-(most - 1):]


def _signed(v: float) -> str:
    return f"{v:+.4f}" if abs(v) < 10 else f"{v:+.4g}"


def _zoomed_limits(lo: list[float], hi: list[float], extra: float | None = None) -> tuple[float, float] | None:
    """Axis limits around the intervals ``[lo, hi]`` (a 12% margin; a small one around a single
    value) and ``extra`` (the bound) when it does not squash them more than three times."""
    vals = [v for v in (*lo, *hi) if np.isfinite(v)]
    if not vals:
        return None
    a, b = min(vals), max(vals)
    if extra is not None and np.isfinite(extra):
        a2, b2 = min(a, extra), max(b, extra)
        if (b2 - a2) <= 3 * max(b - a, 1e-12) or b - a == 0:
            a, b = a2, b2
    pad = 0.12 * (b - a) if b > a else max(abs(a) * 0.02, 1e-3)
    return a - pad, b + pad


def plot_metrics(summary: dict, out: Path) -> Path:
    """``metrics.png``: per metric, each policy's mean with its 95% CI, on an axis zoomed to the
    values (not from 0), the bound as a dashed line where it fits, the best policy's label bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from envs.sim.metrics import HIGHER_IS_BETTER

    cols = table_metrics(summary)
    pols = summary["policies"]
    labels = list(pols)
    ncol = 4
    nrow = math.ceil(len(cols) / ncol)
    label_in = 0.06 * min(max(len(lbl) for lbl in labels), 28)  # rotated tick labels
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.4 * ncol, nrow * (2.5 + label_in) + 0.4), squeeze=False)
    x = np.arange(len(labels))
    colours = [_kind_colour(pols[lbl]["kind"]) for lbl in labels]
    for ax, m in zip(axes.ravel(), cols, strict=False):
        means, lo, hi = [], [], []
        for lbl in labels:
            s = pols[lbl]["metrics"].get(m, {})
            mu = math.nan if s.get("mean") is None else float(s["mean"])
            ci = s.get("ci95") or [mu, mu]
            means.append(mu)
            lo.append(mu if ci[0] is None else float(ci[0]))
            hi.append(mu if ci[1] is None else float(ci[1]))
        means_a, lo_a, hi_a = np.array(means), np.array(lo), np.array(hi)
        err = np.vstack([np.maximum(means_a - lo_a, 0.0), np.maximum(hi_a - means_a, 0.0)])
        err = np.where(np.isfinite(err), err, 0.0)
        ax.errorbar(x, means_a, yerr=err, fmt="none", ecolor="0.35", elinewidth=1.2, capsize=3, zorder=2)
        ax.scatter(x, means_a, c=colours, s=28, zorder=3)
        for xi, mu, top in zip(x, means_a, hi_a, strict=True):  # the value, to read small differences
            if np.isfinite(mu):
                ax.annotate(_fmt(mu), (xi, top if np.isfinite(top) else mu), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", rotation=90, fontsize=6, color="0.2", zorder=4,
                            bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.85})
        b = summary["ideal_bound"]["metrics"].get(m, {}).get("mean")
        log = False
        if m.endswith("latency") or m == "mean_slowdown":
            finite = [v for v in means if np.isfinite(v) and v > 0]
            log = bool(finite) and max(finite) / max(min(finite), 1e-12) > 50
        if log:
            ax.set_yscale("log")
        else:
            lim = _zoomed_limits(lo, hi, b)
            if lim is not None:
                ax.set_ylim(lim[0], lim[1] + 0.22 * (lim[1] - lim[0]))  # room for the values
        if b is not None:
            ymin, ymax = ax.get_ylim()
            if ymin <= b <= ymax:
                ax.axhline(b, color="k", ls="--", lw=1, label=f"bound {_fmt(b)}")
                ax.legend(fontsize=7, loc="best")
            else:
                ax.text(0.99, 0.98 if b > ymax else 0.02, f"bound {_fmt(b)} (off scale)", transform=ax.transAxes,
                        ha="right", va="top" if b > ymax else "bottom", fontsize=7, color="0.3")
        finite = [(v, i) for i, v in enumerate(means) if np.isfinite(v)]
        best = (max(finite) if m in HIGHER_IS_BETTER else min(finite))[1] if finite else None
        ax.set_title(f"{m} ({'higher' if m in HIGHER_IS_BETTER else 'lower'} is better)", fontsize=9)
        ax.set_xticks(x)
        ax.set_xticklabels([_short(lbl) for lbl in labels], rotation=70, fontsize=7)
        if best is not None:
            ax.get_xticklabels()[best].set_fontweight("bold")
        ax.grid(axis="y", color="0.9", lw=0.6)
        ax.tick_params(axis="y", labelsize=7)
    for ax in axes.ravel()[len(cols):]:
        ax.axis("off")
    kinds = sorted({pols[lbl]["kind"].split(":", 1)[0] for lbl in labels})
    handles = [plt.Line2D([], [], ls="none", marker="o", color=_kind_colour(k), label=k) for k in kinds]
    fig.legend(handles=handles, loc="upper right", fontsize=8, frameon=False, ncol=len(handles))
    fig.suptitle(f"{summary['scenario']}: mean and 95% t CI over {seeds_text(summary['seeds'])} x "
                 f"{summary['episodes_per_seed']} episode(s) (axes zoomed to the values; best in bold)",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path = _save_fig(fig, out / "metrics.png")
    plt.close(fig)
    return path


def plot_paired_differences(summary: dict, out: Path) -> Path:
    """``paired_differences.png``: each policy's paired difference on the primary metric against
    the best heuristic (per-seed differences: mean and 95% paired t CI), a zero line,
    better/worse colour-coded where the CI excludes zero."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pm, bh = summary["primary_metric"], summary.get("best_heuristic")
    higher = summary.get("primary_higher_is_better", True)
    n_seeds = len(summary["seeds"])
    rows = []
    for lbl, p in summary["policies"].items():
        d = p.get("paired_vs_best_heuristic")
        if bh is None or lbl == bh or not d or d.get("mean") is None:
            continue
        ci = d.get("ci95") or [d["mean"], d["mean"]]
        rows.append((lbl, float(d["mean"]), float(ci[0]), float(ci[1]), int(d.get("n", n_seeds))))
    rows.sort(key=lambda r: -r[1] if higher else r[1])  # best at the top
    if rows:
        rows.insert(0, (bh, 0.0, 0.0, 0.0, n_seeds))
    fig, ax = plt.subplots(figsize=(10, 1.6 + 0.42 * max(len(rows), 2)))
    if rows:
        y = np.arange(len(rows))
        kinds = [summary["policies"][r[0]]["kind"].split(":", 1)[0] for r in rows]
        for yi, (lbl, mu, lo, hi, _n), kind in zip(y, rows, kinds, strict=True):
            better = lo > 0 if higher else hi < 0
            worse = hi < 0 if higher else lo > 0
            colour = "tab:green" if better else "tab:red" if worse else "0.4"
            marker = {"heuristic": "o", "sb3": "s", "custom": "D"}.get(kind, "o")
            ax.errorbar([mu], [yi], xerr=[[max(mu - lo, 0.0)], [max(hi - mu, 0.0)]], fmt=marker, color=colour,
                        ecolor=colour, elinewidth=1.6, capsize=4, ms=6, zorder=3,
                        mfc="white" if lbl == bh else colour)
            text = "reference" if lbl == bh else f"{_signed(mu)} [{_signed(lo)}, {_signed(hi)}]"
            ax.annotate(text, (1.01, yi), xycoords=("axes fraction", "data"), va="center", fontsize=7.5,
                        color=colour, annotation_clip=False)
        ax.set_yticks(y)
        ax.set_yticklabels([_short(r[0], 36) + (f" ({k})" if k != "heuristic" else "")
                            for r, k in zip(rows, kinds, strict=True)], fontsize=8)
        lo_all = min(min(r[2] for r in rows), 0.0)
        hi_all = max(max(r[3] for r in rows), 0.0)
        pad = 0.06 * (hi_all - lo_all) if hi_all > lo_all else 1e-3
        ax.set_xlim(lo_all - pad, hi_all + pad)
        ax.set_ylim(len(rows) - 0.4, -0.6)
    else:
        why = ("no built-in heuristic in the table: no paired differences" if bh is None
               else f"no policy other than {bh} to compare")
        ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_yticks([])
        ax.set_xticks([])
    ax.axvline(0.0, color="k", lw=1, zorder=2)
    ax.grid(axis="x", color="0.9", lw=0.6)
    better_side = "right" if higher else "left"
    ref = bh if bh is not None else "(no reference)"
    ax.set_xlabel(f"Δ {pm} = policy − {ref} (per-seed paired difference; better to the {better_side})", fontsize=9)
    ax.set_ylabel("policy", fontsize=9)
    ax.set_title(f"{summary['scenario']}: paired difference in {pm} vs best heuristic {ref}\n"
                 f"mean and 95% paired t CI over {n_seeds} seed(s) x {summary['episodes_per_seed']} "
                 f"episode(s); green/red: CI excludes 0", fontsize=9)
    fig.tight_layout()  # (counts the value labels right of the axes)
    path = _save_fig(fig, out / "paired_differences.png")
    plt.close(fig)
    return path


def plot_latency_cdf(summary: dict, latencies: dict[str, np.ndarray], bound_latencies: np.ndarray,
                     out: Path) -> Path:
    """``latency_cdf.png``: the CDF of completed tasks' latencies of each policy and the bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for lbl in summary["policies"]:
        lat = np.sort(latencies.get(lbl, np.zeros(0)))
        lat = lat[lat > 0]
        if lat.size:
            ax.step(*_cdf_points(lat), where="post", label=_short(lbl), lw=1)
    bl = np.sort(bound_latencies[bound_latencies > 0]) if bound_latencies.size else bound_latencies
    if bl.size:
        ax.step(*_cdf_points(bl), where="post", label="bound", color="k", ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("task latency (s), completed tasks")
    ax.set_ylabel("fraction of completed tasks")
    ax.set_title(f"{summary['scenario']}: latency CDF")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = _save_fig(fig, out / "latency_cdf.png")
    plt.close(fig)
    return path


def plot(summary: dict, latencies: dict[str, np.ndarray], bound_latencies: np.ndarray, out: Path) -> list[Path]:
    """Write ``metrics.png``, ``paired_differences.png`` and ``latency_cdf.png`` into ``out``."""
    return [plot_metrics(summary, out), plot_paired_differences(summary, out),
            plot_latency_cdf(summary, latencies, bound_latencies, out)]


def _cdf_points(sorted_values: np.ndarray, most: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Points of the empirical CDF of sorted values: every value, or for long samples ``most``
    evenly spaced order statistics (the curve looks the same; millions of points do not plot)."""
    n = sorted_values.size
    idx = np.arange(n) if n <= most else np.unique(np.linspace(0, n - 1, most).round().astype(np.int64))
    return sorted_values[idx], (idx + 1) / n


def _save_fig(fig, path: Path) -> Path:
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110))
    return path


def write_tensorboard(summary: dict, log_dir: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        groups = [(lbl, p["metrics"]) for lbl, p in summary["policies"].items()]
        groups.append((BOUND, summary["ideal_bound"]["metrics"]))
        for label, metrics in groups:
            for m, s in metrics.items():
                if s["mean"] is not None:
                    writer.add_scalar(f"eval/{label}/{m}", s["mean"], 0)
                for seed, v in zip(summary["seeds"], s["per_seed"], strict=True):
                    if v is not None:
                        writer.add_scalar(f"eval_per_seed/{label}/{m}", v, seed)
        writer.add_text("eval/results", markdown(summary), 0)
    finally:
        writer.close()


def write_outputs(summary: dict, latencies, bound_latencies, out: Path, tensorboard: Path | None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.json", json.dumps(summary, indent=2, allow_nan=False) + "\n")
    write_text(out / "results.csv", csv_text(csv_rows(summary)))
    write_text(out / "results.md", markdown(summary))
    plot(summary, latencies, bound_latencies, out)
    if tensorboard is not None:
        write_tensorboard(summary, tensorboard)


# ====================================================================== CLI
def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="evaluate.py",
        description="Evaluate heuristics and trained SB3 models on the same seeds (common random numbers).",
        epilog="Training seeds are 0..999; the default evaluation seeds 1000..1029 are disjoint from them.",
    )
    ap.add_argument("--scenario", action="append", metavar="NAME|PATH",
                    help="built-in scenario name or YAML path (repeatable; default serving-small)")
    ap.add_argument("--policies", nargs="+", default=["all"], metavar="P",
                    help="heuristic names, 'all' (every built-in heuristic but the slow 'planner', about a "
                         "minute per episode: name it to add it), paths to SB3 .zip models, or policies "
                         "of your own: module:Class, path/to/file.py:Class, or the name of a "
                         "'modelsched.policies' entry point")
    ap.add_argument("--exclude", nargs="+", default=[], metavar="P",
                    help="policies left out of --policies (e.g. --policies all --exclude genetic)")
    ap.add_argument("--seeds", nargs="+", type=seed_arg, default=None, metavar="S",
                    help="evaluation seeds: integers and inclusive ranges A-B, e.g. 1000-1999 (default 1000-1029)")
    ap.add_argument("--episodes", type=int, default=1, help="episodes per seed (default 1)")
    ap.add_argument("--out", type=Path, default=Path("results"), help="output folder (default results/)")
    ap.add_argument("--tensorboard", type=Path, default=None, metavar="DIR", help="also write TensorBoard scalars")
    ap.add_argument("--trace", default=None, metavar="PATH", help="trace file passed to the env as trace=PATH")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="torch device for SB3 models")
    ap.add_argument("--jobs", type=int, default=1,
                    help="episodes run in parallel processes (default 1; reference backend, and policies with "
                         "no batched form under --backend batched)")
    ap.add_argument("--backend", default="reference", choices=("reference", "batched"),
                    help="reference: one SchedulingEnv per episode; batched: many seeds at once on the batched "
                         "simulator (heuristics with a batched form and SB3 models; 'genetic' and 'planner' have "
                         "none and run on the reference, with a notice). Same results, same outputs (default reference)")
    ap.add_argument("--batch-size", type=int, default=None, metavar="B",
                    help="instances per batched-simulator chunk (default 1024)")
    ap.add_argument("--threads", type=int, default=1, metavar="N",
                    help="torch CPU threads per process for SB3 models (default 1: the small policy networks run "
                         "fastest single-threaded, see benchmarks/eval_threads.py)")
    ap.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="run the episodes as Ray tasks (pip install -e \".[ray]\"): with no ADDRESS on a local Ray "
                         "instance, 'auto' on the cluster started here by `ray start --head`, HOST:PORT or "
                         "ray://HOST:PORT on a remote one. Same results and outputs as the local run; a task whose "
                         "worker dies is retried")
    ap.add_argument("--no-resume", dest="resume", action="store_false",
                    help="ignore episodes kept from an interrupted run of the same command (by default they are "
                         "reused: finished episodes are kept in <out>/.partial until the outputs are written)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def seed_arg(text: str) -> list[int]:
    """One ``--seeds`` item: ``N`` or an inclusive range ``A-B``."""
    t = text.strip()
    try:
        if "-" in t[1:]:
            a, b = t.split("-", 1) if not t.startswith("-") else (t, "")
            lo, hi = int(a), int(b)
            if hi < lo:
                raise argparse.ArgumentTypeError(f"seed range {text!r} is empty (end before start)")
            return list(range(lo, hi + 1))
        return [int(t)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed (an integer) or a range A-B") from None


def _check_inputs(args) -> tuple[list[str], list[tuple[str, str]], list[int], dict]:
    from baselines import REGISTRY, PolicyError, load_policy, names
    from baselines.rollout import (
        check_spaces,
        custom_policy_object,
        detect_algorithm,
        env_kwargs_for,
        is_custom_spec,
        is_rllib_spec,
        model_path,
        policy_labels,
        writes_run_config,
    )
    from envs.config import ConfigError

    scenarios = args.scenario or ["serving-small"]
    seeds = EVAL_SEEDS if args.seeds is None else list(dict.fromkeys(
        s for item in args.seeds for s in (item if isinstance(item, list) else [item])))
    if any(s < 0 for s in seeds):
        raise UsageError("seeds must be non-negative integers")
    if args.episodes < 1:
        raise UsageError("--episodes must be >= 1")
    if args.jobs < 1:
        raise UsageError("--jobs must be >= 1")
    cores = os.cpu_count() or 1
    if args.jobs > MAX_JOBS_PER_CORE * cores:
        raise UsageError(f"--jobs {args.jobs}: this machine has {cores} core(s); more than {MAX_JOBS_PER_CORE} "
                         f"processes per core only adds memory and start-up time (at most {MAX_JOBS_PER_CORE * cores})")
    if args.threads < 1:
        raise UsageError("--threads must be >= 1")
    if getattr(args, "ray", None) is not None:
        if args.jobs > 1:
            raise UsageError("--jobs is for local processes; with --ray the tasks spread over the cluster's CPUs")
        from modelsched.ray_cluster import RayUnavailable, require_ray

        try:
            require_ray("--ray")
        except RayUnavailable as e:
            raise UsageError(str(e)) from None
    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError("--batch-size must be >= 1")
    if args.batch_size is not None and args.backend != "batched":
        raise UsageError("--batch-size needs --backend batched")
    from envs.vector import resolve_device

    try:
        resolve_device(args.device)
    except ValueError as e:
        raise UsageError(f"--device: {e}") from None
    env_kwargs = {}
    if args.trace is not None:
        if not Path(args.trace).exists():
            raise UsageError(f"trace file not found: {args.trace}")
        env_kwargs["trace"] = str(args.trace)
    for spec in scenarios:
        try:
            _make_env(spec, env_kwargs).close()
        except (ConfigError, ValueError, TypeError, OSError) as e:
            raise UsageError(f"scenario '{spec}': {e}") from None
    specs: list[str] = []
    for p in args.policies:
        for q in ([n for n in names() if n not in NOT_IN_ALL] if p == "all" else [p]):
            if q not in specs:
                specs.append(q)
    unknown = [x for x in args.exclude if x not in specs and x not in NOT_IN_ALL]
    if unknown:
        raise UsageError(f"--exclude: {', '.join(unknown)} not among the policies asked for ({', '.join(specs)})")
    specs = [x for x in specs if x not in args.exclude]
    if not specs:
        raise UsageError("--exclude leaves no policy to evaluate")
    policies = list(zip(specs, policy_labels(specs)))
    for spec, label in policies:  # every model loaded and checked against every scenario up front
        if spec in REGISTRY:
            continue
        try:
            if is_custom_spec(spec):
                custom_policy_object(spec)
                continue
            if is_rllib_spec(spec):  # loaded (checking its spaces) for every scenario
                for sc in scenarios:
                    env = _make_env(sc, env_kwargs)
                    load_policy(spec, env)
                    env.close()
                continue
            path = model_path(spec, known="all, " + ", ".join(names()))
            detect_algorithm(path)
            if not writes_run_config(path):
                print(f"evaluate.py: {spec} is not in a train.py run folder: it is loaded with SB3's loader, which "
                      f"unpickles (runs) code from the file; only evaluate model files you trust", file=sys.stderr)
            first = _make_env(scenarios[0], env_kwargs)
            model = load_policy(spec, first, device="cpu")
            first.close()
            for sc in scenarios:
                env = _make_env(sc, {**env_kwargs, **env_kwargs_for(model)})
                check_spaces(model, env, label, sc)
                env.close()
        except PolicyError as e:
            raise UsageError(str(e)) from None
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out} is a file, not a folder")
    return scenarios, policies, seeds, env_kwargs


def _heavy_first(item: WorkItem) -> tuple:
    from baselines import REGISTRY

    return (0 if item.policy not in REGISTRY or item.policy in ("genetic", "planner") else 1,)


def _set_threads(n: int) -> None:
    """torch's CPU threads in this process (workers call it at start)."""
    import torch

    torch.set_num_threads(int(n))


def _worker_init(threads: int, parent: int) -> None:
    """Worker start: torch threads, and a watchdog that ends the worker when its parent dies
    (a killed ``evaluate.py`` leaves no workers behind)."""
    import threading

    _set_threads(threads)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _run_pool(items: list[WorkItem], order: list[int], done, jobs: int, threads: int) -> None:
    """Run ``items[order]`` in ``jobs`` spawned processes, calling ``done(i, result)`` as each
    finishes. On an interrupt or an error the workers are terminated, not waited for."""
    ctx = mp.get_context("spawn")
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                                  initargs=(threads, os.getpid()))
    try:
        futures = {pool.submit(run_item, items[i]): i for i in order}
        for fut in cf.as_completed(futures):
            done(futures[fut], fut.result())
    except BaseException:
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def evaluate(args) -> list[dict]:
    scenarios, policies, seeds, env_kwargs = _check_inputs(args)
    threads = getattr(args, "threads", 1)
    _set_threads(threads)
    items = [WorkItem(sc, spec, label, s, e, tuple(sorted(env_kwargs.items())), args.device)
             for sc in scenarios for spec, label in policies for s in seeds for e in range(args.episodes)]
    order = sorted(range(len(items)), key=lambda i: _heavy_first(items[i]))
    results: list[dict | None] = [None] * len(items)
    from baselines.journal import Journal
    from baselines.progress import Progress

    journal = Journal(args.out / PARTIAL, enabled=getattr(args, "resume", True))
    if not journal.enabled and journal.folder.is_dir():
        import shutil

        shutil.rmtree(journal.folder)
    keys = [journal.key(it, env_kwargs) for it in items]
    resumed = 0
    for i in range(len(items)):
        r = journal.load(keys[i])
        if r is not None:
            r["item"] = items[i]
            results[i] = r
            resumed += 1
    if resumed:
        print(f"evaluate.py: resuming: {resumed} of {len(items)} episodes were already done "
              f"(kept in {journal.folder}; --no-resume starts afresh)", file=sys.stderr)
    order = [i for i in order if results[i] is None]

    def done(i: int, result: dict) -> None:
        results[i] = result
        journal.save(keys[i], result)

    bar = Progress(len(items), "evaluate: episodes", "episodes", enabled=not args.no_progress)
    bar.update(resumed)
    t0 = time.perf_counter()
    fallback: list[str] = []
    ray_started = False
    try:
        if getattr(args, "ray", None) is not None:
            from baselines.ray_eval import fallback_labels, run_on_ray
            from modelsched.ray_cluster import RayUnavailable, connect

            try:
                ray_started = connect(None if args.ray == "local" else args.ray, "--ray")
            except RayUnavailable as e:
                raise UsageError(str(e)) from None
            if args.backend == "batched":
                fallback = fallback_labels(items, order)
            run_on_ray(items, order, done, args, env_kwargs, bar)
            order = []  # all done
        elif args.backend == "batched":
            order, fallback = _run_batched_items(items, order, done, args, env_kwargs, bar)
        if args.jobs == 1:
            for i in order:
                done(i, run_item(items[i]))
                bar.update(1)
        else:
            def done_and_count(i: int, result: dict) -> None:
                done(i, result)
                bar.update(1)

            _run_pool(items, order, done_and_count, min(args.jobs, max(len(order), 1)), threads)  # no idle workers
    except BaseException as e:  # noqa: BLE001 - only interrupts (however wrapped) are handled here
        from baselines.interrupts import caused_by_interrupt

        if not caused_by_interrupt(e):
            raise
        kept = sum(r is not None for r in results)
        raise Interrupted(f"interrupted: {kept} of {len(items)} episodes are kept in {journal.folder}; "
                          f"run the same command again to continue") from None
    finally:
        bar.close()
        if ray_started:
            import ray

            ray.shutdown()
    wall = time.perf_counter() - t0

    # Outputs are written into a staging folder next to --out, then put in its place in one
    # step: never a mix of new and stale files, never a half-written set.
    args.out.resolve().parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{args.out.name}.staging-", dir=args.out.resolve().parent))
    try:
        summaries = _write_all(args, scenarios, policies, seeds, env_kwargs, results, wall, fallback, stage)
        _replace_folder(stage, args.out)
    except BaseException:
        import shutil

        shutil.rmtree(stage, ignore_errors=True)
        raise
    return summaries


def _replace_folder(new: Path, out: Path) -> None:
    """Put the folder ``new`` at ``out``; the old ``out`` (and its journal) is removed. Two
    renames: a kill between them leaves ``out`` absent and both folders beside it, never a mix."""
    import shutil

    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.resolve().parent))
        os.rmdir(old)
        os.rename(out, old)
        os.rename(new, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(new, out)


def _write_all(args, scenarios, policies, seeds, env_kwargs, results, wall, fallback, root: Path) -> list[dict]:
    summaries = []
    multi = len(scenarios) > 1
    all_rows = []
    for sc in scenarios:
        mine = [r for r in results if r["item"].scenario == sc]
        name = mine[0]["scenario_name"]
        from envs.scenarios.loader import load_scenario

        pm = load_scenario(sc, **env_kwargs).primary_metric
        sr = ScenarioResult(spec=sc, name=name, primary_metric=pm, seeds=seeds, episodes=args.episodes,
                            labels=[lbl for _, lbl in policies])
        digests: dict[tuple, set] = {}
        sim_digests: dict[tuple, set] = {}
        latencies: dict[str, list] = {}
        bound_lat = []
        for r in mine:
            it = r["item"]
            r["_extra"] = {"steps": r["steps"]}
            sr.kinds[it.label] = r["kind"]
            sr.runs.setdefault(it.label, {}).setdefault(it.seed, []).append(r)
            digests.setdefault((it.seed, it.episode), set()).add(r["workload_digest"])
            if "sim_digest" in r:
                sim_digests.setdefault((it.seed, it.episode), set()).add(r["sim_digest"])
            latencies.setdefault(it.label, []).append(r["latencies"])
            if it.label == policies[0][1]:
                bound_lat.append(r["ideal_bound_latencies"])
        broken = [k for d in (digests, sim_digests) for k, v in d.items() if len(v) > 1]
        if broken:
            raise RuntimeError(f"{name}: policies saw different workloads for (seed, episode) {broken[:3]}: "
                               f"common random numbers are broken")
        summary = summarize_scenario(sr)
        summary["wall_s_total"] = wall
        summary["settings"] = {"episodes": args.episodes, "jobs": args.jobs, "device": args.device, "threads": getattr(args, "threads", 1),
                               "trace": args.trace, "policies": {lbl: spec for spec, lbl in policies},
                               "backend": args.backend}
        if args.backend == "batched":
            from baselines.batched_eval import DEFAULT_BATCH

            summary["settings"]["batch_size"] = args.batch_size or DEFAULT_BATCH
            summary["settings"]["reference_backend_for"] = fallback
        out = root / _safe(name) if multi else root
        tb = None
        if args.tensorboard is not None:
            tb = args.tensorboard / _safe(name) if multi else args.tensorboard
        lat = {k: np.concatenate(v) if v else np.zeros(0) for k, v in latencies.items()}
        write_outputs(summary, lat, np.concatenate(bound_lat) if bound_lat else np.zeros(0), out, tb)
        summaries.append(summary)
        all_rows.extend(csv_rows(summary))
    if multi:
        write_text(root / "results.json", json.dumps({"scenarios": summaries}, indent=2, allow_nan=False) + "\n")
        write_text(root / "results.csv", csv_text(all_rows))
        write_text(root / "results.md", "\n".join(markdown(s) for s in summaries))
    return summaries


def _needs_reference(item: WorkItem) -> bool:
    """True for a policy that the batched backend plays on the reference simulator: a heuristic
    with no batched form, a policy of one's own, an RLlib checkpoint."""
    from baselines import REGISTRY
    from baselines.batched import has_batched
    from baselines.rollout import is_custom_spec, is_rllib_spec

    return ((item.policy in REGISTRY and not has_batched(item.policy)) or is_custom_spec(item.policy)
            or is_rllib_spec(item.policy))


def _run_batched_items(items: list[WorkItem], order: list[int], done, args, env_kwargs: dict,
                       bar, notify: bool = True) -> tuple[list[int], list[str]]:
    """Run on the batched simulator every item whose policy can (a heuristic with a batched form,
    or an SB3 model), calling ``done(i, result)`` chunk by chunk (so an interrupt keeps every
    finished chunk); returns the order of the items left for the reference backend and the
    labels of their policies (a notice is printed for each)."""
    from baselines import REGISTRY, load_policy
    from baselines.batched_eval import DEFAULT_BATCH, SeedFacts, run_batched
    from baselines.rollout import describe, env_kwargs_for
    from envs.scenarios.loader import load_scenario

    groups: dict[tuple, list[int]] = {}
    left: list[int] = []
    fallback: list[str] = []
    batching: dict[str, str | None] = {}  # scenario -> a feature the batched simulator refuses, or None
    for i in order:
        it = items[i]
        if it.scenario not in batching:
            batching[it.scenario] = load_scenario(it.scenario, **{k: v for k, v in env_kwargs.items()
                                                                  if k != "invalid_action"}).reference_only
            if batching[it.scenario] and notify:
                print(f"evaluate.py: scenario '{it.scenario}' has {batching[it.scenario]}, which the batched "
                      f"simulator does not implement: its episodes run on the reference simulator", file=sys.stderr)
        if batching[it.scenario]:
            left.append(i)
            if it.label not in fallback:
                fallback.append(it.label)
            continue
        if _needs_reference(it):
            left.append(i)
            if it.label not in fallback:
                fallback.append(it.label)
                if notify:
                    print(f"evaluate.py: '{it.label}' has no batched form: its episodes run on the reference "
                          f"simulator", file=sys.stderr)
            continue
        groups.setdefault((it.scenario, it.policy, it.label), []).append(i)
    facts: dict[str, SeedFacts] = {}
    for (sc, spec, label), idx in groups.items():
        if sc not in facts:
            facts[sc] = SeedFacts(lambda sc=sc: _make_env(sc, env_kwargs))
        policy, kind = spec, "heuristic"
        kw = dict(env_kwargs)
        if spec not in REGISTRY:
            spaces_env = _make_env(sc, env_kwargs)
            policy = load_policy(spec, spaces_env, device=args.device)
            spaces_env.close()
            kind = describe(policy)
            kw.update(env_kwargs_for(policy))
        kw.pop("invalid_action", None)  # the batched evaluator sets it from the policy
        scenario = load_scenario(sc, **kw)
        batch = args.batch_size or DEFAULT_BATCH
        for c in range(0, len(idx), batch):  # one chunk at a time: each is kept as it finishes
            chunk = idx[c:c + batch]
            seeds = [episode_seed(items[i].seed, items[i].episode) for i in chunk]
            try:
                out = run_batched(scenario, policy, label, seeds, facts=facts[sc], batch_size=batch,
                                  on_episode=bar.update)
            except Exception as e:
                from baselines import PolicyError

                if isinstance(e, PolicyError):
                    raise UsageError(str(e)) from None
                raise RuntimeError(f"policy '{label}' on scenario '{sc}' (batched backend) failed: "
                                   f"{type(e).__name__}: {e}") from e
            for i, res in zip(chunk, out):
                res["kind"] = kind
                res["item"] = items[i]
                res["scenario_name"] = scenario.name
                done(i, res)
    return left, fallback


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def main(argv: list[str] | None = None) -> int:
    for stream in (sys.stdout, sys.stderr):  # lines appear as printed when redirected
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    args = build_parser().parse_args(argv)
    import signal

    def _interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    if argv is None:  # the command line: `kill <pid>` is handled like Ctrl-C
        signal.signal(signal.SIGTERM, _interrupt)
        signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    try:
        summaries = evaluate(args)
    except UsageError as e:
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"evaluate.py: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("evaluate.py: interrupted", file=sys.stderr)
        return 130
    for s in summaries:
        print(markdown(s))
    n = len(summaries[0]["seeds"]) if summaries else 0
    if n < ENOUGH_SEEDS:
        print(f"evaluate.py: note: {n} seed(s): too few for the 95% intervals to cover 95% "
              f"(see the report); use more, e.g. --seeds 1000-1199", file=sys.stderr)
    print(f"results written to {args.out}")
    return 0
