"""Heuristic baselines: validity on random scenarios, full episodes, golden choices, loading."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import baselines
import envs  # noqa: F401  (registers the ids)
from baselines import PolicyError, load_policy, make, names, run_episode
from envs.env import SchedulingEnv
from envs.sim.cluster import Cluster, DeviceSpec
from envs.sim.model import DONE, DeviceType, LatencyProfile, ModelVariant
from tests.conftest import golden_cluster, make_scenario, request

EXPECTED = ["random", "fifo", "round-robin", "least-loaded", "sjf", "edf", "priority-greedy", "mct",
            "infaas", "clipper-high-acc", "clipper-low-acc", "tetris", "genetic", "adaptive", "priced",
            "planner", "clockwork", "triton", "infaas-batch", "vllm"]
#: Rules documented as work-conserving: they never wait while a valid assignment exists.
WORK_CONSERVING = {"fifo", "round-robin", "least-loaded", "sjf", "edf", "priority-greedy", "tetris"}


def decode(env, a):
    k, rest = divmod(a, env.V * env.D)
    v, d = divmod(rest, env.D)
    return k, v, d


def test_registry_names_and_errors():
    assert names() == EXPECTED
    env = gym.make("modelsched/ServingSmall-v1", disable_env_checker=True)
    for n in names():
        p = make(n, env, seed=1)
        assert isinstance(p, baselines.Policy) and p.name == n
        doc = type(p).__doc__
        assert doc.startswith(f"``{n}``") and len(doc) > 200  # the rule and its source
    with pytest.raises(PolicyError, match="unknown policy 'nope'"):
        make("nope", env)
    with pytest.raises(PolicyError, match="unknown policy"):
        load_policy("nope", env)
    with pytest.raises(PolicyError, match="model file not found"):
        load_policy("runs/missing/model.zip", env)


# ---------------------------------------------------------------------- random small scenarios
@st.composite
def scenarios(draw):
    n_types = draw(st.integers(1, 3))
    types = {f"T{i}": {"memory_gb": draw(st.sampled_from([1.0, 2.0, 8.0])),
                       "load_bandwidth_gbps": draw(st.sampled_from([1.0, 4.0, 16.0])),
                       "load_overhead_s": draw(st.sampled_from([0.0, 0.05]))} for i in range(n_types)}
    devices = [{"type": t, "count": draw(st.integers(1, 2)), "node": f"n{i}"} for i, t in enumerate(types)]
    caps = [f"c{i}" for i in range(draw(st.integers(1, 2)))]
    variants = []
    for c in caps:
        for j in range(draw(st.integers(1, 3))):
            lat = {}
            for i, t in enumerate(types):
                # The first variant of each capability runs on the first type (a valid zoo).
                if (j == 0 and i == 0) or draw(st.booleans()):
                    lat[t] = [draw(st.sampled_from([0.001, 0.01, 0.1])), draw(st.sampled_from([0.001, 0.02, 0.2]))]
            memory = 0.5 if j == 0 else draw(st.sampled_from([0.5, 1.5, 4.0]))
            # A variant that fits on no device it is profiled for is refused at load time: give
            # it a profile on the largest type (other pairs may still not fit: masked out).
            if not any(types[t]["memory_gb"] >= memory for t in lat):
                big = max(types, key=lambda t: types[t]["memory_gb"])
                lat[big] = [0.01, 0.02]
                memory = min(memory, types[big]["memory_gb"])
            variants.append({"name": f"{c}v{j}", "capability": c,
                             "accuracy": draw(st.sampled_from([0.5, 0.6, 0.7, 0.8, 0.9])),
                             "memory_gb": memory, "latency": lat})
    workload = {"kind": "poisson", "num_jobs": draw(st.integers(5, 25)),
                "load": draw(st.sampled_from([0.3, 0.9, 2.0])),
                "mix": {c: 1.0 for c in caps}, "size": {c: [1, 4] for c in caps},
                "slo_multiplier": draw(st.sampled_from([1.5, 5.0])),
                "priorities": {1.0: 0.5, 3.0: 0.5}}
    if draw(st.booleans()):
        workload["min_accuracy"] = {caps[0]: {"prob": 0.5, "value": 0.7}}
    return {"name": "hyp", "primary_metric": "effective_accuracy", "visible_tasks": draw(st.integers(1, 4)),
            "drop_expired": draw(st.booleans()), "noise_cv": 0.05, "device_types": types,
            "devices": devices, "variants": variants, "workload": workload,
            "reward": {"latency": 0.01, "slo": 1.0, "drop": 1.0, "accuracy": 1.0}}


@pytest.mark.filterwarnings("ignore::envs.config.ScenarioWarning")  # random zoos leave some devices unused
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), seed=st.integers(0, 2**16))
def test_every_baseline_picks_only_valid_actions(scenario, seed):
    env = gym.make("modelsched/Scheduling-v1", scenario=scenario, disable_env_checker=True)
    base = env.unwrapped
    for name in names():
        policy = make(name, env, seed=seed, **({"population": 8, "generations": 3} if name == "genetic" else {}))
        policy.reset(seed)
        env.reset(seed=seed)
        for _ in range(2000):
            mask = base.action_masks()
            a, _ = policy.predict(None, action_masks=mask)
            a = int(a)
            assert mask[a], f"{name} chose masked action {decode(base, a)}"
            if name in WORK_CONSERVING and mask[:-1].any():
                assert a != base.wait_action, f"{name} waited while an assignment was valid"
            _, _, term, trunc, info = env.step(a)
            if term or trunc:
                break
        acc = info["accounting"]
        assert acc["arrived"] == acc["completed"] + acc["dropped"] + acc["queued"] + acc["running"]
        assert term or trunc


@pytest.mark.parametrize("name", EXPECTED)
def test_full_episode_on_serving_small(name):
    env = gym.make("modelsched/ServingSmall-v1", disable_env_checker=True)
    res = run_episode(env, load_policy(name, env, seed=0), seed=7)
    assert res["terminated"] and not res["truncated"]
    acc = res["accounting"]
    assert acc["queued"] == acc["running"] == 0
    n_jobs = env.unwrapped.scenario.raw["workload"]["num_jobs"]
    assert acc["arrived"] == acc["completed"] + acc["dropped"] == n_jobs
    # The metrics cover the requests arriving after the warm-up, every one of them.
    sim = env.unwrapped.sim
    counted = [t for t in sim.tasks if t.arrival >= sim.warmup]
    assert 0 < len(counted) < n_jobs
    m = res["metrics"]
    assert m["arrived"] == len(counted) and m["completed"] == sum(t.state == DONE for t in counted)
    for key in ("effective_accuracy", "slo_attainment", "utilization", "mean_accuracy", "mean_latency"):
        assert math.isfinite(m[key])
    assert 0.0 <= m["effective_accuracy"] <= res["ideal_bound"]["effective_accuracy"] + 1e-9
    assert m["mean_latency"] >= res["ideal_bound"]["mean_latency"] - 1e-12
    assert res["latencies"].shape == (acc["completed"],)
    assert res["invalid_actions"] == 0


def test_strong_rules_beat_random_and_adaptive_beats_mct_on_training_seeds():
    env = gym.make("modelsched/ServingSmall-v1", disable_env_checker=True)
    eff = {n: np.mean([run_episode(env, make(n, env), s)["metrics"]["effective_accuracy"] for s in (0, 1)])
           for n in ("random", "fifo", "mct", "adaptive")}
    assert eff["random"] < eff["fifo"] < eff["mct"] < eff["adaptive"]


def test_seeded_policies_are_reproducible():
    env = gym.make("modelsched/ServingSmall-v1", disable_env_checker=True,
                   workload_overrides={"num_jobs": 80}, warmup_s=0.0)
    for name in ("random", "genetic"):
        a = run_episode(env, make(name, env), 3)
        b = run_episode(env, make(name, env), 3)
        assert a["metrics"] == b["metrics"] and a["steps"] == b["steps"]


# ---------------------------------------------------------------------- golden choices
def _two_type_cluster(fast_overhead: float) -> Cluster:
    """FAST (exec 0.1 s, load = overhead + 0.5 GB / 1 GB/s) and SLOW (exec 1.0 s, load 0.5 s)."""
    fast = DeviceType("FAST", memory_gb=4.0, load_bandwidth_gbps=1.0, load_overhead_s=fast_overhead)
    slow = DeviceType("SLOW", memory_gb=4.0, load_bandwidth_gbps=1.0)
    m = ModelVariant("m", "cls", 0.8, 0.5, {"FAST": LatencyProfile(0.1, 0.0), "SLOW": LatencyProfile(1.0, 0.0)})
    return Cluster([fast, slow], [DeviceSpec("FAST", "a"), DeviceSpec("SLOW", "b")], [m])


@pytest.mark.parametrize("fast_overhead, expected", [(0.2, 0), (2.0, 1)])
def test_mct_pays_a_load_on_a_faster_device_only_when_it_finishes_earlier(fast_overhead, expected):
    # Warm the SLOW device with a first task, then a second task arrives when both are idle:
    # SLOW (resident) finishes in 1.0 s; FAST finishes in overhead + 0.5 + 0.1 s.
    jobs = [request(0.0, slo=100.0), request(10.0, slo=100.0)]
    env = SchedulingEnv(make_scenario(_two_type_cluster(fast_overhead), jobs, K=2))
    env.reset(seed=0)
    env.step((0 * env.V + 0) * env.D + 1)  # first task on SLOW (cold)
    assert env.sim.now == pytest.approx(10.0) and env.sim.resident[0].tolist() == [False, True]
    a, _ = make("mct", env).predict(None)
    assert decode(env, int(a)) == (0, 0, expected)


def test_edf_takes_the_earliest_deadline():
    jobs = [request(0.0, slo=5.0), request(0.0, slo=2.0), request(0.0, slo=0.9), request(0.0, slo=3.0)]
    env = SchedulingEnv(make_scenario(golden_cluster(), jobs, K=4))
    env.reset(seed=0)
    assert len(env.sim.queue) == 4
    a, _ = make("edf", env).predict(None)
    k, v, d = decode(env, int(a))
    assert k == 2
    a, _ = make("fifo", env).predict(None)
    assert decode(env, int(a))[0] == 0


def _three_variant_cluster() -> Cluster:
    gpu = DeviceType("GPU", memory_gb=8.0, load_bandwidth_gbps=8.0)
    vs = [ModelVariant(f"v{i}", "cls", acc, 1.0, {"GPU": LatencyProfile(t, 0.0)})
          for i, (acc, t) in enumerate([(0.6, 0.01), (0.7, 0.02), (0.9, 0.05)])]
    return Cluster([gpu], [DeviceSpec("GPU", "n")], vs)


@pytest.mark.parametrize("floor, expected_slot", [(0.0, 0), (0.65, 1), (0.8, 2)])
def test_infaas_takes_the_cheapest_variant_meeting_the_floor(floor, expected_slot):
    jobs = [request(0.0, slo=10.0, min_accuracy=floor)]
    env = SchedulingEnv(make_scenario(_three_variant_cluster(), jobs, K=1))
    env.reset(seed=0)
    a, _ = make("infaas", env).predict(None)
    assert decode(env, int(a)) == (0, expected_slot, 0)
    a, _ = make("clipper-high-acc", env).predict(None)
    assert decode(env, int(a)) == (0, 2, 0)
    a, _ = make("clipper-low-acc", env).predict(None)
    assert decode(env, int(a)) == (0, expected_slot, 0)


def test_infaas_waits_for_a_fast_busy_device_instead_of_a_slow_idle_one():
    # FAST is busy until ~0.7 s (cold 0.6 s + 0.1 s); the second task would take 1.5 s on SLOW
    # (cold 0.5 + 1.0) but finish at ~0.8 s on FAST: infaas and mct wait, fifo does not.
    jobs = [request(0.0, slo=100.0), request(0.0, slo=100.0)]
    env = SchedulingEnv(make_scenario(_two_type_cluster(0.0), jobs, K=2))
    env.reset(seed=0)
    env.step((0 * env.V + 0) * env.D + 0)  # first task on FAST
    assert not env.sim.dev_idle[0] and env.sim.dev_idle[1]
    for name in ("infaas", "mct", "adaptive"):
        a, _ = make(name, env).predict(None)
        assert int(a) == env.wait_action, name
    a, _ = make("fifo", env).predict(None)
    assert decode(env, int(a)) == (0, 0, 1)


# ---------------------------------------------------------------------- SB3 models
def test_load_policy_detects_sb3_algorithms_and_rolls_out(tmp_path):
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO

    env = gym.make("modelsched/ServingSmall-v1", disable_env_checker=True,
                   workload_overrides={"num_jobs": 30}, warmup_s=0.0)
    MaskablePPO("MultiInputPolicy", env, n_steps=16, batch_size=16, device="cpu", seed=0).save(tmp_path / "mppo.zip")
    (tmp_path / "plain").mkdir()
    PPO("MultiInputPolicy", env, n_steps=16, batch_size=16, device="cpu", seed=0).save(tmp_path / "plain" / "ppo.zip")
    model = load_policy(str(tmp_path / "mppo.zip"), env, device="cpu")
    assert type(model).__name__ == "MaskablePPO"
    res = run_episode(env, model, 0)
    assert res["terminated"] and res["invalid_actions"] == 0
    model = load_policy(str(tmp_path / "plain" / "ppo.zip"), env, device="cpu")
    assert type(model).__name__ == "PPO"
    res = run_episode(env, model, 0, max_steps=3000)  # unmasked: invalid actions become penalised waits
    assert env.unwrapped.invalid_action == "raise"  # restored after the episode
    assert res["steps"] > 0
    # A sidecar config.yml naming the algorithm is honoured.
    (tmp_path / "plain" / "config.yml").write_text("algo: ppo\n")
    from baselines.rollout import detect_algorithm

    assert detect_algorithm(tmp_path / "plain" / "ppo.zip") == "PPO"
    assert detect_algorithm(tmp_path / "mppo.zip") == "MaskablePPO"
    bad = tmp_path / "bad.zip"
    bad.write_text("not a zip")
    with pytest.raises(PolicyError, match="not a Stable-Baselines3 model"):
        load_policy(str(bad), env)
