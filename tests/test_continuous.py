"""Continuous batching of LLM requests (a scenario's ``continuous_batching``,
``envs.sim.continuous``): hand-computed iteration times, a preemption, the exact join mask,
failures with every request accounted for, bad input, the batched simulator's refusal, the
token metrics and the ``vllm`` baseline.

Golden cluster: one GPU (1 GB, 2 GB/s, 0.1 s load overhead) and one variant ``lm`` (0.5 GB of
weights, accuracy 0.8, 1 MB of KV cache per token: (1 - 0.5) x 1000 / 1 = 500 tokens; prefill
0.1 + 0.001 x tokens, decode 0.01 + 0.005 x (batch - 1)); no noise. Its load takes
0.1 + 0.5 / 2 = 0.35 s.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import baselines
import envs  # noqa: F401 (registers the ids)
from baselines.rollout import run_episode
from envs.batched import BatchedSimulator, UnsupportedFeature
from envs.config import ConfigError
from envs.env import SchedulingEnv
from envs.scenarios.loader import ContinuousBatching, load_scenario, read_scenario_dict
from envs.sim.cluster import Cluster, DeviceSpec
from envs.sim.continuous import ContinuousBatchingSimulator
from envs.sim.model import DeviceType, JobSpec, LatencyProfile, ModelVariant, StageSpec
from tests.conftest import TRACES, make_scenario

ID = "modelsched/LlmContinuous-v1"


def cb_cluster(mtbf=math.inf, mttr=0.0) -> Cluster:
    gpu = DeviceType("GPU", memory_gb=1.0, load_bandwidth_gbps=2.0, load_overhead_s=0.1, mtbf_s=mtbf, mttr_s=mttr)
    lm = ModelVariant("lm", "gen", 0.8, 0.5, {"GPU": LatencyProfile(0.1, 0.001, 0.01, 0.005)}, kv_mb_per_token=1.0)
    return Cluster([gpu], [DeviceSpec("GPU", "n0")], [lm])


def llm(arrival, prompt, out, slo=10.0):
    return JobSpec(arrival, (StageSpec("gen", float(prompt), float(out)),), slo)


def cb_env(jobs, K=4, **kw) -> SchedulingEnv:
    sc = make_scenario(cb_cluster(**kw), jobs, K=K)
    sc.continuous = ContinuousBatching(max_batch=4, ttft_slo=0.5, tpot_slo=0.05)
    return SchedulingEnv(sc)


def join_all(env):
    """Join every queued request (variant slot 0, device 0) until a decision is needed no more."""
    info = None
    while env.sim.queue_ids and env.action_masks()[0]:
        _, _, term, trunc, info = env.step(0)
        if term or trunc:
            break
    return info


def test_kv_capacity_and_ideal():
    cl = cb_cluster()
    assert cl.continuous
    assert cl.kv_tokens.tolist() == [[500.0]]
    env = cb_env([llm(0.0, 100, 4)])
    env.reset(seed=0)
    # The lone time: prefill emits the first token, then 3 decode iterations.
    assert env.sim.task(0).ideal == pytest.approx(0.1 + 0.001 * 100 + 0.01 * 3)


def test_golden_join_mid_decode():
    """j0 (prompt 100, 4 tokens) and j1 (200, 3) join at t = 0; j2 (50, 2) joins at 0.76,
    during a decode run.

    * Load until 0.35; prefill of 300 tokens, 0.1 + 0.3 = 0.4: first tokens at 0.75 (KV 101 +
      201 = 302 tokens). Decode run of n = 2 (0.015 per iteration), 2 iterations planned.
    * j2 joins at 0.76: the run is cut at the next boundary, 0.765 (1 iteration: 2 tokens
      each); j2 is admitted (KV 51) and prefilled, 0.1 + 0.05: first token at 0.915.
    * n = 3 (0.02): one iteration to 0.935: j1 has 3 tokens and j2 2: both done. n = 1 (0.01):
      j0's 4th token at 0.945."""
    env = cb_env([llm(0.0, 100, 4), llm(0.0, 200, 3), llm(0.76, 50, 2)])
    env.reset(seed=0)
    sim = env.sim
    assert isinstance(sim, ContinuousBatchingSimulator)
    env.step(0)
    env.step(0)  # both joined at t = 0; no more decisions until j2 arrives
    assert sim.now == pytest.approx(0.76)
    assert sim.counters.prefill_iterations == 1
    assert sim._tttft[0] == pytest.approx(0.75) and sim._tttft[1] == pytest.approx(0.75)
    info = None
    while True:
        _, _, term, trunc, info = env.step(0 if env.action_masks()[0] else env.wait_action)
        if term or trunc:
            break
    assert [sim._tfinish[i] for i in range(3)] == pytest.approx([0.945, 0.935, 0.935])
    assert [sim._tttft[i] for i in range(3)] == pytest.approx([0.75, 0.75, 0.915])
    m = info["metrics"]
    assert m["mean_latency"] == pytest.approx((0.945 + 0.935 + 0.175) / 3)
    assert m["ttft_mean"] == pytest.approx((0.75 + 0.75 + 0.155) / 3)
    tpot = [(0.945 - 0.75) / 3, (0.935 - 0.75) / 2, (0.935 - 0.915) / 1]
    assert m["tpot_mean"] == pytest.approx(np.mean(tpot))
    assert m["ttft_slo_attainment"] == pytest.approx(1 / 3)  # only j2 within 0.5 s
    assert m["tpot_slo_attainment"] == pytest.approx(1 / 3)  # only j2 within 0.05 s per token
    assert m["preemptions"] == 0 and m["completed"] == 3 and m["effective_accuracy"] == pytest.approx(0.8)
    # decode batch over decode time: 2 x 0.015 + 3 x 0.02 + 1 x 0.01 over 0.045
    assert m["mean_decode_batch"] == pytest.approx((2 * 0.015 + 3 * 0.02 + 0.01) / 0.045)
    assert sim._cb_kv_used == [0.0] and sim._cb_phase == [0]
    assert m["utilization"] == pytest.approx(1.0)


