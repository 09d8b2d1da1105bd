"""Stable-Baselines3 ``VecEnv`` over the batched simulator.

``BatchedVecEnv("serving-small", n_envs=256)`` steps 256 instances at once with the compiled
per-instance event loops of :mod:`envs.batched`, and gives SB3 what its ``DummyVecEnv`` of
``Monitor``-wrapped ``SchedulingEnv`` would: autoreset in the same step with
``infos[i]["terminal_observation"]``, ``"TimeLimit.truncated"``, ``"episode"`` (return,
length, time) and ``"metrics"`` at episode ends, and ``env_method("action_masks")`` for
sb3-contrib's MaskablePPO (which trains on it unchanged).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices

from envs.batched import BatchedSimulator
from envs.scenarios.loader import Scenario, load_scenario
from envs.vector import observation_space


class BatchedVecEnv(VecEnv):
    """``n_envs`` instances of one scenario as an SB3 ``VecEnv`` (instance i is seeded with
    ``seed + i``, as SB3 seeds the envs of a ``DummyVecEnv``)."""

    def __init__(self, scenario: str | Path | dict | Scenario = "serving-small", n_envs: int = 1, *,
                 seed: int | None = None, invalid_action: str = "raise", invalid_penalty: float = 1.0,
                 shaping: dict | None = None, **overrides: Any):
        sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario, **overrides)
        self.sim = BatchedSimulator(sc, n_envs, invalid_action=invalid_action, invalid_penalty=invalid_penalty)
        sim = self.sim
        self.scenario = sc
        self.render_mode = None
        obs_space = observation_space(sim.K, sim.V, sim.D, sim.task_features, sim.device_features)
        super().__init__(sim.num_envs, obs_space, spaces.Discrete(sim.n_actions))
        #: Training-reward shaping (keyword arguments of agents.shaping.RewardShaping), or None.
        self.shaping = None
        if shaping:
            from agents.shaping import BatchedRewardShaping

            self.shaping = BatchedRewardShaping(self.sim, **shaping)
        if seed is not None:
            self.seed(seed)
        self._actions: np.ndarray | None = None
        self._returns = np.zeros(self.num_envs)
        self._lengths = np.zeros(self.num_envs, dtype=np.int64)
        self._t0 = time.time()

    # ------------------------------------------------------------------ VecEnv
    def reset(self):
        seeds = self._seeds
        if all(s is None for s in seeds):
            self.sim.reset(None)  # the next episode of each root seed (fresh seeds the first time)
        else:
            missing = [i for i, s in enumerate(seeds) if s is None]
            if missing:
                raise ValueError(f"seeds given for some envs only (none for env {missing[0]})")
            self.sim.reset([int(s) for s in seeds])
        self._reset_seeds()
        self._reset_options()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        if self.shaping is not None:
            self.shaping.started(np.arange(self.num_envs))
        return self.sim.observations()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        if self.shaping is not None:
            self.shaping.before_step(self.sim.check_actions(self._actions))

    def step_wait(self):
        sim = self.sim
        sim.step(self._actions)
        rewards = sim.rewards
        # the training reward (the episode infos below keep the env's own, as Monitor does)
        train_rewards = rewards if self.shaping is None else self.shaping.after_step(rewards)
        terminated, truncated = sim.terminated, sim.truncated
        dones = terminated | truncated
        self._returns += rewards
        self._lengths += 1
        obs = sim.observations()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        idx = np.flatnonzero(dones)
        if len(idx):
            elapsed = round(time.time() - self._t0, 6)
            for b in idx.tolist():
                info = infos[b]
                info["terminal_observation"] = {k: v[b].copy() for k, v in obs.items()}
                info["TimeLimit.truncated"] = bool(truncated[b] and not terminated[b])
                info["episode"] = {"r": round(float(self._returns[b]), 6), "l": int(self._lengths[b]),
                                   "t": elapsed}  # rounded as Monitor rounds
                info["metrics"] = sim.episode_metrics(b)
            self._returns[idx] = 0.0
            self._lengths[idx] = 0
            sim.reset_done()
            if self.shaping is not None:
                self.shaping.started(idx)
            fresh = sim.observations()
            for k in obs:
                obs[k][idx] = fresh[k][idx]
        return obs, train_rewards.astype(np.float32), dones, infos

    def close(self) -> None:
        pass

    def restore_episodes(self, roots: list[int], episodes: list[int], actions: list[list[int]]):
        """Rebuild every instance's state (resumed training, :mod:`agents.resume`): instance i
        starts episode ``episodes[i]`` of root seed ``roots[i]`` and takes ``actions[i]``
        (instances step together while they have actions left). Returns the observations; the
        episode returns and lengths continue from the replayed steps, as Monitor's would."""
        sim, B = self.sim, self.num_envs
        sim.set_seed_state([int(r) for r in roots], [int(k) for k in episodes])
        sim.reset(None)
        self._reset_seeds()
        self._returns[:] = 0.0
        self._lengths[:] = 0
        lengths = np.array([len(a) for a in actions], dtype=np.int64)
        table = np.zeros((B, int(lengths.max(initial=0))), dtype=np.int64)
        for b, a in enumerate(actions):
            table[b, :len(a)] = a
        for t in range(table.shape[1]):
            active = np.flatnonzero(lengths > t)
            if sim.done[active].any():
                b = int(active[np.argmax(sim.done[active])])
                raise ValueError(f"instance {b}: the replayed episode ended after {t} of its {lengths[b]} "
                                 f"recorded actions: the scenario or the simulator changed since the checkpoint")
            sim.step(table[:, t], active=active)
            self._returns[active] += sim.rewards[active]
            self._lengths[active] += 1
        if self.shaping is not None:
            self.shaping.started(np.arange(B))  # the potential of the state reached
        return self.sim.observations()

    # ------------------------------------------------------------------ attributes
    def action_masks(self) -> np.ndarray:
        """(n_envs, K*V*D + 1) exact masks of the current decisions."""
        return self.sim.action_masks()

    def _indices(self, indices: VecEnvIndices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attributes every instance shares (``render_mode``, ``scenario``, the spaces), and
        ``action_masks`` (a bound method per instance, for sb3-contrib's checks)."""
        idx = self._indices(indices)
        if attr_name == "action_masks":
            masks = self.sim.action_masks
            return [lambda b=b: masks()[b] for b in idx]
        if attr_name in ("render_mode", "scenario", "observation_space", "action_space"):
            return [getattr(self, attr_name)] * len(idx)
        raise AttributeError(f"BatchedVecEnv instances have no attribute {attr_name!r}")

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        raise AttributeError(f"BatchedVecEnv: attribute {attr_name!r} cannot be set per instance")

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        idx = self._indices(indices)
        if method_name == "action_masks":
            masks = self.sim.action_masks()
            return [masks[b] for b in idx]
        raise AttributeError(f"BatchedVecEnv instances have no method {method_name!r}")

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False] * len(self._indices(indices))
