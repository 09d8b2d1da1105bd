"""Synthetic DL training jobs, Philly-like: each job is one stage of a training job type
(capability such as ``train-resnet50``), ``size`` = iterations, and needs ``devices_required``
devices of one type (data-parallel; the variant's ``scaling_efficiency`` sets the speed-up).

The defaults follow the shape of Microsoft's Philly trace (Jeon et al., ATC'19): most jobs use
one GPU and a few use many (``devices: {1: 0.7, 2: 0.15, 4: 0.1, 8: 0.05}``), and run times are
heavy-tailed (lognormal iterations with a large CV).
"""

from __future__ import annotations

from itertools import repeat

import numpy as np

from envs.config import ConfigError, Section
from envs.sim.cluster import MAX_DEVICES
from envs.workloads.arrivals import (
    ARRIVAL_KEYS,
    PROCESSES,
    ArrivalProcess,
    parse_arrival,
    parse_rate_or_load,
)
from envs.workloads.assembly import (
    ContextCache,
    categorical,
    group_rows,
    make_jobs,
    object_array,
    single_stages,
    spread,
)
from envs.workloads.base import GeneratedWorkload, Workload, WorkloadContext
from envs.workloads.distributions import (
    LognormalSize,
    Size,
    draw_categorical,
    mix_or_popularity,
    parse_categorical,
    parse_priorities,
    parse_sizes,
)

DEFAULT_DEVICES: dict[int, float] = {1: 0.7, 2: 0.15, 4: 0.1, 8: 0.05}
DEFAULT_ITERATIONS = LognormalSize(mean_raw=5000.0, cv=3.0, low=10.0, high=1e7)


class TrainingWorkload(Workload):
    """``num_jobs`` training jobs with a job-type mix, a device-count distribution and
    heavy-tailed iteration counts. SLO = ``slo_multiplier`` x the job's reference time on one
    device (so multi-device jobs have proportionally more slack)."""

    kind = "training"
    #: Keys of the workload section (besides the arrival process's, see :meth:`config_keys`).
    KEYS = ("kind", "num_jobs", "mix", "popularity", "size", "devices", "slo_multiplier", "load", "rate",
            "arrival", "priorities")

    @classmethod
    def config_keys(cls, sec: Section) -> tuple[str, ...]:
        return cls.KEYS + ARRIVAL_KEYS[sec.get("arrival", str, "poisson", choices=PROCESSES)]

    def __init__(self, *, num_jobs: int, mix: dict[str, float], slo_multiplier: float,
                 load: float | None = None, rate: float | None = None,
                 sizes: dict[str, Size] | None = None, devices: dict[int, float] | None = None,
                 arrival: ArrivalProcess | None = None, priorities: dict[float, float] | None = None):
        if (load is None) == (rate is None):
            raise ConfigError("workload: give exactly one of 'load' and 'rate'")
        self.num_jobs = num_jobs
        self.mix = mix
        self.sizes = {c: (sizes or {}).get(c, DEFAULT_ITERATIONS) for c in mix}
        self.devices = {int(k): float(v) for k, v in (devices or DEFAULT_DEVICES).items()}
        if any(k < 1 for k in self.devices) or sum(self.devices.values()) <= 0:
            raise ConfigError("workload.devices: keys must be >= 1 and probabilities sum to > 0")
        self.slo_multiplier = slo_multiplier
        self.load = load
        self.rate = rate
        self.arrival = arrival or ArrivalProcess("poisson")
        self.priorities = priorities or {1.0: 1.0}

    def arrival_rate(self, ctx: WorkloadContext) -> float:
        if self.rate is not None:
            return self.rate
        cached = getattr(self, "_rate_cache", None)
        if cached is not None and cached[0] is ctx:  # depends on the cluster only
            return cached[1]
        total = sum(self.mix.values())
        dtot = sum(self.devices.values())
        seconds_per_job = 0.0
        for c, p in self.mix.items():
            for n, q in self.devices.items():
                seconds_per_job += (p / total) * (q / dtot) / ctx.cluster_rate(c, self.sizes[c].mean, 0.0, n)
        rate = self.load / seconds_per_job
        self._rate_cache = (ctx, rate)
        return rate

    def generate(self, rng: np.random.Generator, ctx: WorkloadContext) -> GeneratedWorkload:
        n = self.num_jobs
        arrivals = self.arrival.times(rng, n, self.arrival_rate(ctx))
        caps = list(self.mix)
        p = np.array([self.mix[c] for c in caps], dtype=float)
        cap_idx = categorical(rng, p / p.sum(), n)  # == rng.choice(len(caps), size=n, p=p / p.sum())
        sizes = np.empty(n)
        for i, c in enumerate(caps):
            sel = cap_idx == i
            sizes[sel] = self.sizes[c].sample(rng, np.count_nonzero(sel))
        ndev = draw_categorical(rng, self.devices, n).astype(int)
        prios = draw_categorical(rng, self.priorities, n)
        # Jobs with equal (capability, size, devices) share their stage and SLO; with the usual
        # heavy-tailed sizes few are equal and group_rows gives up (None: every job alone).
        groups = group_rows([cap_idx, sizes, ndev], n)
        rep, inv = groups if groups is not None else (None, None)
        if rep is not None:
            cap_idx, sizes, ndev = cap_idx[rep], sizes[rep], ndev[rep]
        # SLOs: the reference times of each job type's sizes in one vectorised call where there
        # are many (as with heavy-tailed iteration counts), else cached.
        refs = ContextCache.of(self, ctx).reference_times_of(caps, cap_idx, sizes, 0.0)
        slos = self.slo_multiplier * refs
        stages = single_stages(object_array(caps)[cap_idx].tolist(), sizes.tolist(), repeat(0.0), ndev.tolist(),
                               repeat(0.0))
        if inv is not None:
            stages, slos = spread(stages, inv), slos[inv]
        return GeneratedWorkload(make_jobs(arrivals.tolist(), stages, slos.tolist(), prios.tolist()))

    @classmethod
    def from_config(cls, sec: Section, capabilities: tuple[str, ...]) -> TrainingWorkload:
        if not sec.has("mix") and not sec.has("popularity"):
            train_caps = [c for c in capabilities if c.startswith("train")]
            if not train_caps:
                raise ConfigError(f"{sec.where}: no 'mix' given and the scenario has no 'train-*' capability")
            mix = dict.fromkeys(train_caps, 1.0)
        else:
            mix = mix_or_popularity(sec, capabilities)
        caps = list(mix)
        size_cfg = sec.get("size", (dict, list, int, float), None)
        sizes = None if size_cfg is None else parse_sizes(size_cfg, f"{sec.where}.size", caps,
                                                         default={"dist": "lognormal", "mean": 5000.0,
                                                                  "cv": 3.0, "min": 10, "max": 1e7})
        dev_raw = sec.get("devices", dict, None)
        devices = None if dev_raw is None else parse_categorical(dev_raw, f"{sec.where}.devices", key_kind=int, low=1,
                                                                  high=MAX_DEVICES)
        arrival = parse_arrival(sec, sec.get("arrival", str, "poisson", choices=PROCESSES))
        load, rate = parse_rate_or_load(sec)
        return cls(num_jobs=sec.get("num_jobs", int, low=1), mix=mix,
                   slo_multiplier=sec.get("slo_multiplier", float, 10.0, low=1.0),
                   load=load, rate=rate, sizes=sizes, devices=devices, arrival=arrival,
                   priorities=parse_priorities(sec))
