"""B instances of one scenario stepped at once, with exactly the dynamics of the reference.

Layout: the state of the batch is two arenas, ``F`` (B, LF) float64 and ``I`` (B, LI) int32,
one row per instance, cut into the segments of :mod:`envs.batched.layout` (``self.v`` holds a
named (B, ...) view of each); the scenario's constants are two flat arrays, ``cf`` and ``ci``.
The compiled per-instance dynamics (:mod:`envs.batched.dynamics`) read and write them; this
module owns allocation, episode set-up (reset and autoreset), the random buffers, input checks
and the results (rewards, accounting, metrics).

An episode is set up by the reference simulator itself (:class:`EpisodeCompiler`): its
``reset`` draws the workload from the episode's seed, indexes the tasks and their shapes and
schedules the first failures; the batch copies the resulting tables. So the workload, the task
tables and the random streams are the reference's by construction, and what the compiled code
has to get right is the event loop, the handlers and the encoding, which the exactness tests
check step by step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral

import numpy as np

from envs.batched import dynamics as dyn
from envs.batched import layout
from envs.encoding import ObservationScales, shape_features
from envs.scenarios.loader import Scenario
from envs.sim.metrics import metrics_from_arrays
from envs.sim.simulator import REASONS, Simulator, resident_index, shape_rows
from envs.workloads.base import Workload

BACKENDS = ("cpu",)

#: Output arrays (the observation, the mask) and the float32 shape features, apart from the
#: arenas: name -> (shape, dtype).
_OUTPUTS = {
    "mask": (("B", "A"), np.bool_),
    "otasks": (("B", "K", "F"), np.float32),
    "odev": (("B", "D", "Fd"), np.float32),
    "oest": (("B", "K", "V", "D"), np.float32),
    "oglob": (("B", 5), np.float32),
    "fk": (("B", "S", "F"), np.float32),  # time-independent task features of each shape
}


class Views:
    """Named (B, ...) numpy views of the arenas' segments and the output arrays (for the
    Python side: loading episodes, reading results; the compiled code uses offsets)."""


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
    rng_noise: np.random.Generator | None  # (None where the scenario draws none)
    rng_fail: np.random.Generator | None
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
                             noise_cv=sc.noise_cv, horizon=sc.horizon, failures=sc.failures,
                             warmup=sc.warmup_s)
        self.scales = scales
        self.task_features = task_features
        #: The workload gives its episodes as columns (single-stage requests).
        self._columns = type(sc.workload).generate_columns is not Workload.generate_columns

    def compile(self, seed_seq: np.random.SeedSequence) -> Episode:
        """The episode ``Simulator.reset(seed_seq)`` would start."""
        return self.compile_many([seed_seq])[0]

    def compile_many(self, seed_seqs: list[np.random.SeedSequence]) -> list[Episode]:
        """The episodes of several seeds (the shape tables of column workloads in one pass)."""
        if self._columns:
            return self._compile_columns(seed_seqs)
        return [self._compile_reference(ss) for ss in seed_seqs]

    def _compile_reference(self, seed_seq: np.random.SeedSequence) -> Episode:
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
            tpend, cptr, cidx = self._dag_links(sim._jcols[1], np.array(sim._tjob, dtype=np.int64),
                                                np.array(sim._jfirst, dtype=np.int64), N)
        ktab = sim._ktab[:nk].copy()
        kstat = sim._kstat[:nk].copy()
        return Episode(
            ttimes=sim._ttimes.copy(), tkind=sim._tkind.copy(), tjob=np.array(sim._tjob, dtype=np.int32),
            tpend=tpend, cptr=cptr, cidx=cidx, jarr=np.array(sim._arrivals_l, dtype=float),
            jfirst=np.array(sim._jfirst, dtype=np.int32), jcount=np.array(sim._jcount, dtype=np.int32),
            ktab=ktab, kstat=kstat, kres=sim._kres[:nk].copy(),
            kdev=kstat.reshape(nk, cl.num_slots, cl.num_devices).any(axis=1), kideal=np.array(sim._kideal),
            fk=self._features(ktab), events=sorted(sim._events), seq=sim._seq, single=sim._single,
            **self._rates(sim._last_arrival, J), rng_noise=sim.rng_noise, rng_fail=sim.rng_fail,
            counters=dict(sim.counters.extra))

    @staticmethod
    def _dag_links(job_stages, tjob: np.ndarray, jfirst: np.ndarray, N: int):
        """(pending parents per task, children as CSR: cptr (N + 1), cidx) of the episode's DAG
        jobs, the children of a task in stage order (the order the reference appends them in)."""
        flat = [st for stages in job_stages for st in stages]  # task order
        npar = np.fromiter(map(len, (st.parents for st in flat)), dtype=np.int64, count=N)
        local = np.fromiter((p for st in flat for p in st.parents), dtype=np.int64, count=int(npar.sum()))
        chi = np.repeat(np.arange(N), npar)
        par = jfirst[tjob[chi]] + local
        order = np.lexsort((chi, par))
        cptr = np.zeros(N + 1, dtype=np.int32)
        cptr[1:] = np.cumsum(np.bincount(par, minlength=N))
        return npar.astype(np.int32), cptr, chi[order].astype(np.int32)

    def _compile_columns(self, seed_seqs: list[np.random.SeedSequence]) -> list[Episode]:
        """The same episodes from the workload's columns (single-stage requests): the
        reference's seeding, draws, task table and shape rows (:func:`shape_rows`, once for the
        shapes of all the episodes), without job tuples."""
        sim = self.sim
        cl = sim.cluster
        out: list[Episode | None] = [None] * len(seed_seqs)
        drawn = []
        for e, ss in enumerate(seed_seqs):
            wl_ss, noise_ss, fail_ss = ss.spawn(3)
            c = sim.workload.generate_columns(np.random.default_rng(wl_ss), cl)
            arrival = np.asarray(c.arrival, dtype=float)
            if len(arrival) == 0 or not (np.all(np.isfinite(arrival)) and arrival[0] >= 0
                                         and np.all(np.diff(arrival) >= 0)):
                # The reference's own path, from the same seed, for its checks and error messages.
                again = np.random.SeedSequence(ss.entropy, spawn_key=ss.spawn_key, pool_size=ss.pool_size,
                                               n_children_spawned=ss.n_children_spawned - 3)
                out[e] = self._compile_reference(again)
            else:
                drawn.append((e, c, arrival, noise_ss, fail_ss))
        if not drawn:
            return out
        caps = []
        for _, c, *_ in drawn:
            for name in c.capability:
                k = cl.cap_index.get(name)
                if k is None:
                    raise ValueError(f"job from workload needs capability '{name}' that no variant of the "
                                     f"scenario provides")
                caps.append(k)
        cap = np.array(caps, dtype=np.int64)
        cat = lambda name, dtype: np.concatenate([np.asarray(getattr(c, name), dtype=dtype)  # noqa: E731
                                                  for _, c, *_ in drawn])
        size, size2, min_acc = cat("size", float), cat("size2", float), cat("min_accuracy", float)
        n = cat("devices_required", np.int64)
        exec_t, static, ideal = shape_rows(cl, cap, size, size2, min_acc, n)
        G = len(cap)
        V, D = cl.num_slots, cl.num_devices
        VD = V * D
        # Row 0 of every episode's table: the empty shape of padding window slots, never runs.
        ktab = np.zeros((G + 1, 5 + 2 * VD))
        ktab[0, 4] = 1.0
        ktab[0, 5:5 + VD] = math.inf
        ktab[1:, 0], ktab[1:, 1], ktab[1:, 2], ktab[1:, 3], ktab[1:, 4] = size, size2, min_acc, cap, n
        ktab[1:, 5:5 + VD] = exec_t.reshape(G, -1)
        ktab[1:, 5 + VD:] = cl.slot_load[cap].reshape(G, -1)
        kstat = np.zeros((G + 1, VD), dtype=bool)
        kstat[1:] = static.reshape(G, -1)
        kres = np.zeros((G + 1, VD), dtype=np.int64)
        kres[1:] = resident_index(cl, cap)
        kdev = kstat.reshape(G + 1, V, D).any(axis=1)
        kideal = np.concatenate(([math.inf], ideal))
        fk = self._features(ktab)
        mtbf = [cl.device_types[cl.dev_type[d]].mtbf_s for d in range(D)]
        lo = 1
        for e, c, arrival, noise_ss, fail_ss in drawn:
            J = len(arrival)
            hi = lo + len(c.capability)
            rows = np.concatenate(([0], np.arange(lo, hi)))  # this episode's rows, padding first
            tkind = np.zeros(J + 1, dtype=np.int64)
            tkind[:J] = 1 + (c.group if c.group is not None else np.arange(J))
            slo = np.asarray(c.slo, dtype=float)
            ttimes = np.empty((J + 1, 4))
            ttimes[:J, 0], ttimes[:J, 1], ttimes[:J, 2], ttimes[:J, 3] = arrival, arrival + slo, c.priority, slo
            ttimes[J] = (0.0, 1.0, 0.0, 1.0)
            events, seq, rng_fail = [], 0, None
            if sim.failures_enabled:  # Simulator.reset schedules each device's first failure, in order
                rng_fail = np.random.default_rng(fail_ss)
                for d in range(D):
                    if math.isfinite(mtbf[d]):
                        seq += 1
                        events.append((0.0 + rng_fail.exponential(mtbf[d]), seq, 3, d, 0))
            ids = np.arange(J, dtype=np.int32)
            out[e] = Episode(
                ttimes=ttimes, tkind=tkind, tjob=ids, tpend=np.zeros(J, dtype=np.int32),
                cptr=np.zeros(J + 1, dtype=np.int32), cidx=np.zeros(0, dtype=np.int32), jarr=arrival,
                jfirst=ids, jcount=np.ones(J, dtype=np.int32), ktab=ktab[rows], kstat=kstat[rows], kres=kres[rows],
                kdev=kdev[rows], kideal=kideal[rows], fk=fk[rows], events=sorted(events), seq=seq, single=True,
                **self._rates(float(arrival[-1]), J),
                rng_noise=np.random.default_rng(noise_ss) if sim.noise_sigma > 0 else None, rng_fail=rng_fail,
                counters=dict(c.counters))
            lo = hi
        return out

    def _features(self, ktab: np.ndarray) -> np.ndarray:
        fk = np.zeros((len(ktab), self.task_features), dtype=np.float32)  # row 0 (padding): zeros
        fk[1:] = shape_features(ktab[1:], self.sim.cluster.num_caps, self.task_features, self.scales)
        return fk

    def _rates(self, last_arrival: float, n_jobs: int) -> dict[str, float]:
        """SchedulingEnv.reset's span (of the time feature) and mean arrival rate."""
        h = self.sim.horizon
        return {"span": h if math.isfinite(h) else max(last_arrival, 1e-9),
                "mean_rate": n_jobs / max(last_arrival, 1e-9) if n_jobs else 1.0}


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


