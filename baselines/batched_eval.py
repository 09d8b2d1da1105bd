"""Episodes of many seeds at once on the batched simulator (``evaluate.py --backend batched``).

:func:`run_batched` plays one episode per (seed, episode) pair of a policy on instances of an
:class:`envs.batched.BatchedSimulator`, ``batch_size`` instances at a time, and returns one
result per episode with the keys of :func:`baselines.rollout.run_episode`, so the harness's
statistics and outputs are the same for both backends. Instance i of a chunk is reset with the
episode's seed, as the reference env is, so it plays the very episode the reference would
(bit-identical dynamics: ``tests/test_batched.py``; the same actions: the batched heuristics
are tested against the per-instance ones in ``tests/test_batched_policies.py``).

Policies: a registered heuristic with a batched form (:data:`baselines.batched.BATCHED`), or a
trained SB3 model, whose ``predict`` gets the observations and masks of all the chunk's instances
in one call (on the model's torch device). The policy-independent parts of a result (the bound,
its latencies, the workload digest) come from a reference ``Simulator`` reset on the same seed,
once per seed for all policies (:class:`SeedFacts`); each batched episode's own workload arrays
are fingerprinted too (``sim_digest``), so the harness still checks that every policy saw the
same workload.

``wall_s`` of an episode is its chunk's wall time divided by the chunk's episodes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from envs.batched import BatchedSimulator
from envs.batched import dynamics as dyn
from envs.sim.model import DONE

#: Default instances per batched-simulator chunk.
DEFAULT_BATCH = 1024


class SeedFacts:
    """Policy-independent facts of each episode seed, from a reference reset (cached)."""

    def __init__(self, make_env: Callable[[], Any]):
        self._make_env = make_env
        self._env = None
        self._cache: dict[int, dict] = {}

    def get(self, reset_seed: int) -> dict:
        if reset_seed not in self._cache:
            from baselines.bound import ideal_bound_metrics
            from baselines.rollout import workload_digest

            if self._env is None:
                self._env = self._make_env()
            env = self._env
            env.reset(seed=reset_seed)
            sim = env.unwrapped.sim
            bound, lat = ideal_bound_metrics(sim, return_latencies=True)
            self._cache[reset_seed] = {"ideal_bound": bound, "ideal_bound_latencies": lat,
                                       "workload_digest": workload_digest(sim)}
        return self._cache[reset_seed]


def _sim_digest(bs: BatchedSimulator, b: int) -> str:
    """Fingerprint of instance b's episode workload (its task and job arrays at reset)."""
    S, si = bs.v, bs.v.si[b]
    n, J = int(si[dyn.N_TASKS]), int(si[dyn.N_JOBS])
    h = hashlib.sha1()
    for a in (S.ttimes[b, :n + 1], S.tkind[b, :n + 1], S.jarr[b, :J], S.jfirst[b, :J], S.jcount[b, :J]):
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _latencies(bs: BatchedSimulator, b: int) -> np.ndarray:
    """``envs.sim.metrics.task_latencies`` of instance b (completed tasks, arrival order)."""
    S = bs.v
    arrived = S.arrived[b, :int(S.si[b, dyn.N_ARRIVED])].astype(np.int64)
    done = arrived[S.tstate[b, arrived] == DONE]
    return S.tfin[b, done] - S.ttimes[b, done, 0]


def check_model_spaces(model, bs: BatchedSimulator, label: str) -> None:
    """A clear error if an SB3 model was trained on other spaces than the scenario's."""
    from baselines import PolicyError
    from envs.vector import observation_space

    space = observation_space(bs.K, bs.V, bs.D, bs.task_features, bs.device_features)
    ms = getattr(model, "observation_space", None)
    try:
        same_obs = ms is not None and set(ms.spaces) == set(space.spaces) and all(
            ms.spaces[k].shape == space.spaces[k].shape for k in space.spaces)
    except AttributeError:
        same_obs = False
    n = getattr(getattr(model, "action_space", None), "n", None)
    if not same_obs or n != bs.n_actions:
        got = {k: s.shape for k, s in ms.spaces.items()} if hasattr(ms, "spaces") else ms
        raise PolicyError(
            f"model '{label}' was trained on other spaces than scenario '{bs.scenario.name}': observation "
            f"{got} and {n} actions, the scenario has {({k: s.shape for k, s in space.spaces.items()})} "
            f"and {bs.n_actions} actions")


