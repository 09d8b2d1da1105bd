"""Synthetic request workloads: an arrival process and a request sampler.

Kinds (the ``kind`` key of a scenario's ``workload`` section):

* ``poisson``: exponential inter-arrival times;
* ``gamma``: Gamma inter-arrival times with coefficient of variation ``cv`` (bursty,
  AlpaServe-style);
* ``diurnal``: Poisson arrivals whose rate follows a sinusoid (``period``, ``amplitude``,
  ``phase``).

Every kind draws single-stage requests the same way: a capability from ``mix`` (explicit
weights) or ``popularity`` (Zipf over capabilities), a ``size`` and optional ``size2`` per
capability (constant, uniform integer, or clipped lognormal; see
:mod:`envs.workloads.distributions`), an SLO of ``slo_multiplier`` x the reference latency at the
request's size, priority weights, and optional accuracy floors. ``load`` (fraction of the
cluster's capacity) or ``rate`` (requests/s) sets the mean arrival rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import numpy as np

from envs.config import ConfigError, Section
from envs.workloads.arrivals import ARRIVAL_KEYS, ArrivalProcess, parse_arrival, parse_rate_or_load
from envs.workloads.assembly import (
    ContextCache,
    categorical,
    group_rows,
    make_jobs,
    object_array,
    single_stages,
    spread,
)
from envs.workloads.base import (
    GeneratedWorkload,
    RequestColumns,
    Workload,
    WorkloadContext,
    arrival_rate_for_load,
)
from envs.workloads.distributions import (
    LognormalSize,
    Size,
    SizeDist,
    draw_categorical,
    mix_or_popularity,
    parse_mix,
    parse_priorities,
    parse_sizes,
)

__all__ = [
    "AccuracyFloor", "DiurnalWorkload", "GammaWorkload", "LognormalSize", "PoissonWorkload",
    "RequestWorkload", "SizeDist",
]


#: Keys of one capability's entry under ``min_accuracy``.
FLOOR_KEYS = ("prob", "value")


@dataclass(frozen=True)
class AccuracyFloor:
    prob: float
    value: float


class RequestWorkload(Workload):
    """``num_jobs`` single-stage requests arriving by ``arrival`` (Poisson by default)."""

    kind = "poisson"
    #: Keys of the workload section (besides the arrival process's, see :meth:`config_keys`).
    KEYS = ("kind", "num_jobs", "mix", "popularity", "size", "size2", "min_accuracy", "slo_multiplier",
            "load", "rate", "priorities")

    @classmethod
    def config_keys(cls, sec: Section) -> tuple[str, ...]:
        return cls.KEYS + ARRIVAL_KEYS[cls.kind]

    def __init__(self, *, num_jobs: int, mix: dict[str, float], sizes: dict[str, Size],
                 slo_multiplier: float, load: float | None = None, rate: float | None = None,
                 priorities: dict[float, float] | None = None,
                 min_accuracy: dict[str, AccuracyFloor] | None = None,
                 sizes2: dict[str, Size] | None = None, arrival: ArrivalProcess | None = None):
        if (load is None) == (rate is None):
            raise ConfigError("workload: give exactly one of 'load' and 'rate'")
        missing = [c for c in mix if c not in sizes]
        if missing:
            raise ConfigError(f"workload: no size for capabilities {missing}")
        self.num_jobs = num_jobs
        self.mix = mix
        self.sizes = sizes
        self.sizes2 = sizes2 or {}
        self.slo_multiplier = slo_multiplier
        self.load = load
        self.rate = rate
        self.priorities = priorities or {1.0: 1.0}
        self.min_accuracy = min_accuracy or {}
        self.arrival = arrival or ArrivalProcess(self.kind)

    def arrival_rate(self, ctx: WorkloadContext) -> float:
        """Mean arrival rate (requests/s): ``rate``, or the rate giving ``load`` on average."""
        if self.rate is not None:
            return self.rate
        cached = getattr(self, "_rate_cache", None)
        if cached is not None and cached[0] is ctx:  # depends on the cluster only
            return cached[1]
        rate = arrival_rate_for_load(self.load, self.mix, ctx, {c: self.sizes[c].mean for c in self.mix},
                                     {c: self.sizes2[c].mean for c in self.mix if c in self.sizes2})
        self._rate_cache = (ctx, rate)
        return rate

    def interarrivals(self, rng: np.random.Generator, rate: float) -> np.ndarray:
        return self.arrival.interarrivals(rng, self.num_jobs, rate)

    def generate(self, rng: np.random.Generator, ctx: WorkloadContext) -> GeneratedWorkload:
        c = self.generate_columns(rng, ctx)
        # Stages (capability, size, size2, (), 1, floor), one 1-tuple per group.
        stages = single_stages(c.capability, c.size.tolist(), c.size2.tolist(), repeat(1),
                               c.min_accuracy.tolist())
        stages = spread(stages, c.group)
        return GeneratedWorkload(make_jobs(c.arrival.tolist(), stages, c.slo.tolist(), c.priority.tolist()))

    def generate_columns(self, rng: np.random.Generator, ctx: WorkloadContext) -> RequestColumns:
        n = self.num_jobs
        rate = self.arrival_rate(ctx)
        arrivals = self.arrival.times(rng, n, rate)
        caps = list(self.mix)
        p = np.array([self.mix[c] for c in caps], dtype=float)
        cap_idx = categorical(rng, p / p.sum(), n)  # == rng.choice(len(caps), size=n, p=p / p.sum())
        sizes = np.empty(n)
        for i, c in enumerate(caps):
            sel = cap_idx == i
            sizes[sel] = self.sizes[c].sample(rng, np.count_nonzero(sel))
        prios = draw_categorical(rng, self.priorities, n)
        floor_u = rng.random(n)
        sizes2 = np.zeros(n)
        for i, c in enumerate(caps):  # drawn last so that configs without size2 are unchanged
            if c in self.sizes2:
                sel = cap_idx == i
                sizes2[sel] = self.sizes2[c].sample(rng, np.count_nonzero(sel))

        # A job's stage is fixed by (capability, accuracy floor drawn or not, size, size2):
        # build each distinct stage and its SLO once (see envs.workloads.assembly).
        floors = [self.min_accuracy.get(c) for c in caps]
        floor_values = [0.0 if f is None else f.value for f in floors]
        key = cap_idx
        has_floors = any(f is not None for f in floors)
        if has_floors:
            # The floor applies when u < prob (never for prob 0.0: u >= 0).
            prob = np.array([0.0 if f is None else f.prob for f in floors])
            key = 2 * cap_idx + (floor_u < prob[cap_idx])
        columns = [key, sizes] + ([sizes2] if self.sizes2 else [])  # (sizes2 is all +0.0 otherwise)
        groups = group_rows(columns, n)
        rep, inv = groups if groups is not None else (None, None)  # None: every job alone
        if rep is not None:
            key, sizes, sizes2 = key[rep], sizes[rep], sizes2[rep]
        cap_of_key = key // 2 if has_floors else key
        # SLOs: the reference times of each capability's stages in one vectorised call where
        # there are many (e.g. the distinct token counts of LLM requests), else cached.
        refs = ContextCache.of(self, ctx).reference_times_of(caps, cap_of_key, sizes, sizes2)
        slos = self.slo_multiplier * refs
        if has_floors:
            floor_of_key = np.array([v for fv in floor_values for v in (0.0, fv)])[key]
        else:
            floor_of_key = np.zeros(len(key))
        return RequestColumns(
            arrival=arrivals, group=inv,
            capability=object_array(caps)[cap_of_key].tolist(), size=sizes, size2=sizes2,
            devices_required=np.ones(len(key), dtype=np.int64), min_accuracy=floor_of_key,
            slo=slos[inv] if inv is not None else slos, priority=prios)

    @classmethod
    def from_config(cls, sec: Section, capabilities: tuple[str, ...]) -> RequestWorkload:
        mix = mix_or_popularity(sec, capabilities)
        caps = list(mix)
        sizes = parse_sizes(sec.get("size", (dict, list, int, float), 1), f"{sec.where}.size", caps)
        size2_cfg = sec.get("size2", (dict, list, int, float), None)
        sizes2 = None
        if size2_cfg is not None:
            sizes2 = parse_sizes(size2_cfg, f"{sec.where}.size2", caps, default=0, allow_zero=True)
        floors = {}
        for c, f in sec.get("min_accuracy", dict, {}).items():
            if c not in mix:
                raise ConfigError(f"{sec.where}.min_accuracy: unknown capability '{c}'")
            fs = Section(f, f"{sec.where}.min_accuracy.{c}", FLOOR_KEYS)
            floors[c] = AccuracyFloor(fs.get("prob", float, low=0.0, high=1.0), fs.get("value", float, low=0.0, high=1.0))
            fs.done()
        arrival = parse_arrival(sec, cls.kind)
        load, rate = parse_rate_or_load(sec)
        return cls(
            num_jobs=sec.get("num_jobs", int, low=1), mix=mix, sizes=sizes, sizes2=sizes2,
            slo_multiplier=sec.get("slo_multiplier", float, low=1.0),
            load=load, rate=rate, priorities=parse_priorities(sec), min_accuracy=floors,
            arrival=arrival,
        )


class PoissonWorkload(RequestWorkload):
    """``num_jobs`` single-stage requests with exponential inter-arrival times."""

    kind = "poisson"


class GammaWorkload(RequestWorkload):
    """Requests with Gamma inter-arrival times (mean ``1/rate``, coefficient of variation
    ``cv``): bursty arrivals as in AlpaServe's evaluation."""

    kind = "gamma"

    def __init__(self, *, cv: float = 1.0, **kw):
        kw.setdefault("arrival", ArrivalProcess("gamma", cv=cv))
        super().__init__(**kw)


class DiurnalWorkload(RequestWorkload):
    """Requests from a Poisson process whose rate follows
    ``rate * (1 + amplitude * sin(2 pi (t / period + phase)))`` (``rate`` = mean rate)."""

    kind = "diurnal"

    def __init__(self, *, period: float = 86400.0, amplitude: float = 0.5, phase: float = 0.0, **kw):
        kw.setdefault("arrival", ArrivalProcess("diurnal", period=period, amplitude=amplitude, phase=phase))
        super().__init__(**kw)


def _mix(raw: dict, where: str, capabilities: tuple[str, ...]) -> dict[str, float]:
    """Kept for callers of the earlier private helper."""
    return parse_mix(raw, where, capabilities)
