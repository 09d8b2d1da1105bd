"""Training-time rewards; the evaluation metrics (``info["metrics"]``) are untouched.

Two choices, combinable:

**Base reward** (``base``):

* ``"env"``: the environment's reward (optionally with its terms rescaled by ``term_scale``,
  e.g. ``{latency: 0}``).
* ``"effective_accuracy"``: each completion pays the served variant's accuracy if it finished
  by its deadline, else 0. Summed over an episode this is exactly ``effective_accuracy * n``,
  the serving scenarios' primary metric. ``"slo_attainment"``: 1 per on-time completion.

Why not always the env's reward: it charges outcomes (``accuracy - best``, ``-1`` for a late
completion or a drop), so every reward is <= 0 and, under discounting, a policy that postpones
outcomes looks better. Early in training, when most assignments are poor, "wait" then beats
assigning (a waiting task is charged only when it expires, later), and PPO collapses onto
waiting. Paying for on-time completions instead makes serving a task now the thing to do.

**Potential-based shaping** (``potential``; Ng, Harada and Russell, ICML 1999):
``r' = r + gamma * phi(s') - phi(s)``, policy-invariant for the discounted objective.

* ``"running"`` (or ``true``): ``phi(s)`` = the base reward that the running tasks will pay when
  they complete (known once a task starts: its device's busy-until and its deadline); for the
  ``"env"`` base also ``- w_drop`` per window task that can no longer finish in time. An
  assignment is then paid when it is made rather than when it completes, many steps later.
* ``"queue"``: ``"running"`` plus, for each window task, the best base reward it could still
  earn (its most accurate variant that some device, busy or not, could finish by the deadline;
  0 if none). Taking a device that another task needed, or letting a task's slack run out, then
  costs at once, instead of showing up (as a reward that never comes) when the task expires.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

BASES = ("env", "effective_accuracy", "slo_attainment")
POTENTIALS = ("none", "running", "queue")


class RewardShaping(gym.Wrapper):
    """Training reward of a SchedulingEnv (see the module docstring).

    Args:
        env: a SchedulingEnv, possibly wrapped (put Monitor *inside* to log the env's return).
        gamma: the algorithm's discount (shaping is policy-invariant only with the same gamma).
        base: ``"env"``, ``"effective_accuracy"`` or ``"slo_attainment"``.
        potential: ``"none"``/``False``, ``"running"``/``True`` or ``"queue"`` (see above).
        term_scale: for ``base="env"``, multiplier per ``info["reward_terms"]`` key (default 1).
        scale: multiplies the final reward (keeps value targets near unit scale; a positive
            constant factor changes no policy's ranking).

    Under the metric bases a penalized invalid action (unmasked algorithms) keeps the env's
    ``invalid`` reward term.
    """

    def __init__(self, env: gym.Env, gamma: float = 0.99, base: str = "env", potential: bool | str = True,
                 term_scale: dict[str, float] | None = None, scale: float = 1.0):
        super().__init__(env)
        if base not in BASES:
            raise ValueError(f"reward_shaping base must be one of {BASES}, got {base!r}")
        self.gamma = float(gamma)
        self.base = base
        if potential is True or potential is False:
            potential = "running" if potential else "none"
        if potential not in POTENTIALS:
            raise ValueError(f"reward_shaping potential must be one of {POTENTIALS}, got {potential!r}")
        if potential == "queue" and base == "env":
            raise ValueError("potential 'queue' needs a metric base (effective_accuracy or slo_attainment)")
        self.potential = potential != "none"
        self.queue_potential = potential == "queue"
        self.term_scale = {k: float(v) for k, v in (term_scale or {}).items()}
        self.scale = float(scale)
        if not self.scale > 0:
            raise ValueError(f"reward_shaping scale must be > 0, got {scale}")
        sc = env.unwrapped.scenario
        w = sc.reward
        self._w_acc, self._w_slo, self._w_drop = float(w.accuracy), float(w.slo), float(w.drop)
        self._best = np.asarray(sc.cluster.best_accuracy, dtype=float)
        self._slot_accuracy = np.nan_to_num(np.asarray(sc.cluster.slot_accuracy, dtype=float), nan=0.0)
        self._phi = 0.0
        self._running: dict[int, object] = {}

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()

    # ------------------------------------------------------------------ rewards
    def _pay(self, t) -> float:
        """Base reward of task ``t`` completing (on time or not) under a metric base."""
        on_time = t.finish <= t.deadline + 1e-12
        if not on_time:
            return 0.0
        return float(t.accuracy) if self.base == "effective_accuracy" else 1.0

    def _running_tasks(self) -> dict[int, object]:
        out = {}
        for dev in self.env.unwrapped.sim.devices:
            if dev.task is not None:
                out[dev.task.id] = dev.task
        return out

    def phi(self) -> float:
        sim = self.env.unwrapped.sim
        value = 0.0
        seen = set()
        for dev in sim.devices:
            t = dev.task
            if t is None or t.id in seen:
                continue
            seen.add(t.id)
            late = dev.busy_until > t.deadline + 1e-12
            if self.base == "env":
                value += self._w_acc * (t.accuracy - self._best[t.cap_index]) - (self._w_slo if late else 0.0)
            elif not late:
                value += float(t.accuracy) if self.base == "effective_accuracy" else 1.0
        if self.base == "env" and self._w_drop and sim.queue_ids:
            est = sim.estimates()  # (K, V, D) seconds from now, inf where impossible; refreshes the window
            n = len(sim.window)
            up = np.asarray(sim.dev_up, dtype=bool)
            earliest = np.where(up[None, None, :], est[:n], np.inf).reshape(n, -1).min(axis=1)
            deadline = np.array([t.deadline for t in sim.window])
            value -= self._w_drop * float(np.count_nonzero(sim.now + earliest > deadline + 1e-12))
        elif self.queue_potential and sim.queue_ids:
            est = sim.estimates()  # (K, V, D); refreshes the window
            n = len(sim.window)
            up = np.asarray(sim.dev_up, dtype=bool)
            deadline = np.array([t.deadline for t in sim.window])
            feasible = (sim.now + np.where(up[None, None, :], est[:n], np.inf) <= deadline[:, None, None] + 1e-12)
            feasible = feasible.any(axis=2)  # (n, V): the variant can still finish in time somewhere
            if self.base == "effective_accuracy":
                acc = self._slot_accuracy[sim.w_caps[:n]]  # (n, V)
                value += float(np.where(feasible, acc, 0.0).max(axis=1).sum())
            else:
                value += float(feasible.any(axis=1).sum())
        return value

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._phi = self.phi() if self.potential else 0.0
        self._running = self._running_tasks()
        return obs, info

    def step(self, action):
        base = self.env.unwrapped
        if self.base != "env":
            # The task this action would start (if valid): it may also complete within the step.
            candidates = dict(self._running)
            a = int(action)
            if a != base.wait_action:
                k = a // (base.V * base.D)
                base.sim.action_mask()  # brings the window up to date
                window = base.sim.window
                if k < len(window):
                    candidates[window[k].id] = window[k]
        obs, reward, terminated, truncated, info = self.env.step(action)
        terms = info.get("reward_terms") or {}
        if self.base == "env":
            if self.term_scale and terms:
                reward = float(sum(self.term_scale.get(k, 1.0) * v for k, v in terms.items()))
        else:
            from envs.sim.model import DONE

            self._running = self._running_tasks()
            reward = sum(self._pay(t) for i, t in candidates.items()
                         if i not in self._running and t.state == DONE) + terms.get("invalid", 0.0)
        if self.potential:
            phi_next = 0.0 if terminated else self.phi()
            reward = reward + self.gamma * phi_next - self._phi
            self._phi = phi_next
        reward *= self.scale
        if not math.isfinite(reward):
            raise FloatingPointError(f"shaped reward is not finite: {reward}")
        return obs, float(reward), terminated, truncated, info
