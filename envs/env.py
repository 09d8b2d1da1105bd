"""Gymnasium adapter over the simulator: spaces, observation encoding, reward, masks, rendering."""

from __future__ import annotations

import math
import operator
import sys
from numbers import Integral
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.encoding import ENCODE, ObservationScales, batch_features, continuous_features, shape_features
from envs.render import render_ansi, render_gantt
from envs.scenarios.loader import Scenario, load_scenario
from envs.sim.continuous import ContinuousBatchingSimulator
from envs.sim.metrics import episode_metrics
from envs.sim.simulator import REASONS, Simulator


def _enclosing_time_limit(env: gym.Env) -> int | None:
    """The smallest ``max_episode_steps`` of the ``TimeLimit`` wrappers around ``env`` whose
    ``reset()`` is calling ``env.reset()`` (``gym.make(id, max_episode_steps=N)`` or
    ``TimeLimit(env, N)``), so that the env puts ``info["metrics"]`` on the step they truncate.
    It looks at the callers' frames (a few, once per reset); None when there is no such wrapper."""
    limit = None
    frame = sys._getframe(2)  # the caller of SchedulingEnv.reset
    for _ in range(32):
        if frame is None:
            break
        obj = frame.f_locals.get("self")
        if isinstance(obj, gym.wrappers.TimeLimit) and obj.unwrapped is env:
            n = getattr(obj, "_max_episode_steps", None)
            if isinstance(n, int) and (limit is None or n < limit):
                limit = n
        frame = frame.f_back
    return limit


class MaskedDiscrete(spaces.Discrete):
    """``Discrete`` whose ``sample()`` without an explicit mask draws among the actions valid in
    the bound environment's current state, so generic tools (Gymnasium's and SB3's env checkers,
    random-agent loops) that call ``action_space.sample()`` take valid actions. The space itself
    is a plain ``Discrete(n)``: ``contains`` and equality are unchanged."""

    def __init__(self, n: int, mask_fn=None, seed=None):
        super().__init__(n, seed=seed)
        self._mask_fn = mask_fn

    def sample(self, mask=None, probability=None):
        if mask is None and probability is None and self._mask_fn is not None:
            mask = self._mask_fn().astype(np.int8)
        return super().sample(mask=mask, probability=probability)

    def __getstate__(self):  # the bound env does not travel with a copied space
        state = dict(self.__dict__)
        state["_mask_fn"] = None
        return state


def make_simulator(sc):
    """The reference simulator of scenario ``sc`` (continuous batching: its subclass)."""
    kw = dict(visible_tasks=sc.visible_tasks, queue_capacity=sc.queue_capacity, drop_expired=sc.drop_expired,
              noise_cv=sc.noise_cv, horizon=sc.horizon, failures=sc.failures, warmup=sc.warmup_s)
    if sc.continuous is not None:
        return ContinuousBatchingSimulator(sc.cluster, sc.workload, max_batch=sc.continuous.max_batch,
                                           slo_ttft=sc.continuous.ttft_slo, slo_tpot=sc.continuous.tpot_slo, **kw)
    return Simulator(sc.cluster, sc.workload, batch_sizes=sc.batch_sizes, **kw)


