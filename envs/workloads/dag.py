"""Multi-model pipelines: jobs whose stages form a DAG (e.g. speech recognition -> translation ->
summarization).

Each job picks a template (by ``weight``) and draws each stage's size. A stage becomes ready
when all its ``parents`` (indices of earlier stages of the same template) have finished. The job's
SLO is ``slo_multiplier`` x the reference time of its critical path: the longest chain of stage
reference times (``ctx.reference_time``) through the DAG.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import numpy as np

from envs.config import ConfigError, Section
from envs.sim.cluster import MAX_DEVICES
from envs.sim.model import StageSpec
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
    gc_paused,
    group_rows,
    make_jobs,
    new_tuple,
    object_array,
    stage,
)
from envs.workloads.base import GeneratedWorkload, Workload, WorkloadContext
from envs.workloads.distributions import (
    Size,
    SizeDist,
    draw_categorical,
    parse_priorities,
    parse_size,
)


@dataclass(frozen=True)
class StageTemplate:
    capability: str
    size: Size = SizeDist(1.0, 1.0)
    size2: Size = SizeDist(0.0, 0.0)
    parents: tuple[int, ...] = ()
    min_accuracy: float = 0.0
    devices_required: int = 1


@dataclass(frozen=True)
class DagTemplate:
    stages: tuple[StageTemplate, ...]
    weight: float = 1.0
    name: str = ""

    def validate(self, where: str) -> None:
        if not self.stages:
            raise ConfigError(f"{where}: a template needs at least one stage")
        for i, st in enumerate(self.stages):
            if len(set(st.parents)) != len(st.parents):
                raise ConfigError(f"{where}.stages[{i}].parents: a parent is listed twice")
            for p in st.parents:
                if not 0 <= p < i:
                    raise ConfigError(f"{where}.stages[{i}].parents: parent {p} must be the index of an "
                                      f"earlier stage (0..{i - 1})")


def critical_path(stage_times: list[float], parents: list[tuple[int, ...]]) -> float:
    """Length of the longest path through the DAG (stages in topological index order)."""
    finish: list[float] = []
    for t, ps in zip(stage_times, parents, strict=True):
        finish.append(t + max((finish[p] for p in ps), default=0.0))
    return max(finish, default=0.0)


def critical_paths(stage_times: list[np.ndarray], parents: list[tuple[int, ...]]) -> np.ndarray:
    """:func:`critical_path` of many jobs at once (``stage_times[i]``: stage ``i``'s time in
    every job), with the same floats: the same additions in the same order, and maxima taken
    like ``max`` (the first of equal values is kept)."""
    finish: list[np.ndarray] = []
    for t, ps in zip(stage_times, parents, strict=True):
        longest = _first_max([finish[p] for p in ps]) if ps else 0.0
        finish.append(t + longest)
    return _first_max(finish)


def _first_max(arrays: list[np.ndarray]) -> np.ndarray:
    """Elementwise ``max`` over ``arrays`` in order: a later value replaces the current one
    only if it is greater (as the builtin does, which matters for NaN and signed zeros)."""
    best = arrays[0]
    for a in arrays[1:]:
        best = np.where(a > best, a, best)
    return best


class DagWorkload(Workload):
    """``num_jobs`` DAG jobs drawn from weighted templates."""

    kind = "dag"
    #: Keys of the workload section (besides the arrival process's, see :meth:`config_keys`).
    KEYS = ("kind", "num_jobs", "templates", "slo_multiplier", "load", "rate", "arrival", "priorities")

    @classmethod
    def config_keys(cls, sec: Section) -> tuple[str, ...]:
        return cls.KEYS + ARRIVAL_KEYS[sec.get("arrival", str, "poisson", choices=PROCESSES)]

    def __init__(self, *, num_jobs: int, templates: list[DagTemplate], slo_multiplier: float,
                 load: float | None = None, rate: float | None = None,
                 arrival: ArrivalProcess | None = None, priorities: dict[float, float] | None = None):
        if (load is None) == (rate is None):
            raise ConfigError("workload: give exactly one of 'load' and 'rate'")
        if not templates:
            raise ConfigError("workload: 'templates' needs at least one template")
        for k, t in enumerate(templates):
            t.validate(f"workload.templates[{k}]")
        if sum(t.weight for t in templates) <= 0:
            raise ConfigError("workload.templates: weights sum to 0")
        self.num_jobs = num_jobs
        self.templates = list(templates)
        self.slo_multiplier = slo_multiplier
        self.load = load
        self.rate = rate
        self.arrival = arrival or ArrivalProcess("poisson")
        self.priorities = priorities or {1.0: 1.0}

    def arrival_rate(self, ctx: WorkloadContext) -> float:
        """Jobs/s: ``rate``, or the rate at which the stages' mean work equals ``load`` of the
        cluster's capacity."""
        if self.rate is not None:
            return self.rate
        cached = getattr(self, "_rate_cache", None)
        if cached is not None and cached[0] is ctx:  # depends on the cluster only
            return cached[1]
        w = np.array([t.weight for t in self.templates], dtype=float)
        w /= w.sum()
        seconds_per_job = 0.0
        for p, t in zip(w, self.templates, strict=True):
            for st in t.stages:
                seconds_per_job += p / ctx.cluster_rate(st.capability, st.size.mean, st.size2.mean,
                                                        st.devices_required)
        rate = self.load / seconds_per_job
        self._rate_cache = (ctx, rate)
        return rate

    def generate(self, rng: np.random.Generator, ctx: WorkloadContext) -> GeneratedWorkload:
        n = self.num_jobs
        arrivals = self.arrival.times(rng, n, self.arrival_rate(ctx))
        w = np.array([t.weight for t in self.templates], dtype=float)
        tmpl_idx = categorical(rng, w / w.sum(), n)  # == rng.choice(len(templates), size=n, p=w / w.sum())
        prios = draw_categorical(rng, self.priorities, n)
        cache = ContextCache.of(self, ctx)
        ref, memo = cache.reference_time, cache.memo
        mult = self.slo_multiplier
        job_stages = np.empty(n, dtype=object)
        slos = np.empty(n)
        for k, t in enumerate(self.templates):
            # The r-th job using template k (in arrival order) gets the r-th draw of each of its
            # stages' sizes: one vectorised draw per (template, stage, size or size2).
            rows = np.flatnonzero(tmpl_idx == k)
            m = len(rows)
            columns, varying = [], []
            for st in t.stages:
                for dist in (st.size, st.size2):
                    columns.append(dist.sample(rng, m))
                    if not dist.constant:
                        varying.append(columns[-1])
            if m == 0:
                continue
            # Jobs of this template with equal sizes have equal stages and critical path: find
            # each distinct combination once per reset (see envs.workloads.assembly), and build
            # its stages once per context (memo).
            groups = group_rows(varying, m)
            if groups is None:
                # Sizes too varied to group (e.g. continuous): combinations rarely recur, so
                # the memo would miss; compute every job's stages and critical path at once.
                with gc_paused():  # (thousands of stage tuples: see assembly.gc_paused)
                    g_stages, cp = self._stages_and_critical_paths(t, columns, cache)
                job_stages[rows] = object_array(g_stages)
                slos[rows] = mult * cp
                continue
            rep, inv = groups
            per_group = [c[rep].tolist() for c in columns]
            g_stages, g_slos = [], []
            for sizes in zip(*per_group):  # (size, size2) of stage 0, then of stage 1, ...
                got = memo.get((k, sizes))
                if got is None:
                    got = cache.remember((k, sizes), self._stages_and_critical_path(t, sizes, ref))
                g_stages.append(got[0])
                g_slos.append(mult * got[1])
            g_stages, g_slos = object_array(g_stages), np.array(g_slos)
            job_stages[rows] = g_stages[inv]
            slos[rows] = g_slos[inv]
        names = object_array([t.name for t in self.templates])[tmpl_idx].tolist()
        return GeneratedWorkload(make_jobs(arrivals.tolist(), job_stages.tolist(), slos.tolist(),
                                           prios.tolist(), names))

    @staticmethod
    def _stages_and_critical_path(t: DagTemplate, sizes: tuple[float, ...], ref) -> tuple[tuple, float]:
        """A job of template ``t`` with ``sizes`` = (size, size2) of each stage in turn: its
        stages and the reference time of its critical path."""
        stages = tuple(stage(st.capability, sizes[2 * i], sizes[2 * i + 1], st.parents, st.devices_required,
                             st.min_accuracy) for i, st in enumerate(t.stages))
        times = [ref(st.capability, sizes[2 * i], sizes[2 * i + 1]) for i, st in enumerate(t.stages)]
        return stages, critical_path(times, [st.parents for st in t.stages])

    @staticmethod
    def _stages_and_critical_paths(t: DagTemplate, columns: list[np.ndarray], cache: ContextCache
                                   ) -> tuple[list[tuple], np.ndarray]:
        """:meth:`_stages_and_critical_path` of many jobs of template ``t`` at once (the same
        values): ``columns`` holds each stage's sizes, then its sizes2, as arrays over jobs."""
        per_stage, times = [], []
        for i, st in enumerate(t.stages):
            s1, s2 = columns[2 * i], columns[2 * i + 1]
            times.append(cache.reference_times(st.capability, s1, s2))
            per_stage.append(map(new_tuple, repeat(StageSpec), zip(
                repeat(st.capability), s1.tolist(), s2.tolist(), repeat(st.parents), repeat(st.devices_required),
                repeat(st.min_accuracy))))
        return list(zip(*per_stage)), critical_paths(times, [st.parents for st in t.stages])

    @classmethod
    def from_config(cls, sec: Section, capabilities: tuple[str, ...]) -> DagWorkload:
        raw = sec.get("templates", list)
        templates = [_parse_template(t, f"{sec.where}.templates[{k}]", capabilities) for k, t in enumerate(raw)]
        if not templates:
            raise ConfigError(f"{sec.where}.templates: needs at least one template")
        if sum(t.weight for t in templates) <= 0:
            raise ConfigError(f"{sec.where}.templates: weights sum to 0")
        arrival = parse_arrival(sec, sec.get("arrival", str, "poisson", choices=PROCESSES))
        load, rate = parse_rate_or_load(sec)
        return cls(num_jobs=sec.get("num_jobs", int, low=1), templates=templates,
                   slo_multiplier=sec.get("slo_multiplier", float, low=1.0), load=load, rate=rate,
                   arrival=arrival, priorities=parse_priorities(sec))


