"""Checkpoints taken after each policy update, named by the steps they were trained on.

SB3's ``CheckpointCallback`` saves from ``_on_step``, i.e. in the middle of collecting a rollout:
its ``model_N_steps.zip`` holds the parameters of the *previous* update while its name says N,
and the first one has an untouched optimizer. :class:`UpdateCheckpoint` saves at the start of
each rollout collection, just after the update, so a checkpoint's ``num_timesteps`` is the
number of steps its parameters were trained on and its optimizer state is that update's:

* ``checkpoints/last.zip`` after every update (overwritten atomically), so an interrupted run,
  however short, keeps its last completed update;
* ``checkpoints/model_<N>_steps.zip`` at the first update at or past every ``every`` steps.

With ``state`` (a function returning the resume state of :mod:`agents.resume`), every
checkpoint also holds what resuming exactly needs besides the weights; ``rng`` (a checkpoint's
saved generator states) is restored at the first rollout of a resumed run, the moment the states
were saved at. Off-policy algorithms update every few steps: ``min_interval`` spaces their
``last.zip`` writes. Files are written atomically (:mod:`agents.files`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from stable_baselines3.common.callbacks import BaseCallback

from agents.files import save_model


class UpdateCheckpoint(BaseCallback):
    def __init__(self, folder: str | Path, every: int = 0, state: Callable[[], tuple[dict, dict]] | None = None,
                 rng: tuple[dict, dict] | None = None, min_interval: int = 0):
        super().__init__()
        self.folder = Path(folder)
        self.every = int(every)
        self.state = state
        self.min_interval = int(min_interval)
        self._rng = rng
        self._next = None
        self._last_saved = None

    def _on_training_start(self) -> None:
        start = int(self.model.num_timesteps)
        self._last_saved = start  # what the run starts from is not a new checkpoint
        if self.every > 0:
            self._next = (start // self.every + 1) * self.every

    def _save(self, final: bool = False) -> None:
        n = int(self.model.num_timesteps)
        if n == self._last_saved or (not final and n - self._last_saved < self.min_interval):
            return
        self._last_saved = n
        # the milestone first: a kill between the two writes leaves last.zip at the previous
        # update, from which the resumed run writes this milestone again
        paths = []
        if self._next is not None and n >= self._next:
            paths.append(self.folder / f"model_{n}_steps.zip")
            self._next = (n // self.every + 1) * self.every
        paths.append(self.folder / "last.zip")
        if self.state is not None:
            from agents.resume import write_checkpoint

            write_checkpoint(self.model, paths, *self.state())
        else:
            for path in paths:
                save_model(self.model, path)

    def _on_rollout_start(self) -> None:  # after the previous rollout's update
        if self._rng is not None:  # a resumed run: the generators as they were at its checkpoint
            from agents.resume import restore_rng

            restore_rng(self.model, *self._rng)
            self._rng = None
        self._save()

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:  # after the last update
        self._save(final=True)
