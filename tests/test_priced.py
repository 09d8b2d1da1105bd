"""The ``priced`` heuristic and the per-scenario tuned parameters (baselines/tuned.yml).

Its batched form is compared with it at every decision by tests/test_batched_policies.py."""

from __future__ import annotations

import numpy as np
import yaml

import baselines
from baselines.base import DecisionView
from baselines.tuned import TUNED_FILE, tuned
from envs.env import SchedulingEnv
from envs.scenarios.loader import load_scenario


def test_price_zero_without_skipping_is_adaptive():
    """``priced`` generalises ``adaptive``: with price 0 and no skipping they are the same rule."""
    env_a, env_p = SchedulingEnv("serving-hetero"), SchedulingEnv("serving-hetero")
    a = baselines.make("adaptive", env_a, threshold=1.0, occupancy=0.5)
    p = baselines.make("priced", env_p, threshold=1.0, occupancy=0.5, price=0.0, skip_hopeless=False)
    env_a.reset(seed=5)
    env_p.reset(seed=5)
    steps, done = 0, False
    while not done:
        act = int(a.predict(None)[0])
        assert int(p.predict(None)[0]) == act, steps
        env_a.step(act)
        _, _, term, trunc, _ = env_p.step(act)
        done, steps = term or trunc, steps + 1
    assert steps > 100


def hopeless_starts(name: str, sc, seed: int, **kw) -> tuple[int, int]:
    """(assignments started, of which of a task no variant on no device could finish in time
    even loaded: noise-free completion = device wait + execution > slack)."""
    env = SchedulingEnv(sc)
    policy = baselines.make(name, env, **kw)
    env.reset(seed=seed)
    starts = hopeless = 0
    done = False
    while not done:
        view = DecisionView(env.sim)
        act = int(policy.predict(None)[0])
        if act != view.wait_action:
            k = act // (view.V * view.D)
            starts += 1
            hopeless += not (view.est[k] - view.cold[k] * view.load[k] <= view.slack[k]).any()
        _, _, term, trunc, _ = env.step(act)
        done = term or trunc
    return starts, hopeless


def test_hopeless_tasks_are_skipped_not_served_late():
    """Overloaded (load 2.0 instead of 0.8), requests pile up until some cannot finish in time
    anywhere. ``adaptive`` still serves some of them (late, worth nothing, delaying the rest);
    ``priced`` with ``skip_hopeless`` never starts one: they are dropped at their deadlines."""
    sc = load_scenario("serving-small", workload_overrides={"load": 2.0})
    assert sc.drop_expired
    starts, hopeless = hopeless_starts("adaptive", sc, 3)
    assert starts > 50 and hopeless > 0  # the case arises (the check below can fail)
    starts, hopeless = hopeless_starts("priced", sc, 3, price=0.0, skip_hopeless=True)
    assert starts > 50 and hopeless == 0


def test_scenarios_get_their_tuned_parameters_and_arguments_win():
    data = yaml.safe_load(TUNED_FILE.read_text())
    stored = data["scenarios"]["serving-hetero"]["priced"]["params"]
    env = SchedulingEnv("serving-hetero")
    p = baselines.make("priced", env)
    assert (p.threshold, p.occupancy, p.price, p.skip_hopeless) == (
        stored["threshold"], stored["occupancy"], stored["price"], stored["skip_hopeless"])
    assert baselines.make("priced", env, price=0.7).price == 0.7  # an explicit argument wins
    a = baselines.make("adaptive", env)
    ad = data["scenarios"]["serving-hetero"]["adaptive"]["params"]
    assert (a.threshold, a.occupancy) == (ad["threshold"], ad["occupancy"])
    assert tuned("priced", "no-such-scenario") == {}  # a user scenario: the class defaults
    for name, entry in data["scenarios"].items():  # every stored choice says what chose it
        for policy in ("adaptive", "priced"):
            e = entry[policy]
            assert e["metric"] == load_scenario(name).primary_metric
            assert np.isfinite(e["mean"]) and e["se"] >= 0 and e["grid_points"] > 1


def test_the_tuning_refuses_evaluation_seeds():
    import subprocess
    import sys
    from pathlib import Path

    r = subprocess.run([sys.executable, "benchmarks/tune_baselines.py", "--seeds", "995", "1005", "--dry-run"],
                       cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "seeds 1000..1005 are outside the training range" in r.stderr
