"""Synthetic request workloads: an arrival process and a request sampler.

Arrival processes: ``poisson`` (exponential inter-arrivals). Requests: a capability mix, a size
distribution per capability, an SLO as a multiple of the reference (batch-1-style) latency,
priority weights and optional accuracy floors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.config import ConfigError, Section
from envs.sim.model import JobSpec, StageSpec
from envs.workloads.base import GeneratedWorkload, Workload, WorkloadContext, arrival_rate_for_load


@dataclass(frozen=True)
class SizeDist:
    """Size of one request: a constant, or a uniform integer in [low, high]."""

    low: float
    high: float

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2.0

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.low == self.high:
            return np.full(n, self.low, dtype=float)
        return rng.integers(int(self.low), int(self.high) + 1, size=n).astype(float)

    @staticmethod
    def parse(value, where: str) -> SizeDist:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return SizeDist(float(value), float(value))
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value) \
                and value[0] <= value[1]:
            return SizeDist(float(value[0]), float(value[1]))
        raise ConfigError(f"{where}: a size is a positive number or [low, high] positive integers, got {value!r}")


@dataclass(frozen=True)
class AccuracyFloor:
    prob: float
    value: float


class PoissonWorkload(Workload):
    """``num_jobs`` single-stage requests with exponential inter-arrival times."""

    def __init__(self, *, num_jobs: int, mix: dict[str, float], sizes: dict[str, SizeDist],
                 slo_multiplier: float, load: float | None = None, rate: float | None = None,
                 priorities: dict[float, float] | None = None,
                 min_accuracy: dict[str, AccuracyFloor] | None = None):
        if (load is None) == (rate is None):
            raise ConfigError("workload: give exactly one of 'load' and 'rate'")
        self.num_jobs = num_jobs
        self.mix = mix
        self.sizes = sizes
        self.slo_multiplier = slo_multiplier
        self.load = load
        self.rate = rate
        self.priorities = priorities or {1.0: 1.0}
        self.min_accuracy = min_accuracy or {}

    def arrival_rate(self, ctx: WorkloadContext) -> float:
        if self.rate is not None:
            return self.rate
        return arrival_rate_for_load(self.load, self.mix, ctx, {c: self.sizes[c].mean for c in self.mix})

    def interarrivals(self, rng: np.random.Generator, rate: float) -> np.ndarray:
        return rng.exponential(1.0 / rate, size=self.num_jobs)

    def generate(self, rng: np.random.Generator, ctx: WorkloadContext) -> GeneratedWorkload:
        n = self.num_jobs
        rate = self.arrival_rate(ctx)
        arrivals = np.cumsum(self.interarrivals(rng, rate))
        caps = list(self.mix)
        p = np.array([self.mix[c] for c in caps], dtype=float)
        cap_idx = rng.choice(len(caps), size=n, p=p / p.sum())
        sizes = np.empty(n)
        for i, c in enumerate(caps):
            sel = cap_idx == i
            sizes[sel] = self.sizes[c].sample(rng, int(sel.sum()))
        prio_vals = np.array(list(self.priorities), dtype=float)
        prio_p = np.array(list(self.priorities.values()), dtype=float)
        prios = prio_vals[rng.choice(len(prio_vals), size=n, p=prio_p / prio_p.sum())]
        floor_u = rng.random(n)
        jobs = []
        for j in range(n):
            cap = caps[cap_idx[j]]
            floor = self.min_accuracy.get(cap)
            min_acc = floor.value if floor is not None and floor_u[j] < floor.prob else 0.0
            slo = self.slo_multiplier * ctx.reference_time(cap, sizes[j])
            stage = StageSpec(capability=cap, size=float(sizes[j]), min_accuracy=min_acc)
            jobs.append(JobSpec(arrival=float(arrivals[j]), stages=(stage,), slo=slo, priority=float(prios[j])))
        return GeneratedWorkload(jobs)

    @classmethod
    def from_config(cls, sec: Section, capabilities: tuple[str, ...]) -> PoissonWorkload:
        mix = _mix(sec.get("mix", dict), sec.where + ".mix", capabilities)
        size_cfg = sec.get("size", (dict, int, float), 1)
        if isinstance(size_cfg, dict):
            for c in size_cfg:
                if c not in mix:
                    raise ConfigError(f"{sec.where}.size: unknown capability '{c}'")
            sizes = {c: SizeDist.parse(size_cfg.get(c, 1), f"{sec.where}.size.{c}") for c in mix}
        else:
            sizes = {c: SizeDist.parse(size_cfg, f"{sec.where}.size") for c in mix}
        prios = sec.get("priorities", dict, None)
        if prios is not None:
            try:
                prios = {float(k): float(v) for k, v in prios.items()}
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{sec.where}.priorities: expected {{weight: probability}}: {e}") from None
        floors = {}
        for c, f in sec.get("min_accuracy", dict, {}).items():
            if c not in mix:
                raise ConfigError(f"{sec.where}.min_accuracy: unknown capability '{c}'")
            fs = Section(f, f"{sec.where}.min_accuracy.{c}")
            floors[c] = AccuracyFloor(fs.get("prob", float, low=0.0, high=1.0), fs.get("value", float, low=0.0, high=1.0))
            fs.done()
        return cls(
            num_jobs=sec.get("num_jobs", int, low=1), mix=mix, sizes=sizes,
            slo_multiplier=sec.get("slo_multiplier", float, low=1.0),
            load=sec.get("load", float, None, low=1e-6), rate=sec.get("rate", float, None, low=1e-9),
            priorities=prios, min_accuracy=floors,
        )


def _mix(raw: dict, where: str, capabilities: tuple[str, ...]) -> dict[str, float]:
    mix = {}
    for c, w in raw.items():
        if c not in capabilities:
            raise ConfigError(f"{where}: capability '{c}' has no variant in the scenario (known: {list(capabilities)})")
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0:
            raise ConfigError(f"{where}: weight of '{c}' must be a non-negative number, got {w!r}")
        mix[c] = float(w)
    if not mix or sum(mix.values()) <= 0:
        raise ConfigError(f"{where}: needs at least one capability with a positive weight")
    return mix
