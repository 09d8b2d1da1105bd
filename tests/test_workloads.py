"""Synthetic workload generators and the built-in device/model library."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.config import ConfigError, Section
from envs.sim.model import JobSpec, StageSpec
from envs.workloads import WORKLOADS, build_workload
from envs.workloads.arrivals import ArrivalProcess
from envs.workloads.dag import DagWorkload, critical_path
from envs.workloads.distributions import LognormalSize, parse_size, zipf_weights
from envs.workloads.synthetic import GammaWorkload, PoissonWorkload, SizeDist
from envs.workloads.training import TrainingWorkload

LIBRARY = Path(__file__).resolve().parents[1] / "envs" / "scenarios" / "library.yaml"

CAPS = ("image-classification", "text-classification", "speech-recognition", "translation",
        "summarization", "text-generation", "train-resnet50", "train-lm")


class FakeCtx:
    """A tiny stand-in for the simulator's WorkloadContext: linear reference times and a
    cluster rate of ``servers`` times the reference service rate."""

    def __init__(self, capabilities=CAPS, servers: float = 4.0):
        self.capabilities = tuple(capabilities)
        self.servers = servers
        self.alpha = {c: 0.002 * (i + 1) for i, c in enumerate(self.capabilities)}
        self.beta = {c: 0.001 * (i + 1) for i, c in enumerate(self.capabilities)}

    def reference_time(self, capability, size=1.0, size2=0.0):
        return self.alpha[capability] + self.beta[capability] * size + 0.01 * size2

    def cluster_rate(self, capability, size, size2=0.0, devices_required=1):
        return self.servers / devices_required / self.reference_time(capability, size, size2)


def build(cfg: dict, caps=CAPS):
    return build_workload(Section(dict(cfg), "test.yaml: workload"), caps)


def jobs_equal(a: list[JobSpec], b: list[JobSpec]) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))


# ---------------------------------------------------------------------------- library.yaml

def test_library_is_consistent():
    lib = yaml.safe_load(LIBRARY.read_text())
    assert set(lib) == {"device_types", "variants"}
    types = lib["device_types"]
    for name, d in types.items():
        assert set(d) <= {"memory_gb", "load_bandwidth_gbps", "load_overhead_s", "cost_per_hour", "mtbf_s", "mttr_s"}, name
        assert d["memory_gb"] > 0 and d["load_bandwidth_gbps"] > 0 and d.get("load_overhead_s", 0) >= 0
    for req in ("H100", "A100", "A100-80GB", "V100", "T4", "A10", "CPU", "K80", "P100"):
        assert req in types
    caps: dict[str, list[str]] = {}
    for name, v in lib["variants"].items():
        assert set(v) <= {"capability", "accuracy", "memory_gb", "latency", "max_size", "scaling_efficiency"}, name
        assert 0.0 <= v["accuracy"] <= 1.0, name
        assert v["memory_gb"] > 0, name
        assert v["latency"], name
        for dev, prof in v["latency"].items():
            assert dev in types, f"{name}: unknown device type {dev}"
            assert len(prof) in (2, 3), name
            assert all(isinstance(x, (int, float)) and x >= 0 and math.isfinite(x) for x in prof), name
            assert prof[1] > 0 or (len(prof) == 3 and prof[2] > 0), name
        assert 0.0 <= v.get("scaling_efficiency", 1.0) <= 1.0, name
        caps.setdefault(v["capability"], []).append(name)
    serving = [c for c in caps if not c.startswith("train-")]
    assert len(serving) >= 6 and all(caps[c] for c in caps)
    for c in serving:
        assert len(caps[c]) >= 3, c
    # Memory pressure is real: a 16 GB T4 cannot hold every variant that runs on it.
    t4 = sum(v["memory_gb"] for v in lib["variants"].values() if "T4" in v["latency"])
    assert t4 > 2 * types["T4"]["memory_gb"]
    # Some variants cannot run on the CPU; the 70B LLM fits only on 80 GB devices.
    assert any("CPU" not in v["latency"] for v in lib["variants"].values())
    l70 = lib["variants"]["llama-2-70b"]
    assert all(types[d]["memory_gb"] >= l70["memory_gb"] for d in l70["latency"])
    # Clockwork anchor: ResNet-50 on V100 is 2.7 ms at batch 1 and 17 ms at batch 16.
    a, b = lib["variants"]["resnet50"]["latency"]["V100"]
    assert a + b == pytest.approx(0.0027, rel=0.01) and a + 16 * b == pytest.approx(0.017, rel=0.01)
    # Heterogeneity is not one scale factor (Gavel: V100/K80 from 0.7x to ~10x).
    ratios = [v["latency"]["K80"][1] / v["latency"]["V100"][1]
              for v in lib["variants"].values() if "K80" in v["latency"] and "V100" in v["latency"]]
    assert min(ratios) < 1.0 and max(ratios) > 8.0
    # Variants fit at least one device they have a profile for.
    for name, v in lib["variants"].items():
        assert any(types[d]["memory_gb"] >= v["memory_gb"] for d in v["latency"]), name


# ---------------------------------------------------------------------------- arrival processes

@pytest.mark.parametrize("cv", [1.0, 4.0, 8.0])
def test_gamma_interarrival_mean_and_cv(cv):
    rate = 5.0
    gaps = ArrivalProcess("gamma", cv=cv).interarrivals(np.random.default_rng(7), 400_000, rate)
    assert gaps.mean() == pytest.approx(1.0 / rate, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.10)


def test_poisson_rate_and_cv():
    gaps = ArrivalProcess("poisson").interarrivals(np.random.default_rng(1), 200_000, 3.0)
    assert 1.0 / gaps.mean() == pytest.approx(3.0, rel=0.02)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.03)


def test_diurnal_rate_follows_the_sinusoid():
    rate, period = 10.0, 100.0
    proc = ArrivalProcess("diurnal", period=period, amplitude=0.8)
    t = proc.times(np.random.default_rng(3), 100_000, rate)
    assert np.all(np.diff(t) >= 0) and t[0] > 0
    assert len(t) / t[-1] == pytest.approx(rate, rel=0.03)  # long-run mean rate
    phase = (t % period) / period
    rising = ((phase < 0.5).sum())  # sin > 0: rate above the mean
    assert rising / len(t) == pytest.approx(0.5 + 0.8 / math.pi, abs=0.02)


def test_arrival_process_rejects_bad_parameters():
    with pytest.raises(ConfigError):
        ArrivalProcess("weibull")
    with pytest.raises(ConfigError):
        ArrivalProcess("diurnal", amplitude=1.5)


# ---------------------------------------------------------------------------- request workloads

BASE = dict(num_jobs=400, mix={"image-classification": 2, "text-classification": 1},
            size={"image-classification": [1, 8]}, slo_multiplier=5.0)


def _poisson_reference(wl: PoissonWorkload, rng, ctx) -> list[JobSpec]:
    """The original Poisson generator, step by step: kind poisson must keep producing exactly
    these jobs for a given seed."""
    n = wl.num_jobs
    rate = wl.arrival_rate(ctx)
    arrivals = np.cumsum(rng.exponential(1.0 / rate, size=n))
    caps = list(wl.mix)
    p = np.array([wl.mix[c] for c in caps])
    cap_idx = rng.choice(len(caps), size=n, p=p / p.sum())
    sizes = np.empty(n)
    for i, c in enumerate(caps):
        sel = cap_idx == i
        sizes[sel] = wl.sizes[c].sample(rng, int(sel.sum()))
    pv = np.array(list(wl.priorities), dtype=float)
    pp = np.array(list(wl.priorities.values()), dtype=float)
    prios = pv[rng.choice(len(pv), size=n, p=pp / pp.sum())]
    floor_u = rng.random(n)
    out = []
    for j in range(n):
        cap = caps[cap_idx[j]]
        f = wl.min_accuracy.get(cap)
        ma = f.value if f is not None and floor_u[j] < f.prob else 0.0
        out.append(JobSpec(float(arrivals[j]), (StageSpec(cap, float(sizes[j]), min_accuracy=ma),),
                           wl.slo_multiplier * ctx.reference_time(cap, sizes[j]), float(prios[j])))
    return out


def test_poisson_config_unchanged():
    ctx = FakeCtx()
    cfg = dict(BASE, kind="poisson", load=0.8, priorities={1: 0.7, 3: 0.3},
               min_accuracy={"image-classification": {"prob": 0.3, "value": 0.75}})
    wl = build(cfg)
    assert isinstance(wl, PoissonWorkload)
    assert wl.sizes["text-classification"] == SizeDist(1.0, 1.0)
    got = wl.generate(np.random.default_rng(42), ctx).jobs
    assert jobs_equal(got, _poisson_reference(wl, np.random.default_rng(42), ctx))


def test_poisson_load_sets_the_rate():
    ctx = FakeCtx()
    wl = build(dict(BASE, kind="poisson", load=0.5))
    mix = {"image-classification": 2 / 3, "text-classification": 1 / 3}
    sec_per_req = sum(p / ctx.cluster_rate(c, 4.5 if c == "image-classification" else 1.0) for c, p in mix.items())
    assert wl.arrival_rate(ctx) == pytest.approx(0.5 / sec_per_req)
    wl = build(dict(BASE, kind="poisson", rate=20.0, num_jobs=20_000))
    jobs = wl.generate(np.random.default_rng(0), ctx).jobs
    assert len(jobs) / jobs[-1].arrival == pytest.approx(20.0, rel=0.03)


@pytest.mark.parametrize("kind,extra", [("poisson", {}), ("gamma", {"cv": 4.0}),
                                        ("diurnal", {"period": 60.0, "amplitude": 0.5})])
def test_same_seed_same_jobs_other_seed_other_jobs(kind, extra):
    ctx = FakeCtx()
    wl = build(dict(BASE, kind=kind, rate=10.0, **extra))
    a = wl.generate(np.random.default_rng(5), ctx).jobs
    b = wl.generate(np.random.default_rng(5), ctx).jobs
    c = wl.generate(np.random.default_rng(6), ctx).jobs
    assert jobs_equal(a, b) and not jobs_equal(a, c)
    arr = [j.arrival for j in a]
    assert arr == sorted(arr) and len(a) == 400


def test_gamma_workload_end_to_end_cv():
    wl = build(dict(BASE, kind="gamma", rate=50.0, cv=8.0, num_jobs=50_000))
    assert isinstance(wl, GammaWorkload)
    arr = np.array([j.arrival for j in wl.generate(np.random.default_rng(2), FakeCtx()).jobs])
    gaps = np.diff(arr, prepend=0.0)
    assert 1.0 / gaps.mean() == pytest.approx(50.0, rel=0.1)
    assert gaps.std() / gaps.mean() == pytest.approx(8.0, rel=0.2)


def test_zipf_popularity_orders_capabilities():
    caps = ["translation", "speech-recognition", "image-classification", "summarization"]
    wl = build(dict(kind="poisson", num_jobs=40_000, rate=100.0, slo_multiplier=2.0,
                    popularity={"zipf": 1.2, "capabilities": caps}))
    jobs = wl.generate(np.random.default_rng(0), FakeCtx()).jobs
    counts = [sum(j.stages[0].capability == c for j in jobs) for c in caps]
    assert counts == sorted(counts, reverse=True)
    expected = zipf_weights(4, 1.2)
    assert np.allclose(np.array(counts) / len(jobs), expected, atol=0.01)
    # Default ranking: the scenario's capability order.
    wl = build(dict(kind="poisson", num_jobs=10, rate=1.0, slo_multiplier=2.0, popularity={"zipf": 1.0}))
    assert list(wl.mix) == list(CAPS)


def test_mix_and_popularity_are_exclusive():
    with pytest.raises(ConfigError, match="exactly one of 'mix' and 'popularity'"):
        build(dict(BASE, kind="poisson", rate=1.0, popularity={"zipf": 1.0}))
    with pytest.raises(ConfigError, match="unknown key 'exponent'"):
        build(dict(kind="poisson", num_jobs=1, rate=1.0, slo_multiplier=2.0, popularity={"zipf": 1.0, "exponent": 2}))


def test_lognormal_mean_cv_and_clipping():
    d = LognormalSize(mean_raw=50.0, cv=1.0, low=1.0, high=math.inf, integer=False)
    x = d.sample(np.random.default_rng(0), 400_000)
    assert x.mean() == pytest.approx(50.0, rel=0.02)
    assert x.std() / x.mean() == pytest.approx(1.0, rel=0.05)
    clipped = LognormalSize(mean_raw=800.0, cv=1.5, low=16.0, high=2048.0, integer=True)
    y = clipped.sample(np.random.default_rng(1), 400_000)
    assert y.min() >= 16 and y.max() <= 2048 and np.all(y == np.rint(y))
    assert y.mean() == pytest.approx(clipped.mean, rel=0.02)
    assert clipped.mean < 800.0


@settings(max_examples=40, deadline=None)
@given(mean=st.floats(1.0, 1e4), cv=st.floats(0.0, 5.0), lo=st.integers(1, 50), span=st.integers(0, 5000),
       seed=st.integers(0, 2**32 - 1))
def test_lognormal_samples_stay_in_bounds(mean, cv, lo, span, seed):
    d = parse_size({"dist": "lognormal", "mean": mean, "cv": cv, "min": lo, "max": lo + span}, "w")
    x = d.sample(np.random.default_rng(seed), 200)
    assert np.all((x >= lo) & (x <= lo + span)) and np.all(x == np.rint(x))
    assert lo <= d.mean <= lo + span


def test_size_specifications():
    rng = np.random.default_rng(0)
    assert np.all(parse_size(4, "w").sample(rng, 5) == 4)
    u = parse_size([2, 5], "w").sample(rng, 2000)
    assert set(np.unique(u)) == {2, 3, 4, 5}
    u = parse_size({"dist": "uniform", "low": 1, "high": 3}, "w").sample(rng, 1000)
    assert set(np.unique(u)) == {1, 2, 3}
    assert np.all(parse_size({"dist": "constant", "value": 7}, "w").sample(rng, 3) == 7)
    with pytest.raises(ConfigError, match="unknown key 'sigma'"):
        parse_size({"dist": "lognormal", "mean": 3, "cv": 1, "sigma": 2}, "f.yaml: workload.size")
    with pytest.raises(ConfigError, match="f.yaml: workload.size"):
        parse_size(-1, "f.yaml: workload.size")
    with pytest.raises(ConfigError, match="'dist' must be one of"):
        parse_size({"dist": "pareto"}, "w")


def test_llm_prompt_and_output_tokens():
    ctx = FakeCtx()
    cfg = dict(kind="poisson", num_jobs=20_000, load=0.7, mix={"text-generation": 1}, slo_multiplier=4.0,
               size={"dist": "lognormal", "mean": 1000, "cv": 1.0, "min": 1, "max": 4000},
               size2={"text-generation": {"dist": "lognormal", "mean": 200, "cv": 1.5, "min": 1, "max": 2000}})
    wl = build(cfg)
    jobs = wl.generate(np.random.default_rng(0), ctx).jobs
    s1 = np.array([j.stages[0].size for j in jobs])
    s2 = np.array([j.stages[0].size2 for j in jobs])
    assert s1.mean() == pytest.approx(wl.sizes["text-generation"].mean, rel=0.03)
    assert s2.mean() == pytest.approx(wl.sizes2["text-generation"].mean, rel=0.05)
    assert s1.max() <= 4000 and s2.min() >= 1
    j = jobs[0]
    assert j.slo == pytest.approx(4.0 * ctx.reference_time("text-generation", j.stages[0].size, j.stages[0].size2))
    # load accounts for the output tokens as well
    rate = 0.7 * ctx.cluster_rate("text-generation", wl.sizes["text-generation"].mean, wl.sizes2["text-generation"].mean)
    assert wl.arrival_rate(ctx) == pytest.approx(rate)


def test_unknown_keys_and_bad_values_name_the_key():
    with pytest.raises(ConfigError, match="test.yaml: workload: unknown key 'burstiness'"):
        build(dict(BASE, kind="poisson", rate=1.0, burstiness=3))
    with pytest.raises(ConfigError, match="unknown key 'cv'"):
        build(dict(BASE, kind="poisson", rate=1.0, cv=3))  # cv belongs to gamma
    with pytest.raises(ConfigError, match="'cv' must be <= 8"):
        build(dict(BASE, kind="gamma", rate=1.0, cv=9))
    with pytest.raises(ConfigError, match="missing required key 'period'"):
        build(dict(BASE, kind="diurnal", rate=1.0))
    with pytest.raises(ConfigError, match="exactly one of 'load' and 'rate'"):
        build(dict(BASE, kind="gamma", cv=2.0))
    with pytest.raises(ConfigError, match="'kind' must be one of"):
        build(dict(BASE, kind="weibull", rate=1.0))
    with pytest.raises(ConfigError, match="capability 'ocr' has no variant"):
        build(dict(BASE, kind="poisson", rate=1.0, mix={"ocr": 1}))


def test_registry_has_all_kinds():
    assert set(WORKLOADS) >= {"poisson", "gamma", "diurnal", "dag", "training", "trace"}


# ---------------------------------------------------------------------------- DAG workloads

PIPELINE = {"stages": [{"capability": "speech-recognition"},
                       {"capability": "translation", "parents": [0], "size": [1, 4]},
                       {"capability": "summarization", "parents": [1]}], "weight": 1, "name": "asr-mt-sum"}
DIAMOND = {"stages": [{"capability": "image-classification", "size": 4},
                      {"capability": "text-classification", "parents": [0]},
                      {"capability": "translation", "parents": [0]},
                      {"capability": "summarization", "parents": [1, 2]}], "weight": 2}


def test_dag_jobs_have_valid_parents_and_critical_path_slo():
    ctx = FakeCtx()
    wl = build(dict(kind="dag", num_jobs=3000, load=0.6, slo_multiplier=3.0, templates=[PIPELINE, DIAMOND]))
    assert isinstance(wl, DagWorkload)
    jobs = wl.generate(np.random.default_rng(0), ctx).jobs
    n_diamond = 0
    for j in jobs:
        for i, s in enumerate(j.stages):
            assert all(0 <= p < i for p in s.parents)
            assert len(set(s.parents)) == len(s.parents)
        times = [ctx.reference_time(s.capability, s.size, s.size2) for s in j.stages]
        assert j.slo == pytest.approx(3.0 * critical_path(times, [s.parents for s in j.stages]))
        if len(j.stages) == 4:
            n_diamond += 1
            # diamond: longest of the two middle branches
            assert j.slo == pytest.approx(3.0 * (times[0] + max(times[1], times[2]) + times[3]))
        else:
            assert j.slo == pytest.approx(3.0 * sum(times))
    assert n_diamond / len(jobs) == pytest.approx(2 / 3, abs=0.03)
    sizes = {j.stages[1].size for j in jobs if len(j.stages) == 3}
    assert sizes == {1, 2, 3, 4}


def test_dag_seeding_and_arrivals():
    ctx = FakeCtx()
    wl = build(dict(kind="dag", num_jobs=200, rate=5.0, slo_multiplier=3.0, templates=[PIPELINE],
                    arrival="gamma", cv=3.0))
    a = wl.generate(np.random.default_rng(1), ctx).jobs
    assert jobs_equal(a, wl.generate(np.random.default_rng(1), ctx).jobs)
    assert not jobs_equal(a, wl.generate(np.random.default_rng(2), ctx).jobs)
    # load: stage work of a job at the mean sizes equals load x capacity
    wl = build(dict(kind="dag", num_jobs=10, load=0.5, slo_multiplier=3.0, templates=[PIPELINE]))
    spj = (1 / ctx.cluster_rate("speech-recognition", 1) + 1 / ctx.cluster_rate("translation", 2.5)
           + 1 / ctx.cluster_rate("summarization", 1))
    assert wl.arrival_rate(ctx) == pytest.approx(0.5 / spj)


def test_dag_template_errors():
    bad = {"stages": [{"capability": "translation", "parents": [1]}, {"capability": "summarization"}]}
    with pytest.raises(ConfigError, match=r"templates\[0\].stages\[0\].parents: parent 1 must be the index of an earlier stage"):
        build(dict(kind="dag", num_jobs=1, rate=1.0, slo_multiplier=2.0, templates=[bad]))
    selfloop = {"stages": [{"capability": "translation", "parents": [0]}]}
    with pytest.raises(ConfigError, match="earlier stage"):
        build(dict(kind="dag", num_jobs=1, rate=1.0, slo_multiplier=2.0, templates=[selfloop]))
    typo = {"stages": [{"capability": "translation", "parent": [0]}]}
    with pytest.raises(ConfigError, match=r"stages\[0\]: unknown key 'parent'"):
        build(dict(kind="dag", num_jobs=1, rate=1.0, slo_multiplier=2.0, templates=[typo]))
    with pytest.raises(ConfigError, match="needs at least one template"):
        build(dict(kind="dag", num_jobs=1, rate=1.0, slo_multiplier=2.0, templates=[]))


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_random_dags_are_acyclic(data):
    n = data.draw(st.integers(1, 6))
    stages = []
    for i in range(n):
        parents = data.draw(st.lists(st.integers(0, i - 1), unique=True, max_size=i)) if i else []
        stages.append({"capability": data.draw(st.sampled_from(CAPS[:5])), "parents": parents})
    wl = build(dict(kind="dag", num_jobs=5, rate=1.0, slo_multiplier=2.0, templates=[{"stages": stages}]))
    for j in wl.generate(np.random.default_rng(data.draw(st.integers(0, 1000))), FakeCtx()).jobs:
        assert all(p < i for i, s in enumerate(j.stages) for p in s.parents)
        assert j.slo > 0


# ---------------------------------------------------------------------------- training workloads

def test_training_devices_and_iterations():
    ctx = FakeCtx()
    cfg = dict(kind="training", num_jobs=20_000, rate=0.05, slo_multiplier=10.0,
               mix={"train-resnet50": 3, "train-lm": 1}, devices={1: 0.7, 2: 0.15, 4: 0.1, 8: 0.05},
               size={"dist": "lognormal", "mean": 3000, "cv": 2.0, "min": 10, "max": 1e6})
    wl = build(cfg)
    assert isinstance(wl, TrainingWorkload)
    jobs = wl.generate(np.random.default_rng(0), ctx).jobs
    nd = np.array([j.stages[0].devices_required for j in jobs])
    for k, p in {1: 0.7, 2: 0.15, 4: 0.1, 8: 0.05}.items():
        assert (nd == k).mean() == pytest.approx(p, abs=0.015)
    it = np.array([j.stages[0].size for j in jobs])
    assert it.min() >= 10 and it.mean() == pytest.approx(wl.sizes["train-lm"].mean, rel=0.08)
    share = np.mean([j.stages[0].capability == "train-resnet50" for j in jobs])
    assert share == pytest.approx(0.75, abs=0.015)
    j = jobs[0]
    assert j.slo == pytest.approx(10.0 * ctx.reference_time(j.stages[0].capability, j.stages[0].size))


def test_training_defaults_and_load():
    ctx = FakeCtx()
    wl = build(dict(kind="training", num_jobs=50, load=0.9))
    assert set(wl.mix) == {"train-resnet50", "train-lm"}
    assert wl.devices == {1: 0.7, 2: 0.15, 4: 0.1, 8: 0.05}
    jobs = wl.generate(np.random.default_rng(3), ctx).jobs
    assert jobs_equal(jobs, wl.generate(np.random.default_rng(3), ctx).jobs)
    assert wl.arrival_rate(ctx) > 0
    with pytest.raises(ConfigError, match="devices: key '0' must be >= 1|devices: key 0 must be >= 1"):
        build(dict(kind="training", num_jobs=5, rate=1.0, devices={0: 1.0}))
    with pytest.raises(ConfigError, match="no 'train-\\*' capability"):
        build(dict(kind="training", num_jobs=5, rate=1.0), caps=("translation",))
