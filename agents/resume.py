"""Exact resume of ``train.py`` runs: what a checkpoint holds besides the weights, and how a
run continues from it as if it had never stopped.

An SB3 checkpoint holds the parameters, the optimizer state and the step counters. Continuing a
run exactly also needs what lives outside the model (measured: without each of these the
resumed parameters differ from an uninterrupted run's):

* **the training environments' state**, mid-episode. A scheduling episode is determined by its
  seed and the actions taken, so :class:`RecordingVecEnv` records, per env, the root seed, how
  many episodes were started since, and the actions of the current episode; restoring resets
  each env to that episode (``SchedulingEnv.set_seed_state`` /
  ``BatchedSimulator.set_seed_state``) and replays the actions through the same wrappers
  (Monitor, reward shaping). The replayed observation must equal the saved one, or resuming
  stops with an error (the code or the scenario changed since the checkpoint).
* **the random generators** SB3 draws from: torch's (action sampling), NumPy's global one
  (PPO's minibatch order), Python's, and the action space's. Restored at the first rollout of
  the resumed run, the moment they were saved at.
* **the algorithm's loop state**: the last observation and episode starts, the episode-info
  window (``rollout/ep_rew_mean``), the logger's values not yet written (the last update's
  ``train/*``), VecNormalize's statistics.
* **the run's bookkeeping**: the periodic evaluation's reference heuristic, its scores and the
  best score so far (best-model tracking continues; nothing is re-chosen), and how many rows
  ``progress.csv`` had.

All of it is plain JSON and ``.npz`` arrays (read with ``allow_pickle=False``) stored inside the
checkpoint ``.zip`` as :data:`STATE_JSON` and :data:`STATE_NPZ`, so a checkpoint is complete or
absent (one atomic file) and resuming runs no code from it.

Resuming truncates the run's logs to the checkpoint: ``evaluations.jsonl`` and ``progress.csv``
keep what was written up to it, and TensorBoard's events past it are purged (a ``purge_step``,
which TensorBoard applies when it reads the run), so the resumed run's curves continue the same
TensorBoard run without overlap.
"""

from __future__ import annotations

import io
import json
import math
import random
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize

STATE_JSON = "modelsched_resume.json"
STATE_NPZ = "modelsched_resume.npz"
VERSION = 1


class ResumeError(ValueError):
    """A run cannot be resumed exactly (the message says why and what to do)."""


# ---------------------------------------------------------------------------- environments
class Replayable(gym.Wrapper):
    """Outermost wrapper of a training env (``agents.envs.make_env(replayable=True)``): lets
    :class:`RecordingVecEnv` rebuild the env's state through every wrapper below it."""

    def restore_episode(self, root: int, episode: int, actions: list[int]):
        """Start episode ``episode`` of root seed ``root`` and take ``actions``; returns the
        observation reached."""
        self.env.unwrapped.set_seed_state(int(root), int(episode))
        obs, _ = self.env.reset()
        for i, a in enumerate(actions):
            obs, _, terminated, truncated, _ = self.env.step(int(a))
            if (terminated or truncated) and i + 1 < len(actions):
                raise ResumeError(f"the replayed episode ended after {i + 1} of its {len(actions)} recorded "
                                  f"actions: the scenario or the simulator changed since the checkpoint")
        return obs


