"""Dynamic batching (a scenario's ``batching.sizes``): a hand-computed episode, the exact batch
mask, requeues of a whole batch on a device failure, bad input, the batched simulator's refusal,
and the batching heuristics.

Golden case (``golden_cluster``: one GPU, 1 GB, load 0.1 s + GB / 2 GB/s; ``small`` 0.4 GB,
accuracy 0.7, 0.1 + 0.05 x size; ``big`` 0.8 GB, accuracy 0.9, 0.2 + 0.1 x size; no noise),
batch sizes (1, 2, 4), K = 2. Four requests at t = 0, SLO 1 s, in queue order:
j0 (size 2), jA (size 1, accuracy floor 0.8: only ``big`` serves it), j1 (size 1), j3 (size 3).

* t = 0: batchable tasks from window slot 0 for ``small``: j0, j1, j3 (not jA) -> 3; for
  ``big``: 4. From slot 1 (jA): ``small`` 0 (jA cannot run it), ``big`` jA, j3 -> wait, j1 too
  -> 3. So (slot 0, small, batch 4) is masked, (slot 0, big, batch 4) is not.
* Action (slot 0, small, batch 2): members j0 and j1 (j1 is beyond the window). Cold load
  0.1 + 0.4 / 2 = 0.3, execution 0.1 + 0.05 x (2 + 1) = 0.25: both finish at 0.55.
* t = 0.55: queue jA, j3. Action (slot 0, big, batch 2): jA and j3. ``big`` does not fit next
  to ``small`` (0.4 + 0.8 > 1): ``small`` is evicted; load 0.1 + 0.8 / 2 = 0.5, execution
  0.2 + 0.1 x (1 + 3) = 0.6: both finish at 1.65 (late).
* Latencies 0.55, 0.55, 1.65, 1.65; effective accuracy (0.7 + 0.7) / 4 = 0.35; two batches
  of two; two cold starts, one eviction; the GPU busy throughout.
"""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
import pytest

import baselines
import envs
from baselines.rollout import run_episode
from envs.batched import BatchedSimulator, UnsupportedFeature
from envs.config import ConfigError
from envs.env import SchedulingEnv
from envs.scenarios.loader import load_scenario, read_scenario_dict
from envs.sim.model import QUEUED
from tests.conftest import golden_cluster, make_scenario, request

SIZES = (1, 2, 4)


def golden_env(K=2, mtbf=math.inf) -> SchedulingEnv:
    jobs = [request(0.0, size=2.0), request(0.0, min_accuracy=0.8), request(0.0), request(0.0, size=3.0)]
    sc = make_scenario(golden_cluster(mtbf=mtbf), jobs, K=K)
    sc.batch_sizes = SIZES
    return SchedulingEnv(sc)


def act(env, k, v, d, b):
    return ((b * env.K + k) * env.V + v) * env.D + d


def test_golden_batched_episode():
    env = golden_env()
    env.reset(seed=0)
    sim = env.sim
    assert env.action_space.n == 3 * 2 * 2 * 1 + 1
    assert sim.batch_counts().tolist() == [[3, 4], [0, 3]]
    bm = sim.batch_mask()  # (K, V, D, B)
    assert bm[0, 0, 0].tolist() == [True, True, False]  # small: 3 batchable, not 4
    assert bm[0, 1, 0].tolist() == [True, True, True]
    assert bm[1, 0, 0].tolist() == [False, False, False]  # jA cannot run small
    mask = env.action_masks()
    assert mask[act(env, 0, 0, 0, 2)] == False and mask[act(env, 0, 1, 0, 2)] == True  # noqa: E712
    # Block 0 of the action space is the unbatched action (the same mask as without batching).
    assert mask[:env.K * env.V * env.D].tolist() == sim.action_mask().ravel().tolist()
    with pytest.raises(ValueError, match="batch of 4: fewer queued requests"):
        env.step(act(env, 0, 0, 0, 2))

    _, _, term, _, info = env.step(act(env, 0, 0, 0, 1))
    assert sim.now == pytest.approx(0.55, abs=1e-12)
    done = [t for t in sim.tasks if t.state == 3]
    assert sorted(t.id for t in done) == [0, 2]  # j0 and j1 (the third queued request)
    assert all(t.finish == pytest.approx(0.55, abs=1e-12) and t.accuracy == 0.7 for t in done)
    assert [t.id for t in sim.queue] == [1, 3]
    assert sim.counters.batches == 1 and sim.counters.batched_tasks == 2
    assert info["accounting"]["completed"] == 2 and info["accounting"]["queued"] == 2

    _, _, term, trunc, info = env.step(act(env, 0, 1, 0, 1))
    assert term and not trunc
    assert sim.now == pytest.approx(1.65, abs=1e-12)
    lat = sorted(t.finish - t.arrival for t in sim.tasks)
    assert lat == pytest.approx([0.55, 0.55, 1.65, 1.65], abs=1e-12)
    m = info["metrics"]
    assert m["effective_accuracy"] == pytest.approx(0.35, abs=1e-12)
    assert m["slo_attainment"] == pytest.approx(0.5, abs=1e-12)
    assert m["cold_starts"] == 2 and sim.counters.evictions == 1
    assert m["utilization"] == pytest.approx(1.0, abs=1e-12)
    assert sim.counters.batches == 2 and sim.counters.batched_tasks == 4
    assert all(t.finish - t.arrival >= t.ideal - 1e-12 for t in sim.tasks)