class UnsupportedFeature(ValueError):
    """The scenario uses a feature of the reference simulator that the batched one does not
    implement (refused by name, never approximated)."""


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
        if scenario.batch_sizes != (1,):
            raise UnsupportedFeature(
                f"scenario '{scenario.name}': dynamic batching (batching.sizes {list(scenario.batch_sizes)}) is "
                f"not implemented by the batched simulator; run it on the reference simulator (SchedulingEnv / "
                f"gym.make, train.py --vec dummy or subproc, evaluate.py --backend reference)")
        if scenario.continuous is not None:
            raise UnsupportedFeature(
                f"scenario '{scenario.name}': continuous batching (continuous_batching) is not implemented by the "
                f"batched simulator; run it on the reference simulator (SchedulingEnv / gym.make, train.py --vec "
                f"dummy or subproc, evaluate.py --backend reference)")
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
        cf = np.zeros(dyn.NCF)
        cf[[dyn.CF_SIGMA, dyn.CF_HORIZON, dyn.CF_WLAT, dyn.CF_WSLO, dyn.CF_WDROP, dyn.CF_WACC, dyn.CF_WUTIL,
            dyn.CF_PENALTY, dyn.CF_TAU, dyn.CF_RATE_WINDOW, dyn.CF_WARMUP]] = (
            noise_sigma, sc.horizon, w.latency, w.slo, w.drop, w.accuracy, w.utilization, float(invalid_penalty),
            self.scales.tau, self.scales.rate_window, sim.warmup)
        ci = np.zeros(dyn.CO_SLOT_ACC, dtype=np.int64)
        ci[[dyn.CI_K, dyn.CI_V, dyn.CI_D, dyn.CI_M, dyn.CI_T, dyn.CI_QCAP, dyn.CI_DROP_EXPIRED, dyn.CI_FAILURES,
            dyn.CI_PENALIZE, dyn.CI_COL_PRIO, dyn.CI_E0]] = (
            K, V, D, M, T, sc.queue_capacity, sc.drop_expired, sim.failures_enabled,
            invalid_action == "penalize", 3 + C, 5)
        f_tables = [cl.slot_accuracy, cl.slot_max_size, cl.var_accuracy, cl.best_accuracy, cl.load_time,
                    cl.var_memory, cl.dev_memory, mtbf, mttr, 1.0 / cl.dev_memory]
        i_tables = [cl.slot_variant, cl.slot_runs, cl.dev_type, _gang_preference(cl)]
        ci = np.concatenate([ci, np.zeros(dyn.NCI - len(ci), dtype=np.int64)])
        off = dyn.NCF
        for col, t in zip(range(dyn.CO_SLOT_ACC, dyn.CO_INV_MEM + 1), f_tables):
            ci[col], off = off, off + t.size
        off = dyn.NCI
        for col, t in zip(range(dyn.CO_SLOT_VAR, dyn.CO_GANG + 1), i_tables):
            ci[col], off = off, off + t.size
        self.cf = np.concatenate([cf] + [np.asarray(t, dtype=float).ravel() for t in f_tables])
        self.ci = np.concatenate([ci] + [np.asarray(t).astype(np.int64).ravel() for t in i_tables])
        self.dev_static = dev_static
        self.invalid_action = invalid_action
        self._uses_noise, self._uses_failures = noise_sigma > 0, sim.failures_enabled
        self._noise_block = 1024 if self._uses_noise else 1
        self._fail_block = max(64, 8 * D) if self._uses_failures else 1
        self._dims = {"B": B, "NSF": dyn.NSF, "NSI": dyn.NSI, "D": D, "MD": M * D, "T": T, "K": K, "V": V,
                      "VD": V * D, "KT": 5 + 2 * V * D, "F": self.task_features, "Fd": self.device_features,
                      "A": self.n_actions, "NB": self._noise_block, "FB": self._fail_block,
                      "N": 0, "N1": 1, "J": 0, "S": 0, "NC": 0, "H": 0, "Q": 0}
        self.F: np.ndarray | None = None  # (B, LF) float64 arena
        self.I: np.ndarray | None = None  # (B, LI) int32 arena
        self.L = np.zeros(layout.NL, dtype=np.int64)
        self.v = Views()
        self._roots: list[np.random.SeedSequence | None] = [None] * B
        self._rng_noise: list = [None] * B
        self._rng_fail: list = [None] * B
        self._counters: list[dict] = [{}] * B
        #: Some episode's workload reported counters (e.g. a trace's skipped rows).
        self.has_workload_counters = False
        self._all = np.arange(B, dtype=np.int64)
        self._noise_low = self._uses_noise  # some instance may have no service-noise draw left
        self._reason = np.zeros(B, dtype=np.int64)

    # ------------------------------------------------------------------ state
    def _allocate(self, need: dict[str, int]) -> None:
        """(Re)allocate the arenas for at least ``need`` tasks, jobs, shapes and edges, keeping
        the instances already there (segment by segment)."""
        dims = self._dims
        grow = {k: v for k, v in need.items() if v > dims[k]}
        if self.F is not None and not grow:
            return
        new = dict(dims)
        for k, v in grow.items():
            new[k] = max(v, int(dims[k] * 1.25) + 1) if self.F is not None else v
        new["N1"] = new["N"] + 1
        new["Q"] = min(self.scenario.queue_capacity, new["N"]) + self.D + 1  # requeues may overfill
        new["H"] = new["N"] + 4 * self.D + 8  # expiries (live and stale), finishes, failures
        B = self.num_envs
        old_views = self.v if self.F is not None else None
        fsegs = layout.segment_sizes(layout.F_SEGMENTS, new)
        isegs = layout.segment_sizes(layout.I_SEGMENTS, new)
        LF = fsegs[-1][2] + int(np.prod(fsegs[-1][1]))
        LI = isegs[-1][2] + int(np.prod(isegs[-1][1]))
        fa = np.zeros((B, LF), dtype=np.float64)
        ia = np.zeros((B, LI), dtype=np.int32)
        L = np.zeros(layout.NL, dtype=np.int64)
        for j, name in enumerate(layout.DIMS):
            L[layout.LD_N + j] = new[name]
        v = Views()
        for base, arena, segs in ((layout.LF_SF, fa, fsegs), (layout.LI_SI, ia, isegs)):
            for j, (name, shp, off) in enumerate(segs):
                L[base + j] = off
                size = int(np.prod(shp))
                setattr(v, name, arena[:, off:off + size].reshape((B,) + shp))
        for name, (shape, dtype) in _OUTPUTS.items():
            setattr(v, name, np.zeros(tuple(new[x] if isinstance(x, str) else x for x in shape), dtype=dtype))
        if old_views is not None:
            for name in [n for n, _ in layout.F_SEGMENTS + layout.I_SEGMENTS] + list(_OUTPUTS):
                old = getattr(old_views, name)
                getattr(v, name)[tuple(slice(0, n) for n in old.shape)] = old
        self._dims, self.F, self.I, self.L, self.v = new, fa, ia, L, v

    def _load(self, b: int, ep: Episode) -> None:
        """Write episode ``ep`` into instance b (its phase: PH_RESET, run by the next kernel
        call to its first decision)."""
        S = self.v
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
        S.jdrop[b, :J] = 0
        S.jfin[b, :J] = np.nan
        S.ktab[b, :nk] = ep.ktab
        S.kstat[b, :nk] = ep.kstat
        S.kres[b, :nk] = ep.kres
        S.kdev[b, :nk] = ep.kdev
        S.kideal[b, :nk] = ep.kideal
        S.fk[b, :nk] = ep.fk
        S.dup[b] = 1
        S.didle[b] = 1
        S.dtask[b] = -1
        S.dbusy[b] = 0.0
        S.dmem[b] = 0.0
        S.dbtime[b] = 0.0
        S.resident[b] = 0
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
        if ep.counters:
            self.has_workload_counters = True
        si[dyn.NOISE_POS] = si[dyn.NOISE_LEN] = si[dyn.FAIL_POS] = si[dyn.FAIL_LEN] = 0
        self._refill(np.array([b]))

    def _refill(self, idx: np.ndarray) -> None:
        """Top up the random buffers of instances ``idx``: unconsumed draws move to the front
        and the streams continue where they stopped (the same sequence as the reference's)."""
        S = self.v
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

    def set_seed_state(self, roots: list[int], episodes: list[int]) -> None:
        """Make the next ``reset()`` (without seeds) start, in instance i, episode
        ``episodes[i]`` of root seed ``roots[i]`` (as ``SchedulingEnv.set_seed_state``)."""
        B = self.num_envs
        if len(roots) != B or len(episodes) != B:
            raise ValueError(f"got {len(roots)} roots and {len(episodes)} episode counts for {B} instances")
        out = []
        for i, (r, k) in enumerate(zip(roots, episodes)):
            for name, x in (("root seed", r), ("episode", k)):
                if isinstance(x, bool) or not isinstance(x, Integral) or x < 0:
                    raise ValueError(f"instance {i}: {name} must be a non-negative int, got {x!r}")
            out.append(np.random.SeedSequence(int(r), n_children_spawned=int(k)))
        self._roots = out

    def reset(self, seed: int | list[int] | None = None) -> None:
        """Start a new episode in every instance (new root seeds if ``seed`` is given or none
        were set) and run each to its first decision."""
        if seed is not None or any(r is None for r in self._roots):
            self.seed(seed)
        self._start(self._all)

    def reset_done(self) -> np.ndarray:
        """Start the next episode in the instances whose episode ended; returns their indices."""
        idx = np.flatnonzero(self.v.si[:, dyn.EP_DONE]).astype(np.int64)
        if len(idx):
            self._start(idx)
        return idx

    def _start(self, idx: np.ndarray) -> None:
        eps = self.compiler.compile_many([self._roots[b].spawn(1)[0] for b in idx.tolist()])
        need: dict[str, int] = {}
        for ep in eps:
            for k, v in ep.sizes.items():
                need[k] = max(need.get(k, 0), v)
        self._allocate(need)
        for b, ep in zip(idx.tolist(), eps):
            self._load(b, ep)
        self._run_kernel(idx)

    # ------------------------------------------------------------------ stepping
    def check_actions(self, actions, active: np.ndarray | None = None) -> np.ndarray:
        """(B,) int64 actions, checked in the instances ``active`` (default: all): shape,
        range, and validity, as ``SchedulingEnv.step`` checks them (with
        ``invalid_action="penalize"`` only shape and range). Raises ValueError naming the
        instance and the reason; the state is left unchanged."""
        B = self.num_envs
        a = np.asarray(actions)
        if a.ndim == 2 and a.shape[1] == 1:
            a = a[:, 0]
        if a.shape != (B,):
            raise ValueError(f"actions must have shape ({B},): one per instance, got {np.shape(actions)}")
        idx = self._all if active is None else np.asarray(active, dtype=np.int64)
        if a.dtype.kind not in "iu":  # floats (even 3.0), bools, strings: refused, never cast
            b = int(idx[0]) if len(idx) else 0
            raise ValueError(f"instance {b}: action {a[b]} is not an integer: actions must be an integer "
                             f"array, got dtype {a.dtype}")
        a = a.astype(np.int64, copy=False)
        sub = a if active is None else a[idx]
        out = (sub < 0) | (sub >= self.n_actions)
        if out.any():
            b = int(idx[np.argmax(out)])
            raise ValueError(f"instance {b}: action {int(a[b])} is outside Discrete({self.n_actions})")
        ended = (self.v.si[:, dyn.EP_DONE] if active is None else self.v.si[idx, dyn.EP_DONE]) != 0
        if ended.any():
            b = int(idx[np.argmax(ended)])
            raise RuntimeError(f"instance {b}: step() called after its episode ended: reset it first "
                               f"(reset_done())")
        if self.invalid_action == "raise":
            dyn.check_actions(self.F, self.I, self.L, self.cf, self.ci, a, idx, self._reason)
            bad = (self._reason if active is None else self._reason[idx]) != dyn.VALID
            if bad.any():
                b = int(idx[np.argmax(bad)])
                k, rest = divmod(int(a[b]), self.V * self.D)
                v, d = divmod(rest, self.D)
                raise ValueError(f"instance {b}: invalid action {int(a[b])}: queue slot {k}, variant slot {v}, "
                                 f"device {d}: {REASONS[dyn.REASON_KEYS[self._reason[b]]]}")
        return a

    def step(self, actions, active: np.ndarray | None = None) -> None:
        """Apply one action per instance and run each to its next decision; with ``active``
        (instance indices), only those instances step (the others' actions are ignored and
        their state is unchanged). Every stepped instance must be in a running episode.
        Results: :attr:`rewards`, :attr:`terminated`, :attr:`truncated`, the observation."""
        self._started()
        a = self.check_actions(actions, active)
        idx = self._all if active is None else np.asarray(active, dtype=np.int64)
        self.v.si[idx, dyn.ACTION] = a[idx]
        self._run_kernel(idx)

    def _run_kernel(self, idx: np.ndarray) -> None:
        S, si = self.v, self.v.si
        if self._noise_low:  # an assignment takes one service-noise draw: top up where none is left
            low = idx[si[idx, dyn.NOISE_POS] >= si[idx, dyn.NOISE_LEN]]
            if len(low):
                self._refill(low)
        while True:
            need, errors, low = dyn.step_batch(self.F, self.I, self.L, self.cf, self.ci, S.fk, self.dev_static,
                                               S.mask, S.otasks, S.oest, S.odev, S.oglob, idx)
            if errors:
                status = si[idx, dyn.STATUS]
                b = int(idx[np.argmax(status > dyn.NEED_DRAWS)])
                raise RuntimeError(f"instance {b}: batched simulator error code {int(si[b, dyn.STATUS])} "
                                   f"(a bug: please report it with the scenario and seed)")
            self._noise_low = self._uses_noise and low > 0
            if not need:
                return
            idx = idx[si[idx, dyn.STATUS] == dyn.NEED_DRAWS]
            self._refill(idx)

    # ------------------------------------------------------------------ results
    @property
    def rewards(self) -> np.ndarray:
        return self.v.sf[:, dyn.REWARD].copy()

    @property
    def terminated(self) -> np.ndarray:
        return self.v.si[:, dyn.TERM] != 0

    @property
    def truncated(self) -> np.ndarray:
        return self.v.si[:, dyn.TRUNC] != 0

    @property
    def done(self) -> np.ndarray:
        """(B,) the workload is exhausted and the system empty (``Simulator.done``)."""
        si = self.v.si
        return ((si[:, dyn.C_JCOMPLETED] + si[:, dyn.C_JDROPPED] == si[:, dyn.N_JOBS])
                & (si[:, dyn.C_QUEUED] == 0) & (si[:, dyn.C_RUNNING] == 0))

    @property
    def now(self) -> np.ndarray:
        return self.v.sf[:, dyn.NOW].copy()

    def action_masks(self) -> np.ndarray:
        """(B, K*V*D + 1) exact masks of the current decisions (a copy)."""
        self._started()
        return self.v.mask.copy()

    def _started(self) -> None:
        if self.F is None:
            raise RuntimeError("the batched simulator has no episode yet: call reset() first")

    def observations(self) -> dict[str, np.ndarray]:
        """The observation of every instance, as ``SchedulingEnv`` lays it out (copies)."""
        self._started()
        S = self.v
        return {"tasks": S.otasks.copy(), "devices": S.odev.copy(), "estimates": S.oest.copy(),
                "global": S.oglob.copy()}

    def reward_terms(self) -> dict[str, np.ndarray]:
        sf = self.v.sf
        return {name: sf[:, col].copy() for name, col in (
            ("latency", dyn.R_LAT), ("slo", dyn.R_SLO), ("drop", dyn.R_DROP), ("accuracy", dyn.R_ACC),
            ("utilization", dyn.R_UTIL), ("invalid", dyn.R_INV))}

    def accounting(self) -> dict[str, np.ndarray]:
        """The keys of ``info["accounting"]`` of ``SchedulingEnv``, one (B,) array each."""
        si = self.v.si
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
        S = self.v
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
            busy, S.dmem[b].copy(), S.jfin[b, :nj], S.jdrop[b, :nj].astype(bool), S.jfirst[b, :nj].astype(np.int64),
            S.jarr[b, :nj], warmup=self.compiler.sim.warmup)

    def state_bytes_per_instance(self) -> int:
        """Bytes of batch state per instance (every array, outputs and scratch included)."""
        arrays = [self.F, self.I] + [getattr(self.v, name) for name in _OUTPUTS]
        return sum(a.nbytes for a in arrays) // self.num_envs