class RecordingVecEnv(VecEnvWrapper):
    """Records what rebuilds every env's state: root seeds (from ``seed()``), episodes started
    since, and each env's actions in its current episode (a growing int32 array per env)."""

    def __init__(self, venv: VecEnv):
        super().__init__(venv)
        n = self.num_envs
        self.roots = np.full(n, -1, dtype=np.int64)
        self.episodes = np.zeros(n, dtype=np.int64)
        self.lengths = np.zeros(n, dtype=np.int64)
        self._actions = np.zeros((n, 256), dtype=np.int32)
        self._pending: list[int] | None = None
        self._last: np.ndarray | None = None

    def seed(self, seed: int | None = None):
        seeds = self.venv.seed(seed)
        self._pending = [int(s) for s in seeds] if seeds is not None and None not in seeds else None
        return seeds

    def reset(self):
        obs = self.venv.reset()
        if self._pending is not None:
            self.roots[:] = self._pending
            self.episodes[:] = 0
            self._pending = None
        else:
            self.episodes += 1
        self.lengths[:] = 0
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._last = np.asarray(actions).reshape(self.num_envs)
        self.venv.step_async(actions)

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        n = self.num_envs
        if int(self.lengths.max(initial=0)) >= self._actions.shape[1]:
            grown = np.zeros((n, 2 * self._actions.shape[1]), dtype=np.int32)
            grown[:, :self._actions.shape[1]] = self._actions
            self._actions = grown
        self._actions[np.arange(n), self.lengths] = self._last
        self.lengths += 1
        done = np.asarray(dones, dtype=bool)
        self.lengths[done] = 0
        self.episodes[done] += 1
        return obs, rewards, dones, infos

    def episode_actions(self, i: int) -> list[int]:
        return self._actions[i, :self.lengths[i]].tolist()

    def state(self) -> dict[str, np.ndarray]:
        if (self.roots < 0).any():
            raise ResumeError("the training envs were not seeded: their episodes cannot be rebuilt")
        acts = [self._actions[i, :self.lengths[i]] for i in range(self.num_envs)]
        return {"env/roots": self.roots.copy(), "env/episodes": self.episodes.copy(),
                "env/lengths": self.lengths.copy(),
                "env/actions": np.concatenate(acts) if acts else np.zeros(0, np.int32)}

    def restore(self, arrays: dict[str, np.ndarray]):
        """Rebuild every env's state from :meth:`state`; returns the vectorised observation."""
        roots, episodes, lengths = (np.asarray(arrays[k], dtype=np.int64)
                                    for k in ("env/roots", "env/episodes", "env/lengths"))
        if len(roots) != self.num_envs:
            raise ResumeError(f"the checkpoint has {len(roots)} training envs, this run {self.num_envs}")
        flat = np.asarray(arrays["env/actions"], dtype=np.int64)
        ends = np.cumsum(lengths)
        actions = [flat[e - n:e].tolist() for n, e in zip(lengths.tolist(), ends.tolist())]
        base = self.venv
        from agents.batched_vec import BatchedVecEnv

        if isinstance(base, BatchedVecEnv):
            obs = base.restore_episodes(roots.tolist(), episodes.tolist(), actions)
        else:
            parts = [base.env_method("restore_episode", int(roots[i]), int(episodes[i]), actions[i], indices=[i])[0]
                     for i in range(self.num_envs)]
            obs = {k: np.stack([p[k] for p in parts]) for k in parts[0]}
        self.roots[:], self.episodes[:] = roots, episodes
        self.lengths[:] = 0
        cap = max(256, int(lengths.max(initial=0)) * 2)
        self._actions = np.zeros((self.num_envs, cap), dtype=np.int32)
        for i, a in enumerate(actions):
            self._actions[i, :len(a)] = a
        self.lengths[:] = lengths
        self._pending = None
        return obs


def recorder_of(env: VecEnv) -> RecordingVecEnv | None:
    while isinstance(env, VecEnvWrapper):
        if isinstance(env, RecordingVecEnv):
            return env
        env = env.venv
    return None


