"""The policy interface shared by heuristics and trained SB3 models, and a per-decision state view.

Every policy offers SB3's ``predict(obs, state=None, episode_start=None, deterministic=True,
action_masks=None) -> (action, state)``, so one rollout function (``baselines.rollout``)
evaluates heuristics and trained agents alike. Heuristics ignore the observation (whose layout
may change) and read the simulator's read-only state through ``env.unwrapped.sim``; they never
return a masked action.

:class:`DecisionView` gathers, once per decision, the (K, V, D) arrays the rules work on:
``mask`` (valid now), ``est`` (estimated seconds from now to completion: device wait + cold
start load + noise-free execution, from ``sim.estimates()``), ``est_safe`` (the same with the
execution part inflated to the 95th percentile of the simulator's execution noise, used for
"meets the deadline" tests), ``exec`` and ``load``; per task: deadline, slack, SLO, priority,
arrival; per slot: accuracy and global variant index. Axis names as in ``envs/sim/cluster.py``:
K window slots (oldest first), V variant slots per capability (accuracy ascending), D devices.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

#: z-value of the execution-noise quantile used for on-time tests: the simulator's noise is
#: ``exp(sigma * |z|)`` (it only slows execution down), and P(|z| <= 1.96) = 0.95.
NOISE_Z = 1.96


class DecisionView:
    """Arrays describing one decision point (built from the simulator, never from ``obs``)."""

    __slots__ = ("sim", "cluster", "now", "K", "V", "D", "n", "tasks", "mask", "est", "est_safe",
                 "exec", "load", "cold", "wait", "runs", "deadline", "arrival", "slack", "slo",
                 "priority", "caps", "acc", "variant", "size", "nreq", "B", "batch_sizes")

    def __init__(self, sim):
        self.sim = sim
        cl = self.cluster = sim.cluster
        self.mask = sim.action_mask()  # (K, V, D); refreshes sim.window
        est = sim.estimates()  # (K, V, D), inf where the pair can never run
        tasks = self.tasks = sim.window
        self.K, self.V, self.D = self.mask.shape
        #: Batch sizes of the action space (dynamic batching; ``(1,)`` without).
        self.batch_sizes = getattr(sim, "batch_sizes", (1,))
        self.B = len(self.batch_sizes)
        self.n = n = len(tasks)
        self.now = now = sim.now
        K = self.K
        # The window's arrays, gathered by the simulator (padding slots: the values below).
        present = np.arange(K) < n
        times = sim.w_times  # (K, 4) arrival, deadline, priority, SLO
        deadline = np.where(present, times[:, 1], np.inf)
        arrival = np.where(present, times[:, 0], 0.0)
        priority = np.where(present, times[:, 2], 0.0)
        caps = np.where(present, sim.w_caps, 0)
        size = np.where(present, sim.w_size + sim.w_size2, 0.0)
        nreq = np.where(present, sim.w_nreq, 1)
        self.deadline, self.arrival, self.priority, self.caps = deadline, arrival, priority, caps
        self.size, self.nreq = size, nreq
        self.slack = deadline - now
        self.slo = np.where(present, np.maximum(deadline - arrival, 1e-12), 1.0)
        self.acc = np.where(present[:, None], cl.slot_accuracy[caps], -np.inf)  # (K, V)
        self.variant = np.where(present[:, None], cl.slot_variant[caps], -1)  # (K, V)
        self.wait = np.maximum(sim.dev_busy_until - now, 0.0)  # (D,)
        self.load = cl.slot_load[caps]  # (K, V, D)
        self.cold = ~sim.resident[np.maximum(self.variant, 0)]  # (K, V, D)
        finite = np.isfinite(est)
        with np.errstate(invalid="ignore"):
            self.exec = np.where(finite, est - self.wait - self.cold * self.load, np.inf)
        #: (K, V, D) the assignment could run on this device once it is free (device up).
        self.runs = finite & sim.dev_up[None, None, :]
        self.est = np.where(self.runs, est, np.inf)
        sigma = float(getattr(sim, "noise_sigma", 0.0))
        factor = math.exp(NOISE_Z * sigma) if sigma > 0 else 1.0
        self.est_safe = self.est + (factor - 1.0) * self.exec if factor != 1.0 else self.est

    def action(self, k: int, v: int, d: int, b: int = 0) -> int:
        """The action index of (window slot k, variant slot v, device d), as the leader of a
        batch of ``batch_sizes[b]`` (block ``b`` of the action space; 0: alone)."""
        return ((int(b) * self.K + int(k)) * self.V + int(v)) * self.D + int(d)

    @property
    def wait_action(self) -> int:
        return self.B * self.K * self.V * self.D

    def task_has_valid(self) -> np.ndarray:
        """(K,) the task has at least one valid assignment now."""
        return self.mask.any(axis=(1, 2))


def argmin2(a: np.ndarray) -> tuple[int, int]:
    """Row, column of the (first) minimum of a 2-D array."""
    return divmod(int(np.argmin(a)), a.shape[1])


def fastest_completion(view: DecisionView, k: int, allowed: np.ndarray):
    """Shared variant+device rule of the list schedulers for a chosen task ``k``: among the
    ``allowed`` (V, D) options, the one expected to finish earliest (cold-start load included;
    ties: the less accurate, lower-index option). Returns ``(v, d)`` or ``None``."""
    e = np.where(allowed, view.est[k], np.inf)
    if not np.isfinite(e).any():
        return None
    return argmin2(e)


class Policy(ABC):
    """Base class of the built-in policies: SB3's ``predict`` over a bound environment."""

    #: Registry name.
    name = "policy"

    def __init__(self, env, seed: int | None = None):
        self.seed = seed
        self.bind(env)
        self.reset(seed)

    def bind(self, env) -> None:
        """Attach to ``env`` (any wrapper of a ``SchedulingEnv``); rules read ``env.unwrapped.sim``."""
        self.env = env.unwrapped

    @property
    def sim(self):
        return self.env.sim

    def reset(self, seed: int | None = None) -> None:  # noqa: B027 (a hook: most rules keep no state)
        """Called by the rollout at the start of each episode with the episode seed."""

    def predict(self, observation: Any = None, state: Any = None, episode_start: Any = None,
                deterministic: bool = True, action_masks: np.ndarray | None = None):
        """SB3-shaped: returns ``(action, state)``; the observation is not used."""
        return np.int64(self.act()), state

    def act(self) -> int:
        view = DecisionView(self.sim)
        if view.n == 0 or not view.mask.any():
            return view.wait_action
        a = self.decide(view)
        return view.wait_action if a is None else int(a)

    @abstractmethod
    def decide(self, view: DecisionView) -> int | None:
        """The rule: an action index, or ``None`` to wait. Called only when some assignment is
        valid."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def rng_for(seed: int | None, tag: int) -> np.random.Generator:
    """A generator for one policy and episode: independent of every other stream."""
    return np.random.default_rng(np.random.SeedSequence([0 if seed is None else int(seed), tag]))
