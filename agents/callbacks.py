"""Training callbacks, one job each (SB3 style).

* :class:`SimMetricsCallback`: episode metrics (``info["metrics"]`` at episode ends) to the
  logger as ``sim/<metric>``.
* :class:`HyperparamsTextCallback`: the resolved hyperparameters as a Markdown table in
  TensorBoard's text tab (CleanRL's habit).
* :class:`HeuristicEvalCallback`: every ``eval_freq`` steps, the agent on fixed evaluation seeds
  next to the scenario's strongest heuristic, logged as ``eval/<policy>/<metric>``; saves
  ``best_model.zip`` when the primary metric improves.
Checkpoints use SB3's ``CheckpointCallback``; the progress bar SB3's ``progress_bar=True``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import TensorBoardOutputFormat

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

    def __init__(self, values: dict, tag: str = "hyperparameters"):
        super().__init__()
        self.values = values
        self.tag = tag

    def _on_training_start(self) -> None:
        for fmt in self.logger.output_formats:
            if isinstance(fmt, TensorBoardOutputFormat):
                fmt.writer.add_text(self.tag, markdown_table(self.values), self.num_timesteps)
                fmt.writer.flush()

    def _on_step(self) -> bool:
        return True


class HeuristicEvalCallback(BaseCallback):
    """Periodic evaluation of the agent against the scenario's strongest heuristic.

    At training start each heuristic in ``candidates`` runs once on ``seeds`` (heuristics are
    deterministic given the seed, so once is enough) and the best on ``metric`` is kept as the
    reference. Every ``eval_freq`` environment steps the agent (deterministic) runs on the same
    seeds; both are logged as ``eval/<policy>/<metric>``, the paired difference on the primary
    metric as ``eval/advantage/<metric>``, and the model is saved to ``best_model_path`` when its
    mean primary metric is the best so far. Results are appended to ``log_path`` (JSON lines).
    """

    def __init__(self, eval_env, seeds: Sequence[int], metric: str, candidates: Sequence[str],
                 eval_freq: int, best_model_path: str | Path,
                 log_path: str | Path | None = None, verbose: int = 1):
        super().__init__(verbose)
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

    def _on_training_start(self) -> None:
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
        if self.eval_freq > 0:  # the starting point of the curve (and a best-model candidate)
            self.evaluate()

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps - self._last_eval >= self.eval_freq:
            self._last_eval = self.num_timesteps
            self.evaluate()
        return True

    def evaluate(self) -> dict[str, float]:
        episodes = evaluate_on_seeds(self.eval_env, self.model, self.seeds)
        means = mean_metrics(episodes)
        for key, value in means.items():
            if math.isfinite(value):
                self.logger.record(f"eval/agent/{key}", value)
        if self.heuristic:
            for key, value in self.heuristic_means.items():
                if math.isfinite(value):
                    self.logger.record(f"eval/{self.heuristic}/{key}", value)
            diffs = [a.get(self.metric, math.nan) - h.get(self.metric, math.nan)
                     for a, h in zip(episodes, self.heuristic_episodes, strict=True)]
            self.logger.record(f"eval/advantage/{self.metric}", float(sum(diffs) / len(diffs)))
        score = means.get(self.metric, math.nan)
        sign = 1.0 if higher_is_better(self.metric) else -1.0
        improved = math.isfinite(score) and (self.best is None or sign * score > sign * self.best)
        if improved:
            self.best = score
            self.model.save(self.best_model_path)
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
        return means

    def _on_training_end(self) -> None:
        # The final policy is a candidate for best_model too.
        if self.eval_freq > 0 and self.num_timesteps > self._last_eval:
            self._last_eval = self.num_timesteps
            self.evaluate()