def test_a_device_failure_requeues_every_member_of_the_batch():
    env = golden_env()
    env.reset(seed=0)
    sim = env.sim
    sim.assign(0, 1, 0, b=2)  # all four on big
    assert sim.counters.running == 4 and sim.counters.queued == 0
    assert sorted(sim.running_batch(0)) == [0, 1, 2, 3]
    sim._on_fail(0)
    assert sim.counters.requeues == 4 and sim.counters.running == 0 and sim.counters.queued == 4
    assert sim.queue_ids == [0, 1, 2, 3]  # back in ready order
    assert all(sim.task(i).state == QUEUED and sim.task(i).requeues == 1 for i in range(4))
    assert sim.running_batch(0) == ()
    acc = sim.accounting()
    assert acc["arrived"] == acc["completed"] + acc["dropped"] + acc["queued"] + acc["running"]
    sim.process_until(math.inf)  # the stale finish events of the cut batch change nothing
    assert sim.counters.completed == 0 and sim.counters.queued == 4


def _brute_force_mask(env) -> np.ndarray:
    sim = env.sim
    K, V, D = env.K, env.V, env.D
    out = np.zeros(env.n_actions, dtype=bool)
    out[-1] = True
    for a in range(env.n_actions - 1):
        b, rest = divmod(a, K * V * D)
        k, rest = divmod(rest, V * D)
        v, d = divmod(rest, D)
        out[a] = sim.check_assignment(k, v, d, b) is None
    return out


@pytest.mark.parametrize("failures", [False, True])
def test_batch_mask_is_exact_and_every_request_is_accounted_for(failures):
    """Random valid actions (batches preferred) on serving-batched (at half its load, with
    loose SLOs, so that random choices leave a queue to batch from), with and without device
    failures: the mask equals a brute-force check of every action; every step keeps the
    accounting identity, memory within capacity and time monotone; at the end every request is
    completed or dropped, with latency >= its ideal time."""
    raw, _, _ = read_scenario_dict("serving-batched")
    raw = copy.deepcopy(raw)
    raw["workload"].update(num_jobs=300, load=0.5, slo_multiplier=100.0)  # (random choices: long loads)
    raw["warmup_s"] = 0.0
    if failures:
        raw["device_types"] = {"A100": {"memory_gb": 40.0, "load_bandwidth_gbps": 13.0, "mtbf_s": 0.02,
                                        "mttr_s": 0.005}}
    env = SchedulingEnv(raw)
    rng = np.random.default_rng(7)
    env.reset(seed=3)
    sim = env.sim
    now, steps, batched_steps = 0.0, 0, 0
    done = False
    while not done:
        mask = env.action_masks()
        assert mask.tolist() == _brute_force_mask(env).tolist()
        valid = np.flatnonzero(mask[:-1])
        if len(valid):
            big = valid[valid >= env.K * env.V * env.D]
            a = int(rng.choice(big if len(big) and rng.random() < 0.8 else valid))
            batched_steps += a >= env.K * env.V * env.D
        else:
            a = env.n_actions - 1
        _, _, term, trunc, info = env.step(a)
        acc = info["accounting"]
        assert acc["arrived"] == acc["completed"] + acc["dropped"] + acc["queued"] + acc["running"]
        assert np.all(sim.dev_memory_used <= sim.cluster.dev_memory + 1e-9)
        assert sim.now >= now
        now = sim.now
        steps += 1
        done = term or trunc
    assert term
    assert batched_steps > 10 and sim.counters.batches == batched_steps
    c = sim.counters
    assert c.completed + c.dropped == c.arrived == 300
    if failures:
        assert c.failures > 0 and c.requeues > 0
    assert all(t.finish - t.arrival >= t.ideal - 1e-12 for t in sim.tasks if t.state == 3)


