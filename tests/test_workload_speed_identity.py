"""The fast job assembly of the synthetic workloads (envs.workloads.assembly) gives exactly the
jobs of the straightforward per-job loops: same values bit for bit, same order, same use of
the RNG. The reference loops below are the implementations the fast paths replaced. The
vectorised reference times (Cluster.reference_times) and critical paths are the scalar ones,
bit for bit."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from envs.scenarios.loader import builtin_names, load_scenario
from envs.sim.cluster import Cluster, DeviceSpec
from envs.sim.model import DeviceType, JobSpec, LatencyProfile, ModelVariant, StageSpec
from envs.workloads.assembly import BULK_MIN, ContextCache, categorical, group_rows
from envs.workloads.dag import DagWorkload, critical_path, critical_paths
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


def _mix_draws(wl, rng, ctx):
    """The first draws of a request or training workload: arrivals, capabilities, sizes."""
    n = wl.num_jobs
    arrivals = wl.arrival.times(rng, n, wl.arrival_rate(ctx))
    caps = list(wl.mix)
    p = np.array([wl.mix[c] for c in caps], dtype=float)
    cap_idx = rng.choice(len(caps), size=n, p=p / p.sum())
    return n, arrivals, caps, cap_idx, _sizes(rng, cap_idx, caps, wl.sizes, n)


def reference_request(wl: RequestWorkload, rng, ctx) -> list[JobSpec]:
    n, arrivals, caps, cap_idx, sizes = _mix_draws(wl, rng, ctx)
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
    n, arrivals, caps, cap_idx, sizes = _mix_draws(wl, rng, ctx)
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


_LOGN = {"dist": "lognormal", "mean": 3, "cv": 1.0, "min": 1, "max": 8, "integer": False}

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
    "training-continuous": ("training-cluster", {
        "size": {"dist": "lognormal", "mean": 50000, "cv": 3.0, "min": 10, "max": 1e6, "integer": False}}),
    "llm-few-sizes": ("llm-serving", {"size": [1, 6], "size2": [0, 3]}),
    # Sizes too varied to group: every job's critical path computed at once (critical_paths).
    "dag-continuous-sizes": ("pipelines", {"templates": [
        {"name": "a", "weight": 0.6, "stages": [
            {"capability": "speech-recognition", "size": _LOGN},
            {"capability": "translation", "size": _LOGN, "size2": [0, 3], "parents": [0], "min_accuracy": 0.3},
            {"capability": "summarization", "size": 1, "parents": [1]}]},
        {"name": "b", "weight": 0.4, "stages": [
            {"capability": "image-classification", "size": _LOGN},
            {"capability": "object-detection", "size": [1, 4], "min_accuracy": 0.45, "devices_required": 2},
            {"capability": "text-classification", "size": _LOGN, "parents": [0, 1]}]},
        {"name": "rare", "weight": 0.01, "stages": [{"capability": "translation", "size": _LOGN}]}]}),
    "dag-wide-integer-sizes": ("pipelines", {"templates": [{"name": "w", "stages": [
        {"capability": "speech-recognition", "size": [1, 40]},
        {"capability": "translation", "size": [1, 60], "parents": [0]},
        {"capability": "image-classification", "size": [1, 30]},
        {"capability": "text-classification", "size": [1, 9], "parents": [1, 2]}]}]}),
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


def _assert_same_floats(got: np.ndarray, want: list[float]) -> None:
    assert got.dtype == np.float64 and got.shape == (len(want),)
    assert got.tolist() == want and repr(got.tolist()) == repr(want)  # (repr: also -0.0 and nan)
    assert all(type(x) is float for x in got.tolist())


def _random_sizes(rng, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer and continuous sizes over many magnitudes, zeros included."""
    s1 = np.concatenate([rng.integers(0, 20, n), rng.integers(1, 5000, n), rng.lognormal(6, 3, n).round(),
                         rng.lognormal(2, 2, n), [0.0, 1.0, 2.0, 1e7, 0.5]])
    s2 = np.concatenate([rng.integers(0, 3, n), rng.integers(0, 600, n), np.zeros(n), rng.random(n) * 100,
                         [0.0, 0.0, 1.0, 5.0, 1e-3]]).astype(float)
    return s1.astype(float), s2


