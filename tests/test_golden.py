"""A hand-computed episode: latencies, cold starts, LRU eviction and reward terms asserted exactly.

Cluster: one GPU (1 GB, load = 0.1 s + GB / 2 GB/s). Variants of capability ``cls``:
``small`` (slot 0): 0.4 GB, accuracy 0.7, latency 0.1 + 0.05 * size;
``big`` (slot 1): 0.8 GB, accuracy 0.9, latency 0.2 + 0.1 * size. No noise.
Jobs: j0 at t=0 (size 2), j1 at t=0.1 (size 1), j2 at t=0.15 (size 1); SLO 1 s each.

Ideal times (fastest variant, resident): j0 0.1 + 0.1 = 0.2; j1, j2 0.15.
Policy: j0 -> big (cold: 0.1 + 0.8/2 = 0.5 load, 0.4 exec) finishes at 0.9.
At 0.9: j1 -> small: 0.8 + 0.4 > 1 GB so big is evicted; load 0.1 + 0.2 = 0.3, exec 0.15: ends 1.35.
At 1.35: j2 -> small, resident: exec 0.15, ends 1.5.
Latencies: 0.9, 1.25, 1.35. Only j0 meets its deadline. Effective accuracy = 0.9 / 3 = 0.3.
"""

from __future__ import annotations

import numpy as np
import pytest

from envs.env import SchedulingEnv
from envs.scenarios.loader import RewardWeights
from tests.conftest import ListWorkload, golden_cluster, make_scenario, request


def action(env, k, v, d):
    return (k * env.V + v) * env.D + d


def test_golden_episode():
    jobs = [request(0.0, size=2.0), request(0.1), request(0.15)]
    env = SchedulingEnv(make_scenario(golden_cluster(), jobs))
    obs, info = env.reset(seed=0)
    sim = env.sim
    assert sim.now == 0.0 and len(sim.queue) == 1
    # The estimate for (j0, big, GPU) includes the cold start: 0.5 load + 0.4 exec.
    assert sim.estimates()[0, 1, 0] == pytest.approx(0.9, abs=1e-12)
    assert sim.estimates()[0, 0, 0] == pytest.approx(0.1 + 0.2 + 0.2, abs=1e-12)

    _, r1, term, trunc, info = env.step(action(env, 0, 1, 0))
    assert sim.now == pytest.approx(0.9)
    assert [t.capability for t in sim.queue] == ["cls", "cls"] and len(sim.queue) == 2
    # Slowdown integral over [0, 0.9]: j0 0.9/0.2, j1 0.8/0.15, j2 0.75/0.15.
    assert info["reward_terms"]["latency"] == pytest.approx(-(0.9 / 0.2 + 0.8 / 0.15 + 0.75 / 0.15), rel=1e-12)
    assert info["reward_terms"]["accuracy"] == pytest.approx(0.0, abs=1e-12)  # big is the best variant
    assert info["reward_terms"]["slo"] == 0.0
    assert info["accounting"] == {"arrived": 3, "completed": 1, "dropped": 0, "queued": 2, "running": 0,
                                  "jobs_arrived": 3, "jobs_completed": 1, "jobs_dropped": 0, "jobs_in_progress": 2}

    _, r2, term, trunc, info = env.step(action(env, 0, 0, 0))
    assert sim.now == pytest.approx(1.35)
    assert sim.counters.evictions == 1
    assert sim.devices[0].resident.keys() == {0}  # small only; big was evicted
    # j1 finished at 1.35 > deadline 1.1: a late completion; accuracy 0.7 - 0.9.
    assert info["reward_terms"]["slo"] == -1.0
    assert info["reward_terms"]["accuracy"] == pytest.approx(-0.2, abs=1e-12)

    _, r3, term, trunc, info = env.step(action(env, 0, 0, 0))
    assert term and not trunc
    assert sim.now == pytest.approx(1.5)
    m = info["metrics"]
    lat = sorted(t.finish - t.arrival for t in sim.tasks)
    assert lat == pytest.approx([0.9, 1.25, 1.35], abs=1e-12)
    assert m["mean_latency"] == pytest.approx(3.5 / 3, abs=1e-12)
    assert m["effective_accuracy"] == pytest.approx(0.3, abs=1e-12)
    assert m["slo_attainment"] == pytest.approx(1 / 3, abs=1e-12)
    assert m["mean_accuracy"] == pytest.approx((0.9 + 0.7 + 0.7) / 3, abs=1e-12)
    assert m["cold_starts"] == 2 and m["drops"] == 0
    assert m["mean_slowdown"] == pytest.approx((0.9 / 0.2 + 1.25 / 0.15 + 1.35 / 0.15) / 3, rel=1e-12)
    assert m["makespan"] == pytest.approx(1.5)
    # The GPU was busy over [0, 1.5] except nothing: utilization 1.
    assert m["utilization"] == pytest.approx(1.0, abs=1e-12)
    assert info["accounting"] == {"arrived": 3, "completed": 3, "dropped": 0, "queued": 0, "running": 0,
                                  "jobs_arrived": 3, "jobs_completed": 3, "jobs_dropped": 0, "jobs_in_progress": 0}