def test_golden_preemption_recompute():
    """Two requests of prompt 240 and 20 tokens: admitted together (241 + 241 = 482 of 500
    tokens); prefill 0.1 + 0.48 = 0.58 (first tokens at 0.93); 9 decode iterations of 0.015 fill
    the cache (500 tokens) at 1.065; j1 (the later) is preempted, keeping its 10 tokens; j0
    alone, 10 iterations of 0.01, done at 1.165; j1 recomputed: prefill of 240 + 10 tokens,
    0.35, its 11th token at 1.515, 9 more iterations: done at 1.605 (TTFT unchanged)."""
    env = cb_env([llm(0.0, 240, 20), llm(0.0, 240, 20)])
    env.reset(seed=0)
    info = join_all(env)
    while info is None or not (info.get("metrics")):
        _, _, term, trunc, info = env.step(env.wait_action)
        if term or trunc:
            break
    sim = env.sim
    assert sim.counters.preemptions == 1
    assert [sim._tfinish[0], sim._tfinish[1]] == pytest.approx([1.165, 1.605])
    assert [sim._tttft[0], sim._tttft[1]] == pytest.approx([0.93, 0.93])
    assert sim.counters.prefill_iterations == 2
    assert info["metrics"]["preemptions"] == 1.0


def test_mask_is_exact_and_kv_bounded():
    """At every decision of a random policy on the built-in scenario: the mask equals
    check_assignment for every (slot, variant, device); KV use stays within capacity; time is
    monotone; every request is accounted for; latency >= ideal."""
    env = gym.make(ID, workload_overrides={"num_jobs": 150}).unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=3)
    sim = env.sim
    K, V, D = env.K, env.V, env.D
    last = 0.0
    steps = 0
    while True:
        mask = env.action_masks()
        if steps % 7 == 0:
            for k in range(K):
                for v in range(V):
                    for d in range(D):
                        assert mask[(k * V + v) * D + d] == (sim.check_assignment(k, v, d) is None), (k, v, d)
        for d in range(D):
            assert sim._cb_kv_used[d] <= sim._cb_kv_cap[d] + 1e-9
            assert sim._held(d) <= sim.max_batch
        valid = np.flatnonzero(mask)
        a = int(rng.choice(valid)) if rng.random() < 0.8 else env.wait_action
        _, _, term, trunc, info = env.step(a)
        acc = info["accounting"]
        assert acc["arrived"] == acc["completed"] + acc["dropped"] + acc["queued"] + acc["running"]
        assert sim.now >= last
        last = sim.now
        steps += 1
        if term or trunc:
            break
    assert term
    from envs.sim.model import DONE
    for t in sim.tasks:
        if t.state == DONE:
            assert t.finish - t.arrival >= t.ideal - 1e-9
    assert info["metrics"]["completed"] + info["metrics"]["drops"] == info["metrics"]["arrived"]