# ---------------------------------------------------------------------------- random generators
def rng_state(model) -> tuple[dict, dict[str, np.ndarray]]:
    import torch

    np_state = np.random.get_state()
    py_state = random.getstate()
    info: dict[str, Any] = {
        "numpy": {"pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss_next": py_state[2]},
        "action_space": _space_rng(model),
        "cuda_devices": 0,
    }
    arrays = {"rng/torch": torch.get_rng_state().numpy().copy(), "rng/numpy": np.asarray(np_state[1]).copy()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states = torch.cuda.get_rng_state_all()
        info["cuda_devices"] = len(states)
        for i, s in enumerate(states):
            arrays[f"rng/cuda{i}"] = s.numpy().copy()
    return info, arrays


def _space_rng(model) -> dict | None:
    space = getattr(model, "action_space", None)
    rng = getattr(space, "_np_random", None)
    return None if rng is None else rng.bit_generator.state


def restore_rng(model, info: dict, arrays: dict[str, np.ndarray]) -> None:
    import torch

    torch.set_rng_state(torch.from_numpy(np.asarray(arrays["rng/torch"], dtype=np.uint8).copy()))
    n = info["numpy"]
    np.random.set_state(("MT19937", np.asarray(arrays["rng/numpy"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = info["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if info.get("action_space") is not None and getattr(model.action_space, "_np_random", None) is not None:
        model.action_space.np_random.bit_generator.state = info["action_space"]
    k = int(info.get("cuda_devices", 0))
    if k and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.from_numpy(np.asarray(arrays[f"rng/cuda{i}"], np.uint8).copy())
                                      for i in range(min(k, torch.cuda.device_count()))])


# ---------------------------------------------------------------------------- model loop state
def _plain(x: Any) -> Any:
    """JSON-able copy of logger values and episode infos (numbers, strings, lists, dicts)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    if isinstance(x, str) or x is None:
        return x
    raise TypeError(type(x).__name__)


def loop_state(model) -> tuple[dict, dict[str, np.ndarray]]:
    info: dict[str, Any] = {
        "num_timesteps": int(model.num_timesteps), "n_updates": int(getattr(model, "_n_updates", 0)),
        "episode_num": int(getattr(model, "_episode_num", 0)),
        "ep_info_buffer": _plain(list(model.ep_info_buffer or [])),
        "ep_success_buffer": _plain(list(model.ep_success_buffer or [])),
    }
    logger = model.logger
    pending = {}
    for key, value in logger.name_to_value.items():
        try:
            dtype = value.dtype.str if isinstance(value, (np.floating, np.integer)) else None  # printed as it was
            pending[key] = [_plain(value), int(logger.name_to_count.get(key, 0)),
                            list(logger.name_to_excluded.get(key, ())), dtype]
        except TypeError:  # an image or a figure waiting to be written: not kept
            continue
    info["logger"] = pending
    arrays: dict[str, np.ndarray] = {}
    obs = model._last_obs  # noqa: SLF001
    info["env_started"] = obs is not None
    if obs is not None:
        for k, v in (obs.items() if isinstance(obs, dict) else [("", obs)]):
            arrays[f"obs/{k}"] = np.asarray(v).copy()
        arrays["episode_starts"] = np.asarray(model._last_episode_starts).copy()  # noqa: SLF001
    env = model.get_env()
    if isinstance(env, VecNormalize):
        for name in ("ret_rms", "obs_rms"):
            rms = getattr(env, name, None)
            if rms is not None and not isinstance(rms, dict):
                arrays[f"vecnorm/{name}/mean"] = np.asarray(rms.mean)
                arrays[f"vecnorm/{name}/var"] = np.asarray(rms.var)
                arrays[f"vecnorm/{name}/count"] = np.asarray(rms.count)
        arrays["vecnorm/returns"] = np.asarray(env.returns).copy()
    return info, arrays


def check_observation(arrays: dict[str, np.ndarray], obs) -> None:
    """The observation the rebuilt envs reached must be the one saved in the checkpoint."""
    saved = {k[4:]: v for k, v in arrays.items() if k.startswith("obs/")}
    got = obs if isinstance(obs, dict) else {"": obs}
    for k, v in saved.items():
        if k not in got or np.asarray(got[k]).shape != v.shape or not np.array_equal(got[k], v, equal_nan=True):
            raise ResumeError(f"the rebuilt training envs differ from the checkpoint's (observation {k!r}): the code "
                              f"or the scenario changed since it was written, so the run cannot continue exactly "
                              f"(start a new run, or --init-from the checkpoint)")


def restore_loop_state(model, info: dict, arrays: dict[str, np.ndarray], obs) -> None:
    """Counters, the last observation (``obs``, checked against the saved one), episode starts,
    the episode-info window, the logger's pending values, VecNormalize's statistics."""
    from collections import deque

    model.num_timesteps = int(info["num_timesteps"])
    model._n_updates = int(info["n_updates"])  # noqa: SLF001
    model._episode_num = int(info["episode_num"])  # noqa: SLF001
    window = getattr(model, "_stats_window_size", 100)
    model.ep_info_buffer = deque(info["ep_info_buffer"], maxlen=window)
    model.ep_success_buffer = deque(info["ep_success_buffer"], maxlen=window)
    logger = model.logger
    for key, (value, count, excluded, dtype) in info.get("logger", {}).items():
        logger.name_to_value[key] = np.dtype(dtype).type(value) if dtype else value
        logger.name_to_count[key] = count
        if excluded:
            logger.name_to_excluded[key] = tuple(excluded)
    if obs is not None:
        check_observation(arrays, obs)
        model._last_obs = obs  # noqa: SLF001
        model._last_episode_starts = np.asarray(arrays["episode_starts"]).copy()  # noqa: SLF001
    env = model.get_env()
    if isinstance(env, VecNormalize):
        for name in ("ret_rms", "obs_rms"):
            rms = getattr(env, name, None)
            if rms is not None and f"vecnorm/{name}/mean" in arrays:
                rms.mean = arrays[f"vecnorm/{name}/mean"].copy()
                rms.var = arrays[f"vecnorm/{name}/var"].copy()
                rms.count = float(arrays[f"vecnorm/{name}/count"])
        env.returns = arrays["vecnorm/returns"].copy()


# ---------------------------------------------------------------------------- checkpoint files
def write_checkpoint(model, path: str | Path | list, info: dict, arrays: dict[str, np.ndarray]) -> Path:
    """``model.save`` with the resume state added to the archive, written atomically to
    ``path`` (or to each of a list of paths, in order)."""
    from agents.files import atomic_write, deferred_interrupts

    paths = [Path(p) for p in (path if isinstance(path, list) else [path])]
    for p in paths:
        if p.suffix != ".zip":
            raise ValueError(f"checkpoint path {p} must end in .zip")
    buf = io.BytesIO()
    model.save(buf)
    npz = io.BytesIO()
    np.savez(npz, **arrays)
    with zipfile.ZipFile(buf, "a") as zf:
        zf.writestr(STATE_JSON, json.dumps({"version": VERSION, **info}, allow_nan=True))
        zf.writestr(STATE_NPZ, npz.getvalue())
    data = buf.getvalue()
    with deferred_interrupts():
        for p in paths:
            atomic_write(p, lambda f: f.write(data))
    return paths[-1]


def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, np.ndarray]] | None:
    """The resume state of a checkpoint, or None if the archive has none (a final model, or a
    file from elsewhere). Raises ResumeError for an unreadable archive or state."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            if STATE_JSON not in names or STATE_NPZ not in names:
                return None
            info = json.loads(zf.read(STATE_JSON).decode())
            with np.load(io.BytesIO(zf.read(STATE_NPZ)), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        raise ResumeError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    if info.get("version") != VERSION:
        raise ResumeError(f"{path}: resume state version {info.get('version')!r}, this train.py reads {VERSION}")
    return info, arrays


# ---------------------------------------------------------------------------- run logs
def csv_rows(path: Path) -> int:
    """Data rows of ``progress.csv`` (0 if absent)."""
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return max(sum(1 for _ in f) - 1, 0)


def truncate_logs(run_dir: Path, steps: int, rows: int) -> tuple[str, list[str]] | None:
    """Cut ``evaluations.jsonl`` to the entries at or before ``steps``; return the header and the
    first ``rows`` rows of ``progress.csv`` (for :func:`continue_logs`), or None."""
    from agents.files import write_text

    evals = run_dir / "evaluations.jsonl"
    if evals.is_file():
        kept = [line for line in evals.read_text().splitlines()
                if line.strip() and json.loads(line).get("timesteps", math.inf) <= steps]
        write_text(evals, "".join(line + "\n" for line in kept))
    csv = run_dir / "progress.csv"
    if not csv.is_file() or rows <= 0:
        return None
    lines = csv.read_text().splitlines()
    return lines[0], lines[1:1 + rows]


def continue_logs(logger, run_dir: Path, purge_step: int, csv: tuple[str, list[str]] | None) -> None:
    """Point the freshly configured SB3 logger of a resumed run at the run's history: the CSV
    file starts with the kept rows, and TensorBoard purges the events at or past ``purge_step``
    that the stopped process wrote after its checkpoint."""
    from stable_baselines3.common.logger import CSVOutputFormat, TensorBoardOutputFormat
    from torch.utils.tensorboard import SummaryWriter

    for fmt in logger.output_formats:
        if isinstance(fmt, TensorBoardOutputFormat):
            fmt.writer.close()
            fmt.writer = SummaryWriter(log_dir=str(run_dir), purge_step=int(purge_step))
        elif isinstance(fmt, CSVOutputFormat) and csv is not None:
            header, rows = csv
            fmt.file.seek(0)
            fmt.file.truncate()
            fmt.file.write(header + "\n" + "".join(r + "\n" for r in rows))
            fmt.file.flush()
            fmt.keys = header.split(",")