@pytest.mark.parametrize("name", builtin_names())
def test_reference_times_is_reference_time(name):
    cl = load_scenario(name).cluster
    rng = np.random.default_rng(sum(map(ord, name)))
    s1, s2 = _random_sizes(rng, 200)
    for cap in cl.capabilities:
        _assert_same_floats(cl.reference_times(cap, s1, s2), [cl.reference_time(cap, a, b) for a, b in zip(s1, s2)])
        _assert_same_floats(cl.reference_times(cap, s1), [cl.reference_time(cap, a) for a in s1.tolist()])
        _assert_same_floats(cl.reference_times(cap, s1, 0.0), [cl.reference_time(cap, a, 0.0) for a in s1])
        _assert_same_floats(cl.reference_times(cap, s1.astype(np.int64), s2.tolist()),
                            [cl.reference_time(cap, int(a), b) for a, b in zip(s1, s2.tolist())])
        _assert_same_floats(cl.reference_times(cap, s1[:0], s2[:0]), [])
        # Through the workloads' cache, on both sides of its vectorisation threshold.
        cache = ContextCache(cl)
        for k in (1, BULK_MIN - 1, BULK_MIN, len(s1)):
            _assert_same_floats(cache.reference_times(cap, s1[:k], s2[:k]),
                                [cl.reference_time(cap, a, b) for a, b in zip(s1[:k].tolist(), s2[:k].tolist())])
    caps = list(cl.capabilities)
    idx = rng.integers(0, len(caps), len(s1))
    for k in (3, len(s1)):
        _assert_same_floats(ContextCache(cl).reference_times_of(caps, idx[:k], s1[:k], s2[:k]),
                            [cl.reference_time(caps[c], a, b) for c, a, b in zip(idx[:k], s1[:k], s2[:k])])


def test_reference_times_edge_cases():
    """Ties between device types (the first type's time is kept, as min does), negative
    coefficients (signed zeros), a most accurate variant that fits no device (the next one
    answers), and a capability no variant can serve."""
    types = [DeviceType("small", 8.0, 10.0), DeviceType("big", 80.0, 10.0), DeviceType("other", 80.0, 10.0)]
    devices = [DeviceSpec("small", "n0"), DeviceSpec("big", "n0"), DeviceSpec("other", "n1")]
    same = LatencyProfile(0.5, 0.25, 0.125)
    variants = [
        ModelVariant("tie-a", "tie", 0.5, 1.0, {"small": same, "big": same, "other": LatencyProfile(0.5, 0.25, 0.1)}),
        ModelVariant("neg", "neg", 0.5, 1.0, {"small": LatencyProfile(-0.0, -1.0, -1.0),
                                              "big": LatencyProfile(0.0, -1.0, -1.0)}),
        ModelVariant("neg2", "neg2", 0.5, 1.0, {"small": LatencyProfile(0.0, -1.0, -1.0),
                                                "big": LatencyProfile(-0.0, -1.0, -1.0)}),
        ModelVariant("huge", "fallback", 0.9, 500.0, {"big": LatencyProfile(0.1, 0.1)}),
        ModelVariant("ok", "fallback", 0.5, 4.0, {"small": LatencyProfile(0.3, 0.2), "big": LatencyProfile(0.2, 0.3)}),
        ModelVariant("never", "none", 0.5, 500.0, {"big": LatencyProfile(0.1, 0.1)}),
    ]
    cl = Cluster(types, devices, variants)
    s1 = np.array([0.0, 1.0, 2.0, 3.0, 0.5, 7.0])
    s2 = np.array([0.0, 1.0, 2.0, 3.0, 0.5, 0.0])
    for cap in ("tie", "neg", "neg2", "fallback"):
        _assert_same_floats(cl.reference_times(cap, s1, s2), [cl.reference_time(cap, a, b) for a, b in zip(s1, s2)])
    # min over the types keeps the first of two equal zeros: -0.0 (small first), then +0.0.
    assert repr(cl.reference_times("neg", s1[:1], s2[:1]).tolist()) == "[-0.0]"
    assert repr(cl.reference_times("neg2", s1[:1], s2[:1]).tolist()) == "[0.0]"
    with pytest.raises(ValueError, match="no variant of 'none'"):
        cl.reference_times("none", s1)
    with pytest.raises(ValueError, match="no variant of 'none'"):
        cl.reference_time("none", 1.0)


def test_critical_paths_is_critical_path():
    rng = np.random.default_rng(5)
    dags = [[()], [(), (0,)], [(), (), (0, 1)], [(), (0,), (0,), (1, 2), ()], [(), (), (), (2, 0, 1), (3,), (1,)]]
    for parents in dags:
        for trial in range(5):
            n = 50
            times = [rng.integers(0, 4, n).astype(float) if trial % 2 else rng.lognormal(0, 1, n)
                     for _ in parents]
            if trial == 4:
                times[0][:5] = [np.nan, -0.0, 0.0, np.inf, -1.0]
            got = critical_paths(times, parents)
            want = [critical_path([float(t[j]) for t in times], parents) for j in range(n)]
            assert repr(got.tolist()) == repr(want)
