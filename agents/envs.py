"""Training and evaluation environments, and the seed sets they use.

Seeds: training environment ``i`` of a run with root seed ``s`` is reset once with ``s + i`` and
then draws every further episode from its own ``SeedSequence`` stream; periodic evaluation uses
:data:`VALIDATION_SEEDS`, the final table of ``train.py`` :data:`TEST_SEEDS`, and reported results
``evaluate.py``'s default set :data:`HELD_OUT_SEEDS`. Training seed ranges that overlap any of
them are refused (:func:`check_seed_sets`), so a model is never selected or reported on episodes
it trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import envs as _envs  # noqa: F401  (registers the modelsched ids)
from agents.hyperparams import VEC_KINDS

#: Seeds of the periodic evaluation during training (model selection: best_model.zip).
VALIDATION_SEEDS: tuple[int, ...] = tuple(range(10_000, 10_005))
#: Seeds of the final evaluation table printed by train.py.
TEST_SEEDS: tuple[int, ...] = tuple(range(20_000, 20_005))
#: Held-out seeds for reported results: evaluate.py's default evaluation set.
HELD_OUT_SEEDS: tuple[int, ...] = tuple(range(1000, 1030))


def check_seed_sets(seed: int, n_envs: int) -> None:
    """Refuse a training seed range that overlaps an evaluation seed set."""
    train = set(range(seed, seed + n_envs))
    for name, seeds in (("validation", VALIDATION_SEEDS), ("test", TEST_SEEDS), ("held-out", HELD_OUT_SEEDS)):
        if train & set(seeds):
            raise ValueError(f"training seeds {seed}..{seed + n_envs - 1} overlap the {name} seeds "
                             f"{seeds[0]}..{seeds[-1]}: choose another --seed")


def scenario_arg(scenario: str) -> dict[str, Any]:
    """gym.make arguments for a built-in scenario name or a YAML path."""
    if Path(scenario).suffix in (".yaml", ".yml") or scenario not in _envs.builtin_scenarios():
        return {"id": "modelsched/Scheduling-v1", "scenario": scenario}
    return {"id": _envs.env_id(scenario)}


def make_env(scenario: str, env_kwargs: dict | None = None, monitor: bool = True,
             shaping: dict | None = None, replayable: bool = False) -> gym.Env:
    """The scenario's env; Monitor-wrapped (raw rewards logged), then reward-shaped
    (``shaping``: keyword arguments of :class:`agents.shaping.RewardShaping`) if asked, and
    with ``replayable`` wrapped in :class:`agents.resume.Replayable` (training envs: their
    state can be rebuilt when a run resumes)."""
    args = scenario_arg(scenario)
    env = gym.make(args.pop("id"), **args, **(env_kwargs or {}))
    if monitor:
        env = Monitor(env)
    if shaping:
        from agents.shaping import RewardShaping

        env = RewardShaping(env, **shaping)
    if replayable:
        from agents.resume import Replayable

        env = Replayable(env)
    return env


class _EnvFactory:
    """Picklable environment constructor for SubprocVecEnv."""

    def __init__(self, scenario: str, env_kwargs: dict | None, shaping: dict | None, replayable: bool = False):
        self.scenario = scenario
        self.env_kwargs = dict(env_kwargs or {})
        self.shaping = dict(shaping or {})
        self.replayable = replayable

    def __call__(self) -> gym.Env:
        return make_env(self.scenario, self.env_kwargs, shaping=self.shaping, replayable=self.replayable)


def make_vec_env(scenario: str, n_envs: int = 1, env_kwargs: dict | None = None,
                 shaping: dict | None = None, start_method: str | None = None, vec: str = "auto",
                 record: bool = False) -> VecEnv:
    """``n_envs`` training environments, vectorised by ``vec``: ``auto`` (``SubprocVecEnv``
    when ``n_envs > 1``, else ``DummyVecEnv``), ``dummy``, ``subproc`` (of Monitor-wrapped
    ``SchedulingEnv``), or ``batched`` (:class:`agents.batched_vec.BatchedVecEnv`, which gives the
    same ``episode`` infos as Monitor and shapes rewards as ``RewardShaping`` does).

    Seeding is left to the algorithm (``model.set_random_seed`` seeds env ``i`` with seed + i).
    ``record``: wrapped in :class:`agents.resume.RecordingVecEnv`, which keeps what rebuilds the
    envs' state when a run resumes (``train.py`` trains on such envs).
    """
    if vec not in VEC_KINDS:
        raise ValueError(f"unknown vec {vec!r}: one of {', '.join(VEC_KINDS)}")
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if vec == "batched":
        from agents.batched_vec import BatchedVecEnv

        kw = dict(env_kwargs or {})
        if kw.get("render_mode") is not None:
            raise ValueError("render_mode is not available with --vec batched")
        kw.pop("render_mode", None)
        venv = BatchedVecEnv(load_scenario_for(scenario, kw), n_envs,
                             invalid_action=kw.pop("invalid_action", "raise"),
                             invalid_penalty=kw.pop("invalid_penalty", 1.0), shaping=shaping or None)
        return _recorded(venv) if record else venv
    fns = [_EnvFactory(scenario, env_kwargs, shaping, replayable=record) for _ in range(n_envs)]
    if vec == "subproc" or (vec == "auto" and n_envs > 1):
        venv = SubprocVecEnv(fns, start_method=start_method)
    else:
        venv = DummyVecEnv(fns)
    return _recorded(venv) if record else venv


def _recorded(venv: VecEnv) -> VecEnv:
    from agents.resume import RecordingVecEnv

    return RecordingVecEnv(venv)


def load_scenario_for(scenario: str, env_kwargs: dict):
    """The Scenario that ``make_env(scenario, env_kwargs)`` builds (env options removed from
    ``env_kwargs``; the rest are scenario overrides, as ``SchedulingEnv`` takes them)."""
    from envs.scenarios.loader import load_scenario

    over = {k: v for k, v in env_kwargs.items() if k not in ("invalid_action", "invalid_penalty", "render_mode")}
    return load_scenario(scenario, **over)
