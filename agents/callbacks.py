"""Training callbacks, one job each (SB3 style).

* :class:`SimMetricsCallback`: episode metrics (``info["metrics"]`` at episode ends) to the
  logger as ``sim/<metric>``.
* :class:`HyperparamsTextCallback`: the resolved hyperparameters as a Markdown table in
  TensorBoard's text tab (CleanRL's habit).
* :class:`HeuristicEvalCallback`: every ``eval_freq`` steps, the agent on fixed evaluation seeds
  next to the scenario's strongest heuristic, logged as ``eval/<policy>/<metric>``; saves
  ``best_model.zip`` when the primary metric improves. It also writes a custom-scalars layout
  (one chart per metric with the agent's and the heuristic's curves) and a Gantt chart of the
  first seed's episode as the image ``eval/gantt/agent`` (``eval/gantt/<heuristic>`` once).
* :func:`log_run_hparams`: at the end of a run, an HParams entry (scalar hyperparameters and the
  final metrics) for TensorBoard's HPARAMS tab.
Checkpoints use SB3's ``CheckpointCallback``; the progress bar SB3's ``progress_bar=True``.
"""

from __future__ import annotations

import json
import math
import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HParam, Image, TensorBoardOutputFormat

from agents.evaluation import evaluate_on_seeds, higher_is_better, mean_metrics, strongest_heuristic


class SimMetricsCallback(BaseCallback):
    """Log each finished episode's simulator metrics as ``sim/<metric>`` (mean per dump)."""

    def __init__(self, prefix: str = "sim", verbose: int = 0):
        super().__init__(verbose)
        self.prefix = prefix
        self.episodes = 0

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            metrics = info.get("metrics")
            if not metrics:
                continue
            self.episodes += 1
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.logger.record_mean(f"{self.prefix}/{key}", float(value))
        return True


def markdown_table(values: dict) -> str:
    rows = "\n".join(f"|{k}|{v}|" for k, v in values.items())
    return f"|param|value|\n|-|-|\n{rows}"


class HyperparamsTextCallback(BaseCallback):
    """Write ``values`` as a Markdown table under the TensorBoard text tag ``hyperparameters``."""

    def __init__(self, values: dict, tag: str = "hyperparameters", written: bool = False):
        super().__init__()
        self.values = values
        self.tag = tag
        self.written = written  # a resumed run: the table is in the run's events already

    def _on_training_start(self) -> None:
        if self.written:
            return
        self.written = True
        for fmt in self.logger.output_formats:
            if isinstance(fmt, TensorBoardOutputFormat):
                fmt.writer.add_text(self.tag, markdown_table(self.values), self.num_timesteps)
                fmt.writer.flush()

    def _on_step(self) -> bool:
        return True


#: Logger formats that cannot hold images or HParams (the TensorBoard format gets them).
NOT_TENSORBOARD = ("stdout", "log", "json", "csv")


def tensorboard_writers(logger) -> list:
    """The ``SummaryWriter`` of each TensorBoard output of an SB3 logger."""
    return [fmt.writer for fmt in getattr(logger, "output_formats", ()) if isinstance(fmt, TensorBoardOutputFormat)]


#: Metrics charted first in the custom-scalars layout (after the primary metric); the rest follow
#: alphabetically.
LAYOUT_FIRST = ("effective_accuracy", "slo_attainment", "job_slo_attainment", "mean_accuracy", "goodput",
                "mean_latency", "p99_latency", "mean_slowdown", "utilization")


def eval_layout(metrics: Sequence[str], heuristic: str | None, primary: str) -> dict:
    """Custom-scalars layout: per metric one multiline chart of ``eval/agent/<metric>`` and
    ``eval/<heuristic>/<metric>`` (the primary metric first, with ``eval/best_<metric>``)."""
    def tag(policy: str, m: str) -> str:
        return f"^{re.escape(f'eval/{policy}/{m}')}$"

    first = [primary, *(m for m in LAYOUT_FIRST if m in metrics and m != primary)]
    ordered = first + sorted(m for m in metrics if m not in first)
    charts = {}
    for m in ordered:
        tags = [tag("agent", m)] + ([tag(heuristic, m)] if heuristic else [])
        if m == primary:
            tags.append(f"^{re.escape(f'eval/best_{m}')}$")
        charts[f"{m}: agent vs {heuristic}" if heuristic else m] = ["Multiline", tags]
    return {"eval: agent vs heuristic" if heuristic else "eval: agent": charts}


