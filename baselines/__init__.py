"""Heuristic baselines behind one registry, and the rollout shared with trained SB3 agents.

* ``baselines.names()``: the registered heuristic names.
* ``baselines.make(name, env, **kwargs)``: a policy bound to ``env`` (heuristics read
  ``env.unwrapped.sim``); every policy accepts ``seed=`` and offers SB3's
  ``predict(obs, state=None, episode_start=None, deterministic=True, action_masks=None)
  -> (action, state)``.
* ``baselines.load_policy(spec, env)``: a registered name or a path to an SB3 ``.zip``.
* ``baselines.run_episode(env, policy, seed) -> dict``: one episode, metrics and the ideal bound.

Each policy's docstring states its rule and its published source.
"""

from __future__ import annotations

from baselines.base import DecisionView, Policy
from baselines.batching import ClockworkPolicy, InfaasBatchPolicy, TritonPolicy
from baselines.continuous import VllmPolicy
from baselines.genetic import GeneticPolicy
from baselines.heuristics import (
    AdaptivePolicy,
    ClipperHighAccPolicy,
    ClipperLowAccPolicy,
    EdfPolicy,
    FifoPolicy,
    InfaasPolicy,
    LeastLoadedPolicy,
    MctPolicy,
    PricedPolicy,
    PriorityGreedyPolicy,
    RandomPolicy,
    RoundRobinPolicy,
    SjfPolicy,
    TetrisPolicy,
)
from baselines.planner import PlannerPolicy

#: name -> policy class, in the order results are reported.
REGISTRY: dict[str, type[Policy]] = {cls.name: cls for cls in (
    RandomPolicy, FifoPolicy, RoundRobinPolicy, LeastLoadedPolicy, SjfPolicy, EdfPolicy,
    PriorityGreedyPolicy, MctPolicy, InfaasPolicy, ClipperHighAccPolicy, ClipperLowAccPolicy,
    TetrisPolicy, GeneticPolicy, AdaptivePolicy, PricedPolicy, PlannerPolicy,
    ClockworkPolicy, TritonPolicy, InfaasBatchPolicy, VllmPolicy,
)}


class PolicyError(ValueError):
    """A policy name or model file that cannot be used; the message says which and why."""


def names() -> list[str]:
    """Registered heuristic names."""
    return list(REGISTRY)


def make(name: str, env, **kwargs) -> Policy:
    """The heuristic ``name`` bound to ``env``; ``kwargs`` go to its constructor (``seed``,
    and e.g. ``population``/``generations`` for ``genetic``, ``threshold`` for ``adaptive``)."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise PolicyError(f"unknown policy '{name}' (known: {', '.join(REGISTRY)})") from None
    return cls(env, **kwargs)


from baselines.rollout import load_policy, run_episode  # noqa: E402  (needs PolicyError)

__all__ = ["DecisionView", "Policy", "PolicyError", "REGISTRY", "load_policy", "make", "names",
           "run_episode"]