#: Keys of a template and of one of its stages.
TEMPLATE_KEYS = ("stages", "weight", "name")
STAGE_KEYS = ("capability", "size", "size2", "parents", "min_accuracy", "devices_required")


def _parse_template(raw, where: str, capabilities: tuple[str, ...]) -> DagTemplate:
    sec = Section(raw, where, TEMPLATE_KEYS)
    stages_raw = sec.get("stages", list)
    weight = sec.get("weight", float, 1.0, low=0.0)
    name = sec.get("name", str, "")
    sec.done()
    stages = []
    for i, s in enumerate(stages_raw):
        ss = Section(s, f"{where}.stages[{i}]", STAGE_KEYS)
        cap = ss.get("capability", str)
        if cap not in capabilities:
            raise ConfigError(f"{ss.where}: capability '{cap}' has no variant in the scenario "
                              f"(known: {list(capabilities)})")
        parents = ss.get("parents", list, [])
        for p in parents:
            if not isinstance(p, int) or isinstance(p, bool):
                raise ConfigError(f"{ss.where}.parents: parent {p!r} must be an integer stage index")
        stages.append(StageTemplate(
            capability=cap,
            size=parse_size(ss.get("size", (int, float, list, dict), 1), f"{ss.where}.size"),
            size2=parse_size(ss.get("size2", (int, float, list, dict), 0), f"{ss.where}.size2", allow_zero=True),
            parents=tuple(parents),
            min_accuracy=ss.get("min_accuracy", float, 0.0, low=0.0, high=1.0),
            devices_required=ss.get("devices_required", int, 1, low=1, high=MAX_DEVICES),
        ))
        ss.done()
    t = DagTemplate(stages=tuple(stages), weight=weight, name=name)
    t.validate(where)
    return t
