"""The ``clairvoyant`` reference (baselines/optimum.py): a hand-computed case where knowing the
future wins, what it refuses by name, and the invariants of its schedule on a short episode."""

from __future__ import annotations

import numpy as np
import pytest

import baselines
from baselines import run_episode
from baselines.optimum import ClairvoyantPolicy, Unsupported
from envs.env import SchedulingEnv
from tests.conftest import golden_cluster, make_scenario, request, short_serving_small


def test_knowing_the_next_arrival_wins_on_a_hand_computed_case():
    """One GPU (1 GB); ``small`` (acc 0.7, 0.4 GB, load 0.1 + 0.4/2 = 0.3 s, execution 0.15 s)
    and ``big`` (acc 0.9, 0.8 GB, load 0.5 s, execution 0.3 s) do not fit together. Request A
    arrives at 0 with a 2 s SLO, request B at 0.01 s with 0.5 s (deadline 0.51 s).

    An online rule sees only A at t = 0. Knowing B comes, the best is to wait for it: B
    carries the load of ``small`` (assigned at 0.01 s: load to 0.31, runs to 0.46, on time),
    then A runs 0.46-0.61 on ``small`` (on time): effective accuracy (0.7 + 0.7) / 2 = 0.7.
    Starting A at 0 instead (on ``small``, B then ends at 0.6 > 0.51; on ``big``, B ends after
    0.8 s) serves one of the two on time, 0.45 at best."""
    sc = make_scenario(golden_cluster(), [request(0.0, slo=2.0), request(0.01, slo=0.5)], K=4, drop_expired=True)
    env = SchedulingEnv(sc)
    pol = ClairvoyantPolicy(env)
    res = run_episode(env, pol, 0)
    assert res["metrics"]["effective_accuracy"] == pytest.approx(0.7, abs=1e-12)
    assert res["metrics"]["slo_attainment"] == 1.0
    assert pol.stats["chosen"] == "plan" and pol.stats["plan_value"] > pol.stats["warm_start_value"]
    (plan,) = [items for items in pol._plan.values() if items]
    # (start us, task id, variant, slot, carrier): B carries the load at its arrival, A follows
    assert [(p[0], p[1], p[4]) for p in plan] == [(10_000, 1, True), (460_000, 0, False)]


def test_refuses_what_it_does_not_model_by_name(tmp_path):
    with pytest.raises(Unsupported, match="device failures"):
        ClairvoyantPolicy(SchedulingEnv("faulty-cluster"))
    with pytest.raises(Unsupported, match="drop_expired: false"):
        ClairvoyantPolicy(SchedulingEnv("serving-small", drop_expired=False))
    with pytest.raises(Unsupported, match="primary metric is job_slo_attainment"):
        ClairvoyantPolicy(SchedulingEnv("pipelines"))
    env = SchedulingEnv("pipelines", primary_metric="effective_accuracy")
    with pytest.raises(Unsupported, match="DAG pipelines"):
        run_episode(env, ClairvoyantPolicy(env), 0)
    env = SchedulingEnv("training-cluster", drop_expired=True, failures=False, primary_metric="effective_accuracy")
    with pytest.raises(Unsupported, match="gang tasks"):
        run_episode(env, ClairvoyantPolicy(env), 0)


def test_reported_as_a_reference_not_a_heuristic():
    from baselines.rollout import describe

    env = SchedulingEnv(make_scenario(golden_cluster(), [request(0.0)], drop_expired=True))
    assert describe(ClairvoyantPolicy(env)) == "reference"
    assert describe(baselines.make("priced", env)) == "heuristic"


def test_schedule_invariants_on_a_short_episode(tmp_path):
    """A valid schedule (each task at most once, no overlap on a device, never before its
    arrival, loads before their users), never below its warm start, never above the upper
    bound. (Not bit-reproducible where a round hits its wall-clock cap: module docstring.)"""
    path = short_serving_small(tmp_path, "short", 60)
    env = SchedulingEnv(path)
    pol = ClairvoyantPolicy(env, round_tasks=20, time_limit=0.2)
    res = run_episode(env, pol, 1000)
    value = res["metrics"]["effective_accuracy"]
    st = pol.stats
    assert st["warm_start_value"] <= value + 1e-12 <= res["ideal_bound"]["effective_accuracy"] + 1e-12
    assert st["rounds"] >= 3 and st["infeasible_rounds"] == 0
    sim = env.sim
    seen = set()
    for d, items in pol._plan.items():
        end = 0
        for start, tid, m, v, carrier in items:
            assert tid not in seen
            seen.add(tid)
            assert start >= round(sim._arrivals_l[tid] * 1e6) and start >= end
            load = int(round(float(sim.cluster.load_time[m][d]) * 1e6)) if carrier else 0
            kind = sim._tkind_l[tid]
            ex = float(sim._ktab[kind, sim._E0 + v * sim.cluster.num_devices + d])
            assert np.isfinite(ex)
            end = start + load + int(np.ceil(ex * np.exp(1.96 * sim.noise_sigma) * 1e6 - 1e-6))


def test_evaluate_reports_it_as_a_reference_with_gaps(tmp_path):
    """``evaluate`` with the reference as a policy of one's own: never the best heuristic; every
    policy's gap to it and to the upper bound (the ideal bound), paired per seed."""
    from baselines.evaluation import build_parser, evaluate

    path = short_serving_small(tmp_path, "short", 40)
    spec = "baselines.optimum:ClairvoyantPolicy"
    args = build_parser().parse_args(["--scenario", path, "--policies", spec, "priced", "--seeds", "1000",
                                      "--out", str(tmp_path / "out"), "--no-progress"])
    (summary,) = evaluate(args)
    pols = summary["policies"]
    assert pols[spec]["kind"] == "reference" and summary["best_heuristic"] == "priced"
    pm = summary["primary_metric"]
    clair, priced = pols[spec]["metrics"][pm]["mean"], pols["priced"]["metrics"][pm]["mean"]
    bound = summary["ideal_bound"]["metrics"][pm]["mean"]
    assert pols["priced"]["gap_to_clairvoyant"]["mean"] == pytest.approx(clair - priced, abs=1e-12)
    assert clair >= priced
    assert pols[spec]["gap_to_clairvoyant"] is None
    for p, v in ((spec, clair), ("priced", priced)):
        assert pols[p]["gap_to_upper_bound"]["mean"] == pytest.approx(bound - v, abs=1e-12)
        assert bound >= v
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| policy | gap to upper_bound | gap to clairvoyant |" in md
