"""Gymnasium vector env over the batched simulator: ``gym.make_vec(id, num_envs=B,
vectorization_mode="vector_entry_point")``.

Instance i of ``reset(seed=s)`` is ``SchedulingEnv.reset(seed=s + i)``; every step gives what
B ``SchedulingEnv`` driven by the same actions would give (tests compare them step by step on
every id), with the infos batched the Gymnasium way (a (B,) array per key, and a ``_key`` mask
where only some instances have it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from envs.batched import BatchedSimulator
from envs.scenarios.loader import Scenario, load_scenario


def observation_space(K: int, V: int, D: int, task_features: int, device_features: int) -> spaces.Dict:
    """The observation space of one env (the layout of :class:`envs.env.SchedulingEnv`)."""
    box = lambda *shape: spaces.Box(-1.0, 1.0, shape=shape, dtype=np.float32)  # noqa: E731
    return spaces.Dict({"tasks": box(K, task_features), "devices": box(D, device_features),
                        "estimates": box(K, V, D), "global": box(5)})


class MaskedMultiDiscrete(spaces.MultiDiscrete):
    """The batched action space ``MultiDiscrete([n] * B)`` whose ``sample()`` without an explicit
    mask draws, for each instance, among the actions valid in its current state (as
    ``SchedulingEnv``'s ``MaskedDiscrete`` does for one env). The space is a plain
    ``MultiDiscrete``: ``contains`` and equality are unchanged."""

    def __init__(self, nvec, mask_fn=None, seed=None):
        super().__init__(nvec, seed=seed)
        self._mask_fn = mask_fn

    def sample(self, mask=None, probability=None):
        if mask is None and probability is None and self._mask_fn is not None:
            masks = self._mask_fn()
            if masks is not None:
                mask = tuple(m.astype(np.int8) for m in masks)
        return super().sample(mask=mask, probability=probability)

    def __getstate__(self):  # the bound env does not travel with a copied space
        state = dict(self.__dict__)
        state["_mask_fn"] = None
        return state


def resolve_device(device: str) -> str:
    """``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when present) to the device outputs live on."""
    if device not in ("cpu", "cuda", "auto") and not str(device).startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    if device == "cpu":
        return "cpu"
    try:
        import torch
        available = torch.cuda.is_available()
    except ImportError:
        available = False
    if device == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise ValueError(f"device {device!r} was asked for but CUDA is not available on this machine "
                         f"(use device='cpu' or 'auto')")
    return str(device)


class BatchedVectorEnv(gym.vector.VectorEnv):
    """B instances of a scenario stepped by :class:`envs.batched.BatchedSimulator`.

    ## Arguments

    * ``scenario``: built-in name, YAML path, dict or :class:`Scenario` (default
      ``"serving-small"``); other keywords override scenario keys as in ``SchedulingEnv``.
    * ``num_envs``: B (>= 1).
    * ``autoreset_mode``: ``AutoresetMode.NEXT_STEP`` (default: an ended instance is reset by
      the next ``step``, whose action for it is ignored; it returns the first observation, reward
      0) or ``SAME_STEP`` (reset in the step that ended it; the last observation and info are in
      ``infos["final_obs"]`` / ``infos["final_info"]``).
    * ``device``: where observations, masks and rewards are returned: ``"cpu"`` (numpy arrays),
      ``"cuda"`` (torch tensors on the GPU, for GPU-native trainers) or ``"auto"``. The
      simulation itself runs on the CPU backend in this version (``backend``).
    * ``invalid_action``, ``invalid_penalty``: as in ``SchedulingEnv``.

    ``action_masks()`` returns the (B, K*V*D + 1) exact masks of the current decisions, and
    ``action_space.sample()`` draws a valid action for every instance (after ``reset``).
    ``max_episode_steps`` is refused: bound an episode with the scenario's ``horizon`` (simulated
    seconds), or use ``vectorization_mode="sync"`` for a step limit (``TimeLimit``).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, scenario: str | Path | dict | Scenario = "serving-small", num_envs: int = 1, *,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP, device: str = "cpu",
                 backend: str = "cpu", invalid_action: str = "raise", invalid_penalty: float = 1.0,
                 render_mode: str | None = None, max_episode_steps: int | None = None, **overrides: Any):
        if max_episode_steps is not None:
            raise ValueError(f"max_episode_steps={max_episode_steps!r}: the batched vector env has no step "
                             f"limit (TimeLimit); bound episodes with the scenario's horizon= (simulated "
                             f"seconds), or use gym.make_vec(..., vectorization_mode='sync') for a step limit")
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r}: the batched vector env does not render "
                             f"(render one instance with SchedulingEnv and the same seed)")
        mode = AutoresetMode(autoreset_mode) if isinstance(autoreset_mode, str) else autoreset_mode
        if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
            raise ValueError(f"autoreset_mode {mode!r} is not supported: use NEXT_STEP or SAME_STEP")
        self.device = resolve_device(device)
        sc = scenario if isinstance(scenario, Scenario) else load_scenario(scenario, **overrides)
        self.sim = BatchedSimulator(sc, num_envs, backend=backend, invalid_action=invalid_action,
                                    invalid_penalty=invalid_penalty)
        sim = self.sim
        self.scenario = sc
        self.num_envs = sim.num_envs
        self.metadata = dict(self.metadata, autoreset_mode=mode)
        self.autoreset_mode = mode
        self.single_observation_space = observation_space(sim.K, sim.V, sim.D, sim.task_features,
                                                          sim.device_features)
        self.single_action_space = spaces.Discrete(sim.n_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = MaskedMultiDiscrete(np.full(self.num_envs, sim.n_actions), self._sample_masks)
        self.render_mode = None
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._started = False

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if options:
            raise ValueError(f"reset options are not supported, got {options!r}")
        if seed is not None:
            self._np_random, _ = gym.utils.seeding.np_random(seed if isinstance(seed, int) else None)
        self.sim.reset(seed)
        self._needs_reset[:] = False
        self._started = True
        return self._out_obs(), self._infos(final=self.sim.done, step=False)

    def step(self, actions):
        if not self._started:
            raise RuntimeError("step() called before reset()")
        sim = self.sim
        a = self._to_numpy(actions)
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            restart = np.flatnonzero(self._needs_reset)
            if len(restart):
                sim.reset_done()
            active = np.flatnonzero(~self._needs_reset)
            sim.step(a, active)
            ended = sim.terminated | sim.truncated
            infos = self._infos(final=ended, step=True)
            if len(restart):  # the restarted instances' info is a reset's: no reward terms
                stepped = ~self._needs_reset
                terms = infos["reward_terms"]
                for k in [k for k in terms if k.startswith("_")]:
                    terms[k] = stepped
                infos["_reward_terms"] = stepped
            self._needs_reset = ended
            return self._out_obs(), self._out(sim.rewards), self._out(sim.terminated), \
                self._out(sim.truncated), infos
        sim.step(a)
        terminated, truncated, rewards = sim.terminated, sim.truncated, sim.rewards
        ended = terminated | truncated
        if not ended.any():
            return self._out_obs(), self._out(rewards), self._out(terminated), self._out(truncated), \
                self._infos(final=ended, step=True)
        # SAME_STEP, as Gymnasium's vector envs do it: the ended instances' last observation and
        # info go to final_obs / final_info; their entries are the reset's.
        last = self._infos(final=ended, step=True)
        obs = sim.observations()
        final_obs = np.full(self.num_envs, None, dtype=object)
        final_info: dict[str, Any] = {}
        for b in np.flatnonzero(ended).tolist():
            final_obs[b] = {k: v[b] for k, v in obs.items()}
            final_info = self._add_info(final_info, self._instance_info(b, last), b)
        sim.reset_done()
        infos = self._infos(final=ended & sim.done, step=True)
        terms = infos["reward_terms"]  # (a reset's info has none)
        for k in [k for k in terms if k.startswith("_")]:
            terms[k] = ~ended
        infos["_reward_terms"] = ~ended
        infos["final_obs"], infos["_final_obs"] = final_obs, ended.copy()
        infos["final_info"], infos["_final_info"] = final_info, ended.copy()
        return self._out_obs(), self._out(rewards), self._out(terminated), self._out(truncated), infos

    def action_masks(self):
        """(B, K*V*D + 1) exact masks of the current decisions (waiting is always allowed)."""
        return self._out(self.sim.action_masks())

    def _sample_masks(self) -> np.ndarray | None:
        """The masks ``action_space.sample()`` draws under (None before the first reset)."""
        return self.sim.action_masks() if self._started else None

    # ------------------------------------------------------------------ outputs
    def _to_numpy(self, actions) -> np.ndarray:
        if hasattr(actions, "detach"):  # a torch tensor
            actions = actions.detach().cpu().numpy()
        return np.asarray(actions)

    def _out(self, x: np.ndarray):
        if self.device == "cpu":
            return x
        import torch
        return torch.as_tensor(x, device=self.device)

    def _out_obs(self):
        obs = self.sim.observations()
        return obs if self.device == "cpu" else {k: self._out(v) for k, v in obs.items()}

    def _infos(self, final: np.ndarray, step: bool) -> dict[str, Any]:
        """Batched infos: ``accounting`` and ``time`` every step, ``reward_terms`` after a step,
        ``metrics`` (and ``workload_counters`` where the workload has any) for the instances
        whose episode ended."""
        sim = self.sim
        every = np.ones(self.num_envs, dtype=bool)

        def masked(d: dict) -> dict:  # every instance has every key (the masks Gymnasium adds)
            return {**d, **{f"_{k}": every for k in d}}

        infos: dict[str, Any] = {"accounting": masked(sim.accounting()), "time": sim.now}
        infos["_accounting"] = infos["_time"] = every
        if step:
            infos["reward_terms"] = masked(sim.reward_terms())
            infos["_reward_terms"] = every
        if sim.has_workload_counters:  # (a per-instance loop only for workloads that count things)
            for b in range(self.num_envs):
                counters = sim.workload_counters(b)
                if counters:
                    infos = self._add_info(infos, {"workload_counters": counters}, b)
        for b in np.flatnonzero(final).tolist():
            infos = self._add_info(infos, {"metrics": sim.episode_metrics(b)}, b)
        return infos

    def _instance_info(self, b: int, infos: dict[str, Any]) -> dict[str, Any]:
        """The single-env info of instance b out of batched infos."""
        out = {}
        for key, value in infos.items():
            if key.startswith("_"):
                continue
            if isinstance(value, dict):
                mask = infos.get(f"_{key}")
                if mask is None or mask[b]:
                    out[key] = {k: v[b].item() if hasattr(v[b], "item") else v[b]
                                for k, v in value.items() if not k.startswith("_")}
            elif infos.get(f"_{key}", np.ones(self.num_envs, dtype=bool))[b]:
                out[key] = value[b].item() if hasattr(value[b], "item") else value[b]
        return out