class HeuristicEvalCallback(BaseCallback):
    """Periodic evaluation of the agent against the scenario's strongest heuristic.

    At training start each heuristic in ``candidates`` runs once on ``seeds`` (heuristics are
    deterministic given the seed, so once is enough) and the best on ``metric`` is kept as the
    reference. Every ``eval_freq`` environment steps the agent (deterministic) runs on the same
    seeds; both are logged as ``eval/<policy>/<metric>``, the paired difference on the primary
    metric as ``eval/advantage/<metric>``, and the model is saved to ``best_model_path`` when its
    mean primary metric is the best so far. Results are appended to ``log_path`` (JSON lines).

    TensorBoard extras: a custom-scalars layout written at training start (per metric, the agent's
    and the heuristic's curves on one chart; the heuristic's constant value is logged at every
    evaluation, a flat line), and with ``gantt`` a Gantt chart of the episode of the first seed,
    the agent's at every evaluation (``eval/gantt/agent``), the heuristic's once
    (``eval/gantt/<heuristic>``).
    """

    def __init__(self, eval_env, seeds: Sequence[int], metric: str, candidates: Sequence[str],
                 eval_freq: int, best_model_path: str | Path,
                 log_path: str | Path | None = None, verbose: int = 1, gantt: bool = True):
        super().__init__(verbose)
        self.gantt = gantt
        #: Wall time of this callback's work (reference heuristic, evaluations, pictures), seconds.
        self.seconds = 0.0
        self.last_means: dict[str, float] = {}
        self.last_advantage: float = math.nan
        self.eval_env = eval_env
        self.seeds = [int(s) for s in seeds]
        self.metric = metric
        self.candidates = list(candidates)
        self.eval_freq = int(eval_freq)
        self.best_model_path = Path(best_model_path)
        self.log_path = Path(log_path) if log_path else None
        self.heuristic: str | None = None
        self.heuristic_means: dict[str, float] = {}
        self.heuristic_episodes: list[dict[str, float]] = []
        self.best: float | None = None
        self._last_eval = 0
        self._started = False
        self._resumed = False

    def state_dict(self) -> dict:
        """What a resumed run needs to continue the evaluations as if it never stopped (plain
        JSON: the reference heuristic and its scores, the best score, the last evaluation's step)."""
        return {"started": self._started, "heuristic": self.heuristic, "heuristic_episodes": self.heuristic_episodes,
                "heuristic_means": self.heuristic_means, "best": self.best, "last_eval": self._last_eval}

    def load_state_dict(self, state: dict) -> None:
        if not state.get("started"):
            return  # the run stopped before its first evaluation: it starts as a new one does
        self.heuristic = state["heuristic"]
        self.heuristic_episodes = [dict(e) for e in state["heuristic_episodes"]]
        self.heuristic_means = dict(state["heuristic_means"])
        self.best = state["best"]
        self._last_eval = int(state["last_eval"])
        self._started = self._resumed = True

    def _on_training_start(self) -> None:
        if self._resumed:  # reference, layout and starting point were done before the checkpoint
            return
        t_start = time.perf_counter()
        self._started = True
        self._last_eval = self.num_timesteps
        if self.candidates and self.heuristic is None:
            t0 = time.perf_counter()
            self.heuristic, table = strongest_heuristic(self.eval_env, self.candidates, self.seeds, self.metric)
            self.heuristic_episodes = table[self.heuristic]
            self.heuristic_means = mean_metrics(self.heuristic_episodes)
            if self.verbose:
                ranked = ", ".join(f"{n}={mean_metrics(e).get(self.metric, math.nan):.4f}"
                                   for n, e in table.items())
                print(f"eval reference: {self.heuristic} ({self.metric} on seeds {self.seeds}: {ranked}; "
                      f"{time.perf_counter() - t0:.1f}s)")
            if self.gantt and self.seeds:
                import baselines
                from baselines import run_episode

                run_episode(self.eval_env, baselines.make(self.heuristic, self.eval_env), self.seeds[0])
                self._record_gantt(self.heuristic)
        metrics = sorted(self.heuristic_means) or [self.metric]
        for writer in tensorboard_writers(self.logger):
            writer.add_custom_scalars(eval_layout(metrics, self.heuristic, self.metric))
            writer.flush()
        self.seconds += time.perf_counter() - t_start
        if self.eval_freq > 0:  # the starting point of the curve (and a best-model candidate)
            self.evaluate()

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps - self._last_eval >= self.eval_freq:
            self._last_eval = self.num_timesteps
            self.evaluate()
        return True

    def _record_gantt(self, policy: str) -> None:
        """Log the Gantt chart of the episode the eval env just played as ``eval/gantt/<policy>``."""
        if not tensorboard_writers(self.logger):
            return
        try:
            from envs.render import render_gantt

            base = self.eval_env.unwrapped
            when = "reference heuristic" if policy == self.heuristic else f"@ {self.num_timesteps} steps"
            name = f"{base.scenario.name}   {policy} {when}   seed {self.seeds[0]}   "
            frame = render_gantt(base.sim, name=name)
        except Exception as e:  # a picture is never worth a failed run
            warnings.warn(f"Gantt chart not rendered ({type(e).__name__}: {e}); no more are tried", stacklevel=2)
            self.gantt = False
            return
        self.logger.record(f"eval/gantt/{policy}", Image(frame, "HWC"), exclude=NOT_TENSORBOARD)

    def evaluate(self) -> dict[str, float]:
        t_start = time.perf_counter()
        if self.gantt and self.seeds:  # the first seed on its own: its final state is drawn
            from baselines import run_episode

            first = run_episode(self.eval_env, self.model, self.seeds[0])["metrics"]
            self._record_gantt("agent")
            episodes = [first, *evaluate_on_seeds(self.eval_env, self.model, self.seeds[1:])]
        else:
            episodes = evaluate_on_seeds(self.eval_env, self.model, self.seeds)
        means = mean_metrics(episodes)
        self.last_means = means
        for key, value in means.items():
            if math.isfinite(value):
                self.logger.record(f"eval/agent/{key}", value)
        if self.heuristic:
            for key, value in self.heuristic_means.items():
                if math.isfinite(value):
                    self.logger.record(f"eval/{self.heuristic}/{key}", value)
            diffs = [a.get(self.metric, math.nan) - h.get(self.metric, math.nan)
                     for a, h in zip(episodes, self.heuristic_episodes, strict=True)]
            self.last_advantage = float(sum(diffs) / len(diffs))
            self.logger.record(f"eval/advantage/{self.metric}", self.last_advantage)
        score = means.get(self.metric, math.nan)
        sign = 1.0 if higher_is_better(self.metric) else -1.0
        improved = math.isfinite(score) and (self.best is None or sign * score > sign * self.best)
        if improved:
            self.best = score
            from agents.files import save_model

            save_model(self.model, self.best_model_path)
        self.logger.record("eval/best_" + self.metric, self.best if self.best is not None else math.nan)
        self.logger.dump(self.num_timesteps)
        if self.log_path:
            with open(self.log_path, "a") as f:
                f.write(json.dumps({"timesteps": self.num_timesteps, "agent": means,
                                    "heuristic": self.heuristic, "improved": improved}) + "\n")
        if self.verbose:
            ref = f" vs {self.heuristic} {self.heuristic_means.get(self.metric, math.nan):.4f}" if self.heuristic else ""
            print(f"eval @ {self.num_timesteps}: agent {self.metric} {score:.4f}{ref}"
                  f"{' (new best)' if improved else ''}")
        self.seconds += time.perf_counter() - t_start
        return means

    def _on_training_end(self) -> None:
        # The final policy is a candidate for best_model too.
        if self.eval_freq > 0 and self.num_timesteps > self._last_eval:
            self._last_eval = self.num_timesteps
            self.evaluate()


