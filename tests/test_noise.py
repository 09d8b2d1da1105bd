"""Service-time noise: ``noise_cv`` is the coefficient of variation of the execution time, and
the load calibration counts the noise's mean."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs.env import SchedulingEnv
from envs.scenarios.load import offered_load
from envs.scenarios.loader import load_scenario
from envs.sim.noise import factor_cv, factor_mean, sigma_for_cv
from tests.conftest import golden_cluster, make_scenario, request


@pytest.mark.parametrize("cv", [0.01, 0.05, 0.2, 0.5, 1.0, 2.0])
def test_sigma_for_cv_inverts_the_closed_form_and_matches_a_sample(cv):
    s = sigma_for_cv(cv)
    assert factor_cv(s) == pytest.approx(cv, rel=1e-12)
    f = np.exp(s * np.abs(np.random.default_rng(7).standard_normal(1_000_000)))
    assert f.min() >= 1.0
    assert f.mean() == pytest.approx(factor_mean(s), rel=3e-3)
    assert f.std() / f.mean() == pytest.approx(cv, rel=0.03 if cv < 2 else 0.08)


def test_known_values_and_edges():
    assert sigma_for_cv(0.0) == 0.0 and factor_mean(0.0) == 1.0 and factor_cv(0.0) == 0.0
    # Hand check at sigma = 1: E[f] = 2 e^{1/2} Phi(1) = 2 x 1.648721 x 0.841345 = 2.774305.
    assert factor_mean(1.0) == pytest.approx(2.0 * math.exp(0.5) * 0.8413447460685429, rel=1e-12)
    with pytest.raises(ValueError, match="finite"):
        sigma_for_cv(math.inf)


def test_simulated_execution_times_have_the_configured_cv():
    """One GPU, the small variant resident after the first request: each later request runs
    0.15 s x noise; 3,000 of them, far apart, give the factor's mean and CV."""
    cv = 0.5
    n = 3000
    env = SchedulingEnv(make_scenario(golden_cluster(), [request(10.0 * i) for i in range(n)], noise_cv=cv))
    env.reset(seed=3)
    a = 0  # slot 0, variant 0 (small), device 0
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(a if env.action_masks()[a] else env.wait_action)
        done = term or trunc
    tasks = sorted(env.sim.tasks, key=lambda t: t.arrival)[1:]  # the first one cold-starts
    f = np.array([(t.finish - t.start) / 0.15 for t in tasks])
    assert f.min() >= 1.0 - 1e-12
    assert f.mean() == pytest.approx(factor_mean(sigma_for_cv(cv)), rel=0.03)
    assert f.std() / f.mean() == pytest.approx(cv, rel=0.06)


def test_load_calibration_counts_the_noise_and_states_the_other_variant_choices():
    sc = load_scenario("serving-small")
    target = float(sc.raw["workload"]["load"])
    load = offered_load(sc, seeds=range(16))
    assert load["median"] == pytest.approx(target, rel=0.04)
    assert load["fastest"] < load["median"] < load["most_accurate"]
    quiet = load_scenario("serving-small", noise_cv=0.0)
    assert quiet.cluster.service_factor == 1.0
    assert sc.cluster.service_factor == pytest.approx(factor_mean(sigma_for_cv(0.05)), rel=1e-15)
    # Without noise the same load needs more requests per second: the calibration divides
    # capacity by the mean noise factor.
    a = offered_load(quiet, seeds=range(4))
    assert a["median"] == pytest.approx(target, rel=0.04)
    assert a["span_s"] < load["span_s"] * 0.99
