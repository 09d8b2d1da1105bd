"""Discrete-event simulator of AI tasks served by model variants on heterogeneous devices.

Pure Python + numpy. Events live in one heap ordered by (time, sequence number), so ties are
resolved in insertion order and runs are deterministic. Time advances only when the caller
waits or when no assignment is possible (:meth:`Simulator.advance_to_next_decision`).

Lifecycle of a task (one stage of a job): PENDING (parents unfinished) -> QUEUED (ready) ->
RUNNING -> DONE, or DROPPED at any point before DONE. A task counts as *arrived* once it is
ready or dropped, so ``arrived == completed + dropped + queued + running`` at every instant.

Speed: the whole workload of an episode is known at reset, so every task's id, shape and times
are indexed then (``_ttimes``, ``_tkind``), and each distinct task shape gets one row of
precomputed (variant slot, device) arrays (``_ktab``, ``_kstat``, ``_kres``). The window's
arrays are gathers from these tables by task id; a policy-facing view of the state (masks,
estimates) is a handful of numpy operations, whatever the queue length. Task and job state is
kept in one Python list per attribute, indexed by id (``_tstate``, ``_tfinish``, ...,
``_jfinish``); the queue holds task ids. :class:`Task` and :class:`Job` are read-only views of
these lists, created on demand (:attr:`Simulator.queue`, :attr:`Simulator.tasks`,
:attr:`Simulator.jobs`): a busy episode creates no object per request that the cyclic garbage
collector would have to traverse. The event handlers are the hot path of a busy cluster and
are written for it (some logic inlined, noted where).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from envs.sim.cluster import Cluster
from envs.sim.model import (
    DONE,
    DROPPED,
    PENDING,
    QUEUED,
    RUNNING,
    Device,
    Job,
    JobSpec,
    StageSpec,
    Task,
)
from envs.sim.noise import sigma_for_cv
from envs.workloads.assembly import gc_paused
from envs.workloads.base import Workload

# Task kinds cached across episodes at most (workloads with continuous sizes have one per task).
_MAX_KINDS = 8192

# Counter of each drop reason.
_DROP_COUNTER = {r: f"dropped_{r}" for r in ("queue_full", "expired", "infeasible", "with_job")}

# Event kinds (ints: cheap to compare and to store in heap tuples).
# Arrivals are not heap events: they are read in order from the workload's sorted job list.
# STEP: an iteration boundary of a continuous-batching device (envs.sim.continuous).
FINISH, EXPIRE, FAIL, RECOVER, STEP = 1, 2, 3, 4, 5

# Reasons an assignment is refused (used in error messages).
REASONS = {
    "no_task": "queue slot is empty",
    "no_variant": "the task's capability has no variant in this slot",
    "no_profile": "the variant has no latency profile for this device type or does not fit in its memory",
    "accuracy": "the variant's accuracy is below the task's minimum",
    "too_large": "the task is larger than the variant's maximum size",
    "down": "the device has failed",
    "busy": "the device is busy",
    "gang": "not enough idle devices of this type for a multi-device task",
    "no_batch": "the scenario has no such batch size (its batching.sizes)",
    "batch_limit": "the batch is larger than the variant's max_batch",
    "batch_short": "fewer queued requests of the task's capability that the variant can serve than the batch size",
    "batch_full": "the device already holds continuous_batching.max_batch requests",
    "other_variant": "the device is serving another variant (continuous batching: one variant per device until "
                     "its requests finish)",
}


def shape_rows(cl: Cluster, cap: np.ndarray, size: np.ndarray, size2: np.ndarray, min_acc: np.ndarray,
               n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per task shape (capability index, sizes, accuracy floor, devices required; m shapes):
    the noise-free execution time of each (variant slot, device), ``inf`` where the pair can
    never serve the shape, (m, V, D); whether it can, (m, V, D); the ideal service time, (m,)."""
    m = len(cap)
    static = cl.slot_runs[cap] & (cl.slot_accuracy[cap] >= min_acc[:, None])[:, :, None] \
        & (cl.slot_max_size[cap] >= (size + size2)[:, None])[:, :, None]  # (m, V, D)
    # Pools with fewer devices of the type than a multi-device task needs can never run it.
    static &= (cl.type_count[cl.dev_type][None, :] >= n[:, None])[:, None, :]
    if cl.continuous:  # the whole request fits in the KV cache; the prefill emits the first token
        static &= cl.slot_kv_tokens[cap] >= (size + size2)[:, None, None]
        decode = np.maximum(size2[:, None] - cl.slot_prefill_token[cap], 0.0)[:, :, None]
        exec_t = cl.slot_alpha[cap] + cl.slot_beta[cap] * size[:, None, None] + cl.slot_gamma[cap] * decode
    else:
        exec_t = cl.slot_alpha[cap] + cl.slot_beta[cap] * size[:, None, None] + cl.slot_gamma[cap] * size2[:, None, None]
    exec_t /= (1.0 + (n[:, None] - 1) * cl.slot_scaling[cap])[:, :, None]  # exactly 1 for n = 1
    exec_t = np.where(static, exec_t, np.inf)
    VD = cl.num_slots * cl.num_devices
    ideal = exec_t.reshape(m, -1).min(axis=1) if VD else np.full(m, np.inf)
    return exec_t, static, ideal


def resident_index(cl: Cluster, cap: np.ndarray) -> np.ndarray:
    """(m, V * D) flat index ``variant * D + device`` into the residency table of each
    (variant slot, device) of shapes of capabilities ``cap``."""
    D = cl.num_devices
    sv = np.maximum(cl.slot_variant[cap], 0)  # (m, V)
    return (sv[:, :, None] * D + np.arange(D)).reshape(len(cap), -1)


@dataclass
class IntervalStats:
    """What happened during the simulated interval one decision step covers (for rewards)."""

    dt: float = 0.0
    slowdown_area: float = 0.0
    """Integral over the interval of sum over tasks in system of priority / ideal time."""
    busy_area: float = 0.0
    """Integral of the fraction of up devices that are busy."""
    completions: int = 0
    slo_misses: int = 0
    drops: int = 0
    accuracy_gain: float = 0.0
    """Sum over completions of (served accuracy - best accuracy of the capability) (<= 0)."""

    def reset(self) -> None:
        self.dt = self.slowdown_area = self.busy_area = self.accuracy_gain = 0.0
        self.completions = self.slo_misses = self.drops = 0