def test_bad_batching_input_is_refused_by_name():
    raw, _, _ = read_scenario_dict("serving-batched")

    def load(**changes):
        r = copy.deepcopy(raw)
        r.update(changes)
        return load_scenario(r)

    for sizes, what in [([2, 4], "must start at 1"), ([1, 4, 4], "increase strictly"), ([1, 2.5], "integers"),
                        ([], "non-empty"), (list(range(1, 10)), "at most 8")]:
        with pytest.raises(ConfigError, match=f"batching.sizes: .*{what}"):
            load(batching={"sizes": sizes})
    with pytest.raises(ConfigError, match="batching.*unknown key 'size'"):
        load(batching={"size": [1, 2]})
    # A batch size no variant can take: every variant's max_batch is smaller.
    r = copy.deepcopy(raw)
    r["variants"] = [{"name": v, "from_library": True, "max_batch": 8} for v in raw["variants"]]
    with pytest.raises(ConfigError, match="batching.sizes: batch size 16 is larger than every variant's max_batch"):
        load_scenario(r)
    r["variants"][0]["max_batch"] = 0
    with pytest.raises(ConfigError, match="max_batch"):
        load_scenario(r)


def test_max_batch_of_a_variant_masks_larger_batches():
    raw, _, _ = read_scenario_dict("serving-batched")
    r = copy.deepcopy(raw)
    r["variants"] = [{"name": v, "from_library": True, **({"max_batch": 4} if v == "resnet18" else {})}
                     for v in raw["variants"]]
    r["workload"]["num_jobs"] = 200
    env = SchedulingEnv(r)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    sim = env.sim
    m = sim.cluster.variants.index(next(v for v in sim.cluster.variants if v.name == "resnet18"))
    seen = 0
    for _ in range(200):
        bm = sim.batch_mask()
        slot = sim.cluster.slot_variant[sim.w_caps] == m  # (K, V) slots holding resnet18
        assert not bm[slot][:, :, 3:].any()  # sizes 8 and 16
        seen += int(bm[slot][:, :, 2].any())
        mask = env.action_masks()
        valid = np.flatnonzero(mask[:-1])
        _, _, term, trunc, _ = env.step(int(rng.choice(valid)) if len(valid) else env.n_actions - 1)
        if term or trunc:
            break
    assert seen > 0  # batches of 4 of resnet18 were possible


def test_the_batched_simulator_refuses_batching_by_name():
    sc = load_scenario("serving-batched")
    with pytest.raises(UnsupportedFeature, match=r"dynamic batching \(batching.sizes \[1, 2, 4, 8, 16\]\)"):
        BatchedSimulator(sc, 2)
    with pytest.raises(UnsupportedFeature, match="dynamic batching"):
        gym.make_vec("modelsched/ServingBatched-v1", num_envs=2)


def test_batching_observation_keys():
    env = gym.make("modelsched/ServingBatched-v1")
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    assert set(obs) == {"tasks", "devices", "estimates", "global", "batch", "queues", "device_batch"}
    assert obs["batch"].shape == (u.K, u.V) and obs["queues"].shape == (u.sim.cluster.num_caps,)
    for _ in range(30):
        valid = np.flatnonzero(u.action_masks()[:-1])
        block = valid // (u.K * u.V * u.D)  # the largest batch, oldest task, fastest variant, first device
        obs, _, term, trunc, _ = env.step(int(valid[block == block.max()].min()) if len(valid) else u.n_actions - 1)
        assert not (term or trunc)
        assert env.observation_space.contains(obs)
    sim = u.sim
    top = sim.batch_sizes[-1]
    np.testing.assert_allclose(obs["batch"], np.minimum(sim.batch_counts() / top, 1), rtol=1e-6)
    running = [len(sim.running_batch(d)) / top for d in range(u.D)]
    np.testing.assert_allclose(obs["device_batch"], np.minimum(running, 1), rtol=1e-6)
    assert max(running) > 1 / top  # some device runs a batch


@pytest.mark.parametrize("name", ["clockwork", "triton", "infaas-batch"])
def test_batching_heuristics_batch_and_beat_batch_one(name):
    """On serving-batched (2.5x the batch-1 capacity) every batching heuristic forms batches,
    only valid actions, and, at its default or tuned parameters, serves far more requests on
    time than the best unbatched rule there (fifo, 0.38 on seed 0)."""
    env = gym.make("modelsched/ServingBatched-v1", workload_overrides={"num_jobs": 1200})
    res = run_episode(env, baselines.make(name, env), 0)
    assert env.unwrapped.sim.counters.batches > 10
    ref_env = gym.make("modelsched/ServingBatched-v1", workload_overrides={"num_jobs": 1200})
    ref = run_episode(ref_env, baselines.make("fifo", ref_env), 0)
    assert res["metrics"]["effective_accuracy"] > ref["metrics"]["effective_accuracy"] + 0.05