def hparam_dict(algo: str, scenario: str, seed: int, hp: dict, **extra: Any) -> dict:
    """The run's hyperparameters as HParams values (scalars: bool, int, float, str). Nested
    entries are summarised: ``pretrain`` as ``on``/``off`` (and its heuristic), ``reward_shaping`` as its
    potential (or ``none``); other dicts and lists are left out."""
    out: dict[str, Any] = {"algo": algo, "scenario": Path(str(scenario)).stem, "seed": int(seed)}
    for key, value in {**hp, **extra}.items():
        if key == "pretrain":
            out["pretrain"] = "on" if value else "off"
            if isinstance(value, dict):
                out["pretrain_heuristic"] = str(value.get("heuristic", "adaptive"))
        elif key == "reward_shaping":
            out["reward_shaping"] = str(value.get("potential", "on")) if isinstance(value, dict) and value else "none"
        elif isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif value is None:
            out[key] = "None"
    return out


def run_metrics(metric: str, eval_callback: HeuristicEvalCallback | None = None,
                final_eval: dict | None = None) -> dict[str, float]:
    """Final numbers of a run for HParams (finite values only): the best periodic-evaluation
    score on ``metric``, the last periodic evaluation's agent mean and its paired difference vs
    the reference heuristic, and from the final test evaluation (``agents.report``) each agent's
    mean and paired difference vs the best heuristic."""
    out: dict[str, float] = {}
    if eval_callback is not None:
        out[f"hparams/best_eval_{metric}"] = eval_callback.best if eval_callback.best is not None else math.nan
        out[f"hparams/last_eval_agent_{metric}"] = eval_callback.last_means.get(metric, math.nan)
        out[f"hparams/last_eval_advantage_{metric}"] = eval_callback.last_advantage
    for label, row in ((final_eval or {}).get("policies") or {}).items():
        if row.get("kind") != "agent":
            continue
        name = label.split(":", 1)[-1]
        out[f"hparams/test_{name}_{metric}"] = row.get("mean", math.nan)
        out[f"hparams/test_{name}_advantage_{metric}"] = (row.get("diff_vs_best") or {}).get("mean", math.nan)
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def log_run_hparams(logger, hparams: dict, metrics: dict[str, float], step: int) -> None:
    """Write one HParams entry (``hparams`` x ``metrics``) to the logger's TensorBoard output at
    ``step``. The metrics are logged as scalars too: the HPARAMS tab reads their values from the
    scalars of the same tags. Without a metric, TensorBoard would not show the entry, so a run
    with none logs ``hparams/num_timesteps``."""
    if not tensorboard_writers(logger):
        return
    metrics = dict(metrics) or {"hparams/num_timesteps": float(step)}
    for tag, value in metrics.items():
        logger.record(tag, value, exclude=NOT_TENSORBOARD)
    logger.record("hparams", HParam(hparams, {tag: 0.0 for tag in metrics}), exclude=NOT_TENSORBOARD)
    logger.dump(step)