@dataclass
class Counters:
    arrived: int = 0
    completed: int = 0
    dropped: int = 0
    queued: int = 0
    running: int = 0
    dropped_queue_full: int = 0
    dropped_expired: int = 0
    dropped_infeasible: int = 0
    dropped_with_job: int = 0
    requeues: int = 0
    batches: int = 0
    """Executions that started more than one request together (dynamic batching)."""
    batched_tasks: int = 0
    """Requests started in those executions."""
    preemptions: int = 0
    """Continuous batching: requests evicted from a device's running batch when its KV cache
    ran out (recomputed later, vLLM-style)."""
    prefill_iterations: int = 0
    decode_iterations: int = 0
    cold_starts: int = 0
    evictions: int = 0
    failures: int = 0
    jobs_arrived: int = 0
    jobs_completed: int = 0
    jobs_dropped: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Simulator:
    """Event-driven model of a serving / training cluster.

    Args:
        cluster: devices and model variants.
        workload: produces the jobs of an episode from the workload RNG stream.
        visible_tasks: K, size of the window of ready tasks a policy chooses from (oldest first).
        queue_capacity: ready tasks held at most; arrivals beyond it are dropped and counted.
        drop_expired: drop queued tasks whose deadline has passed.
        noise_cv: coefficient of variation of the execution time of a given task, variant and
            device (:mod:`envs.sim.noise`): the profile time is multiplied by ``exp(sigma * |z|)``,
            which only slows execution down (profiles are unloaded best cases; the mean factor
            is :func:`envs.sim.noise.factor_mean`, 1.068 at the default 0.05).
        horizon: simulated time at which the episode is truncated (``inf``: none).
        failures: simulate device failures from the device types' MTBF/MTTR.
        warmup: length (s) of the warm-up period. A task that arrives (becomes ready) before it
            is a warm-up task: served like any other, but counted neither in the reward (its
            completion, lateness, drop, accuracy and time in system) nor in the episode
            metrics; the reward's utilization term integrates from ``warmup`` on. 0: none.
        batch_sizes: dynamic batching (DNN inference, Clockwork/Triton-style): the numbers of
            requests one assignment may start together, strictly increasing from 1 (``(1,)``:
            none). A batch of ``n`` led by window slot ``k`` with variant slot ``v`` on device
            ``d`` takes task ``k`` and the next ``n - 1`` queued tasks (queue order, also
            beyond the window) of the same capability that ``v`` can serve alone (accuracy
            floor, maximum size, one device); ``n`` must not exceed the variant's
            ``max_batch``. It executes once, in ``alpha + beta * sum(size) + gamma *
            sum(size2)`` of the (variant, device type) profile times one noise draw, after one
            load if the variant is cold; its members finish together and each is accounted for
            individually. A device failure requeues every member. :meth:`batch_counts` and
            :meth:`batch_mask` give the exact batch mask.
    """

    def __init__(self, cluster: Cluster, workload: Workload, *, visible_tasks: int = 8,
                 queue_capacity: int = 1024, drop_expired: bool = False, noise_cv: float = 0.05,
                 horizon: float = math.inf, failures: bool = True, warmup: float = 0.0,
                 batch_sizes: tuple[int, ...] = (1,)):
        if visible_tasks < 1:
            raise ValueError("visible_tasks must be >= 1")
        if queue_capacity < 1:
            raise ValueError("queue_capacity must be >= 1")
        self.cluster = cluster
        self.workload = workload
        self.K = visible_tasks
        self.queue_capacity = queue_capacity
        self.drop_expired = drop_expired
        self.noise_sigma = sigma_for_cv(noise_cv)
        self.horizon = horizon
        if not (math.isfinite(warmup) and warmup >= 0):
            raise ValueError(f"warmup must be a finite number >= 0, got {warmup}")
        self.warmup = float(warmup)
        sizes = tuple(int(b) for b in batch_sizes)
        if not sizes or sizes[0] != 1 or any(b <= a for a, b in zip(sizes, sizes[1:])):
            raise ValueError(f"batch_sizes must start at 1 and increase strictly, got {batch_sizes!r}")
        self.batch_sizes = sizes
        self.B = len(sizes)
        #: Dynamic batching is on: any queue change (not only in the window) changes the mask.
        self._batching = self.B > 1
        self.failures_enabled = failures and any(math.isfinite(t.mtbf_s) for t in cluster.device_types)
        self._has_gangs = False
        self.now = 0.0

    # ================================================================== episode
    def reset(self, seed_seq: np.random.SeedSequence) -> None:
        wl_ss, noise_ss, fail_ss = seed_seq.spawn(3)
        self.rng_noise = np.random.default_rng(noise_ss)
        self._noise: list[float] = []
        self._noise_i = 0
        self.rng_fail = np.random.default_rng(fail_ss)
        # The cyclic GC is paused while the episode's jobs are built (thousands of small
        # tuples, none of them in a cycle, and all but the columns below dead by the end).
        with gc_paused():
            generated = self.workload.generate(np.random.default_rng(wl_ss), self.cluster)
            specs = generated.jobs
            # The job list is kept by column (one C-level pass): arrival, stages, slo,
            # priority, source. Not keeping the JobSpec objects lets them die here: a list of
            # them alive for the episode would be thousands of objects for the garbage
            # collector to traverse. (:attr:`job_specs` rebuilds them on demand.)
            cols = self._jcols = list(zip(*specs)) if specs else [(), (), (), (), ()]
            workload_counters = generated.counters
            del specs, generated
        self._n_jobs = len(cols[0])
        cl = self.cluster
        self.now = 0.0
        self._events: list[tuple] = []
        self._seq = 0
        self.devices = [Device(i, cl.device_types[cl.dev_type[i]], int(cl.dev_type[i]), cl.nodes[i])
                        for i in range(cl.num_devices)]
        #: Ids of the ready tasks, in queue order (read-only outside the simulator; the window
        #: is the first K). :attr:`queue` gives them as task views.
        self.queue_ids: list[int] = []
        self._arrived: list[int] = []  # ids of the tasks that have arrived (ready or dropped)
        self.counters = Counters()
        self.counters.extra.update(workload_counters)
        self.stats = IntervalStats()
        self._inv_ideal_sum = 0.0  # sum over tasks in system of priority / ideal
        self._busy_devices = 0
        self._up_devices = cl.num_devices
        self._next_job = 0
        # Gantt record (for rendering only): (device, start, end, variant, cold, interrupted, task id,
        # end of the model load); and (device, failed at, recovered at or inf) per device failure.
        self._gantt: list[tuple] = []
        self._gantt_down: list[tuple] = []
        # Dense dynamic state mirrored in arrays for vectorised masks/estimates.
        self.dev_up = np.ones(cl.num_devices, dtype=bool)
        self.dev_idle = np.ones(cl.num_devices, dtype=bool)
        self._avail = np.ones(cl.num_devices, dtype=bool)  # dev_idle & dev_up, kept in step
        self._avail_bits = (1 << cl.num_devices) - 1  # the same as a bit set (bit d: device d)
        self.dev_busy_until = np.zeros(cl.num_devices)
        self.dev_memory_used = np.zeros(cl.num_devices)
        self.resident = np.zeros((cl.num_variants, cl.num_devices), dtype=bool)
        self._idle_by_type = cl.type_count.copy()
        #: Per device: the task ids of the batch it runs (None: not a batch), and how many of
        #: them have not finished yet.
        self._dev_batch: list[tuple[int, ...] | None] = [None] * cl.num_devices
        self._dev_left = [0] * cl.num_devices
        if not hasattr(self, "_kinds"):
            self._init_static()
        self._last_arrival = cols[0][-1] if self._n_jobs else 0.0
        self._rate_ptr, self._rate_window = 0, -1.0
        # Arrivals are read from the sorted job list with a pointer instead of the heap; at equal
        # times heap events (completions, expiries, failures) are processed before arrivals.
        arrivals = np.array(cols[0], dtype=float)
        if len(arrivals) and (not np.all(np.isfinite(arrivals)) or arrivals[0] < 0 or np.any(np.diff(arrivals) < 0)):
            bad = int(np.argmax(~np.isfinite(arrivals) | (arrivals < 0) | (np.diff(arrivals, prepend=0.0) < 0)))
            raise ValueError(f"workload jobs must have finite, non-negative arrival times sorted in "
                             f"order: job {bad} ({cols[4][bad] or 'generated'}) arrives at "
                             f"{arrivals[bad]}")
        self._index_tasks(arrivals, cols)
        self._arrivals_l = arrivals.tolist()  # job j arrives (and is processed) at _arrivals_l[j]
        self._next_arrival = float(arrivals[0]) if len(arrivals) else math.inf
        if self.failures_enabled:
            for dev in self.devices:
                self._schedule_failure(dev)
        self._window_dirty = True  # the first K queued tasks may have changed
        # Change counters (cache keys for views of the state; never reset): the first K queued
        # tasks may have changed; some device state changed.
        self.queue_version = getattr(self, "queue_version", 0) + 1
        self.dev_version = getattr(self, "dev_version", 0) + 1
        self._dev_dirty = True  # device availability changed
        self._idle_up = cl.num_devices  # devices idle and up

    def _init_static(self) -> None:
        """Per-cluster constants and the (cross-episode) table of task shapes."""
        cl = self.cluster
        V, D = cl.num_slots, cl.num_devices
        VD = V * D
        # Python copies of the cluster arrays for scalar lookups (faster than numpy scalars).
        self._slot_variant_l = cl.slot_variant.tolist()
        self._slot_runs_l = cl.slot_runs.tolist()
        self._slot_acc_l = cl.slot_accuracy.tolist()
        self._slot_max_size_l = cl.slot_max_size.tolist()
        self._dev_type_l = cl.dev_type.tolist()
        self._var_acc_l = cl.var_accuracy.tolist()
        self._best_acc_l = cl.best_accuracy.tolist()
        self._load_time_l = cl.load_time.tolist()
        self._var_memory_l = cl.var_memory.tolist()
        self._dev_memory_l = cl.dev_memory.tolist()
        self._type_bits = [sum(1 << d for d in range(D) if cl.dev_type[d] == tt) for tt in range(cl.num_types)]
        #: Column blocks of the shape table ``_ktab`` (one float row per task shape):
        #: [size, size2, min_accuracy, cap, n | exec (V*D) | load (V*D)]: noise-free execution
        #: time of each (variant slot, device), inf where the pair can never serve the shape, and
        #: the cold-start time of the slot's variant on the device.
        self._E0, self._L0 = 5, 5 + VD
        self._kinds: dict[StageSpec, int] = {}  # task shape -> row; kept across episodes
        self._clear_kinds()
        # w_present for each window fill n (shared, so read-only).
        self._present = [np.arange(self.K) < n for n in range(self.K + 1)]
        for p in self._present:
            p.flags.writeable = False
        self.kinds_version = 0  # bumped when the shape table is cleared (cache key)

    def _clear_kinds(self) -> None:
        cl = self.cluster
        V, D = cl.num_slots, cl.num_devices
        self._kinds.clear()
        cap = 64
        self._ktab = np.zeros((cap, 5 + 2 * V * D))
        #: (shapes, V*D) the slot's variant can ever serve the shape on the device.
        self._kstat = np.zeros((cap, V * D), dtype=bool)
        #: (shapes, V*D) flat index ``variant * D + device`` into ``resident`` (cold starts).
        self._kres = np.zeros((cap, V * D), dtype=np.int64)
        #: (shapes,) bit set of devices on which some variant slot can serve the shape.
        self._kdevbits: list[int] = [0]
        #: (shapes, V) the slot's variant can serve the shape as a member of a batch (accuracy
        #: floor, maximum size, one device).
        self._kbatch = np.zeros((cap, V), dtype=bool)
        self._kcap: list[int] = [0]
        self._kideal: list[float] = [math.inf]
        #: Per shape row: the shape, devices required, accuracy floor, size + size2.
        self._kspec: list[StageSpec | None] = [None]
        self._knreq: list[int] = [1]
        self._kminacc: list[float] = [0.0]
        self._ksizes: list[float] = [0.0]
        # Row 0 is the empty shape of padding window slots: never runs.
        self._ktab[0, 4] = 1.0
        self._ktab[0, self._E0:self._L0] = math.inf
        self._nk = 1
        self.kinds_version = getattr(self, "kinds_version", 0) + 1

    def _add_kinds(self, shapes: list[StageSpec], sources: list[str]) -> None:
        """Compute the table rows of new task shapes, vectorised over the shapes."""
        cl = self.cluster
        caps = []
        for st, src in zip(shapes, sources):
            c = cl.cap_index.get(st.capability)
            if c is None:
                raise ValueError(f"job from {src or 'workload'} needs capability '{st.capability}' "
                                 f"that no variant of the scenario provides")
            caps.append(c)
        m = len(shapes)
        cap = np.array(caps, dtype=np.int64)
        size = np.array([st.size for st in shapes], dtype=float)
        size2 = np.array([st.size2 for st in shapes], dtype=float)
        min_acc = np.array([st.min_accuracy for st in shapes], dtype=float)
        n = np.array([st.devices_required for st in shapes], dtype=np.int64)
        exec_t, static, ideal = shape_rows(cl, cap, size, size2, min_acc, n)
        lo, hi = self._nk, self._nk + m
        if hi > len(self._ktab):
            new_cap = max(hi, 2 * len(self._ktab))
            for name in ("_ktab", "_kstat", "_kres", "_kbatch"):
                old = getattr(self, name)
                grown = np.zeros((new_cap,) + old.shape[1:], dtype=old.dtype)
                grown[:lo] = old[:lo]
                setattr(self, name, grown)
        kt = self._ktab
        kt[lo:hi, 0], kt[lo:hi, 1], kt[lo:hi, 2], kt[lo:hi, 3], kt[lo:hi, 4] = size, size2, min_acc, cap, n
        kt[lo:hi, self._E0:self._L0] = exec_t.reshape(m, -1)
        kt[lo:hi, self._L0:] = cl.slot_load[cap].reshape(m, -1)
        self._kstat[lo:hi] = static.reshape(m, -1)
        self._kres[lo:hi] = resident_index(cl, cap)
        self._kbatch[lo:hi] = (cl.slot_accuracy[cap] >= min_acc[:, None]) \
            & (cl.slot_max_size[cap] >= (size + size2)[:, None]) & (n == 1)[:, None]
        self._kdevbits += [sum(1 << d for d, ok in enumerate(row) if ok) for row in static.any(axis=1).tolist()]
        self._kcap += caps
        self._kideal += ideal.tolist()
        self._kspec += shapes
        self._knreq += [st.devices_required for st in shapes]
        self._kminacc += [st.min_accuracy for st in shapes]
        self._ksizes += [st.size + st.size2 for st in shapes]
        for i, st in enumerate(shapes):
            self._kinds[st] = lo + i
        self._nk = hi

    def _index_tasks(self, arrivals: np.ndarray, cols: list[tuple]) -> None:
        """Per-task arrays of the episode. Task ids are given in job order and stage order, so
        every task's id is known before it arrives: its shape row and its times. ``cols``: the
        job list's columns."""
        if len(self._kinds) > _MAX_KINDS:  # continuous sizes make a shape per task: stay bounded
            self._clear_kinds()
        kinds = self._kinds
        counts = list(map(len, cols[1]))
        single = not counts or max(counts) == 1
        stages = [st for (st,) in cols[1]] if single else [st for job_stages in cols[1] for st in job_stages]
        if not kinds.keys() >= set(stages):  # new shapes, added in order of first appearance
            new: dict[StageSpec, str] = {}
            sources = cols[4] if single else [src for src, n in zip(cols[4], counts) for _ in range(n)]
            for src, st in zip(sources, stages):
                if st not in kinds and st not in new:
                    new[st] = src
            self._add_kinds(list(new), list(new.values()))
        get = kinds.__getitem__
        self._tkind_l = list(map(get, stages))
        N = len(stages)
        #: (N + 1,) shape row of each task; the last entry is the padding of empty window slots.
        self._tkind = np.zeros(N + 1, dtype=np.int64)
        self._tkind[:N] = self._tkind_l
        #: (N + 1, 4) arrival (set when the task becomes ready or is dropped before), deadline,
        #: priority, SLO of each task; the last row (0, 1, 0, 1) pads empty window slots.
        tt = np.empty((N + 1, 4))
        slo = np.array(cols[2], dtype=float)
        prio = np.array(cols[3], dtype=float)
        deadline = arrivals + slo
        if not single:
            slo, prio, deadline = np.repeat(slo, counts), np.repeat(prio, counts), np.repeat(deadline, counts)
        tt[:N, 0] = arrivals if single else np.nan  # a DAG stage's arrival is when it becomes ready
        self._single = single
        tt[:N, 1], tt[:N, 2], tt[:N, 3] = deadline, prio, slo
        tt[N] = (0.0, 1.0, 0.0, 1.0)
        self._ttimes = tt
        self._pad_ids = [[N] * (self.K - n) for n in range(self.K + 1)]
        # Task and job state, one Python list per attribute indexed by task (job) id: no object
        # per task (a busy episode would otherwise keep thousands alive for the garbage
        # collector to traverse). :class:`Task` and :class:`Job` are views of these lists.
        J = len(counts)
        if single:
            self._tjob = list(range(N))
            self._jfirst = self._tjob
            self._jcount = [1] * J
        else:
            self._jcount = counts
            self._jfirst = np.concatenate(([0], np.cumsum(counts)[:-1])).tolist()
            self._tjob = np.repeat(np.arange(J), counts).tolist()
        self._tdeadline = tt[:N, 1].tolist()  # (read-only copies of columns of _ttimes, for
        self._tprio = tt[:N, 2].tolist()  # the handlers' scalar reads)
        nan = math.nan
        self._tstate = [PENDING] * N
        self._tready = [nan] * N
        self._tstart = [nan] * N
        self._tfinish = [nan] * N
        self._tvariant = [-1] * N
        self._tdevices: list[tuple[int, ...]] = [()] * N
        self._tacc = [nan] * N
        self._trequeues = [0] * N
        self._tcold = [False] * N
        self._tpending = [0] * N
        self._tchildren: list[list[int] | tuple] = [()] * N
        self._jremaining = list(self._jcount)
        self._jfinish = [nan] * J
        self._jdropped = [False] * J

    @property
    def done(self) -> bool:
        """All jobs have arrived and the system is empty."""
        c = self.counters
        return c.jobs_completed + c.jobs_dropped == self._n_jobs and c.queued == 0 and c.running == 0

    @property
    def truncated(self) -> bool:
        return self.now >= self.horizon and not self.done

    # ================================================================== events
    def _push(self, time: float, kind: int, payload: int, extra: int = 0) -> None:
        """Schedule an event. Events are tuples of plain numbers (task and device indices), so
        that the garbage collector can untrack them."""
        self._seq += 1
        heapq.heappush(self._events, (time, self._seq, kind, payload, extra))

    def _schedule_failure(self, dev: Device) -> None:
        mtbf = dev.type.mtbf_s
        if math.isfinite(mtbf):
            self._push(self.now + self.rng_fail.exponential(mtbf), FAIL, dev.index)

    def next_event_time(self) -> float:
        """Time of the next pending event (``inf`` if none)."""
        te = self._events[0][0] if self._events else math.inf
        na = self._next_arrival
        return na if na < te else te

    def _advance_clock(self, t: float) -> None:
        """Move time forward to ``t``, integrating the interval statistics."""
        dt = t - self.now
        if dt < 0:
            raise RuntimeError(f"time would go back from {self.now} to {t}")
        if dt > 0:
            st = self.stats
            st.dt += dt
            st.slowdown_area += dt * self._inv_ideal_sum
            if self._up_devices:
                w = self.warmup
                bdt = dt if self.now >= w else (t - w if t > w else 0.0)
                st.busy_area += bdt * self._busy_devices / self._up_devices
            self.now = t

    def _run(self, until: float, decide: bool) -> bool:
        """The event loop: process event instants in time order (at each instant heap events
        first, then arrivals, until nothing is left at it) while the next instant is at most
        ``until``; with ``decide``, also stop as soon as an assignment is possible or the
        episode is done. Returns whether it stopped because the next instant lies beyond
        ``until``.

        The hot path of the simulator: the clock advance (:meth:`_advance_clock`; keep the two
        in step) and the event dispatch are written inline, as a method call per instant costs
        3-4% of a step of a busy cluster (measured in one process, min of 8 runs)."""
        ev = self._events
        c = self.counters
        st = self.stats
        n_jobs = self._n_jobs
        state = self._tstate
        pop = heapq.heappop
        while True:
            now = self.now
            if decide:
                if c.jobs_completed + c.jobs_dropped == n_jobs and c.queued == 0 and c.running == 0:
                    return False  # done
                if now >= until:
                    return False
                if self._idle_up and self.queue_ids and self.has_decision():
                    return False
            t = ev[0][0] if ev else math.inf
            if self._next_arrival < t:
                t = self._next_arrival
            if t > until or t == math.inf:  # nothing more before `until` (or ever)
                return t > until
            if t != now:  # _advance_clock(t)
                dt = t - now
                if dt < 0:
                    raise RuntimeError(f"time would go back from {now} to {t}")
                st.dt += dt
                st.slowdown_area += dt * self._inv_ideal_sum
                if self._up_devices:
                    w = self.warmup
                    bdt = dt if now >= w else (t - w if t > w else 0.0)
                    st.busy_area += bdt * self._busy_devices / self._up_devices
                self.now = t
            while True:  # every event at instant t
                if ev and ev[0][0] <= t:
                    _, _, kind, payload, extra = pop(ev)
                    if kind == EXPIRE:
                        if state[payload] == QUEUED:
                            self._expire(payload)
                    elif kind == FINISH:
                        self._on_finish(payload, extra)
                    elif kind == STEP:
                        self._on_step(payload, extra)
                    elif kind == FAIL:
                        self._on_fail(payload)
                    else:
                        self._on_recover(payload)
                elif self._next_arrival <= t:
                    self._on_arrival(self._next_job)
                else:
                    break

    def process_until(self, t: float) -> None:
        """Process every event with time <= t, then set the clock to t (``t = inf``: run until
        nothing is pending)."""
        self._run(t, decide=False)
        if math.isfinite(t):
            self._advance_clock(t)

    def step_time(self) -> bool:
        """Advance to the next event time (processing all events at that instant), or to the
        horizon if sooner. Returns False if time cannot advance (nothing pending)."""
        t = min(self.next_event_time(), self.horizon)
        if not math.isfinite(t) or t <= self.now and t >= self.horizon:
            return False
        self.process_until(t)
        return True

    def advance_to_next_decision(self) -> None:
        """Advance time until some assignment is possible, the episode ends, or the horizon."""
        horizon = self.horizon
        if self._run(horizon, decide=True) and horizon < math.inf:
            self._advance_clock(horizon)

    # ------------------------------------------------------------------ handlers
    def _on_arrival(self, j: int) -> None:
        self._next_job = j + 1
        self._next_arrival = self._arrivals_l[j + 1] if j + 1 < self._n_jobs else math.inf
        c = self.counters
        c.jobs_arrived += 1
        tid = self._jfirst[j]
        if self._jcount[j] == 1:  # a single request
            if self._kideal[self._tkind_l[tid]] == math.inf:
                self._drop_job(j, "infeasible")
            else:
                self._make_ready(tid)
            return
        stages = self._jcols[1][j]
        kideal, tkind = self._kideal, self._tkind_l
        feasible = True
        for s, st in enumerate(stages):
            feasible &= kideal[tkind[tid + s]] < math.inf
            if st.parents:
                self._tpending[tid + s] = len(st.parents)
                for p in st.parents:
                    children = self._tchildren[tid + p]
                    if children:
                        children.append(tid + s)
                    else:
                        self._tchildren[tid + p] = [tid + s]
        if not feasible:
            self._drop_job(j, "infeasible")
            return
        for i in range(tid, tid + len(stages)):
            if self._tpending[i] == 0:
                self._make_ready(i)
                if self._jdropped[j]:
                    return

    def _make_ready(self, tid: int) -> None:
        now = self.now
        self._tready[tid] = now
        if not self._single:  # (single-task jobs: filled in at reset, the job's arrival time)
            self._ttimes[tid, 0] = now
        c = self.counters
        if c.queued >= self.queue_capacity:
            self._drop_job(self._tjob[tid], "queue_full", first=tid)
            return
        self._tstate[tid] = QUEUED
        self._arrived.append(tid)
        c.arrived += 1
        c.queued += 1
        q = self.queue_ids
        q.append(tid)
        kind = self._tkind_l[tid]
        if not self.warmup or self._ttimes[tid, 0] >= self.warmup:
            self._inv_ideal_sum += self._tprio[tid] / self._kideal[kind]
        if len(q) <= self.K or self._batching:
            self._window_dirty = True
            self.queue_version += 1
        if self._knreq[kind] > 1:
            self._has_gangs = True
        if self.drop_expired:
            deadline = self._tdeadline[tid]
            if deadline <= now:  # a later stage of a job that is already late
                self._drop_job(self._tjob[tid], "expired", first=tid)
            else:
                self._seq += 1
                heapq.heappush(self._events, (deadline, self._seq, EXPIRE, tid, 0))

    def _expire(self, tid: int) -> None:
        """The deadline of queued task ``tid`` passed (``drop_expired``): drop its job. Fast path
        for the common case, a single-task job (the same bookkeeping as :meth:`_drop_job`)."""
        j = self._tjob[tid]
        if self._jdropped[j] or self._jcount[j] != 1:
            self._drop_job(j, "expired", first=tid)
            return
        self._jdropped[j] = True
        c = self.counters
        c.jobs_dropped += 1
        self._drop_task(tid)
        c.dropped_expired += 1

    def _drop_job(self, j: int, reason: str, first: int = -1) -> None:
        """Drop every unfinished task of job ``j``; ``first`` is the task that caused it."""
        if self._jdropped[j]:
            return
        self._jdropped[j] = True
        c = self.counters
        c.jobs_dropped += 1
        state = self._tstate
        lo = self._jfirst[j]
        for tid in range(lo, lo + self._jcount[j]):
            s = state[tid]
            if s == DONE or s == DROPPED:
                continue
            if s == RUNNING:
                continue  # finishes, but the job already failed; counted when it finishes
            self._drop_task(tid)
            attr = _DROP_COUNTER[reason if (tid == first or reason == "infeasible" or first < 0) else "with_job"]
            setattr(c, attr, getattr(c, attr) + 1)

    def _drop_task(self, tid: int) -> None:
        """Drop task ``tid`` now: a queued task leaves the queue; a pending one (or one being
        made ready) arrives as dropped. The caller counts the reason."""
        c = self.counters
        if self._tstate[tid] == QUEUED:
            q = self.queue_ids
            i = q.index(tid)
            del q[i]
            if i < self.K or self._batching:
                self._window_dirty = True
                self.queue_version += 1
            c.queued -= 1
            if not self.warmup or self._ttimes[tid, 0] >= self.warmup:
                self._inv_ideal_sum -= self._tprio[tid] / self._kideal[self._tkind_l[tid]]
        else:
            c.arrived += 1
            self._arrived.append(tid)
            if math.isnan(self._ttimes[tid, 0]):
                self._ttimes[tid, 0] = self.now
        self._tstate[tid] = DROPPED
        self._tfinish[tid] = self.now
        c.dropped += 1
        if not self.warmup or self._ttimes[tid, 0] >= self.warmup:
            self.stats.drops += 1

    def _on_finish(self, tid: int, attempt: int) -> None:
        if self._tstate[tid] != RUNNING or self._trequeues[tid] != attempt:
            return  # stale: the task was requeued after a failure
        devs = self._tdevices[tid]
        if self._batching and self._dev_batch[devs[0]] is not None:  # a member of a batch
            d = devs[0]
            self._dev_left[d] -= 1
            if self._dev_left[d] == 0:  # the last member (all finish at the same instant)
                self._dev_batch[d] = None
                self._release_device(d)
        else:
            for d in devs:
                self._release_device(d)
        self._complete(tid)

    def _complete(self, tid: int) -> None:
        """Running task ``tid`` finished now (its devices already updated): accounting, the
        interval statistics, its job and the stages that wait for it."""
        c = self.counters
        now = self.now
        self._tstate[tid] = DONE
        self._tfinish[tid] = now
        c.running -= 1
        c.completed += 1
        kind = self._tkind_l[tid]
        counted = not self.warmup or self._ttimes[tid, 0] >= self.warmup
        if counted:
            self._inv_ideal_sum -= self._tprio[tid] / self._kideal[kind]
        if counted:
            st = self.stats
            st.completions += 1
            if now > self._tdeadline[tid] + 1e-12:
                st.slo_misses += 1
            st.accuracy_gain += self._tacc[tid] - self._best_acc_l[self._kcap[kind]]
        j = self._tjob[tid]
        self._jremaining[j] -= 1
        if self._jdropped[j]:
            return
        for child in self._tchildren[tid]:
            self._tpending[child] -= 1
            if self._tpending[child] == 0:
                self._make_ready(child)
                if self._jdropped[j]:
                    return
        if self._jremaining[j] == 0:
            self._jfinish[j] = now
            c.jobs_completed += 1

    def _on_step(self, d: int, version: int) -> None:
        raise RuntimeError("an iteration event on a simulator without continuous batching")

    def _release_device(self, d: int) -> None:
        """Device d (up) finished or gave up its task and is idle now."""
        dev = self.devices[d]
        dev.task = None
        dev.busy_until = self.now
        self.dev_idle[d] = True
        self._avail[d] = True
        self._avail_bits |= 1 << d
        self.dev_busy_until[d] = self.now
        self._busy_devices -= 1
        self._idle_by_type[dev.type_index] += 1
        self._idle_up += 1
        self._dev_dirty = True
        self.dev_version += 1

    def _on_fail(self, d: int) -> None:
        dev = self.devices[d]
        if not dev.up:
            return
        c = self.counters
        c.failures += 1
        t = dev.task
        if t is not None:  # requeue the task (every member of its batch); free its other devices
            devs = self._tdevices[t.id]
            for e in devs:  # the time it would still have run was never busy
                other = self.devices[e]
                other.busy_time -= max(0.0, other.busy_until - self.now)
                self._gantt_cut(e)
            members = self._dev_batch[d] or (t.id,)
            self._dev_batch[d] = None
            for e in devs:
                self._release_device(e)
            for tid in members:
                if self._tstate[tid] == RUNNING:
                    self._requeue(tid)
        self._device_down(dev)

    def _requeue(self, tid: int) -> None:
        """Running task ``tid`` lost its device: back to the queue (or dropped with its job)."""
        c = self.counters
        self._trequeues[tid] += 1
        c.requeues += 1
        c.running -= 1
        c.queued += 1
        self._tstate[tid] = QUEUED
        self._tdevices[tid] = ()
        self._tvariant[tid] = -1
        # Back in front of the queue, in ready-time order.
        q, ready = self.queue_ids, self._tready
        key = (ready[tid], tid)
        i = 0
        while i < len(q) and (ready[q[i]], q[i]) < key:
            i += 1
        q.insert(i, tid)
        if i < self.K or self._batching:
            self._window_dirty = True
            self.queue_version += 1
        j = self._tjob[tid]
        if self._jdropped[j]:  # its job already failed while it ran: nothing left to serve
            self._drop_task(tid)
            c.dropped_with_job += 1
        elif self.drop_expired and self._tdeadline[tid] <= self.now:  # its expiry passed while it ran
            self._drop_job(j, "expired", first=tid)

    def _device_down(self, dev: Device) -> None:
        d = dev.index
        dev.up = False
        self._gantt_down.append((d, self.now, math.inf))
        dev.resident.clear()
        dev.memory_used = 0.0
        self.resident[:, d] = False
        self.dev_memory_used[d] = 0.0
        self.dev_up[d] = False
        self.dev_idle[d] = True
        self._avail[d] = False
        self._avail_bits &= ~(1 << d)
        self.dev_busy_until[d] = self.now
        self._up_devices -= 1
        self._idle_by_type[dev.type_index] -= 1
        self._idle_up -= 1
        self._dev_dirty = True
        self.dev_version += 1
        self._push(self.now + self.rng_fail.exponential(dev.type.mttr_s) if dev.type.mttr_s > 0 else self.now,
                   RECOVER, d)

    def _gantt_cut(self, d: int) -> None:
        for i in range(len(self._gantt) - 1, -1, -1):
            g = self._gantt[i]
            if g[0] == d:
                self._gantt[i] = (d, g[1], self.now, g[3], g[4], True, g[6], min(g[7], self.now))
                return

    def _on_recover(self, d: int) -> None:
        dev = self.devices[d]
        dev.up = True
        for i in range(len(self._gantt_down) - 1, -1, -1):
            if self._gantt_down[i][0] == d:
                self._gantt_down[i] = (d, self._gantt_down[i][1], self.now)
                break
        self.dev_up[d] = True
        self._avail[d] = True
        self._avail_bits |= 1 << d
        self._up_devices += 1
        self._idle_by_type[dev.type_index] += 1
        self._idle_up += 1
        self._dev_dirty = True
        self.dev_version += 1
        self._schedule_failure(dev)

    # ================================================================== decisions
    def _refresh_window(self) -> None:
        """Recompute the visible window (if it changed) and the joint mask (K, V, D) (if the
        window or the devices changed)."""
        if self._window_dirty:
            self._window_dirty = False
            self._dev_dirty = True
            self._build_window()
        if self._dev_dirty:
            self._dev_dirty = False
            mask = self.static_mask & self._avail
            if self._has_gangs and self._w_gang:
                idle_of_dev_type = self._idle_by_type[self.cluster.dev_type]  # (D,)
                mask &= (idle_of_dev_type[None, :] >= self.w_nreq[:, None])[:, None, :]
            self.mask = mask

    def _build_window(self) -> None:
        """The window's task ids index the episode's per-task arrays: one gather per array."""
        K = self.K
        ids = self.queue_ids[:K]
        n = len(ids)
        self.w_count = n
        nreq, tkind = self._knreq, self._tkind_l
        self._w_gang = self._has_gangs and any(nreq[tkind[i]] > 1 for i in ids)
        if n < K:
            ids += self._pad_ids[n]
        ida = np.array(ids)
        #: (K,) task ids of the window (padding: the id past the last task).
        self.w_ids = ida
        #: (K,) shape row of each window task (padding: 0, the empty shape).
        self.w_kid = kid = self._tkind[ida]
        #: (K, V, D) assignments valid whenever the device is idle and up.
        self.static_mask = self._kstat[kid].reshape(K, self.cluster.num_slots, self.cluster.num_devices)
        self._wcache: dict[str, np.ndarray] = {}

    def _w_rows(self) -> np.ndarray:
        rows = self._wcache.get("rows")
        if rows is None:
            self._refresh_window()
            rows = self._wcache["rows"] = self._ktab[self.w_kid]
        return rows

    # Arrays of the window, computed on first use after each rebuild (padding rows: zeros, not
    # present, never runs).
    @property
    def w_exec(self) -> np.ndarray:
        """(K, V, D) noise-free execution time, inf where the pair can never run."""
        return self._w_rows()[:, self._E0:self._L0].reshape(self.K, self.cluster.num_slots, -1)

    @property
    def w_load(self) -> np.ndarray:
        """(K, V, D) cold-start time of the slot's variant on each device."""
        return self._w_rows()[:, self._L0:].reshape(self.K, self.cluster.num_slots, -1)

    @property
    def w_times(self) -> np.ndarray:
        """(K, 4) arrival, deadline, priority and SLO (padding rows: 0, 1, 0, 1)."""
        tm = self._wcache.get("times")
        if tm is None:
            self._refresh_window()
            tm = self._wcache["times"] = self._ttimes[self.w_ids]
        return tm

    w_arrival = property(lambda self: self.w_times[:, 0])
    w_deadline = property(lambda self: self.w_times[:, 1])
    w_priority = property(lambda self: self.w_times[:, 2])
    w_slo = property(lambda self: self.w_times[:, 3])
    w_size = property(lambda self: self._w_rows()[:, 0])
    w_size2 = property(lambda self: self._w_rows()[:, 1])
    w_min_acc = property(lambda self: self._w_rows()[:, 2])
    w_caps = property(lambda self: self._w_rows()[:, 3].astype(np.int64))
    w_nreq = property(lambda self: self._w_rows()[:, 4].astype(np.int64))

    @property
    def w_present(self) -> np.ndarray:
        """(K,) the slot holds a task."""
        self._refresh_window()
        return self._present[self.w_count]

    @property
    def w_slot_variant(self) -> np.ndarray:
        """(K, V) global variant index of each slot (0 where none)."""
        return np.maximum(self.cluster.slot_variant[self.w_caps], 0)

    def w_resident_index(self) -> np.ndarray:
        """(K * V * D,) flat index ``variant * D + device`` into ``resident`` of each pair."""
        res = self._wcache.get("res")
        if res is None:
            self._refresh_window()
            res = self._wcache["res"] = self._kres[self.w_kid].ravel()
        return res

    def has_decision(self) -> bool:
        """Some assignment is valid now (the same as ``action_mask().any()``, without building
        the mask: per task shape, a bit set of the devices it can ever use)."""
        if not self.queue_ids or self._idle_up == 0:
            return False
        avail = self._avail_bits
        bits = self._kdevbits
        tkind = self._tkind_l
        for i in self.queue_ids[:self.K]:
            kind = tkind[i]
            b = bits[kind] & avail
            if b:
                n = self._knreq[kind]
                if n == 1:
                    return True
                idle = self._idle_by_type  # a gang needs n idle devices of one type
                for tt, type_bits in enumerate(self._type_bits):
                    if b & type_bits and idle[tt] >= n:
                        return True
        return False

    def action_mask(self) -> np.ndarray:
        """(K, V, D) boolean mask of valid assignments right now."""
        self._refresh_window()
        return self.mask

    # ------------------------------------------------------------------ dynamic batching
    def batch_counts(self) -> np.ndarray:
        """(K, V) int: for each window slot ``k`` and variant slot ``v``, how many queued tasks
        from position ``k`` on (itself included, queue order, the whole queue) have the task's
        capability and could join a batch of ``v`` (:attr:`_kbatch`); 0 where the task itself
        cannot lead a batch (a multi-device task) or the slot is empty. Cached per queue change."""
        self._refresh_window()
        cnt = self._wcache.get("batch")
        if cnt is None:
            K, V = self.K, self.cluster.num_slots
            q = self.queue_ids
            cnt = np.zeros((K, V), dtype=np.int64)
            if q:
                kinds = self._tkind[np.array(q, dtype=np.int64)]
                caps = self._ktab[kinds, 3].astype(np.int64)
                ok = self._kbatch[kinds]  # (Q, V)
                C = self.cluster.num_caps
                per_cap = np.zeros((len(q), C, V), dtype=np.int64)
                per_cap[np.arange(len(q)), caps] = ok
                suffix = np.cumsum(per_cap[::-1], axis=0)[::-1]  # (Q, C, V): from position i on
                n = min(K, len(q))
                cnt[:n] = suffix[np.arange(n), caps[:n]] * ok[:n]
            self._wcache["batch"] = cnt
        return cnt

    def batch_mask(self) -> np.ndarray:
        """(K, V, D, B) exact mask of batch assignments: batch size ``batch_sizes[b]`` led by
        (k, v, d) is valid iff (k, v, d) is (:meth:`action_mask`) and, for a size above 1,
        enough batchable tasks are queued (:meth:`batch_counts`) and the variant's
        ``max_batch`` allows it. ``[..., 0]`` is :meth:`action_mask`."""
        base = self.action_mask()
        if self.B == 1:
            return base[..., None]
        sizes = np.array(self.batch_sizes)
        counts = self.batch_counts()  # (K, V)
        limit = self.cluster.slot_max_batch[self.w_caps]  # (K, V)
        ok = (counts[:, :, None] >= sizes) & (limit[:, :, None] >= sizes)  # (K, V, B)
        ok[:, :, 0] = True
        return base[:, :, :, None] & ok[:, :, None, :]

    def batch_members(self, k: int, v: int, n: int) -> list[int]:
        """Queue positions of the batch of ``n`` led by window slot ``k`` with variant slot
        ``v`` (position ``k`` first): possibly fewer than ``n`` if not enough are queued."""
        q = self.queue_ids
        tkind, kcap, kb = self._tkind_l, self._kcap, self._kbatch
        c = kcap[tkind[q[k]]]
        pos = [k]
        for i in range(k + 1, len(q)):
            if len(pos) >= n:
                break
            kind = tkind[q[i]]
            if kcap[kind] == c and kb[kind, v]:
                pos.append(i)
        return pos

    def estimates(self) -> np.ndarray:
        """(K, V, D) estimated completion time from now of each candidate assignment: wait for
        the device to be free, load the variant if not resident, execute (noise-free). ``inf``
        where the assignment can never be made, and on failed devices (their repair time is
        unknown to a scheduler)."""
        self._refresh_window()
        cold = ~self.resident.ravel().take(self.w_resident_index()).reshape(self.K, self.cluster.num_slots, -1)
        wait = np.where(self.dev_up, np.maximum(self.dev_busy_until - self.now, 0.0), np.inf)
        return self.w_exec + wait + cold * self.w_load

    def check_assignment(self, k: int, v: int, d: int, b: int = 0) -> str | None:
        """None if (window slot k, variant slot v, device d) is valid now, with batch size
        ``batch_sizes[b]``, else a reason key."""
        if k >= self.K or k >= len(self.queue_ids):
            return "no_task"
        kind = self._tkind_l[self.queue_ids[k]]  # the window is the first K queued tasks
        c = self._kcap[kind]
        if self._slot_variant_l[c][v] < 0:
            return "no_variant"
        if not self._slot_runs_l[c][v][d]:
            return "no_profile"
        if self._slot_acc_l[c][v] < self._kminacc[kind]:
            return "accuracy"
        if self._slot_max_size_l[c][v] < self._ksizes[kind]:
            return "too_large"
        if not self.devices[d].up:
            return "down"
        if not (self._avail_bits >> d) & 1:
            return "busy"
        n = self._knreq[kind]
        if n > 1 and self._idle_by_type[self._dev_type_l[d]] < n:
            return "gang"
        if b:
            if not 0 <= b < self.B:
                return "no_batch"
            size = self.batch_sizes[b]
            if self.cluster.slot_max_batch[c, v] < size:
                return "batch_limit"
            if int(self.batch_counts()[k, v]) < size:
                return "batch_short"
        return None

    def assign(self, k: int, v: int, d: int, checked: bool = False, b: int = 0) -> Task:
        """Start window task ``k`` with variant slot ``v`` on device ``d`` (plus, for an n-device
        task, n-1 more idle devices of the same type, same node first); with ``b > 0``, as the
        leader of a batch of ``batch_sizes[b]`` requests (see the class docstring). Raises
        ValueError with the reason if the assignment is invalid. Returns the (leading) task."""
        if not checked:
            reason = self.check_assignment(k, v, d, b)
            if reason is not None:
                what = f", batch size index {b}" if b else ""
                raise ValueError(f"invalid assignment (slot {k}, variant {v}, device {d}{what}): {REASONS[reason]}")
        if b:
            return self._assign_batch(k, v, d, self.batch_sizes[b])
        cl = self.cluster
        tid = self.queue_ids[k]
        kind = self._tkind_l[tid]
        m = self._slot_variant_l[self._kcap[kind]][v]
        devs = [d]
        nreq = self._knreq[kind]
        if nreq > 1:
            dt = self._dev_type_l
            tt = dt[d]
            node = cl.nodes[d]
            avail = self._avail_bits
            others = [e for e in range(cl.num_devices) if e != d and dt[e] == tt and (avail >> e) & 1]
            others.sort(key=lambda e: (cl.nodes[e] != node, e))
            devs += others[: nreq - 1]
        load = 0.0
        for e in devs:
            x = self._make_resident(m, e)
            if x > load:
                load = x
        exec_t = float(self._ktab[kind, self._E0 + v * cl.num_devices + d])
        if self.noise_sigma > 0:
            exec_t *= math.exp(self.noise_sigma * abs(self._normal()))
        start = self.now
        end = start + load + exec_t
        self._tstate[tid] = RUNNING
        self._tstart[tid] = start
        self._tvariant[tid] = m
        self._tdevices[tid] = tuple(devs)
        self._tacc[tid] = self._var_acc_l[m]
        self._tcold[tid] = load > 0
        c = self.counters
        c.queued -= 1
        c.running += 1
        del self.queue_ids[k]
        t = Task(self, tid)
        self._window_dirty = True
        self.queue_version += 1
        devices = self.devices
        for e in devs:
            dev = devices[e]
            dev.task = t
            dev.busy_until = end
            dev.loading_until = start + load
            dev.busy_time += end - start
            self._avail_bits &= ~(1 << e)
            self._gantt.append((e, start, end, m, load > 0, False, tid, start + load))
        if len(devs) == 1:
            self.dev_idle[d] = False
            self._avail[d] = False
            self.dev_busy_until[d] = end
        else:
            self.dev_idle[devs] = False
            self._avail[devs] = False
            self.dev_busy_until[devs] = end
        self._busy_devices += len(devs)
        self._idle_by_type[self._dev_type_l[d]] -= len(devs)
        self._idle_up -= len(devs)
        self._dev_dirty = True
        self.dev_version += 1
        self._seq += 1
        heapq.heappush(self._events, (end, self._seq, FINISH, tid, self._trequeues[tid]))
        return t

    def _assign_batch(self, k: int, v: int, d: int, n: int) -> Task:
        """Start the (checked) batch of ``n`` led by window slot ``k``: one load, one execution
        of the summed sizes, one noise draw; one FINISH event per member, at the same time."""
        cl = self.cluster
        q = self.queue_ids
        pos = self.batch_members(k, v, n)
        ids = [q[i] for i in pos]
        kind = self._tkind_l[ids[0]]
        c = self._kcap[kind]
        m = self._slot_variant_l[c][v]
        load = self._make_resident(m, d)
        kt = self._ktab
        size = size2 = 0.0
        for tid in ids:
            row = self._tkind_l[tid]
            size += kt[row, 0]
            size2 += kt[row, 1]
        exec_t = float(cl.slot_alpha[c, v, d] + cl.slot_beta[c, v, d] * size + cl.slot_gamma[c, v, d] * size2)
        if self.noise_sigma > 0:
            exec_t *= math.exp(self.noise_sigma * abs(self._normal()))
        start = self.now
        end = start + load + exec_t
        acc = self._var_acc_l[m]
        for tid in ids:
            self._tstate[tid] = RUNNING
            self._tstart[tid] = start
            self._tvariant[tid] = m
            self._tdevices[tid] = (d,)
            self._tacc[tid] = acc
            self._tcold[tid] = load > 0
        for i in sorted(pos, reverse=True):
            del q[i]
        c_ = self.counters
        c_.queued -= n
        c_.running += n
        c_.batches += 1
        c_.batched_tasks += n
        self._window_dirty = True
        self.queue_version += 1
        t = Task(self, ids[0])
        dev = self.devices[d]
        dev.task = t
        dev.busy_until = end
        dev.loading_until = start + load
        dev.busy_time += end - start
        self._dev_batch[d] = tuple(ids)
        self._dev_left[d] = n
        self._avail_bits &= ~(1 << d)
        self._gantt.append((d, start, end, m, load > 0, False, ids[0], start + load))
        self.dev_idle[d] = False
        self._avail[d] = False
        self.dev_busy_until[d] = end
        self._busy_devices += 1
        self._idle_by_type[self._dev_type_l[d]] -= 1
        self._idle_up -= 1
        self._dev_dirty = True
        self.dev_version += 1
        for tid in ids:
            self._seq += 1
            heapq.heappush(self._events, (end, self._seq, FINISH, tid, self._trequeues[tid]))
        return t

    def running_batch(self, d: int) -> tuple[int, ...]:
        """Task ids device ``d`` is running (several for a batch; empty when idle)."""
        batch = self._dev_batch[d]
        if batch is not None:
            return batch
        t = self.devices[d].task
        return () if t is None else (t.id,)

    def _normal(self) -> float:
        """Next standard normal of the service-noise stream (drawn in blocks: same sequence)."""
        i = self._noise_i
        if i >= len(self._noise):
            self._noise = self.rng_noise.standard_normal(1024).tolist()
            i = 0
        self._noise_i = i + 1
        return self._noise[i]

    def _make_resident(self, m: int, d: int) -> float:
        """Ensure variant m is resident on idle device d (evicting LRU variants); return the load
        time (0 if already resident)."""
        dev = self.devices[d]
        res = dev.resident
        if m in res:
            res[m] = self.now
            return 0.0
        mem = self._var_memory_l
        need = mem[m]
        cap = self._dev_memory_l[d]
        while dev.memory_used + need > cap + 1e-9:
            victim = min(res, key=lambda x: (res[x], x))
            del res[victim]
            dev.memory_used -= mem[victim]
            self.resident[victim, d] = False
            self.counters.evictions += 1
        res[m] = self.now
        dev.memory_used += need
        self.resident[m, d] = True
        self.dev_version += 1
        self.dev_memory_used[d] = dev.memory_used
        self.counters.cold_starts += 1
        return self._load_time_l[m][d]

    # ================================================================== views
    @property
    def job_specs(self) -> list[JobSpec]:
        """The episode's jobs as the workload generated them (rebuilt from columns: a list)."""
        return list(map(JobSpec._make, zip(*self._jcols)))

    def job_spec(self, j: int) -> JobSpec:
        """The workload's description of job ``j``."""
        return JobSpec._make(col[j] for col in self._jcols)

    @property
    def queue(self) -> list[Task]:
        """The ready tasks in queue order, as views (:attr:`queue_ids` holds their ids)."""
        return [Task(self, i) for i in self.queue_ids]

    @property
    def window(self) -> list[Task]:
        """The visible window: the first K queued tasks, as views."""
        return [Task(self, i) for i in self.queue_ids[:self.K]]

    @property
    def tasks(self) -> list[Task]:
        """Every task that has arrived (became ready, or was dropped), in arrival order."""
        return [Task(self, i) for i in self._arrived]

    @property
    def jobs(self) -> list[Job]:
        """Every job that has arrived, in arrival order (job ids are arrival ranks)."""
        return [Job(self, j) for j in range(self._next_job)]

    def task(self, tid: int) -> Task:
        """View of task ``tid`` (ids follow job order, then stage order)."""
        if not 0 <= tid < len(self._tstate):
            raise IndexError(f"task id {tid} is outside 0..{len(self._tstate) - 1}")
        return Task(self, tid)

    def accounting(self) -> dict[str, int]:
        c = self.counters
        return {"arrived": c.arrived, "completed": c.completed, "dropped": c.dropped,
                "queued": c.queued, "running": c.running}

    def job_accounting(self) -> dict[str, int]:
        c = self.counters
        in_progress = c.jobs_arrived - c.jobs_completed - c.jobs_dropped
        return {"jobs_arrived": c.jobs_arrived, "jobs_completed": c.jobs_completed,
                "jobs_dropped": c.jobs_dropped, "jobs_in_progress": in_progress}

    def utilization_now(self) -> float:
        return self._busy_devices / self._up_devices if self._up_devices else 0.0

    def recent_arrival_rate(self, window: float) -> float:
        """Job arrivals per second over the last ``window`` seconds (amortised O(1) when called
        with the same window as time advances)."""
        times = self._arrivals_l
        n = self._next_job  # jobs arrived so far: times[:n]
        lo = self.now - window
        i = self._rate_ptr if self._rate_window == window else 0
        while i < n and times[i] < lo:
            i += 1
        self._rate_ptr, self._rate_window = i, window
        return (n - i) / window if window > 0 else 0.0
