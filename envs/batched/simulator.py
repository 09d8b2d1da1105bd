"""B instances of one scenario stepped at once, with exactly the dynamics of the reference.

Layout: the state of the batch is one :class:`State`, a namedtuple of arrays whose first axis
is the instance (shapes written beside each field); the scenario's constants are one
:class:`Consts`. The compiled per-instance dynamics (:mod:`envs.batched.dynamics`) read and
write them; this module owns allocation, episode set-up (reset and autoreset), the random
buffers, input checks and the results (rewards, accounting, metrics).

An episode is set up by the reference simulator itself (:class:`EpisodeCompiler`): its
``reset`` draws the workload from the episode's seed, indexes the tasks and their shapes and
schedules the first failures; the batch copies the resulting tables. So the workload, the task
tables and the random streams are the reference's by construction, and what the compiled code
has to get right is the event loop, the handlers and the encoding, which the exactness tests
check step by step.
"""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from envs.batched import dynamics as dyn
from envs.encoding import ObservationScales, shape_features
from envs.scenarios.loader import Scenario
from envs.sim.metrics import metrics_from_arrays
from envs.sim.simulator import REASONS, Simulator

BACKENDS = ("cpu",)

#: Fields of the batch state: name -> (shape in terms of the capacities, dtype, fill at reset).
#: B instances; N tasks (N1 = N + 1 with the padding row), J jobs, S task shapes, NC DAG
#: edges, H heap entries, Q queue slots; K, V, D, M, T from the scenario; F and Fd
#: features per task and per device; A = K*V*D + 1 actions; NB, FB random-buffer lengths.
_FIELDS = {
    "sf": (("B", "NSF"), np.float64),        # float scalars (dynamics.NOW, ...)
    "si": (("B", "NSI"), np.int64),          # int scalars and counters (dynamics.C_ARRIVED, ...)
    "dup": (("B", "D"), np.bool_),           # device up
    "didle": (("B", "D"), np.bool_),         # device has no task (failed devices count as idle)
    "dtask": (("B", "D"), np.int64),         # task running on the device, -1 if none
    "dbusy": (("B", "D"), np.float64),       # busy until (== the time it last became idle)
    "dmem": (("B", "D"), np.float64),        # memory used by resident variants (GB)
    "dbtime": (("B", "D"), np.float64),      # accumulated busy seconds
    "resident": (("B", "MD"), np.bool_),     # variant m resident on device d, at m * D + d
    "lastuse": (("B", "MD"), np.float64),    # last use of a resident variant (LRU)
    "idle_type": (("B", "T"), np.int64),     # idle, up devices per type
    "gdev": (("B", "D"), np.int64),          # scratch: devices of a gang assignment
    "ttimes": (("B", "N1", 4), np.float64),  # arrival, deadline, priority, SLO per task
    "tkind": (("B", "N1"), np.int64),        # shape row per task (padding row: 0)
    "tstate": (("B", "N"), np.int8),         # PENDING, QUEUED, RUNNING, DONE, DROPPED
    "tjob": (("B", "N"), np.int32),          # job of each task
    "tpend": (("B", "N"), np.int32),         # unfinished parent stages
    "treq": (("B", "N"), np.int32),          # requeues (the attempt number of FINISH events)
    "tready": (("B", "N"), np.float64),      # time the task became ready
    "tfin": (("B", "N"), np.float64),        # completion or drop time
    "tacc": (("B", "N"), np.float64),        # accuracy of the serving variant
    "tvar": (("B", "N"), np.int32),          # serving variant (-1: none)
    "cptr": (("B", "N1"), np.int32),         # children of task t: cidx[cptr[t]:cptr[t + 1]]
    "cidx": (("B", "NC"), np.int32),
    "jarr": (("B", "J"), np.float64),        # job arrival
    "jfirst": (("B", "J"), np.int32),        # first task id of each job
    "jcount": (("B", "J"), np.int32),        # tasks (stages) of each job
    "jrem": (("B", "J"), np.int32),          # tasks not finished yet
    "jdrop": (("B", "J"), np.bool_),         # some task was dropped (the job failed)
    "jfin": (("B", "J"), np.float64),        # time the last task finished
    "queue": (("B", "Q"), np.int32),         # ready task ids in queue order
    "arrived": (("B", "N"), np.int32),       # task ids in arrival order
    "ht": (("B", "H"), np.float64),          # event heap: time,
    "hseq": (("B", "H"), np.int64),          # sequence number,
    "hkind": (("B", "H"), np.int8),          # kind, payload (task or device), extra (attempt)
    "hpay": (("B", "H"), np.int32),
    "hext": (("B", "H"), np.int32),
    "ktab": (("B", "S", "KT"), np.float64),  # per shape: size, size2, min acc, cap, n | exec | load
    "kstat": (("B", "S", "VD"), np.bool_),   # the pair can ever serve the shape
    "kres": (("B", "S", "VD"), np.int64),    # index into resident of each pair
    "kdev": (("B", "S", "D"), np.bool_),     # some variant slot can serve the shape on the device
    "kideal": (("B", "S"), np.float64),      # ideal service time of the shape
    "fk": (("B", "S", "F"), np.float32),     # time-independent task features of the shape
    "noise": (("B", "NB"), np.float64),      # service-noise normals, consumed in order
    "fexp": (("B", "FB"), np.float64),       # failure-stream standard exponentials
    "mask": (("B", "A"), np.bool_),          # outputs: action mask,
    "otasks": (("B", "K", "F"), np.float32),  # observation "tasks",
    "odev": (("B", "D", "Fd"), np.float32),   # "devices",
    "oest": (("B", "K", "V", "D"), np.float32),  # "estimates",
    "oglob": (("B", 5), np.float32),          # "global"
    "ids": (("B", "K"), np.int64),           # scratch: window task ids
    "free_at": (("B", "D"), np.float64),     # scratch of the encoding
    "avail": (("B", "D"), np.bool_),
}
State = namedtuple("State", list(_FIELDS))
Consts = namedtuple("Consts", ["cf", "ci", "slot_variant", "slot_runs", "slot_acc", "slot_max_size", "var_acc",
                               "best_acc", "load_time", "var_mem", "dev_mem", "dev_type", "gang_pref", "mtbf",
                               "mttr", "inv_mem", "dev_static"])


