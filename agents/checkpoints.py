"""Checkpoints taken after each policy update, named by the steps they were trained on.

SB3's ``CheckpointCallback`` saves from ``_on_step``, i.e. in the middle of collecting a rollout:
its ``model_N_steps.zip`` holds the parameters of the *previous* update while its name says N,
and the first one has an untouched optimizer. :class:`UpdateCheckpoint` saves at the start of
each rollout collection, just after the update, so a checkpoint's ``num_timesteps`` is the
number of steps its parameters were trained on and its optimizer state is that update's:

* ``checkpoints/last.zip`` after every update (overwritten atomically), so an interrupted run,
  however short, keeps its last completed update;
* ``checkpoints/model_<N>_steps.zip`` at the first update at or past every ``every`` steps.

Files are written atomically (:mod:`agents.files`).
"""

from __future__ import annotations

from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback

from agents.files import save_model


class UpdateCheckpoint(BaseCallback):
    def __init__(self, folder: str | Path, every: int = 0):
        super().__init__()
        self.folder = Path(folder)
        self.every = int(every)
        self._next = None
        self._last_saved = None

    def _on_training_start(self) -> None:
        start = int(self.model.num_timesteps)
        self._last_saved = start  # what the run starts from is not a new checkpoint
        if self.every > 0:
            self._next = (start // self.every + 1) * self.every

    def _save(self) -> None:
        n = int(self.model.num_timesteps)
        if n == self._last_saved:
            return
        self._last_saved = n
        save_model(self.model, self.folder / "last.zip")
        if self._next is not None and n >= self._next:
            save_model(self.model, self.folder / f"model_{n}_steps.zip")
            self._next = (n // self.every + 1) * self.every

    def _on_rollout_start(self) -> None:  # after the previous rollout's update
        self._save()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:  # after the last update
        self._save()