def test_failures_lose_no_request():
    """Device failures (MTBF 20 s, MTTR 5 s) on the built-in scenario: every request held by a
    failed device is requeued, the accounting identity holds at every step, nothing is lost."""
    raw, _, _ = read_scenario_dict("llm-continuous")
    raw["device_types"] = {"H100": {"memory_gb": 80, "load_bandwidth_gbps": 25, "mtbf_s": 20.0, "mttr_s": 5.0},
                           "A100-80GB": {"memory_gb": 80, "load_bandwidth_gbps": 13, "mtbf_s": 20.0, "mttr_s": 5.0}}
    raw["workload"]["num_jobs"] = 300
    env = SchedulingEnv(raw)
    policy = baselines.make("fifo", env)
    res = run_episode(env, policy, seed=1)
    m = res["metrics"]
    sim = env.sim
    assert sim.counters.failures > 0 and sim.counters.requeues > 0
    c = sim.counters
    assert c.arrived == c.completed + c.dropped and c.queued == 0 and c.running == 0
    assert m["arrived"] == 300 and m["completed"] + m["drops"] == 300


def test_same_seed_same_episode():
    runs = []
    for _ in range(2):
        env = gym.make(ID, workload_overrides={"num_jobs": 200}).unwrapped
        runs.append(run_episode(env, baselines.make("vllm", env), seed=5)["metrics"])
    assert runs[0] == runs[1]


def test_gymnasium_checker_and_observation_keys():
    from gymnasium.utils.env_checker import check_env

    env = gym.make(ID, workload_overrides={"num_jobs": 50})
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    assert set(obs) >= {"queues", "device_batch", "kv_use"}
    assert u.action_space.n == u.K * u.V * u.D + 1
    for key, box in u.observation_space.spaces.items():
        assert box.contains(obs[key]), key


def test_batched_simulator_refuses_by_name():
    with pytest.raises(UnsupportedFeature, match="continuous batching"):
        BatchedSimulator(load_scenario("llm-continuous"), 2)


def _bad(mutate):
    raw, _, _ = read_scenario_dict("llm-continuous")
    mutate(raw)
    return raw


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r.pop("continuous_batching"), "has kv_mb_per_token .* no 'continuous_batching' section"),
    (lambda r: r["variants"][0].pop("kv_mb_per_token"), r"llama-2-7b\): latency.H100 has a 4th coefficient"),
    (lambda r: (r["variants"][0].pop("kv_mb_per_token"), r["variants"][0].pop("latency")),
     "variants.llama-2-7b: a continuous_batching scenario needs kv_mb_per_token"),
    (lambda r: r["variants"][2].update(kv_mb_per_token=5.0), "variants.llama-2-70b.kv_mb_per_token: the KV cache"),
    (lambda r: r["continuous_batching"].update(max_batch=0), "max_batch"),
    (lambda r: r["continuous_batching"].update(typo=1), "typo"),
    (lambda r: r.update(batching={"sizes": [1, 2]}), "exclusive"),
])
def test_bad_input_names_the_key(mutate, match):
    with pytest.raises(ConfigError, match=match):
        load_scenario(_bad(mutate))


def test_decode_slope_needs_kv():
    raw, _, _ = read_scenario_dict("serving-small")
    name = raw["variants"][0]
    raw["variants"][0] = {"name": name, "from_library": True, "latency": {"T4": [0.001, 0.001, 0.0, 0.1]}}
    with pytest.raises(ConfigError, match="4th coefficient"):
        load_scenario(raw)


def test_vllm_baseline_and_heuristics_run():
    """The registry's rules run on continuous batching; the vllm router with a fixed variant
    serves only that variant."""
    env = gym.make(ID, workload_overrides={"num_jobs": 200}).unwrapped
    res = run_episode(env, baselines.make("vllm", env, variant="fastest"), seed=0)
    assert res["metrics"]["mean_accuracy"] == pytest.approx(0.453)
    for name in ("fifo", "mct", "adaptive", "vllm"):
        env = gym.make(ID, workload_overrides={"num_jobs": 100}).unwrapped
        m = run_episode(env, baselines.make(name, env), seed=0)["metrics"]
        assert m["completed"] + m["drops"] == 100, name


AZURE = TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"


@pytest.mark.skipif(not AZURE.exists(), reason="the shared Azure LLM trace is not present")
def test_trace_replay_in_real_time():
    """The first 300 s of the Azure conversation trace at time_scale 1 (the scenario's default):
    every request is accounted for (served, or dropped as infeasible beyond Llama 2's 4,096
    tokens), and the 4 GPUs keep up with the real rate on 13B."""
    env = gym.make(ID, trace=str(AZURE), trace_window=(0, 300)).unwrapped
    assert env.scenario.workload.time_scale == 1.0
    m = run_episode(env, baselines.make("vllm", env, variant="median"), seed=0)["metrics"]
    c = env.sim.counters
    assert c.arrived == c.completed + c.dropped and c.queued == 0 and c.running == 0
    assert m["arrived"] > 1000
    assert m["drops"] == m["infeasible"] > 0
    assert m["slo_attainment"] == pytest.approx(1 - m["infeasible"] / m["arrived"], abs=0.01)