@dataclass
class Episode:
    """What one instance needs to start an episode (built by :class:`EpisodeCompiler`)."""

    ttimes: np.ndarray   # (N + 1, 4)
    tkind: np.ndarray    # (N + 1,)
    tjob: np.ndarray     # (N,)
    tpend: np.ndarray    # (N,)
    cptr: np.ndarray     # (N + 1,)
    cidx: np.ndarray     # (edges,)
    jarr: np.ndarray     # (J,)
    jfirst: np.ndarray   # (J,)
    jcount: np.ndarray   # (J,)
    ktab: np.ndarray     # (S, 5 + 2VD)
    kstat: np.ndarray    # (S, VD)
    kres: np.ndarray     # (S, VD)
    kdev: np.ndarray     # (S, D)
    kideal: np.ndarray   # (S,)
    fk: np.ndarray       # (S, F)
    events: list         # initial heap events (failures): (time, seq, kind, payload, extra)
    seq: int
    single: bool
    span: float
    mean_rate: float
    rng_noise: np.random.Generator
    rng_fail: np.random.Generator
    counters: dict

    @property
    def sizes(self) -> dict[str, int]:
        return {"N": len(self.tjob), "J": len(self.jarr), "S": len(self.ktab), "NC": len(self.cidx)}


class EpisodeCompiler:
    """Sets up episodes with the reference simulator: ``compile(seed_seq)`` is
    ``Simulator.reset(seed_seq)`` followed by a copy of the tables it built (the shape table
    is emptied first, so that it holds this episode's shapes only)."""

    def __init__(self, scenario: Scenario, scales: ObservationScales, task_features: int):
        sc = scenario
        self.sim = Simulator(sc.cluster, sc.workload, visible_tasks=sc.visible_tasks,
                             queue_capacity=sc.queue_capacity, drop_expired=sc.drop_expired,
                             noise_cv=sc.noise_cv, horizon=sc.horizon, failures=sc.failures)
        self.scales = scales
        self.task_features = task_features

    def compile(self, seed_seq: np.random.SeedSequence) -> Episode:
        sim = self.sim
        cl = sim.cluster
        if hasattr(sim, "_kinds"):
            sim._clear_kinds()
        sim.reset(seed_seq)
        nk = sim._nk
        N = len(sim._tstate)
        J = sim._n_jobs
        tpend = np.zeros(N, dtype=np.int32)
        cptr = np.zeros(N + 1, dtype=np.int32)
        cidx = np.zeros(0, dtype=np.int32)
        if not sim._single:
            children: list[list[int]] = [[] for _ in range(N)]
            for j, stages in enumerate(sim._jcols[1]):
                base = sim._jfirst[j]
                for s, st in enumerate(stages):
                    tpend[base + s] = len(st.parents)
                    for p in st.parents:
                        children[base + p].append(base + s)
            counts = np.array([len(c) for c in children], dtype=np.int32)
            cptr[1:] = np.cumsum(counts)
            cidx = np.array([c for lst in children for c in lst], dtype=np.int32)
        ktab = sim._ktab[:nk].copy()
        kstat = sim._kstat[:nk].copy()
        fk = np.zeros((nk, self.task_features), dtype=np.float32)
        fk[1:] = shape_features(ktab[1:], cl.num_caps, self.task_features, self.scales)
        last = sim._last_arrival
        return Episode(
            ttimes=sim._ttimes.copy(), tkind=sim._tkind.copy(), tjob=np.array(sim._tjob, dtype=np.int32),
            tpend=tpend, cptr=cptr, cidx=cidx, jarr=np.array(sim._arrivals_l, dtype=float),
            jfirst=np.array(sim._jfirst, dtype=np.int32), jcount=np.array(sim._jcount, dtype=np.int32),
            ktab=ktab, kstat=kstat, kres=sim._kres[:nk].copy(),
            kdev=kstat.reshape(nk, cl.num_slots, cl.num_devices).any(axis=1), kideal=np.array(sim._kideal),
            fk=fk, events=sorted(sim._events), seq=sim._seq, single=sim._single,
            span=sim.horizon if math.isfinite(sim.horizon) else max(last, 1e-9),
            mean_rate=J / max(last, 1e-9) if J else 1.0,
            rng_noise=sim.rng_noise, rng_fail=sim.rng_fail, counters=dict(sim.counters.extra))