def run_batched(scenario, policy: Any, label: str, reset_seeds: list[int], *, facts: SeedFacts,
                batch_size: int = DEFAULT_BATCH, policy_kwargs: dict | None = None,
                on_episode: Callable[[int], None] | None = None) -> list[dict]:
    """One episode per entry of ``reset_seeds`` (each the env reset seed of the episode) with
    ``policy``: a heuristic name with a batched form, or a loaded SB3 model. Returns the
    results in the order of ``reset_seeds``."""
    from baselines.batched import make_batched
    from baselines.rollout import is_maskable, is_sb3

    sb3 = is_sb3(policy)
    masked = not sb3 or is_maskable(policy)
    invalid_action = "raise" if masked else "penalize"
    results: list[dict] = []
    for lo in range(0, len(reset_seeds), batch_size):
        seeds = [int(s) for s in reset_seeds[lo:lo + batch_size]]
        B = len(seeds)
        t0 = time.perf_counter()
        bs = BatchedSimulator(scenario, B, invalid_action=invalid_action)
        if sb3:
            check_model_spaces(policy, bs, label)
            rule = None
        else:
            rule = make_batched(policy, B, **(policy_kwargs or {}))
            rule.reset(np.arange(B), seeds)
        bs.reset(seed=seeds)
        digests = [_sim_digest(bs, b) for b in range(B)]
        ret = np.zeros(B)
        steps = np.zeros(B, dtype=np.int64)
        invalid = np.zeros(B, dtype=np.int64)
        ended = bs.terminated | bs.truncated
        live = ~ended & ~bs.done  # an empty workload has nothing to decide
        wait = bs.n_actions - 1
        while live.any():
            rows = np.flatnonzero(live)
            acts = np.full(B, wait, dtype=np.int64)
            if rule is not None:
                acts[rows] = rule.act(bs, rows)
            else:
                obs = bs.observations()
                kw = {"action_masks": bs.v.mask} if masked else {}
                a, _ = policy.predict(obs, deterministic=True, **kw)
                acts[rows] = np.asarray(a, dtype=np.int64).reshape(B)[rows]
            bs.step(acts, active=rows)
            ret[rows] += bs.v.sf[rows, dyn.REWARD]
            steps[rows] += 1
            if not masked:
                invalid[rows] += bs.v.sf[rows, dyn.R_INV] < 0
            fin = (bs.terminated | bs.truncated)[rows]
            live[rows[fin]] = False
            if on_episode is not None and fin.any():
                on_episode(int(fin.sum()))
        wall = (time.perf_counter() - t0) / B
        acc = bs.accounting()
        term, trunc = bs.terminated, bs.truncated
        for b, s in enumerate(seeds):
            if not (term[b] or trunc[b]):  # an empty workload: the reference marks it terminated
                term[b] = True
                if on_episode is not None:
                    on_episode(1)
            res = {
                "seed": s,
                "metrics": {k: float(v) for k, v in bs.episode_metrics(b).items()},
                **facts.get(s),
                "latencies": _latencies(bs, b),
                "sim_digest": digests[b],
                "return": float(ret[b]),
                "steps": int(steps[b]),
                "invalid_actions": int(invalid[b]),
                "terminated": bool(term[b]),
                "truncated": bool(trunc[b]),
                "accounting": {k: int(v[b]) for k, v in acc.items()},
                "wall_s": wall,
            }
            results.append(res)
    return results
