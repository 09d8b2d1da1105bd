"""The batched simulator against the reference, step by step.

B instances seeded s..s+B-1 and B ``SchedulingEnv`` reset with the same seeds are driven by the
same actions (random valid ones, heuristics' choices, invalid ones under ``penalize``), through
autoresets; at every step masks, the four observation arrays, rewards, terminated/truncated,
accounting, reward terms and time must be identical (``==``, bit for bit), and at every
episode end the metrics. Then the Gymnasium vector env against ``SyncVectorEnv`` of the
reference, the SB3 VecEnv against ``DummyVecEnv`` of ``Monitor``-wrapped reference envs, and
the errors bad input gets.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import baselines
import envs
from envs.batched import BatchedSimulator, UnsupportedFeature
from envs.env import SchedulingEnv
from envs.scenarios.loader import load_scenario
from tests.conftest import TRACES, golden_cluster, make_scenario, request, run_without_heavy_imports, without_reference_only_features

IDS = envs.registered_ids()


def _scenario_of(env_id: str) -> str:
    spec = gym.spec(env_id)
    return spec.kwargs.get("scenario", "serving-small")


def _same_metrics(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in a)


def drive(scenario, B: int, steps: int, seed: int, *, policy: str = "random", invalid_action: str = "raise",
          action_seed: int = 0) -> dict[str, int]:
    """Run B reference envs and a batch of B side by side; assert equality at every step.
    Returns counts of what was covered (episodes, waits, assignments)."""
    sc = scenario if not isinstance(scenario, str) else load_scenario(scenario)
    refs = [SchedulingEnv(sc, invalid_action=invalid_action) for _ in range(B)]
    bs = BatchedSimulator(sc, B, invalid_action=invalid_action)
    bs.reset(seed=seed)
    obs = [e.reset(seed=seed + i)[0] for i, e in enumerate(refs)]
    pols = [baselines.make(policy, e, seed=i) for i, e in enumerate(refs)] if policy != "random" else None
    rng = np.random.default_rng(action_seed)
    seen = {"episodes": 0, "waits": 0, "assignments": 0, "steps": 0}

    def compare(where: str) -> None:
        masks, o = bs.action_masks(), bs.observations()
        for i, e in enumerate(refs):
            assert np.array_equal(masks[i], e.action_masks()), f"{where}: instance {i}: mask"
            for k in o:
                assert np.array_equal(o[k][i], obs[i][k]), f"{where}: instance {i}: observation {k!r}"
            assert bs.now[i] == e.unwrapped.sim.now, f"{where}: instance {i}: time"

    compare("reset")
    wait = bs.n_actions - 1
    for step in range(steps):
        masks = bs.action_masks()
        if pols is not None:
            acts = np.array([int(p.predict(None)[0]) for p in pols])
        elif invalid_action == "penalize":
            acts = rng.integers(0, bs.n_actions, size=B)
        else:
            acts = np.array([rng.choice(np.flatnonzero(m)) for m in masks])
        bs.step(acts)
        rewards, term, trunc, acc, terms = bs.rewards, bs.terminated, bs.truncated, bs.accounting(), bs.reward_terms()
        for i, e in enumerate(refs):
            o, r, te, tr, info = e.step(int(acts[i]))
            obs[i] = o
            where = f"step {step}: instance {i}"
            assert r == rewards[i], f"{where}: reward {r} != {rewards[i]}"
            assert (te, tr) == (term[i], trunc[i]), f"{where}: terminated/truncated"
            assert all(acc[k][i] == v for k, v in info["accounting"].items()), f"{where}: accounting"
            assert all(terms[k][i] == v for k, v in info["reward_terms"].items()), f"{where}: reward terms"
            a = info["accounting"]
            assert a["arrived"] == a["completed"] + a["dropped"] + a["queued"] + a["running"]
            seen["waits" if acts[i] == wait else "assignments"] += 1
            if te or tr:
                assert _same_metrics(bs.episode_metrics(i), info["metrics"]), f"{where}: metrics"
                seen["episodes"] += 1
                obs[i] = e.reset()[0]
                if pols is not None:
                    pols[i].reset()
        bs.reset_done()
        compare(f"step {step}")
        seen["steps"] += 1
    return seen


def _batched_form(env_id: str):
    """The id's scenario as the batched simulator can run it: a scenario with dynamic or
    continuous batching is refused by name (checked here), and the rest of it (batching off)
    is compared."""
    sc = load_scenario(_scenario_of(env_id))
    if sc.reference_only is not None:
        with pytest.raises(UnsupportedFeature, match=sc.reference_only):
            BatchedSimulator(sc, 2)
        sc = without_reference_only_features(_scenario_of(env_id))
        assert sc.reference_only is None
    return sc


@pytest.mark.parametrize("env_id", IDS)
def test_every_id_random_actions_bit_identical(env_id):
    seen = drive(_batched_form(env_id), B=3, steps=500, seed=11)
    assert seen["assignments"] > 100 and seen["waits"] > 10


#: One heuristic per id (a new id gets one of the rest in turn).
HEURISTICS = {"modelsched/Scheduling-v1": "edf", "modelsched/FaultyCluster-v1": "mct", "modelsched/LlmServing-v1": "fifo",
              "modelsched/Pipelines-v1": "sjf", "modelsched/ServingHetero-v1": "infaas",
              "modelsched/ServingSmall-v1": "tetris", "modelsched/TrainingCluster-v1": "priority-greedy",
              "modelsched/ServingBatched-v1": "least-loaded"}
_OTHERS = ["round-robin", "edf", "mct", "fifo"]


@pytest.mark.parametrize("env_id,policy", [(i, HEURISTICS.get(i, _OTHERS[n % len(_OTHERS)])) for n, i in enumerate(IDS)])
def test_every_id_heuristic_actions_bit_identical(env_id, policy):
    seen = drive(_batched_form(env_id), B=2, steps=300, seed=5, policy=policy)
    assert seen["assignments"] > 50


def test_autoresets_over_many_short_episodes():
    sc = load_scenario("serving-small", workload_overrides={"num_jobs": 12}, warmup_s=0.0)
    seen = drive(sc, B=4, steps=400, seed=0)
    assert seen["episodes"] >= 20


OVERRIDES = {
    "horizon truncation and queue-full drops": ("serving-small", {"horizon": 1.5, "queue_capacity": 20}),
    "drop_expired false": ("serving-small", {"drop_expired": False}),
    "noise_cv 0": ("serving-hetero", {"noise_cv": 0.0}),
    "failures on": ("faulty-cluster", {}),
    "failures with a horizon": ("faulty-cluster", {"horizon": 3.0}),
    "DAG drops with a small queue": ("pipelines", {"queue_capacity": 8}),
    "gangs with a horizon": ("training-cluster", {"horizon": 20000.0}),
    "K = 2": ("serving-hetero", {"visible_tasks": 2}),
    "warm-up": ("serving-small", {"warmup_s": 1.0}),
    "warm-up with failures": ("faulty-cluster", {"warmup_s": 2.0}),
    "warm-up with DAGs and a horizon": ("pipelines", {"warmup_s": 3.0, "horizon": 20.0}),
}


@pytest.mark.parametrize("case", list(OVERRIDES))
def test_overrides_bit_identical(case):
    name, over = OVERRIDES[case]
    drive(load_scenario(name, **over), B=3, steps=300, seed=3)


def test_truncation_is_reached():
    sc = load_scenario("serving-small", horizon=0.5)
    refs = BatchedSimulator(sc, 2)
    refs.reset(seed=0)
    for _ in range(2000):
        m = refs.action_masks()
        refs.step(np.argmax(m, axis=1))
        if refs.truncated.all():
            break
        refs.reset_done()
    assert refs.truncated.any()
    drive(sc, B=2, steps=300, seed=0)


def test_gang_tasks_under_failures_with_instant_repair():
    """Two-device tasks on a cluster whose devices fail often and are repaired at once (mttr 0):
    requeues of gang tasks, failures at the instant of other events."""
    jobs = [request(0.05 * i, size=1.0 + i % 3, slo=2.0, devices=1 + i % 2) for i in range(80)]
    sc = make_scenario(golden_cluster(n_gpus=3, mtbf=0.7, mttr=0.0), jobs, K=3, drop_expired=True, noise_cv=0.05)
    drive(sc, B=3, steps=400, seed=2)
    sc = make_scenario(golden_cluster(n_gpus=4, mtbf=0.5, mttr=0.3), jobs, K=4, noise_cv=0.05)
    drive(sc, B=3, steps=400, seed=9)


def test_penalized_invalid_actions_bit_identical():
    drive("serving-small", B=3, steps=300, seed=4, invalid_action="penalize")


@pytest.mark.parametrize("name,kw", [
    ("llm-serving", {"trace": "azure_llm_2023/AzureLLMInferenceTrace_conv.csv", "trace_window": (0, 120)}),
    ("training-cluster", {"trace": "philly/philly.csv", "max_jobs": 300}),
])
def test_trace_replay_bit_identical(name, kw):
    path = TRACES / kw["trace"]
    if not path.exists():
        pytest.skip(f"shared trace {kw['trace']} not present")
    drive(load_scenario(name, **{**kw, "trace": str(path)}), B=2, steps=300, seed=1)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(["serving-small", "serving-hetero", "pipelines", "faulty-cluster"]),
       K=st.integers(1, 6), qcap=st.integers(1, 64), horizon=st.sampled_from([math.inf, 0.7, 3.0]),
       noise=st.sampled_from([0.0, 0.05, 0.3]), seed=st.integers(0, 2**20), drop=st.booleans())
def test_random_scenario_overrides_bit_identical(name, K, qcap, horizon, noise, seed, drop):
    sc = load_scenario(name, visible_tasks=K, queue_capacity=qcap, horizon=horizon, noise_cv=noise,
                       drop_expired=drop, workload_overrides={"num_jobs": 60})
    drive(sc, B=2, steps=120, seed=seed, action_seed=seed)


def test_same_seed_same_batch_and_instance_i_is_seed_plus_i():
    sc = load_scenario("serving-hetero")
    a, b, c = BatchedSimulator(sc, 3), BatchedSimulator(sc, 3), BatchedSimulator(sc, 1)
    a.reset(seed=20)
    b.reset(seed=[20, 21, 22])
    c.reset(seed=22)
    for _ in range(200):
        act = np.argmax(a.action_masks(), axis=1)
        a.step(act)
        b.step(act)
        c.step(act[2:])
        assert np.array_equal(a.rewards, b.rewards) and a.rewards[2] == c.rewards[0]
        assert np.array_equal(a.observations()["estimates"], b.observations()["estimates"])
        a.reset_done(), b.reset_done(), c.reset_done()


# ------------------------------------------------------------------ bad input
def test_bad_input_is_refused_with_the_instance_and_the_reason():
    sc = load_scenario("serving-small")
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="num_envs"):
            BatchedSimulator(sc, bad)
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        BatchedSimulator(sc, 2, backend="gpu")
    bs = BatchedSimulator(sc, 3)
    with pytest.raises(ValueError, match="got 2 seeds for 3 instances"):
        bs.seed([1, 2])
    with pytest.raises(ValueError, match="seed of instance 1"):
        bs.seed([1, -2, 3])
    bs.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        bs.step(np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="instance 1: action 98 is outside Discrete"):
        bs.step(np.array([0, 98, 0]))
    with pytest.raises(ValueError, match="instance 0: action 0.5 is not an integer"):
        bs.step(np.array([0.5, 0.0, 0.0]))
    masks = bs.action_masks()
    act = np.argmax(masks, axis=1)
    invalid = int(np.flatnonzero(~masks[2])[0])
    act[2] = invalid
    before = bs.observations()["estimates"].copy()
    with pytest.raises(ValueError, match=r"instance 2: invalid action \d+: queue slot \d+, variant slot \d+, "
                                         r"device \d+: "):
        bs.step(act)
    assert np.array_equal(before, bs.observations()["estimates"])  # nothing stepped


def test_a_device_that_is_not_there_is_refused():
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ValueError, match="CUDA is not available"):
        gym.make_vec("modelsched/ServingSmall-v1", num_envs=2, vectorization_mode="vector_entry_point",
                     device="cuda")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        gym.make_vec("modelsched/ServingSmall-v1", num_envs=2, vectorization_mode="vector_entry_point",
                     device="tpu")


def test_the_batched_core_imports_neither_gymnasium_nor_torch():
    out = run_without_heavy_imports("""
        import numpy as np
        from envs.scenarios.loader import load_scenario
        from envs.batched import BatchedSimulator, UnsupportedFeature
        bs = BatchedSimulator(load_scenario('serving-small', workload_overrides={'num_jobs': 20}), 2)
        bs.reset(seed=0)
        for _ in range(50):
            bs.step(np.argmax(bs.action_masks(), axis=1))
            bs.reset_done()
        bad = [m for m in sys.modules if m.split('.')[0] in ('gymnasium', 'torch')]
        assert not bad, bad
        print('ok')
    """)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------ Gymnasium vector env
def _compare_infos(a: dict, b: dict) -> None:
    """Batched infos equal where the reference has them (its ``_key`` masks)."""
    for k, v in b.items():
        if k.startswith("_") or k == "final_obs":
            continue
        if isinstance(v, dict):
            _compare_infos(a[k], v)
        else:
            m = b[f"_{k}"]
            assert np.array_equal(a[k][m], v[m], equal_nan=True), k
            assert np.array_equal(a[f"_{k}"], m), k


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("env_id", ["modelsched/ServingSmall-v1", "modelsched/Pipelines-v1"])
def test_make_vec_equals_sync_vector_env_of_the_reference(env_id, mode):
    kw = {"workload_overrides": {"num_jobs": 40}, "warmup_s": 0.0}
    v = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point", autoreset_mode=mode, **kw)
    s = gym.make_vec(env_id, num_envs=3, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}, **kw)
    assert v.metadata["autoreset_mode"] == mode
    assert v.single_observation_space == s.single_observation_space
    assert v.single_action_space == s.single_action_space and v.action_space == s.action_space
    o1, i1 = v.reset(seed=5)
    o2, i2 = s.reset(seed=5)
    _compare_infos(i1, i2)
    rng = np.random.default_rng(0)
    ends = 0
    for t in range(400):
        m = v.unwrapped.action_masks()
        assert m.shape == (3, v.single_action_space.n)
        assert np.array_equal(m, np.stack(s.call("action_masks"))), t
        a = np.array([rng.choice(np.flatnonzero(row)) for row in m])
        o1, r1, te1, tr1, i1 = v.step(a)
        o2, r2, te2, tr2, i2 = s.step(a)
        for k in o2:
            assert np.array_equal(o1[k], o2[k]), (t, k)
        assert np.array_equal(r1, r2) and np.array_equal(te1, te2) and np.array_equal(tr1, tr2), t
        _compare_infos(i1, i2)
        if "final_obs" in i2:
            for b in np.flatnonzero(i2["_final_obs"]):
                assert all(np.array_equal(i1["final_obs"][b][k], i2["final_obs"][b][k]) for k in o2)
        ends += int(np.sum(te2 | tr2))
    assert ends >= 3


# ------------------------------------------------------------------ SB3
def test_sb3_vec_env_equals_dummy_vec_env_of_monitored_reference_envs():
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.batched_vec import BatchedVecEnv
    over = {"workload_overrides": {"num_jobs": 30}, "warmup_s": 0.0}
    bv = BatchedVecEnv("serving-hetero", n_envs=3, **over)
    dv = DummyVecEnv([lambda: Monitor(SchedulingEnv("serving-hetero", **over)) for _ in range(3)])
    bv.seed(7)
    dv.seed(7)
    o1, o2 = bv.reset(), dv.reset()
    rng = np.random.default_rng(1)
    ends = 0
    for t in range(300):
        m = np.stack(bv.env_method("action_masks"))
        assert np.array_equal(m, np.stack(dv.env_method("action_masks"))), t
        a = np.array([rng.choice(np.flatnonzero(row)) for row in m])
        o1, r1, d1, f1 = bv.step(a)
        o2, r2, d2, f2 = dv.step(a)
        for k in o2:
            assert np.array_equal(o1[k], o2[k]), (t, k)
        assert np.array_equal(r1, r2) and np.array_equal(d1, d2), t
        for b in np.flatnonzero(d2):
            ends += 1
            for k in o2:
                assert np.array_equal(f1[b]["terminal_observation"][k], f2[b]["terminal_observation"][k])
            assert f1[b]["TimeLimit.truncated"] == f2[b]["TimeLimit.truncated"]
            assert f1[b]["episode"]["l"] == f2[b]["episode"]["l"]
            assert f1[b]["episode"]["r"] == f2[b]["episode"]["r"]  # rounded to 6 decimals by both
            assert _same_metrics(f1[b]["metrics"], f2[b]["metrics"])
    assert ends >= 3


SHORT = {"workload_overrides": {"num_jobs": 25}, "warmup_s": 0.0}


@pytest.mark.parametrize("scenario, shaping, over", [
    ("serving-small", {"base": "effective_accuracy", "potential": "queue", "scale": 0.1}, SHORT),  # the demo's
    ("faulty-cluster", {"base": "env", "potential": "running", "term_scale": {"latency": 0.5}}, SHORT),
    ("training-cluster", {"base": "slo_attainment", "potential": "queue"}, SHORT),
    ("serving-hetero", {"base": "env", "potential": "none", "term_scale": {"slo": 2.0}}, SHORT),
    # Warm-up tasks (the first 0.4 s of ~1 s) pay nothing and count in no potential, in both.
    ("serving-small", {"base": "effective_accuracy", "potential": "queue"},
     {"workload_overrides": {"num_jobs": 100}, "warmup_s": 0.4}),
    ("serving-small", {"base": "env", "potential": "running"}, {"workload_overrides": {"num_jobs": 100}, "warmup_s": 0.4}),
])
def test_batched_reward_shaping_equals_the_reference_wrapper(scenario, shaping, over):
    """BatchedVecEnv(shaping=...) against DummyVecEnv of RewardShaping(Monitor(SchedulingEnv)):
    the same float32 training rewards at every step, across autoresets; episode infos keep the
    env's own return."""
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from agents.batched_vec import BatchedVecEnv
    from agents.shaping import RewardShaping

    kw = {"gamma": 0.97, **shaping}
    bv = BatchedVecEnv(scenario, n_envs=3, shaping=kw, **over)
    dv = DummyVecEnv([lambda: RewardShaping(Monitor(SchedulingEnv(scenario, **over)), **kw) for _ in range(3)])
    bv.seed(11)
    dv.seed(11)
    bv.reset(), dv.reset()
    rng = np.random.default_rng(2)
    ends = 0
    for t in range(400):
        m = np.stack(bv.env_method("action_masks"))
        a = np.array([rng.choice(np.flatnonzero(row)) for row in m])
        _, r1, d1, f1 = bv.step(a)
        _, r2, d2, f2 = dv.step(a)
        assert np.array_equal(d1, d2), t
        assert np.array_equal(r1, r2), (t, r1, r2)
        for b in np.flatnonzero(d2):
            ends += 1
            assert f1[b]["episode"]["r"] == f2[b]["episode"]["r"]  # rounded to 6 decimals by both
    assert ends >= 1


def test_maskable_ppo_trains_unchanged_on_the_batched_vec_env():
    from sb3_contrib import MaskablePPO
    from sb3_contrib.common.maskable.utils import get_action_masks, is_masking_supported

    from agents.batched_vec import BatchedVecEnv
    env = BatchedVecEnv("serving-small", n_envs=8, seed=0, workload_overrides={"num_jobs": 40}, warmup_s=0.0)
    env.reset()
    assert is_masking_supported(env) and get_action_masks(env).shape == (8, env.action_space.n)
    model = MaskablePPO("MultiInputPolicy", env, n_steps=32, batch_size=128, n_epochs=1, seed=0, device="cpu")
    model.learn(512)
    assert model.num_timesteps >= 512 and len(model.ep_info_buffer) > 0