def _gang_preference(cl) -> np.ndarray:
    """(D, D - 1) for each device, the other devices of its type in the order a multi-device
    assignment takes them (same node first, then by index); -1 pads."""
    D = cl.num_devices
    pref = np.full((D, max(D - 1, 1)), -1, dtype=np.int64)
    for d in range(D):
        others = [e for e in range(D) if e != d and cl.dev_type[e] == cl.dev_type[d]]
        others.sort(key=lambda e: (cl.nodes[e] != cl.nodes[d], e))
        pref[d, :len(others)] = others
    return pref


class BatchedSimulator:
    """``num_envs`` instances of one scenario, each stepped as ``SchedulingEnv`` would step it.

    Instance i seeded with ``seed`` behaves as ``SchedulingEnv.reset(seed=seed + i)`` followed
    by the same actions; an instance whose episode ended is set up again by :meth:`reset_done`
    (the next episode of its root seed, as ``SchedulingEnv.reset()`` without a seed).

    Args:
        scenario: a loaded :class:`Scenario`.
        num_envs: B, instances (>= 1).
        backend: ``"cpu"``: compiled per-instance event loops run in parallel on the cores.
        invalid_action: ``"raise"`` (default) or ``"penalize"``, as in ``SchedulingEnv``.
        invalid_penalty: reward of a penalized invalid action is ``-invalid_penalty``.
    """

    def __init__(self, scenario: Scenario, num_envs: int, *, backend: str = "cpu",
                 invalid_action: str = "raise", invalid_penalty: float = 1.0):
        if isinstance(num_envs, bool) or not isinstance(num_envs, Integral) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: this batched simulator has {list(BACKENDS)}")
        if invalid_action not in ("raise", "penalize"):
            raise ValueError(f"invalid_action must be 'raise' or 'penalize', got {invalid_action!r}")
        self.scenario = sc = scenario
        self.backend = backend
        self.num_envs = B = int(num_envs)
        cl = sc.cluster
        self.cluster = cl
        self.K, self.V, self.D = K, V, D = sc.visible_tasks, cl.num_slots, cl.num_devices
        self.M, self.T, self.C = M, T, C = cl.num_variants, cl.num_types, cl.num_caps
        self.n_actions = K * V * D + 1
        self.task_features = 1 + C + 7
        self.device_features = T + 4 + M
        self.scales = ObservationScales.of(sc)
        self.compiler = EpisodeCompiler(sc, self.scales, self.task_features)
        sim = self.compiler.sim
        noise_sigma = sim.noise_sigma
        dev_static = np.zeros((D, self.device_features), dtype=np.float32)
        dev_static[:, :T] = np.eye(T, dtype=np.float32)[cl.dev_type]
        mtbf = np.array([cl.device_types[t].mtbf_s for t in cl.dev_type], dtype=float)
        mttr = np.array([cl.device_types[t].mttr_s for t in cl.dev_type], dtype=float)
        w = sc.reward
        cf = np.zeros(10)
        cf[[dyn.CF_SIGMA, dyn.CF_HORIZON, dyn.CF_WLAT, dyn.CF_WSLO, dyn.CF_WDROP, dyn.CF_WACC, dyn.CF_WUTIL,
            dyn.CF_PENALTY, dyn.CF_TAU, dyn.CF_RATE_WINDOW]] = (
            noise_sigma, sc.horizon, w.latency, w.slo, w.drop, w.accuracy, w.utilization, float(invalid_penalty),
            self.scales.tau, self.scales.rate_window)
        ci = np.zeros(11, dtype=np.int64)
        ci[[dyn.CI_K, dyn.CI_V, dyn.CI_D, dyn.CI_M, dyn.CI_T, dyn.CI_QCAP, dyn.CI_DROP_EXPIRED, dyn.CI_FAILURES,
            dyn.CI_PENALIZE, dyn.CI_COL_PRIO, dyn.CI_E0]] = (
            K, V, D, M, T, sc.queue_capacity, sc.drop_expired, sim.failures_enabled,
            invalid_action == "penalize", 3 + C, 5)
        self.consts = Consts(
            cf=cf, ci=ci, slot_variant=cl.slot_variant.astype(np.int64), slot_runs=cl.slot_runs.copy(),
            slot_acc=cl.slot_accuracy.astype(float), slot_max_size=cl.slot_max_size.astype(float),
            var_acc=cl.var_accuracy.astype(float), best_acc=cl.best_accuracy.astype(float),
            load_time=cl.load_time.astype(float), var_mem=cl.var_memory.astype(float),
            dev_mem=cl.dev_memory.astype(float), dev_type=cl.dev_type.astype(np.int64),
            gang_pref=_gang_preference(cl), mtbf=mtbf, mttr=mttr, inv_mem=1.0 / cl.dev_memory,
            dev_static=dev_static)
        self.invalid_action = invalid_action
        self._uses_noise, self._uses_failures = noise_sigma > 0, sim.failures_enabled
        self._noise_block = 1024 if self._uses_noise else 1
        self._fail_block = max(64, 8 * D) if self._uses_failures else 1
        self._dims = {"B": B, "NSF": dyn.NSF, "NSI": dyn.NSI, "D": D, "MD": M * D, "T": T, "K": K, "V": V,
                      "VD": V * D, "KT": 5 + 2 * V * D, "F": self.task_features, "Fd": self.device_features,
                      "A": self.n_actions, "NB": self._noise_block, "FB": self._fail_block,
                      "N": 0, "N1": 1, "J": 0, "S": 0, "NC": 0, "H": 0, "Q": 0}
        self.state: State | None = None
        self._roots: list[np.random.SeedSequence | None] = [None] * B
        self._rng_noise: list = [None] * B
        self._rng_fail: list = [None] * B
        self._counters: list[dict] = [{}] * B
        self._all = np.arange(B, dtype=np.int64)
        self._reason = np.zeros(B, dtype=np.int64)

    # ------------------------------------------------------------------ state
    def _allocate(self, need: dict[str, int]) -> None:
        """(Re)allocate the state for at least ``need`` tasks, jobs, shapes and edges, keeping
        the instances already there."""
        dims = self._dims
        grow = {k: v for k, v in need.items() if v > dims[k]}
        if self.state is not None and not grow:
            return
        new = dict(dims)
        for k, v in grow.items():
            new[k] = max(v, int(dims[k] * 1.25) + 1) if self.state is not None else v
        new["N1"] = new["N"] + 1
        qcap = self.scenario.queue_capacity
        new["Q"] = min(qcap, new["N"]) + self.D + 1  # requeues after failures may overfill
        new["H"] = new["N"] + 4 * self.D + 8  # expiries (live and stale), finishes, failures
        arrays = {}
        for name, (shape, dtype) in _FIELDS.items():
            shp = tuple(new[s] if isinstance(s, str) else s for s in shape)
            a = np.zeros(shp, dtype=dtype)
            if self.state is not None:
                old = getattr(self.state, name)
                a[tuple(slice(0, n) for n in old.shape)] = old
            arrays[name] = a
        self._dims = new
        self.state = State(**arrays)

    def _load(self, b: int, ep: Episode) -> None:
        """Write episode ``ep`` into instance b (its phase: PH_RESET, run by the next kernel
        call to its first decision)."""
        S = self.state
        n, J, nk, ne = len(ep.tjob), len(ep.jarr), len(ep.ktab), len(ep.cidx)
        S.ttimes[b, :n + 1] = ep.ttimes
        S.tkind[b, :n + 1] = ep.tkind
        S.tstate[b, :n] = dyn.PENDING
        S.tjob[b, :n] = ep.tjob
        S.tpend[b, :n] = ep.tpend
        S.treq[b, :n] = 0
        S.tready[b, :n] = np.nan
        S.tfin[b, :n] = np.nan
        S.tacc[b, :n] = np.nan
        S.tvar[b, :n] = -1
        S.cptr[b, :n + 1] = ep.cptr
        S.cidx[b, :ne] = ep.cidx
        S.jarr[b, :J] = ep.jarr
        S.jfirst[b, :J] = ep.jfirst
        S.jcount[b, :J] = ep.jcount
        S.jrem[b, :J] = ep.jcount
        S.jdrop[b, :J] = False
        S.jfin[b, :J] = np.nan
        S.ktab[b, :nk] = ep.ktab
        S.kstat[b, :nk] = ep.kstat
        S.kres[b, :nk] = ep.kres
        S.kdev[b, :nk] = ep.kdev
        S.kideal[b, :nk] = ep.kideal
        S.fk[b, :nk] = ep.fk
        S.dup[b] = True
        S.didle[b] = True
        S.dtask[b] = -1
        S.dbusy[b] = 0.0
        S.dmem[b] = 0.0
        S.dbtime[b] = 0.0
        S.resident[b] = False
        S.lastuse[b] = 0.0
        S.idle_type[b] = self.cluster.type_count
        ev = ep.events
        h = len(ev)
        if h:  # a sorted list is a valid heap
            t, seq, kind, pay, ext = zip(*ev)
            S.ht[b, :h], S.hseq[b, :h], S.hkind[b, :h], S.hpay[b, :h], S.hext[b, :h] = t, seq, kind, pay, ext
        sf, si = S.sf[b], S.si[b]
        sf[:] = 0.0
        si[:] = 0
        sf[dyn.NEXT_ARR] = ep.jarr[0] if J else math.inf
        sf[dyn.SPAN], sf[dyn.MEAN_RATE] = ep.span, ep.mean_rate
        si[dyn.SEQ], si[dyn.HEAP_N] = ep.seq, h
        si[dyn.N_JOBS], si[dyn.N_TASKS], si[dyn.SINGLE] = J, n, ep.single
        si[dyn.UP_DEV] = si[dyn.IDLE_UP] = self.D
        si[dyn.PHASE] = dyn.PH_RESET
        self._rng_noise[b], self._rng_fail[b] = ep.rng_noise, ep.rng_fail
        self._counters[b] = ep.counters
        si[dyn.NOISE_POS] = si[dyn.NOISE_LEN] = si[dyn.FAIL_POS] = si[dyn.FAIL_LEN] = 0
        self._refill(np.array([b]))

    def _refill(self, idx: np.ndarray) -> None:
        """Top up the random buffers of instances ``idx``: unconsumed draws move to the front
        and the streams continue where they stopped (the same sequence as the reference's)."""
        S = self.state
        for b in idx.tolist():
            si = S.si[b]
            for used, buf, pos, ln, rngs, draw in (
                    (self._uses_noise, S.noise, dyn.NOISE_POS, dyn.NOISE_LEN, self._rng_noise, "standard_normal"),
                    (self._uses_failures, S.fexp, dyn.FAIL_POS, dyn.FAIL_LEN, self._rng_fail,
                     "standard_exponential")):
                if not used:
                    continue
                p, n = int(si[pos]), int(si[ln])
                left = n - p
                buf[b, :left] = buf[b, p:n]
                cap = buf.shape[1]
                buf[b, left:] = getattr(rngs[b], draw)(cap - left)
                si[pos], si[ln] = 0, cap

    # ------------------------------------------------------------------ episodes
    def seed(self, seed: int | list[int] | None) -> None:
        """Root seeds: instance i gets ``seed + i`` (or ``seed[i]`` from a list; None: fresh
        entropy), as ``SchedulingEnv.reset(seed=...)`` does for one env."""
        B = self.num_envs
        if seed is None:
            entropy = np.random.SeedSequence().generate_state(1, np.uint64)[0]
            rng = np.random.default_rng(int(entropy))
            seeds = [int(x) for x in rng.integers(2**63, size=B)]
        elif isinstance(seed, Integral) and not isinstance(seed, bool):
            seeds = [int(seed) + i for i in range(B)]
        else:
            seeds = list(seed)
            if len(seeds) != B:
                raise ValueError(f"got {len(seeds)} seeds for {B} instances: give one per instance or one int")
            for i, s in enumerate(seeds):
                if isinstance(s, bool) or not isinstance(s, Integral) or s < 0:
                    raise ValueError(f"seed of instance {i} must be a non-negative int, got {s!r}")
        self._roots = [np.random.SeedSequence(int(s)) for s in seeds]

    def reset(self, seed: int | list[int] | None = None) -> None:
        """Start a new episode in every instance (new root seeds if ``seed`` is given or none
        were set) and run each to its first decision."""
        if seed is not None or any(r is None for r in self._roots):
            self.seed(seed)
        self._start(self._all)

    def reset_done(self) -> np.ndarray:
        """Start the next episode in the instances whose episode ended; returns their indices."""
        idx = np.flatnonzero(self.state.si[:, dyn.EP_DONE]).astype(np.int64)
        if len(idx):
            self._start(idx)
        return idx

    def _start(self, idx: np.ndarray) -> None:
        eps = [self.compiler.compile(self._roots[b].spawn(1)[0]) for b in idx.tolist()]
        need: dict[str, int] = {}
        for ep in eps:
            for k, v in ep.sizes.items():
                need[k] = max(need.get(k, 0), v)
        self._allocate(need)
        for b, ep in zip(idx.tolist(), eps):
            self._load(b, ep)
        self._run_kernel(idx)

    # ------------------------------------------------------------------ stepping
    def check_actions(self, actions) -> np.ndarray:
        """(B,) int64 actions, checked: shape, range, and validity in each instance (as
        ``SchedulingEnv.step`` checks them; with ``invalid_action="penalize"`` only shape and
        range). Raises ValueError naming the instance and the reason."""
        a = np.asarray(actions)
        if a.shape != (self.num_envs,):
            a = a.reshape(-1) if a.size == self.num_envs and a.ndim == 2 else a
            if a.shape != (self.num_envs,):
                raise ValueError(f"actions must have shape ({self.num_envs},), got {np.shape(actions)}")
        if not np.issubdtype(a.dtype, np.integer):
            if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
                bad = int(np.argmax(~np.isfinite(a) | (a != np.round(a))))
                raise ValueError(f"instance {bad}: action {a[bad]!r} is not an integer")
        a = a.astype(np.int64)
        out = (a < 0) | (a >= self.n_actions)
        if out.any():
            b = int(np.argmax(out))
            raise ValueError(f"instance {b}: action {int(a[b])} is outside Discrete({self.n_actions})")
        ended = self.state.si[:, dyn.EP_DONE] != 0
        if ended.any():
            b = int(np.argmax(ended))
            raise RuntimeError(f"instance {b}: step() called after its episode ended: reset it first "
                               f"(reset_done())")
        if self.invalid_action == "raise":
            dyn.check_actions(self.state, self.consts, a, self._reason)
            bad = self._reason != dyn.VALID
            if bad.any():
                b = int(np.argmax(bad))
                k, rest = divmod(int(a[b]), self.V * self.D)
                v, d = divmod(rest, self.D)
                raise ValueError(f"instance {b}: invalid action {int(a[b])}: queue slot {k}, variant slot {v}, "
                                 f"device {d}: {REASONS[dyn.REASON_KEYS[self._reason[b]]]}")
        return a

    def step(self, actions) -> None:
        """Apply one action per instance and run each to its next decision (every instance
        must be in a running episode). Results: :attr:`rewards`, :attr:`terminated`,
        :attr:`truncated` and the observation arrays."""
        a = self.check_actions(actions)
        self.state.si[:, dyn.ACTION] = a
        self._run_kernel(self._all)

    def _run_kernel(self, idx: np.ndarray) -> None:
        S, si = self.state, self.state.si
        if self._uses_noise:  # an assignment takes one service-noise draw
            low = idx[si[idx, dyn.NOISE_POS] >= si[idx, dyn.NOISE_LEN]]
            if len(low):
                self._refill(low)
        while len(idx):
            dyn.step_batch(S, self.consts, idx)
            status = si[idx, dyn.STATUS]
            if np.any(status > dyn.NEED_DRAWS):
                b = int(idx[np.argmax(status > dyn.NEED_DRAWS)])
                raise RuntimeError(f"instance {b}: batched simulator error code {int(si[b, dyn.STATUS])} "
                                   f"(a bug: please report it with the scenario and seed)")
            idx = idx[status == dyn.NEED_DRAWS]
            if len(idx):
                self._refill(idx)

    # ------------------------------------------------------------------ results
    @property
    def rewards(self) -> np.ndarray:
        return self.state.sf[:, dyn.REWARD].copy()

    @property
    def terminated(self) -> np.ndarray:
        return self.state.si[:, dyn.TERM] != 0

    @property
    def truncated(self) -> np.ndarray:
        return self.state.si[:, dyn.TRUNC] != 0

    @property
    def now(self) -> np.ndarray:
        return self.state.sf[:, dyn.NOW].copy()

    def action_masks(self) -> np.ndarray:
        """(B, K*V*D + 1) exact masks of the current decisions (a copy)."""
        return self.state.mask.copy()

    def observations(self) -> dict[str, np.ndarray]:
        """The observation of every instance, as ``SchedulingEnv`` lays it out (copies)."""
        S = self.state
        return {"tasks": S.otasks.copy(), "devices": S.odev.copy(), "estimates": S.oest.copy(),
                "global": S.oglob.copy()}

    def reward_terms(self) -> dict[str, np.ndarray]:
        sf = self.state.sf
        return {name: sf[:, col].copy() for name, col in (
            ("latency", dyn.R_LAT), ("slo", dyn.R_SLO), ("drop", dyn.R_DROP), ("accuracy", dyn.R_ACC),
            ("utilization", dyn.R_UTIL), ("invalid", dyn.R_INV))}

    def accounting(self) -> dict[str, np.ndarray]:
        """The keys of ``info["accounting"]`` of ``SchedulingEnv``, one (B,) array each."""
        si = self.state.si
        out = {name: si[:, col].copy() for name, col in (
            ("arrived", dyn.C_ARRIVED), ("completed", dyn.C_COMPLETED), ("dropped", dyn.C_DROPPED),
            ("queued", dyn.C_QUEUED), ("running", dyn.C_RUNNING), ("jobs_arrived", dyn.C_JARRIVED),
            ("jobs_completed", dyn.C_JCOMPLETED), ("jobs_dropped", dyn.C_JDROPPED))}
        out["jobs_in_progress"] = out["jobs_arrived"] - out["jobs_completed"] - out["jobs_dropped"]
        return out

    def workload_counters(self, b: int) -> dict[str, int]:
        return dict(self._counters[b])

    def episode_metrics(self, b: int) -> dict[str, float]:
        """``info["metrics"]`` of instance b's episode so far (the reference's function)."""
        S = self.state
        si, now = S.si[b], float(S.sf[b, dyn.NOW])
        n, nj = int(si[dyn.N_TASKS]), int(si[dyn.NEXT_JOB])
        nk = S.kideal.shape[1]  # (rows past this episode's shapes are never indexed)
        busy = [bt - max(0.0, bu - now) if task >= 0 else bt
                for bt, bu, task in zip(S.dbtime[b].tolist(), S.dbusy[b].tolist(), S.dtask[b].tolist())]
        return metrics_from_arrays(
            self.cluster, now, S.arrived[b, :si[dyn.N_ARRIVED]].astype(np.int64),
            S.tstate[b, :n].astype(np.int64), S.tfin[b, :n], S.ttimes[b, :n + 1], S.tkind[b, :n + 1],
            S.kideal[b, :nk], S.tacc[b, :n], S.ktab[b, :nk, 3].astype(np.int64),
            {"dropped": int(si[dyn.C_DROPPED]), "cold_starts": int(si[dyn.C_COLD]),
             "requeues": int(si[dyn.C_REQUEUES]), "evictions": int(si[dyn.C_EVICT]),
             "failures": int(si[dyn.C_FAILURES]), "dropped_infeasible": int(si[dyn.C_DINFEASIBLE])},
            busy, S.dmem[b].copy(), S.jfin[b, :nj], S.jdrop[b, :nj], S.jfirst[b, :nj].astype(np.int64),
            S.jarr[b, :nj])

    def state_bytes_per_instance(self) -> int:
        """Bytes of batch state per instance (every array, outputs and scratch included)."""
        return sum(a.nbytes for a in self.state) // self.num_envs
