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

Warm-up tasks (arriving before the scenario's ``warmup_s``) pay nothing and count in no
potential, as in the env's reward and the metrics.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np

BASES = ("env", "effective_accuracy", "slo_attainment")
POTENTIALS = ("none", "running", "queue")


def check_options(base: str, potential: bool | str, scale: float) -> str:
    """Validate the shaping options; returns the potential's name (``True``/``False`` mapped to
    ``"running"``/``"none"``)."""
    if base not in BASES:
        raise ValueError(f"reward_shaping base must be one of {BASES}, got {base!r}")
    if potential is True or potential is False:
        potential = "running" if potential else "none"
    if potential not in POTENTIALS:
        raise ValueError(f"reward_shaping potential must be one of {POTENTIALS}, got {potential!r}")
    if potential == "queue" and base == "env":
        raise ValueError("potential 'queue' needs a metric base (effective_accuracy or slo_attainment)")
    if not float(scale) > 0:
        raise ValueError(f"reward_shaping scale must be > 0, got {scale}")
    return potential


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
        potential = check_options(base, potential, scale)
        self.gamma = float(gamma)
        self.base = base
        self.potential = potential != "none"
        self.queue_potential = potential == "queue"
        self.term_scale = {k: float(v) for k, v in (term_scale or {}).items()}
        self.scale = float(scale)
        sc = env.unwrapped.scenario
        w = sc.reward
        self._w_acc, self._w_slo, self._w_drop = float(w.accuracy), float(w.slo), float(w.drop)
        self._best = np.asarray(sc.cluster.best_accuracy, dtype=float)
        self._slot_accuracy = np.nan_to_num(np.asarray(sc.cluster.slot_accuracy, dtype=float), nan=0.0)
        self._warmup = float(sc.warmup_s)
        self._phi = 0.0
        self._running: dict[int, object] = {}

    def action_masks(self) -> np.ndarray:
        return self.env.unwrapped.action_masks()

    # ------------------------------------------------------------------ rewards
    def _pay(self, t) -> float:
        """Base reward of task ``t`` completing (on time or not) under a metric base."""
        on_time = t.finish <= t.deadline + 1e-12
        if not on_time or t.arrival < self._warmup:
            return 0.0
        return float(t.accuracy) if self.base == "effective_accuracy" else 1.0

    def _running_tasks(self) -> dict[int, object]:
        sim = self.env.unwrapped.sim
        out = {}
        for dev in sim.devices:  # (every member of a running batch)
            for tid in sim.running_batch(dev.index):
                out[tid] = sim.task(tid)
        return out

    def phi(self) -> float:
        sim = self.env.unwrapped.sim
        value = 0.0
        seen = set()
        for dev in sim.devices:
            for tid in sim.running_batch(dev.index):  # (every member of a running batch)
                t = sim.task(tid)
                if t.id in seen:
                    continue
                seen.add(t.id)
                if t.arrival < self._warmup:
                    continue
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
            counted = np.array([t.arrival >= self._warmup for t in sim.window], dtype=bool)
            value -= self._w_drop * float(np.count_nonzero((sim.now + earliest > deadline + 1e-12) & counted))
        elif self.queue_potential and sim.queue_ids:
            est = sim.estimates()  # (K, V, D); refreshes the window
            n = len(sim.window)
            up = np.asarray(sim.dev_up, dtype=bool)
            deadline = np.array([t.deadline for t in sim.window])
            counted = np.array([t.arrival >= self._warmup for t in sim.window], dtype=bool)
            feasible = (sim.now + np.where(up[None, None, :], est[:n], np.inf) <= deadline[:, None, None] + 1e-12)
            feasible = feasible.any(axis=2)  # (n, V): the variant can still finish in time somewhere
            if self.base == "effective_accuracy":
                acc = self._slot_accuracy[sim.w_caps[:n]]  # (n, V)
                value += float(np.where(counted, np.where(feasible, acc, 0.0).max(axis=1), 0.0).sum())
            else:
                value += float((feasible.any(axis=1) & counted).sum())
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
                b, rest = divmod(a, base.K * base.V * base.D)  # (b > 0: a batch, see the env)
                k, rest = divmod(rest, base.V * base.D)
                sim = base.sim
                sim.action_mask()  # brings the window up to date
                if k < min(len(sim.queue_ids), base.K):
                    n = base.batch_sizes[b] if b < base.B else 1
                    for i in sim.batch_members(k, rest // base.D, n) if n > 1 else [k]:
                        candidates[sim.queue_ids[i]] = sim.task(sim.queue_ids[i])
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


class BatchedRewardShaping:
    """:class:`RewardShaping` for the instances of a batched simulator (used by
    :class:`agents.batched_vec.BatchedVecEnv`): the same base rewards and potentials, computed
    from the batch's arrays in the reference wrapper's order of operations, so the shaped
    rewards are the same numbers (``tests/test_agents.py`` compares them with ``RewardShaping``
    over ``DummyVecEnv``, step by step). Call :meth:`before_step` with the actions, then
    :meth:`after_step` after the simulator stepped and before ended instances are reset, and
    :meth:`started` for instances that started an episode."""

    def __init__(self, bsim, gamma: float = 0.99, base: str = "env", potential: bool | str = True,
                 term_scale: dict[str, float] | None = None, scale: float = 1.0):
        potential = check_options(base, potential, scale)
        self.sim, self.gamma, self.base, self.scale = bsim, float(gamma), base, float(scale)
        self.potential, self.queue_potential = potential != "none", potential == "queue"
        self.term_scale = {k: float(v) for k, v in (term_scale or {}).items()}
        sc = bsim.scenario
        w = sc.reward
        self._w_acc, self._w_slo, self._w_drop = float(w.accuracy), float(w.slo), float(w.drop)
        self._best = np.asarray(sc.cluster.best_accuracy, dtype=float)
        self._slot_accuracy = np.nan_to_num(np.asarray(sc.cluster.slot_accuracy, dtype=float), nan=0.0)
        self._warmup = float(sc.warmup_s)
        B = bsim.num_envs
        self._phi = np.zeros(B)
        self._cands: list[list[int]] = [[] for _ in range(B)]

    def _running(self, b: int) -> list[int]:
        """Running task ids of instance b, in device order, each once (as the reference's dict)."""
        out: list[int] = []
        for t in self.sim.v.dtask[b].tolist():
            if t >= 0 and t not in out:
                out.append(t)
        return out

    def phi(self, rows: np.ndarray) -> np.ndarray:
        from baselines.batched import BatchedView

        S = self.sim.v
        out = np.zeros(len(rows))
        view = None
        if (self.base == "env" and self._w_drop) or self.queue_potential:
            view = BatchedView(self.sim, rows)
        for j, b in enumerate(rows.tolist()):
            value = 0.0
            for t in self._running(b):
                if float(S.ttimes[b, t, 0]) < self._warmup:
                    continue
                d = S.dtask[b].tolist().index(t)
                deadline = float(S.ttimes[b, t, 1])
                late = float(S.dbusy[b, d]) > deadline + 1e-12
                acc = float(S.tacc[b, t])
                if self.base == "env":
                    cap = int(S.ktab[b, S.tkind[b, t], 3])
                    value += self._w_acc * (acc - self._best[cap]) - (self._w_slo if late else 0.0)
                elif not late:
                    value += acc if self.base == "effective_accuracy" else 1.0
            n = int(view.n[j]) if view is not None else 0
            if view is not None and n:
                now = float(view.now[j])
                est, deadline = view.est[j, :n], view.deadline[j, :n]  # est: inf on down devices
                counted = S.ttimes[b, S.ids[b, :n], 0] >= self._warmup
                if self.base == "env":
                    earliest = est.reshape(n, -1).min(axis=1)
                    value -= self._w_drop * float(np.count_nonzero((now + earliest > deadline + 1e-12) & counted))
                else:
                    feasible = (now + est <= deadline[:, None, None] + 1e-12).any(axis=2)
                    if self.base == "effective_accuracy":
                        acc = self._slot_accuracy[view.caps[j, :n]]
                        value += float(np.where(counted, np.where(feasible, acc, 0.0).max(axis=1), 0.0).sum())
                    else:
                        value += float((feasible.any(axis=1) & counted).sum())
            out[j] = value
        return out

    def started(self, rows: np.ndarray) -> None:
        """Instances ``rows`` are at the first decision of an episode (``RewardShaping.reset``)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.potential and len(rows):
            self._phi[rows] = self.phi(rows)

    def before_step(self, actions: np.ndarray) -> None:
        if self.base == "env":
            return
        from envs.batched import dynamics as dyn

        S, sim = self.sim.v, self.sim
        wait = sim.n_actions - 1
        VD = sim.V * sim.D
        for b in range(sim.num_envs):
            cands = self._running(b)
            a = int(actions[b])
            if a != wait:
                k = a // VD
                if k < min(int(S.si[b, dyn.QLEN]), sim.K):
                    t = int(S.ids[b, k])
                    if t not in cands:
                        cands.append(t)
            self._cands[b] = cands

    def after_step(self, rewards: np.ndarray) -> np.ndarray:
        """Shaped rewards (float64) of the step just taken by every instance."""
        from envs.batched import dynamics as dyn
        from envs.sim.model import DONE

        sim, S = self.sim, self.sim.v
        B = sim.num_envs
        out = np.empty(B)
        terms = sim.reward_terms() if (self.term_scale or self.base != "env") else None
        for b in range(B):
            if self.base == "env":
                r = float(rewards[b])
                if self.term_scale:
                    r = float(sum(self.term_scale.get(k, 1.0) * float(v[b]) for k, v in terms.items()))
            else:
                running = self._running(b)
                total = 0
                for t in self._cands[b]:
                    if t not in running and int(S.tstate[b, t]) == DONE and float(S.ttimes[b, t, 0]) >= self._warmup:
                        if float(S.tfin[b, t]) <= float(S.ttimes[b, t, 1]) + 1e-12:
                            total = total + (float(S.tacc[b, t]) if self.base == "effective_accuracy" else 1.0)
                        else:
                            total = total + 0.0
                r = total + float(terms["invalid"][b])
            out[b] = r
        if self.potential:
            term = S.si[:, dyn.TERM] != 0
            nxt = np.zeros(B)
            live = np.flatnonzero(~term)
            if len(live):
                nxt[live] = self.phi(live)
            out = out + self.gamma * nxt - self._phi
            self._phi = nxt
        out = out * self.scale
        if not np.isfinite(out).all():
            b = int(np.argmax(~np.isfinite(out)))
            raise FloatingPointError(f"instance {b}: shaped reward is not finite: {out[b]}")
        return out

