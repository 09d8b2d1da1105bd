"""Checks a researcher runs before trusting an environment, over every registered id."""

from __future__ import annotations

import math

import copy
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs

IDS = envs.registered_ids()


def make(env_id, **kw):
    return gym.make(env_id, disable_env_checker=True, **kw)


def random_valid_rollout(env, seed, steps):
    """Random valid actions (waits included); returns a trace of everything observable."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    trace = [(obs, info["accounting"])]
    for _ in range(steps):
        mask = env.unwrapped.action_masks()
        a = int(rng.choice(np.flatnonzero(mask)))
        obs, r, term, trunc, info = env.step(a)
        trace.append((a, obs, r, term, trunc, info["accounting"], info["time"]))
        if term or trunc:
            obs, info = env.reset()
            trace.append((obs, info["accounting"]))
    return trace


def assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


def test_every_builtin_scenario_is_registered():
    assert "modelsched/Scheduling-v1" in IDS
    assert "modelsched/ServingSmall-v1" in IDS and "modelsched/ServingHetero-v1" in IDS
    for name in envs.builtin_scenarios():
        assert envs.env_id(name) in gym.registry


@pytest.mark.parametrize("env_id", IDS)
def test_gymnasium_check_env(env_id):
    gym_check_env(make(env_id).unwrapped, skip_render_check=False)


@pytest.mark.parametrize("env_id", IDS)
def test_sb3_check_env(env_id):
    sb3_check_env(make(env_id).unwrapped, warn=True)


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_rollout(env_id):
    a = random_valid_rollout(make(env_id), seed=7, steps=300)
    b = random_valid_rollout(make(env_id), seed=7, steps=300)
    assert_same(a, b)
    c = random_valid_rollout(make(env_id), seed=8, steps=50)
    assert not all(np.array_equal(x[1]["global"], y[1]["global"]) for x, y in zip(a[1:50], c[1:50])
                   if len(x) == 7 and len(y) == 7)


@pytest.mark.parametrize("env_id", IDS)
def test_pickle_mid_episode_continues_identically(env_id):
    env = make(env_id)
    random_valid_rollout(env, seed=3, steps=40)
    clone = pickle.loads(pickle.dumps(env))
    rng1, rng2 = np.random.default_rng(1), np.random.default_rng(1)
    for _ in range(60):
        m1, m2 = env.unwrapped.action_masks(), clone.unwrapped.action_masks()
        np.testing.assert_array_equal(m1, m2)
        a1, a2 = int(rng1.choice(np.flatnonzero(m1))), int(rng2.choice(np.flatnonzero(m2)))
        s1, s2 = env.step(a1), clone.step(a2)
        assert_same(s1[:4], s2[:4])
        if s1[2] or s1[3]:
            break


def reference_mask(env) -> np.ndarray:
    """The joint mask recomputed from the simulator's objects, one candidate at a time."""
    sim, cl = env.sim, env.sim.cluster
    mask = np.zeros(env.action_space.n, dtype=bool)
    mask[-1] = True
    for k, t in enumerate(sim.queue[: env.K]):
        for v in range(env.V):
            m = cl.slot_variant[t.cap_index, v]
            if m < 0:
                continue
            var = cl.variants[m]
            for d, dev in enumerate(sim.devices):
                ok = (dev.type.name in var.profiles and var.memory_gb <= dev.type.memory_gb
                      and var.accuracy >= t.min_accuracy and t.size + t.size2 <= var.max_size and dev.up)
                if getattr(env, "continuous", False):  # a join: room in the batch, same variant, KV fits
                    held = len(sim.running_batch(d))
                    kv_tokens = math.floor((dev.type.memory_gb - var.memory_gb) * 1000 / var.kv_mb_per_token)
                    ok = (ok and held < sim.max_batch and sim._cb_var[d] in (-1, m)
                          and t.size + t.size2 <= kv_tokens)
                else:
                    ok = ok and dev.task is None
                if ok and t.devices_required > 1:
                    pool = [e for e in sim.devices if e.type is dev.type and e.up and e.task is None]
                    ok = len(pool) >= t.devices_required
                mask[(k * env.V + v) * env.D + d] = ok
                # Dynamic batching: block b leads a batch of sizes[b] (k and the next queued
                # tasks of its capability that the variant serves alone).
                joinable = [u for u in sim.queue[k:] if u.capability == t.capability and u.devices_required == 1
                            and var.accuracy >= u.min_accuracy and u.size + u.size2 <= var.max_size]
                for b, n in enumerate(env.batch_sizes[1:], start=1):
                    can = ok and t.devices_required == 1 and len(joinable) >= n and n <= var.max_batch
                    mask[((b * env.K + k) * env.V + v) * env.D + d] = can
    return mask