class SchedulingEnv(gym.Env):
    """Assign queued AI tasks to model variants and heterogeneous devices.

    The environment wraps a discrete-event simulator (``envs.sim``). At each decision point the
    agent sees a window of the K oldest ready tasks and either starts one of them with a chosen
    model variant on a chosen device, or waits. Time advances only when the agent waits or when
    no assignment is possible: the agent is never asked to decide when waiting is its only option,
    and several assignments can be made at the same simulated instant.

    ## Action Space

    ``Discrete(K * V * D + 1)``. Index ``(k * V + v) * D + d`` starts the task in window slot
    ``k`` with variant slot ``v`` of that task's capability (slots sorted by accuracy, ascending)
    on device ``d``. A task needing n devices also takes n - 1 more idle devices of the same type
    (same node first). The last index, ``K * V * D``, waits until the next event. The joint mask
    of valid actions is exact and is returned by ``action_masks()`` (for sb3-contrib's
    MaskablePPO). An invalid action raises ``ValueError`` naming the slot, variant, device and the
    reason; with ``invalid_action="penalize"`` it becomes a wait with reward ``-invalid_penalty``.

    With dynamic batching (a scenario's ``batching.sizes``, B sizes ``n_0 = 1 < n_1 < ...``) the
    space is ``Discrete(B * K * V * D + 1)``: index ``b * K * V * D + (k * V + v) * D + d``
    starts task ``k`` and the next ``n_b - 1`` queued tasks of its capability that variant slot
    ``v`` can serve, as one batch on device ``d`` (``envs.sim.simulator.Simulator``,
    ``batch_sizes``); block ``b = 0`` is the unbatched action, and the last index waits. The mask
    stays exact (enough such tasks queued, within the variant's ``max_batch``).

    With continuous batching (a scenario's ``continuous_batching``, LLM serving,
    ``envs.sim.continuous``) the space is ``Discrete(K * V * D + 1)`` as without batching, but
    an action makes request ``k`` *join* device ``d``'s running batch with variant slot ``v``:
    valid while the device is up, holds fewer than ``continuous_batching.max_batch`` requests
    and serves no other variant (a device serves one variant until its requests finish), and
    while all of the request's tokens fit in the device's KV cache.

    ## Observation Space

    ``Dict`` of float32 ``Box`` es, each within [-1, 1]:

    * ``tasks`` (K, 1 + C + 7): present, capability one-hot, log size and log size2 (over the
      log of twice the largest size of a reference draw, at least 1e5), priority
      p / (1 + p), waited / (4 SLO) (clipped to [0, 1]), slack / SLO (clipped to [-1, 1]),
      minimum accuracy, devices required / largest device pool. SLO is the job's SLO; waited
      counts from the time the task became ready. Empty slots are all zeros.
    * ``devices`` (D, T + 4 + M): type one-hot, up, busy, remaining busy time r / (r + tau)
      (tau: the median job SLO of a reference draw of the workload), free memory fraction,
      resident variants (multi-hot over the M variants).
    * ``estimates`` (K, V, D): estimated latency at completion over SLO of each candidate
      assignment (time waited + device wait + load if cold + execution), as clip(x, 0, 4) / 2 - 1;
      1 where the pair can never run. A per-action feature for attention-style policies.
    * ``global`` (5,): backlog beyond K as b / (b + K), elapsed fraction of the horizon (or of
      the workload span), recent arrival rate (over about 20 mean inter-arrival gaps) over its
      episode mean as r / (r + 1), current device utilization, queue fill fraction.

    With dynamic batching, three more keys (what a policy needs to batch well):

    * ``batch`` (K, V): batchable queued tasks from slot k on (the task itself included, see
      the action space) for variant slot v, over the largest batch size (clipped to 1).
    * ``queues`` (C,): queued tasks of each capability q as q / (q + K).
    * ``device_batch`` (D,): requests in the execution each device runs, over the largest
      batch size (0 when idle).

    With continuous batching, three more keys:

    * ``queues`` (C,): queued requests of each capability q as q / (q + K).
    * ``device_batch`` (D,): requests each device holds (running, in prefill or waiting for
      KV-cache memory) over ``continuous_batching.max_batch``.
    * ``kv_use`` (D,): fraction of each device's KV cache its requests hold.

    ## Rewards

    Over the simulated interval ``dt`` a step covers, with weights from the scenario:
    ``- w_latency * sum_tasks_in_system priority * dt / ideal_service_time`` (integrates to the
    priority-weighted total slowdown), ``- w_slo * late completions``, ``- w_drop * drops``,
    ``+ w_accuracy * sum_completions (accuracy - best accuracy of the capability)``,
    ``+ w_utilization * integral of device utilization``. ``info["reward_terms"]`` holds each term.

    ## Episode End

    Terminated when the workload is exhausted and the system is empty. Truncated when simulated
    time reaches the scenario's ``horizon`` or when nothing can ever happen again (a policy keeps
    waiting with no event pending). At the end ``info["metrics"]`` holds the episode metrics,
    also when a ``TimeLimit`` wrapper truncates the episode (``gym.make(id,
    max_episode_steps=N)`` or ``TimeLimit(env, N)``: the env finds it at reset); at any time
    ``episode_metrics()`` gives the metrics so far.
    Every step's ``info["accounting"]`` counts tasks (``arrived, completed, dropped, queued,
    running``, with ``arrived == completed + dropped + queued + running``; a DAG stage arrives
    when it becomes ready or is dropped) and jobs (``jobs_arrived, jobs_completed,
    jobs_dropped, jobs_in_progress``, with the same identity).

    ## Arguments

    * ``scenario``: built-in name, YAML path or dict (default ``"serving-small"``).
    * ``render_mode``: ``None``, ``"ansi"`` (queue and device table) or ``"rgb_array"`` (Gantt chart).
    * ``invalid_action``: ``"raise"`` (default) or ``"penalize"``; ``invalid_penalty`` (default 1.0).
    * any other keyword overrides a top-level scenario key (``horizon=...``, ``visible_tasks=...``),
      and ``workload_overrides={...}`` merges into the workload section.

    ## Version History

    * v1: ``noise_cv`` is the coefficient of variation of a task's execution time (v0 scaled
      the noise so that the *exponent* had that standard deviation: at 0.5 the mean
      execution time was 2.25x the profile and the CV 0.70); the synthetic workloads'
      load calibration divides capacity by the mean noise factor (1.068 at 0.05), so
      "80% load" is 80% with the noise; new scenario key ``warmup_s`` (tasks arriving before
      it count in neither the reward nor the metrics); serving-small, serving-hetero,
      faulty-cluster and pipelines run twice as many requests per episode after a warm-up
      (1, 1, 1 and 5 s), so that the start-up transient (no model loaded) no longer decides
      their rankings. Results of v0 and v1 are not comparable.
      Later in v1, without changing any existing scenario: the scenario key ``batching``
      (dynamic batching: a block of actions per batch size, three more observation keys) and
      the scenario ``serving-batched`` that uses it; the scenario key ``continuous_batching``
      (LLM continuous batching with a KV-cache memory bound; actions join a device's batch;
      observation keys ``queues``, ``device_batch``, ``kv_use``) and the scenario
      ``llm-continuous`` that uses it.
    * v0: initial release.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    #: Steps since reset, and the step budget of the TimeLimit wrapping this env (or None).
    _steps = 0
    _step_limit: int | None = None

    def __init__(self, scenario: str | Path | dict | Scenario = "serving-small", *,
                 render_mode: str | None = None, invalid_action: str = "raise",
                 invalid_penalty: float = 1.0, **overrides: Any):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        if invalid_action not in ("raise", "penalize"):
            raise ValueError(f"invalid_action must be 'raise' or 'penalize', got {invalid_action!r}")
        self.scenario = scenario if isinstance(scenario, Scenario) else \
            load_scenario(scenario, overrides_from="gym.make keyword", **overrides)
        sc = self.scenario
        self.render_mode = render_mode
        self.invalid_action = invalid_action
        self.invalid_penalty = float(invalid_penalty)
        cl = sc.cluster
        self.sim = make_simulator(sc)
        #: Continuous batching (LLM serving): actions join a device's running batch.
        self.continuous = sc.continuous is not None
        self.K, self.V, self.D = sc.visible_tasks, cl.num_slots, cl.num_devices
        C, T, M = cl.num_caps, cl.num_types, cl.num_variants
        #: Batch sizes of the action space (1 block each; ``(1,)`` without batching).
        self.batch_sizes = sc.batch_sizes
        self.B = len(sc.batch_sizes)
        self.n_actions = self.B * self.K * self.V * self.D + 1
        self.wait_action = self.n_actions - 1
        self.action_space = MaskedDiscrete(self.n_actions, self.action_masks)
        self.task_features = 1 + C + 7
        self.device_features = T + 4 + M
        box = lambda *shape: spaces.Box(-1.0, 1.0, shape=shape, dtype=np.float32)  # noqa: E731
        self.observation_space = spaces.Dict({
            "tasks": box(self.K, self.task_features),
            "devices": box(self.D, self.device_features),
            "estimates": box(self.K, self.V, self.D),
            "global": box(5),
            **({"batch": box(self.K, self.V), "queues": box(C), "device_batch": box(self.D)}
               if self.B > 1 else {}),
            **({"queues": box(C), "device_batch": box(self.D), "kv_use": box(self.D)}
               if self.continuous else {}),
        })
        # Scales of the observation (one reference draw of the workload; for a trace this also
        # reads the file now, so a malformed trace fails at make()).
        self.scales = ObservationScales.of(sc)
        #: Device features with the type one-hot filled in (the kernel fills in the rest).
        self._devices_obs = np.zeros((self.D, self.device_features), dtype=np.float32)
        self._devices_obs[:, :T] = np.eye(T, dtype=np.float32)[cl.dev_type]
        self._T = T
        self._inv_dev_memory = 1.0 / cl.dev_memory
        self._dev_type = cl.dev_type.astype(np.int64)
        self._col_prio = 3 + C  # then waited, slack
        self._fk_key = (None, 0)  # (shape-table version, shapes encoded) of _fk
        self._fk = np.zeros((1, self.task_features), dtype=np.float32)
        self._mask_key = None
        self._root_seed: np.random.SeedSequence | None = None
        self._episode_done = True

    # ------------------------------------------------------------------ API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None or self._root_seed is None:
            entropy = seed if seed is not None else int(self.np_random.integers(2**63))
            self._root_seed = np.random.SeedSequence(entropy)
        episode_seed = self._root_seed.spawn(1)[0]
        sim = self.sim
        sim.reset(episode_seed)
        sim.advance_to_next_decision()
        self._span = sim.horizon if math.isfinite(sim.horizon) else max(sim._last_arrival, 1e-9)
        n_jobs = sim._n_jobs
        self._mean_rate = n_jobs / max(sim._last_arrival, 1e-9) if n_jobs else 1.0
        self._stuck = False
        self._episode_done = False
        self._steps = 0
        self._step_limit = _enclosing_time_limit(self)
        sim.stats.reset()
        return self._observation(), self._info(final=sim.done)

    def set_seed_state(self, root: int, episode: int) -> None:
        """Make the next ``reset()`` (without a seed) start episode ``episode`` of root seed
        ``root``: the episode that ``reset(seed=root)`` followed by ``episode`` more ``reset()``
        calls would start."""
        if isinstance(root, bool) or not isinstance(root, Integral) or root < 0:
            raise ValueError(f"root seed must be a non-negative int, got {root!r}")
        if isinstance(episode, bool) or not isinstance(episode, Integral) or episode < 0:
            raise ValueError(f"episode must be a non-negative int, got {episode!r}")
        self._root_seed = np.random.SeedSequence(int(root), n_children_spawned=int(episode))
        self._episode_done = True

    def step(self, action):
        if self._root_seed is None:
            raise RuntimeError("step() called before reset(): call reset() first")
        if self._episode_done:
            raise RuntimeError("step() called after the episode ended: call reset()")
        a = self._action_index(action)
        sim = self.sim
        sim.stats.reset()
        if not 0 <= a < self.n_actions:
            raise ValueError(f"action {a} is outside Discrete({self.n_actions})")
        penalty = 0.0
        if a == self.wait_action:
            self._wait()
        else:
            b, rest = divmod(a, self.K * self.V * self.D)
            k, rest = divmod(rest, self.V * self.D)
            v, d = divmod(rest, self.D)
            reason = sim.check_assignment(k, v, d, b)
            if reason is None:
                sim.assign(k, v, d, checked=True, b=b)
            elif self.invalid_action == "raise":
                batch = f", batch of {self.batch_sizes[b]}" if b else ""
                raise ValueError(f"invalid action {a}: queue slot {k}, variant slot {v}, device {d}{batch}: "
                                 f"{REASONS[reason]}")
            else:
                penalty = self.invalid_penalty
                self._wait()
        if not sim.done and sim.now < sim.horizon and not self._stuck and not sim.has_decision():
            sim.advance_to_next_decision()
            if not sim.done and sim.now < sim.horizon and not sim.has_decision():
                self._stuck = True
        terminated = sim.done
        truncated = not terminated and (sim.now >= sim.horizon or self._stuck)
        self._episode_done = terminated or truncated
        terms = self._reward_terms(penalty)
        reward = float(sum(terms.values()))
        self._steps += 1
        limit = self._step_limit
        info = self._info(final=self._episode_done or (limit is not None and self._steps >= limit))
        info["reward_terms"] = terms
        return self._observation(), reward, terminated, truncated, info

    def _action_index(self, action) -> int:
        """The action as an int: a Python or numpy integer, or an integer array of one element
        (shape () or (1,), as vectorised predictors return); anything else (floats, strings,
        bools) is refused rather than truncated."""
        if isinstance(action, (int, np.integer)) and not isinstance(action, (bool, np.bool_)):
            return int(action)
        if isinstance(action, np.ndarray) and action.dtype.kind in "iu" and action.shape in ((), (1,)):
            return int(action.reshape(-1)[0])
        if not isinstance(action, (bool, np.bool_, float, np.floating, str, bytes, np.ndarray)) \
                and hasattr(action, "__index__") and "bool" not in str(getattr(action, "dtype", "bool")):
            try:  # an integer scalar of another array library (e.g. a torch tensor)
                return operator.index(action)
            except TypeError:
                pass
        what = type(action).__name__
        if isinstance(action, np.ndarray):
            what += f" of dtype {action.dtype} and shape {action.shape}"
        elif hasattr(action, "dtype") and not isinstance(action, np.generic):
            what += f" of dtype {action.dtype}"
        raise ValueError(f"action must be an integer in Discrete({self.n_actions}) (a Python or numpy integer, "
                         f"or an integer array of one element), got {what}: {action!r}")

    def _wait(self) -> None:
        if not self.sim.step_time():
            self._stuck = True

    def episode_metrics(self) -> dict[str, float]:
        """The metrics of the episode so far (what ``info["metrics"]`` holds at its end)."""
        return episode_metrics(self.sim)

    def action_masks(self) -> np.ndarray:
        """Exact joint mask over ``Discrete(K*V*D + 1)``; waiting is always allowed. (Computed
        with the observation; recomputed here if the simulator was changed since. A copy.)"""
        if self._root_seed is None:
            raise RuntimeError("action_masks() called before reset(): call reset() first")
        sim = self.sim
        if self._mask_key == (sim.queue_version, sim.dev_version):
            return self._mask.copy()
        mask = np.empty(self.n_actions, dtype=bool)
        mask[:-1] = self.sim.action_mask().ravel() if self.B == 1 else \
            np.moveaxis(self.sim.batch_mask(), 3, 0).ravel()
        # (With continuous batching action_mask() is the joint mask: joins, not idle devices.)
        mask[-1] = True
        return mask

    # ------------------------------------------------------------------ encoding
    def _reward_terms(self, penalty: float) -> dict[str, float]:
        st = self.sim.stats
        w = self.scenario.reward
        return {
            "latency": -w.latency * st.slowdown_area,
            "slo": -w.slo * st.slo_misses,
            "drop": -w.drop * st.drops,
            "accuracy": w.accuracy * float(st.accuracy_gain),
            "utilization": w.utilization * st.busy_area,
            "invalid": -penalty,
        }

    def _observation(self) -> dict[str, np.ndarray]:
        """Encode the observation (and the action mask, cached until the state changes)."""
        mask, tasks, est, dev, glob = ENCODE(*self._encode_args())
        sim = self.sim
        self._mask_key = (sim.queue_version, sim.dev_version)
        obs = {"tasks": tasks, "devices": dev, "estimates": est, "global": glob}
        if self.B > 1:
            full = np.empty(self.n_actions, dtype=bool)
            full[:-1] = np.moveaxis(sim.batch_mask(), 3, 0).ravel()
            full[-1] = True
            mask = full
            obs.update(batch_features(sim))
        elif self.continuous:  # joins are valid on busy devices: the simulator's mask
            mask = np.empty(self.n_actions, dtype=bool)
            mask[:-1] = sim.action_mask().ravel()
            mask[-1] = True
            obs.update(continuous_features(sim))
        self._mask = mask
        return obs

    def _encode_args(self) -> tuple:
        """The arguments of :func:`envs.encoding.encode_numpy` (and of its compiled twin) for
        the current state."""
        sim = self.sim
        now = sim.now
        K = self.K
        queue = sim.queue_ids
        ids = queue[:K]
        n = len(ids)
        if n < K:
            ids += sim._pad_ids[n]
        if self._fk_key != (sim.kinds_version, sim._nk):
            self._encode_shapes()
        q = len(queue)
        backlog = q - K if q > K else 0
        rate = sim.recent_arrival_rate(self.scales.rate_window) / self._mean_rate
        up = sim._up_devices
        return (now, np.array(ids, dtype=np.int64), n, sim._tkind, sim._ttimes, sim._ktab, sim._kstat, sim._kres,
                self._fk, sim.dev_busy_until, sim.dev_up, sim.dev_idle, sim.dev_memory_used, self._inv_dev_memory,
                self._dev_type, sim._idle_by_type, sim.resident.reshape(-1), self._devices_obs, sim._E0, self.V,
                self.D, self.scales.tau, self._col_prio, self._T, sim._has_gangs,
                backlog / (backlog + K), min(now / self._span, 1.0), rate / (rate + 1.0),
                sim._busy_devices / up if up else 0.0, min(q / sim.queue_capacity, 1.0))  # requeues may overfill

    def _encode_shapes(self) -> np.ndarray:
        """Time-independent task features of every task shape in the simulator's shape table
        (one row per shape; row 0, the empty shape, stays all zeros)."""
        sim = self.sim
        version, nk = self._fk_key
        lo = 1 if version != sim.kinds_version else nk
        hi = sim._nk
        fk = np.zeros((hi, self.task_features), dtype=np.float32)
        fk[:lo] = self._fk[:lo]
        fk[lo:] = shape_features(sim._ktab[lo:hi], sim.cluster.num_caps, self.task_features, self.scales)
        self._fk = fk
        self._fk_key = (sim.kinds_version, hi)
        return fk

    def _info(self, final: bool) -> dict[str, Any]:
        sim = self.sim
        c = sim.counters
        # The same keys as sim.accounting() and sim.job_accounting(), built in one go (every step).
        info: dict[str, Any] = {
            "accounting": {"arrived": c.arrived, "completed": c.completed, "dropped": c.dropped,
                           "queued": c.queued, "running": c.running, "jobs_arrived": c.jobs_arrived,
                           "jobs_completed": c.jobs_completed, "jobs_dropped": c.jobs_dropped,
                           "jobs_in_progress": c.jobs_arrived - c.jobs_completed - c.jobs_dropped},
            "time": sim.now,
        }
        if c.extra:
            info["workload_counters"] = dict(c.extra)
        if final:
            info["metrics"] = episode_metrics(sim)
        return info

    # ------------------------------------------------------------------ rendering
    def render(self):
        if self.render_mode == "ansi":
            return render_ansi(self.sim)
        if self.render_mode == "rgb_array":  # a matplotlib Gantt chart (see envs.render.render_gantt)
            return render_gantt(self.sim, name=self.scenario.name)
        return None