def test_golden_episode_with_a_warm_up_period():
    """The same episode with ``warmup_s = 0.12``: j0 (t=0) and j1 (t=0.1) are warm-up tasks,
    served as before but counted in neither the reward nor the metrics; only j2 (t=0.15,
    late: 1.5 > 1.15) counts."""
    jobs = [request(0.0, size=2.0), request(0.1), request(0.15)]
    env = SchedulingEnv(make_scenario(golden_cluster(), jobs, warmup_s=0.12,
                                      reward=RewardWeights(latency=1.0, slo=1.0, drop=1.0, accuracy=1.0,
                                                           utilization=1.0)))
    env.reset(seed=0)
    _, _, _, _, info = env.step(action(env, 0, 1, 0))
    assert env.sim.now == pytest.approx(0.9)
    # Time in system over [0, 0.9]: j2 only (0.75 / 0.15); j0's completion is not counted.
    assert info["reward_terms"]["latency"] == pytest.approx(-0.75 / 0.15, rel=1e-12)
    assert info["reward_terms"]["slo"] == 0.0 and info["reward_terms"]["accuracy"] == 0.0
    # The GPU was busy over [0, 0.9]; the utilization term counts [0.12, 0.9].
    assert info["reward_terms"]["utilization"] == pytest.approx(0.9 - 0.12, rel=1e-12)
    _, _, _, _, info = env.step(action(env, 0, 0, 0))
    assert env.sim.now == pytest.approx(1.35)
    # j1 finished late with the small variant: a warm-up task, so no SLO or accuracy term.
    assert info["reward_terms"]["slo"] == 0.0 and info["reward_terms"]["accuracy"] == 0.0
    assert info["reward_terms"]["latency"] == pytest.approx(-0.45 / 0.15, rel=1e-12)
    _, _, term, _, info = env.step(action(env, 0, 0, 0))
    assert term
    assert info["reward_terms"]["slo"] == -1.0
    assert info["reward_terms"]["accuracy"] == pytest.approx(-0.2, abs=1e-12)
    assert info["reward_terms"]["latency"] == pytest.approx(-0.15 / 0.15, rel=1e-12)
    m = info["metrics"]
    assert m["arrived"] == 1 and m["completed"] == 1
    assert m["mean_latency"] == pytest.approx(1.35, abs=1e-12)
    assert m["effective_accuracy"] == 0.0 and m["slo_attainment"] == 0.0
    assert m["goodput"] == 0.0 and m["throughput"] == pytest.approx(1 / (1.5 - 0.12), rel=1e-12)
    # Counters and utilization cover the whole episode.
    assert m["cold_starts"] == 2 and m["utilization"] == pytest.approx(1.0, abs=1e-12)
    # Every task is still accounted for.
    assert info["accounting"]["arrived"] == 3 and info["accounting"]["completed"] == 3