@pytest.mark.parametrize("name", ["clockwork", "triton", "infaas-batch"])
def test_batching_heuristics_run_without_batching(name):
    env = gym.make("modelsched/ServingSmall-v1", workload_overrides={"num_jobs": 200})
    res = run_episode(env, baselines.make(name, env), 0)
    assert res["metrics"]["effective_accuracy"] > 0.5
    assert env.unwrapped.sim.counters.batches == 0


def test_the_clairvoyant_reference_refuses_batching():
    from baselines.optimum import Unsupported, check_supported

    env = SchedulingEnv("serving-batched")
    env.reset(seed=0)
    with pytest.raises(Unsupported, match="dynamic batching"):
        check_supported(env)


def test_serving_batched_is_registered():
    assert "modelsched/ServingBatched-v1" in envs.registered_ids()


def test_the_candidate_policy_scores_every_batch_block():
    """The attention policy scores one logit per (batch size, slot, variant, device) plus wait,
    in the action space's block order, trains a few updates under the mask, and never picks a
    masked action."""
    import torch as th
    from sb3_contrib import MaskablePPO

    from agents.policies import MaskableCandidatePolicy

    env = gym.make("modelsched/ServingBatched-v1", workload_overrides={"num_jobs": 150})
    model = MaskablePPO(MaskableCandidatePolicy, env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(128)
    u = env.unwrapped
    obs, _ = env.reset(seed=1)
    for _ in range(40):
        mask = u.action_masks()
        obs_t, _ = model.policy.obs_to_tensor(obs)
        with th.no_grad():
            logits = model.policy.mlp_extractor.forward_actor(model.policy.extract_features(obs_t))
        assert logits.shape == (1, u.n_actions)
        a, _ = model.predict(obs, action_masks=mask, deterministic=False)
        assert mask[int(a)]
        obs, _, term, trunc, _ = env.step(int(a))
        if term or trunc:
            break
    # A block's logits depend on its batch size: the same (k, v, d) scores differently per block.
    per = u.K * u.V * u.D
    assert not th.allclose(logits[0, :per], logits[0, per:2 * per])


@pytest.mark.parametrize("potential", ["running", "queue"])
def test_the_training_reward_pays_every_member_of_a_batch(potential):
    """The effective-accuracy training reward (agents.shaping) with gamma = 1 sums to exactly
    effective_accuracy x arrived under a batching policy: every member of a batch is paid once
    (and the potential telescopes)."""
    from agents.envs import make_env

    shaping = {"base": "effective_accuracy", "potential": potential, "gamma": 1.0, "scale": 1.0}
    env = make_env("serving-batched", env_kwargs={"workload_overrides": {"num_jobs": 900}},
                   shaping=shaping)
    obs, _ = env.reset(seed=2)
    policy = baselines.make("infaas-batch", env)
    total, done, info = 0.0, False, {}
    while not done:
        a, _ = policy.predict(obs, action_masks=env.action_masks())
        obs, r, te, tr, info = env.step(int(a))
        total += r
        done = te or tr
    m = info["metrics"]
    assert m["batches"] > 10
    assert total == pytest.approx(m["effective_accuracy"] * m["arrived"], rel=1e-9, abs=1e-9)


def test_ansi_render_shows_the_batch_a_device_runs():
    env = golden_env()
    env.render_mode = "ansi"
    env.reset(seed=0)
    env.sim.assign(0, 1, 0, b=2)
    assert "loadingx4" in env.render()


def test_evaluate_batched_backend_plays_a_batching_scenario_on_the_reference(tmp_path):
    """``evaluate.py --backend batched`` on a scenario with dynamic batching runs its episodes on
    the reference simulator (said on stderr and in the settings), with the same results as
    ``--backend reference``."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out, err = {}, {}
    for backend in ("batched", "reference"):
        r = subprocess.run([sys.executable, str(root / "evaluate.py"), "--scenario", "serving-batched", "--seeds",
                            "1000-1001", "--policies", "fifo", "triton", "--backend", backend, "--no-progress",
                            "--out", str(tmp_path / backend)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        out[backend] = json.loads((tmp_path / backend / "results.json").read_text())  # (one scenario)
        err[backend] = r.stderr
    assert "has dynamic batching, which the batched simulator does not implement" in err["batched"]
    s = out["batched"]
    assert s["settings"]["reference_backend_for"] == ["fifo", "triton"]
    for name in ("fifo", "triton"):
        a, b = (o["policies"][name]["metrics"]["effective_accuracy"]["per_seed"] for o in (s, out["reference"]))
        assert a == b
