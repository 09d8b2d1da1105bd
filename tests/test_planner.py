"""The rolling-horizon CP-SAT ``planner``: a hand-computed plan, memory, determinism, fallback."""

from __future__ import annotations

import math

import numpy as np
import pytest

import baselines
from baselines.base import DecisionView
from envs.env import SchedulingEnv
from tests.conftest import golden_cluster, make_scenario, request


def play(env, policy, seed=0, record=None):
    env.reset(seed=seed)
    policy.reset(seed)
    acts, done = [], False
    while not done:
        a = int(policy.predict(None)[0])
        if record is not None:
            record(env, policy, a)
        acts.append(a)
        _, _, term, trunc, info = env.step(a)
        done = term or trunc
    return acts, info


def test_plan_on_a_hand_computed_case_beats_the_greedy_order():
    """One GPU (1 GB), both variants cold, ``small`` (acc 0.7, 0.4 GB, load 0.1 + 0.4/2 = 0.3 s,
    execution 0.1 + 0.05 = 0.15 s) and ``big`` (acc 0.9, 0.8 GB, load 0.5 s, execution 0.3 s);
    they do not fit together. Three requests at t = 0 with deadlines 0.65, 0.8, 0.95 s.

    All on ``small``: load 0-0.3, then 0.3-0.45, 0.45-0.6, 0.6-0.75: three on time, accuracy
    2.1. Anything with ``big`` serves at most one of them on time (big's load and execution
    take 0.8 s; the second task then ends at 1.1 s). The plan is the first one, to the
    microsecond (in some order: equal durations make the orders tie), and the episode ends with every request on time at accuracy 0.7."""
    sc = make_scenario(golden_cluster(), [request(0.0, slo=s) for s in (0.65, 0.8, 0.95)], K=4,
                       drop_expired=True)
    env = SchedulingEnv(sc)
    planner = baselines.make("planner", env, price=0.0)
    env.reset(seed=0)
    planner.reset(0)
    view = DecisionView(env.sim)
    first = planner.decide(view)
    small = int(np.argmax(view.acc[0] == 0.7))
    starts = {tid: p[2] for tid, p in planner._plan.items()}
    k = first // view.V  # one device: action = k * V + v
    assert first == view.action(k, small, 0) and starts[view.tasks[k].id] == 300_000
    assert {tid: p[0] for tid, p in planner._plan.items()} == {t.id: small for t in view.tasks}
    assert sorted(starts.values()) == [300_000, 450_000, 600_000]
    _, info = play(env, planner)
    m = info["metrics"]
    assert m["completed"] == 3 and m["slo_attainment"] == 1.0
    assert m["effective_accuracy"] == pytest.approx(0.7, abs=1e-12)
    assert planner.stats["fallback_infeasible"] == 0 and planner.stats["solves"] >= 1


def test_plans_respect_memory_and_run_only_where_the_variant_runs(tiny_scenario):
    """At every decision of an episode that plans, the variants planned on a device fit in its memory
    together, every planned (task, variant, device) can run there, and no task is planned
    before its device is free."""
    env = SchedulingEnv(tiny_scenario)
    planner = baselines.make("planner", env)
    cl = env.unwrapped.sim.cluster
    checked, solves = [], [0]

    def record(env, policy, a):
        fresh = policy.stats["solves"] > solves[0]  # planned at this decision (not a reused plan)
        solves[0] = policy.stats["solves"]
        if not fresh or policy._plan_now != env.unwrapped.sim.now:
            return
        view = DecisionView(env.unwrapped.sim)
        index = {t.id: k for k, t in enumerate(view.tasks)}
        per_dev: dict[int, set] = {}
        for tid, (v, d, start) in policy._plan.items():
            if tid not in index:
                continue
            k = index[tid]
            assert view.runs[k, v, d], (tid, v, d)
            assert start >= math.floor(view.wait[d] * 1e6) - 1
            per_dev.setdefault(d, set()).add(int(view.variant[k, v]))
        for d, vs in per_dev.items():
            assert sum(cl.var_memory[m] for m in vs) <= cl.dev_memory[d] + 1e-9
        checked.append(len(per_dev))

    _, info = play(env, planner, seed=3, record=record)
    assert sum(checked) > 20
    acc = info["accounting"]
    assert acc["arrived"] == acc["completed"] + acc["dropped"]


def test_same_seed_same_actions(tiny_scenario):
    """The search has a deterministic time limit, one worker and a fixed seed: the same
    episode twice gives the same actions."""
    runs = []
    for _ in range(2):
        env = SchedulingEnv(tiny_scenario)
        runs.append(play(env, baselines.make("planner", env), seed=7)[0])
    assert runs[0] == runs[1] and len(runs[0]) > 40


def test_gang_tasks_fall_back_to_priced_at_every_decision():
    """Tasks that need two devices are not modelled: ``priced`` decides, and the planner says so."""
    jobs = [request(0.1 * i, slo=2.0, devices=2 if i % 2 else 1) for i in range(8)]
    sc = make_scenario(golden_cluster(n_gpus=3), jobs, K=4)
    env = SchedulingEnv(sc)
    planner = baselines.make("planner", env)
    priced = baselines.make("priced", env, price=planner.price)  # the same state, decided by both
    gang = []

    def record(e, p, a):
        ref = int(priced.act())  # every decision, so its running state matches the planner's
        if any(t.devices_required > 1 for t in e.unwrapped.sim.window):
            gang.append((a, ref))

    priced.reset(0)
    play(env, planner, record=record)
    assert planner.stats["fallback_gang"] == len(gang) > 0
    assert all(a == ref for a, ref in gang)


@pytest.mark.parametrize("kw, key", [({"time_limit": 0.0}, "time_limit"), ({"max_tasks": 0}, "max_tasks"),
                                     ({"max_devices": 0}, "max_devices"), ({"price": -1.0}, "price")])
def test_bad_parameters_name_the_parameter(kw, key):
    with pytest.raises(ValueError, match=f"planner: {key}"):
        baselines.make("planner", SchedulingEnv("serving-small"), **kw)