def test_wait_advances_to_next_event_and_auto_advance():
    jobs = [request(0.0), request(0.5)]
    env = SchedulingEnv(make_scenario(golden_cluster(), jobs))
    env.reset(seed=0)
    assert env.sim.now == 0.0
    _, _, _, _, info = env.step(env.wait_action)  # next event: the arrival at 0.5
    assert env.sim.now == pytest.approx(0.5)
    assert info["accounting"]["queued"] == 2


def test_invalid_action_raises_with_reason_and_penalize_mode():
    jobs = [request(0.0), request(0.0)]
    env = SchedulingEnv(make_scenario(golden_cluster(n_gpus=2), jobs))
    env.reset(seed=0)
    env.step(action(env, 0, 0, 0))  # device 0 is now busy; device 1 idle; slot 0 holds the second job
    assert env.sim.now == 0.0
    with pytest.raises(ValueError, match=r"queue slot 0, variant slot 1, device 0: the device is busy"):
        env.step(action(env, 0, 1, 0))
    with pytest.raises(ValueError, match=r"queue slot 3.*queue slot is empty"):
        env.step(action(env, 3, 0, 0))
    env = SchedulingEnv(make_scenario(golden_cluster(n_gpus=2), jobs), invalid_action="penalize",
                        invalid_penalty=2.0)
    env.reset(seed=0)
    env.step(action(env, 0, 0, 0))
    _, r, *_, info = env.step(action(env, 3, 0, 0))
    assert info["reward_terms"]["invalid"] == -2.0


def test_accuracy_floor_masks_variant():
    jobs = [request(0.0, min_accuracy=0.8)]
    env = SchedulingEnv(make_scenario(golden_cluster(), jobs))
    env.reset(seed=0)
    mask = env.action_masks()
    assert not mask[action(env, 0, 0, 0)] and mask[action(env, 0, 1, 0)]
    # The ideal service time respects the floor: only big qualifies (0.2 + 0.1).
    assert env.sim.queue[0].ideal == pytest.approx(0.3)


def test_process_until_infinity_runs_out_the_workload_and_stops():
    """With nothing ever assigned, every request expires: process_until(inf) must process the
    arrivals and expiries and stop when nothing is pending (not read past the job list)."""
    jobs = [request(0.0), request(0.1), request(0.2)]
    env = SchedulingEnv(make_scenario(golden_cluster(), jobs, drop_expired=True))
    env.reset(seed=0)
    sim = env.sim
    sim.process_until(float("inf"))
    assert sim.accounting() == {"arrived": 3, "completed": 0, "dropped": 3, "queued": 0, "running": 0}
    assert sim.now == pytest.approx(1.2)  # the last deadline
    assert sim.done


def test_reset_restores_the_garbage_collector_when_the_workload_fails():
    """The simulator pauses the cyclic GC while it builds an episode's jobs; a workload that
    raises leaves it enabled, and an unsorted job list is refused naming the job."""
    import gc

    from envs.sim.simulator import Simulator
    from envs.workloads.base import Workload

    class Failing(Workload):
        def generate(self, rng, ctx):
            raise RuntimeError("workload broke")

    assert gc.isenabled()
    sim = Simulator(golden_cluster(), Failing())
    with pytest.raises(RuntimeError, match="workload broke"):
        sim.reset(np.random.SeedSequence(0))
    assert gc.isenabled()
    unsorted = Simulator(golden_cluster(), ListWorkload([]))
    unsorted.workload.jobs = [request(1.0), request(0.5)]
    with pytest.raises(ValueError, match="job 1 .* arrives at 0.5"):
        unsorted.reset(np.random.SeedSequence(0))
    assert gc.isenabled()
