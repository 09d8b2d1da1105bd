"""The batched heuristics against the per-instance ones: the same action at every decision.

For every built-in scenario and every heuristic with a batched form, B reference envs (each
with its own per-instance policy) and one batched simulator (with the batched policy) are reset
on the same seeds; at every decision of whole episodes the batched rule's action for each live
instance must equal the per-instance rule's, and both simulators then take it.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import baselines
import envs
from baselines import PolicyError
from baselines.batched import BATCHED, BatchedView, make_batched
from envs.batched import BatchedSimulator
from envs.env import SchedulingEnv
from envs.scenarios.loader import load_scenario
from tests.conftest import without_reference_only_features

#: One id per built-in scenario (Scheduling-v1 is serving-small, already covered).
SCENARIOS = sorted({gym.spec(i).kwargs.get("scenario", "serving-small") for i in envs.registered_ids()})


def drive(sc, name: str, B: int, seed: int, **kwargs) -> int:
    """Run whole episodes of B instances; assert equal actions at every decision. Returns the
    number of decisions compared."""
    refs = [SchedulingEnv(sc) for _ in range(B)]
    pols = [baselines.make(name, e, seed=seed + i, **kwargs) for i, e in enumerate(refs)]
    for i, (e, p) in enumerate(zip(refs, pols)):
        e.reset(seed=seed + i)
        p.reset(seed + i)
    bs = BatchedSimulator(sc, B)
    bs.reset(seed=seed)
    bp = make_batched(name, B, **kwargs)
    bp.reset(np.arange(B), [seed + i for i in range(B)])
    live = np.ones(B, dtype=bool)
    compared = 0
    while live.any():
        rows = np.flatnonzero(live)
        got = bp.act(bs, rows)
        acts = np.zeros(B, dtype=np.int64)
        for j, b in enumerate(rows.tolist()):
            want = int(pols[b].predict(None)[0])
            assert got[j] == want, f"{name}: decision {compared}, instance {b}: batched {got[j]} != {want}"
            acts[b] = want
            refs[b].step(want)
            compared += 1
        bs.step(acts, active=rows)
        live &= ~(bs.terminated | bs.truncated)
    return compared


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_batched_heuristics_choose_the_per_instance_action_at_every_decision(scenario):
    # the batched simulator refuses dynamic and continuous batching: the rest is compared
    sc = without_reference_only_features(scenario)
    for name in BATCHED:
        assert drive(sc, name, B=2, seed=300) > 100


def test_batched_rules_cover_all_heuristics_but_the_search_based_ones():
    # (the batching rules only matter where the batched simulator refuses to run: dynamic batching)
    assert set(BATCHED) == set(baselines.names()) - {"genetic", "planner", "clockwork", "triton", "infaas-batch",
                                                     "vllm"}
    with pytest.raises(PolicyError, match="clockwork.*no batched form"):
        make_batched("clockwork", 4)
    with pytest.raises(PolicyError, match="genetic.*no batched form"):
        make_batched("genetic", 4)
    with pytest.raises(PolicyError, match="planner.*no batched form"):
        make_batched("planner", 4)
    with pytest.raises(PolicyError, match="unknown policy 'nope'"):
        make_batched("nope", 4)
    with pytest.raises(TypeError, match="unexpected options"):
        make_batched("fifo", 4, threshold=1.0)


def test_tuned_options_and_a_single_instance():
    sc = load_scenario("serving-hetero")
    assert drive(sc, "adaptive", B=1, seed=7, threshold=1.5, occupancy=0.25) > 100
    assert drive(sc, "tetris", B=1, seed=7, epsilon=0.3) > 100


def test_the_batched_view_is_the_per_instance_view_bit_for_bit():
    sc = load_scenario("faulty-cluster")
    B = 3
    refs = [SchedulingEnv(sc) for _ in range(B)]
    for i, e in enumerate(refs):
        e.reset(seed=50 + i)
    bs = BatchedSimulator(sc, B)
    bs.reset(seed=50)
    rng = np.random.default_rng(0)
    fields = ("mask", "est", "est_safe", "exec", "load", "cold", "runs", "deadline", "arrival", "slack", "slo",
              "priority", "caps", "acc", "variant", "wait")
    steps = 0
    while steps < 400 and not (bs.terminated | bs.truncated).any():
        view = BatchedView(bs, np.arange(B))
        acts = np.zeros(B, dtype=np.int64)
        for b, e in enumerate(refs):
            ref = baselines.DecisionView(e.unwrapped.sim)
            assert view.n[b] == ref.n
            for f in fields:
                assert np.array_equal(getattr(view, f)[b], getattr(ref, f), equal_nan=True), f
            acts[b] = rng.choice(np.flatnonzero(e.action_masks()))
            e.step(int(acts[b]))
        bs.step(acts)
        steps += 1
    assert steps > 100