@pytest.mark.parametrize("env_id", IDS)
def test_mask_is_exact_and_masked_actions_raise(env_id):
    """At many decision points the mask equals an independent per-candidate recomputation, every
    masked action raises ValueError (leaving the state untouched), and unmasked ones are accepted."""
    env = make(env_id).unwrapped
    rng = np.random.default_rng(0)
    env.reset(seed=11)
    for point in range(60):
        mask = env.action_masks()
        np.testing.assert_array_equal(mask, reference_mask(env))
        assert mask[-1], "waiting is always allowed"
        assert mask[:-1].any(), "the agent is only asked to decide when an assignment is possible"
        before = (env.sim.now, len(env.sim.queue), env.sim.accounting())
        for a in np.flatnonzero(~mask):
            with pytest.raises(ValueError, match="invalid action"):
                env.step(int(a))
        assert (env.sim.now, len(env.sim.queue), env.sim.accounting()) == before
        valid = np.flatnonzero(mask)
        for a in rng.choice(valid, size=min(2 if point % 5 == 0 else 0, len(valid)), replace=False):
            copy.deepcopy(env).step(int(a))
        _, _, term, trunc, _ = env.step(int(rng.choice(valid)))
        if term or trunc:
            env.reset()


@pytest.mark.parametrize("env_id", IDS)
def test_accounting_every_step_and_metrics_at_end(env_id):
    """A whole episode with a work-conserving policy (first valid assignment)."""
    env = make(env_id)
    obs, info = env.reset(seed=5)
    keys = {"arrived", "completed", "dropped", "queued", "running",
            "jobs_arrived", "jobs_completed", "jobs_dropped", "jobs_in_progress"}
    last_time = 0.0
    for _ in range(100_000):
        acc = info["accounting"]
        assert set(acc) == keys
        assert acc["arrived"] == acc["completed"] + acc["dropped"] + acc["queued"] + acc["running"]
        assert acc["jobs_arrived"] == acc["jobs_completed"] + acc["jobs_dropped"] + acc["jobs_in_progress"]
        assert info["time"] >= last_time
        last_time = info["time"]
        mask = env.unwrapped.action_masks()
        obs, r, term, trunc, info = env.step(int(np.flatnonzero(mask)[0]))
        assert env.observation_space.contains(obs)
        assert set(info["reward_terms"]) >= {"latency", "slo", "drop", "accuracy", "utilization"}
        if term or trunc:
            break
    assert term or trunc
    m = info["metrics"]
    for k in ["mean_latency", "p50_latency", "p95_latency", "p99_latency", "mean_slowdown", "slo_attainment",
              "goodput", "throughput", "utilization", "mean_accuracy", "effective_accuracy", "drops",
              "cold_starts"]:
        assert k in m
    assert 0.0 <= m["effective_accuracy"] <= m["slo_attainment"] + 1e-12
    assert m["mean_slowdown"] >= 1.0
    sim = env.unwrapped.sim
    assert info["accounting"]["arrived"] == len(sim.tasks)
    if term:
        assert info["accounting"]["queued"] == info["accounting"]["running"] == 0


@pytest.mark.parametrize("mode", ["ansi", "rgb_array"])
def test_render_modes(mode):
    env = make("modelsched/ServingSmall-v1", render_mode=mode)
    random_valid_rollout(env, seed=0, steps=30)
    out = env.render()
    if mode == "ansi":
        assert isinstance(out, str) and "queue=" in out and "A100" in out
    else:
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        assert (out != 255).any()  # something was drawn


def test_step_after_episode_end_raises():
    env = make("modelsched/ServingSmall-v1", workload_overrides={"num_jobs": 3}, warmup_s=0.0)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(int(np.flatnonzero(env.unwrapped.action_masks())[0]))
        done = term or trunc
    with pytest.raises(RuntimeError, match="reset"):
        env.step(env.unwrapped.wait_action)
