"""Progress of the RL phase: a bar on a terminal, plain lines in a log file.

SB3's own ``progress_bar=True`` draws a rich bar, which shows nothing useful when the output is
redirected. :class:`TrainingProgress` uses :class:`baselines.progress.Progress` instead, so a
redirected run prints a line every 10% of the steps or every 30 seconds.
"""

from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback

from baselines.progress import Progress


class TrainingProgress(BaseCallback):
    """One unit per environment step of ``model.learn``; the total is ``total`` (the steps the
    run will end at: see :func:`agents.training.planned_timesteps`), else the requested steps."""

    def __init__(self, desc: str = "train", total: int | None = None):
        super().__init__()
        self.desc = desc
        self.total = total
        self.bar: Progress | None = None
        self._start = 0

    def _on_training_start(self) -> None:
        total = self.total if self.total is not None else (
            int(self.locals["total_timesteps"]) - int(self.model.num_timesteps))
        self._start = int(self.model.num_timesteps)
        self.bar = Progress(total, self.desc, "steps")

    def _on_step(self) -> bool:
        if self.bar is not None:
            self.bar.update(int(self.model.num_timesteps) - self._start - self.bar.n)
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()
