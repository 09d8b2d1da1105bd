"""The fast job assembly of the synthetic workloads (envs.workloads.assembly) gives exactly the
jobs of the straightforward per-job loops: same values bit for bit, same order, same use of
the RNG. The reference loops below are the implementations the fast paths replaced."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from envs.scenarios.loader import builtin_names, load_scenario
from envs.sim.model import JobSpec, StageSpec
from envs.workloads.assembly import categorical, group_rows
from envs.workloads.dag import DagWorkload, critical_path
from envs.workloads.synthetic import RequestWorkload
from envs.workloads.training import TrainingWorkload


def _choice_table(rng, table, n):
    vals = np.array(list(table), dtype=float)
    p = np.array(list(table.values()), dtype=float)
    return vals[rng.choice(len(vals), size=n, p=p / p.sum())]


def _sizes(rng, cap_idx, caps, dists, n):
    out = np.zeros(n)
    for i, c in enumerate(caps):
        if c in dists:
            sel = cap_idx == i
            out[sel] = dists[c].sample(rng, int(sel.sum()))
    return out


def reference_request(wl: RequestWorkload, rng, ctx) -> list[JobSpec]:
    n = wl.num_jobs
    arrivals = wl.arrival.times(rng, n, wl.arrival_rate(ctx))
    caps = list(wl.mix)
    p = np.array([wl.mix[c] for c in caps], dtype=float)
    cap_idx = rng.choice(len(caps), size=n, p=p / p.sum())
    sizes = _sizes(rng, cap_idx, caps, wl.sizes, n)
    prios = _choice_table(rng, wl.priorities, n)
    floor_u = rng.random(n)
    sizes2 = _sizes(rng, cap_idx, caps, wl.sizes2, n)
    jobs = []
    for j in range(n):
        cap = caps[cap_idx[j]]
        f = wl.min_accuracy.get(cap)
        min_acc = f.value if f is not None and floor_u[j] < f.prob else 0.0
        s1, s2 = float(sizes[j]), float(sizes2[j])
        stage = StageSpec(capability=cap, size=s1, size2=s2, min_accuracy=min_acc)
        jobs.append(JobSpec(arrival=float(arrivals[j]), stages=(stage,),
                            slo=wl.slo_multiplier * ctx.reference_time(cap, s1, s2), priority=float(prios[j])))
    return jobs


def reference_dag(wl: DagWorkload, rng, ctx) -> list[JobSpec]:
    n = wl.num_jobs
    arrivals = wl.arrival.times(rng, n, wl.arrival_rate(ctx))
    w = np.array([t.weight for t in wl.templates], dtype=float)
    tmpl_idx = rng.choice(len(wl.templates), size=n, p=w / w.sum())
    prios = _choice_table(rng, wl.priorities, n)
    sizes = {}
    for k, t in enumerate(wl.templates):
        m = int((tmpl_idx == k).sum())
        for i, st in enumerate(t.stages):
            sizes[(k, i)] = (st.size.sample(rng, m), st.size2.sample(rng, m))
    used = dict.fromkeys(range(len(wl.templates)), 0)
    jobs = []
    for j in range(n):
        k = int(tmpl_idx[j])
        t, r = wl.templates[k], used[k]
        used[k] += 1
        stages, times = [], []
        for i, st in enumerate(t.stages):
            s1, s2 = float(sizes[(k, i)][0][r]), float(sizes[(k, i)][1][r])
            times.append(ctx.reference_time(st.capability, s1, s2))
            stages.append(StageSpec(st.capability, s1, s2, st.parents, st.devices_required, st.min_accuracy))
        cp = critical_path(times, [st.parents for st in t.stages])
        jobs.append(JobSpec(float(arrivals[j]), tuple(stages), wl.slo_multiplier * cp, float(prios[j]), t.name))
    return jobs


def reference_training(wl: TrainingWorkload, rng, ctx) -> list[JobSpec]:
    n = wl.num_jobs
    arrivals = wl.arrival.times(rng, n, wl.arrival_rate(ctx))
    caps = list(wl.mix)
    p = np.array([wl.mix[c] for c in caps], dtype=float)
    cap_idx = rng.choice(len(caps), size=n, p=p / p.sum())
    sizes = _sizes(rng, cap_idx, caps, wl.sizes, n)
    ndev = _choice_table(rng, wl.devices, n).astype(int)
    prios = _choice_table(rng, wl.priorities, n)
    jobs = []
    for j in range(n):
        cap, size = caps[cap_idx[j]], float(sizes[j])
        stage = StageSpec(capability=cap, size=size, devices_required=int(ndev[j]))
        jobs.append(JobSpec(float(arrivals[j]), (stage,), wl.slo_multiplier * ctx.reference_time(cap, size, 0.0),
                            float(prios[j])))
    return jobs


def reference(wl, rng, ctx):
    for cls, fn in ((RequestWorkload, reference_request), (DagWorkload, reference_dag),
                    (TrainingWorkload, reference_training)):
        if isinstance(wl, cls):
            return fn(wl, rng, ctx)
    raise TypeError(type(wl))


def assert_identical(a: list[JobSpec], b: list[JobSpec]) -> None:
    assert a == b
    assert repr(a) == repr(b)  # also tells -0.0 from 0.0
    for ja, jb in zip(a, b, strict=True):
        assert type(ja) is type(jb) is JobSpec and [type(x) for x in ja] == [type(x) for x in jb]
        for sa, sb in zip(ja.stages, jb.stages, strict=True):
            assert type(sa) is type(sb) is StageSpec and [type(x) for x in sa] == [type(x) for x in sb]


def _variant(name: str, overrides: dict) -> tuple:
    raw = copy.deepcopy(load_scenario(name).raw)
    for k, v in overrides.items():
        if v is None:
            raw["workload"].pop(k, None)
        else:
            raw["workload"][k] = v
    sc = load_scenario(raw)
    return sc.workload, sc.cluster


VARIANTS = {
    "floors-priorities-diurnal": ("serving-small", {
        "kind": "diurnal", "period": 50.0, "amplitude": 0.7, "priorities": {1: 0.5, 2: 0.3, 4: 0.2},
        "min_accuracy": {"image-classification": {"prob": 0.3, "value": 0.7},
                         "text-classification": {"prob": 1.0, "value": 0.5}}}),
    "zipf-lognormal-size2": ("serving-hetero", {
        "kind": "poisson", "cv": None, "mix": None, "popularity": {"zipf": 1.1}, "load": None, "rate": 50.0,
        "size": {"dist": "lognormal", "mean": 3, "cv": 1.0, "min": 1, "max": 8},
        "size2": {"translation": [0, 5]}}),
    "continuous-sizes": ("llm-serving", {
        "size": {"dist": "lognormal", "mean": 1155, "cv": 0.96, "min": 2, "max": 3500, "integer": False}}),
    "dag-diurnal-priorities": ("pipelines", {"arrival": "diurnal", "cv": None, "period": 30.0,
                                             "priorities": {1: 0.7, 3: 0.3}}),
    "training-rate": ("training-cluster", {"arrival": "poisson", "cv": None, "load": None, "rate": 0.5}),
}


@pytest.mark.parametrize("case", [*builtin_names(), *VARIANTS])
def test_generation_matches_reference_loops(case):
    if case in VARIANTS:
        wl, cl = _variant(*VARIANTS[case])
    else:
        sc = load_scenario(case)
        wl, cl = sc.workload, sc.cluster
    for seed in range(3):
        rng_fast, rng_ref = np.random.default_rng(seed), np.random.default_rng(seed)
        for _ in range(2):  # the second time with the context caches warm
            fast = wl.generate(rng_fast, cl).jobs
            assert_identical(fast, reference(wl, rng_ref, cl))
            assert rng_fast.bit_generator.state == rng_ref.bit_generator.state
    clone = pickle.loads(pickle.dumps(wl))  # caches are not pickled, and are rebuilt identically
    assert "_ctx_cache" not in clone.__dict__
    assert_identical(clone.generate(np.random.default_rng(7), cl).jobs,
                     wl.generate(np.random.default_rng(7), cl).jobs)


@pytest.mark.parametrize("k", [1, 2, 3, 7])
def test_categorical_is_rng_choice(k):
    for seed in range(40):
        p = np.random.default_rng(seed + 100).random(k)
        if k > 1 and seed % 3 == 0:
            p[seed % k] = 0.0
        p = p / p.sum()
        n = [1, 5, 600, 4097][seed % 4]
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        got, want = categorical(a, p, n), b.choice(k, size=n, p=p)
        assert got.dtype == want.dtype and (got == want).all()
        assert a.bit_generator.state == b.bit_generator.state


def test_group_rows_groups_equal_rows_only():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(1, 300))
        cols = [rng.integers(0, 4, n), rng.integers(1, 6, n).astype(float), np.full(n, 2.5),
                np.zeros(n), rng.integers(0, 3, n).astype(float)][: 1 + trial % 5]
        rep, inv = group_rows(cols, n)
        rows = list(zip(*(c.tolist() for c in cols)))
        assert len(set(rows)) == len(rep)
        for j in range(n):
            assert rows[j] == rows[rep[inv[j]]]
        for g in range(len(rep)):
            assert {rows[j] for j in np.flatnonzero(inv == g)} == {rows[rep[g]]}
    n = 10
    assert group_rows([np.linspace(1.0, 2.0, n)], n) is None  # not integers
    assert group_rows([np.array([0.0, -0.0] * 5)], n) is None  # two zeros
    assert group_rows([np.arange(n) * 1e6], n) is None  # range too wide
    assert group_rows([np.array([np.nan] * n)], n) is None
