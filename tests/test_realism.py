"""Realism features end to end: DAG jobs, gang (multi-device) jobs, device failures with requeue,
trace replay through ``gym.make``, and the simulator's invariants on the realism scenarios.

Golden tests use the cluster of ``tests/conftest.py::golden_cluster``: GPUs of 1 GB with a load
time of 0.1 s + GB / 2 GB/s, and two variants of capability ``cls``:
``small`` (slot 0): 0.4 GB (load 0.3 s), accuracy 0.7, latency 0.1 + 0.05 * size, scaling 1.0;
``big`` (slot 1): 0.8 GB (load 0.5 s), accuracy 0.9, latency 0.2 + 0.1 * size, scaling 0.5.
Both together need 1.2 GB > 1 GB, so loading one evicts the other. No service noise.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.config import ConfigError
from envs.env import SchedulingEnv
from envs.sim.model import DONE, DROPPED, QUEUED, RUNNING, JobSpec, StageSpec
from envs.sim.simulator import FAIL
from tests.conftest import golden_cluster, make_scenario, request

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
AZURE = TRACES / "azure_llm_2023" / "AzureLLMInferenceTrace_conv.csv"

REALISM_SCENARIOS = ["serving-hetero", "pipelines", "llm-serving", "training-cluster", "faulty-cluster"]


TASK_KEYS = ("arrived", "completed", "dropped", "queued", "running")
JOB_KEYS = ("jobs_arrived", "jobs_completed", "jobs_dropped", "jobs_in_progress")


def task_acc(info) -> dict[str, int]:
    """The task accounting of a step's info."""
    return {k: info["accounting"][k] for k in TASK_KEYS}


def job_acc(info) -> dict[str, int]:
    """The job accounting of a step's info (in ``info["job_accounting"]`` or merged into
    ``info["accounting"]``)."""
    src = info.get("job_accounting", info["accounting"])
    return {k: src[k] for k in JOB_KEYS}


def action(env, k, v, d):
    return (k * env.V + v) * env.D + d


def make(env_id, **kw):
    return gym.make(env_id, disable_env_checker=True, **kw)


def fail_stream(seed: int) -> np.random.Generator:
    """The simulator's failure RNG stream for the first episode after ``reset(seed=seed)``: the
    env spawns one episode seed from SeedSequence(seed); the simulator splits it into
    (workload, noise, failures)."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0].spawn(3)[2])


# ====================================================================== invariants
def check_step(env, info, last_time: float) -> float:
    """Invariants that hold after every step; returns the current time."""
    sim = env.unwrapped.sim
    cl = sim.cluster
    acc = task_acc(info)
    assert acc["arrived"] == acc["completed"] + acc["dropped"] + acc["queued"] + acc["running"], acc
    assert min(acc.values()) >= 0, acc
    assert acc["arrived"] == len(sim.tasks)
    assert acc["queued"] == len(sim.queue)
    ja = job_acc(info)
    in_progress = sum(1 for j in sim.jobs if not j.dropped and math.isnan(j.finish))
    assert ja["jobs_arrived"] == len(sim.jobs)
    assert ja["jobs_in_progress"] == in_progress
    assert ja["jobs_arrived"] == ja["jobs_completed"] + ja["jobs_dropped"] + ja["jobs_in_progress"]
    # Memory: within capacity and equal to the resident variants' footprint.
    assert np.all(sim.dev_memory_used <= cl.dev_memory + 1e-9)
    np.testing.assert_allclose(sim.dev_memory_used, cl.var_memory @ sim.resident, atol=1e-9)
    # Devices: a failed device holds nothing; running tasks own exactly their devices.
    running = {}
    for dev in sim.devices:
        if not dev.up:
            assert dev.task is None and not dev.resident and dev.memory_used == 0.0
        if dev.task is not None:
            assert dev.task.state == RUNNING and dev.index in dev.task.devices
            running[dev.task.id] = dev.task
    assert len(running) == acc["running"]
    assert all(len(t.devices) == t.devices_required for t in running.values())
    t = info["time"]
    assert t >= last_time, (t, last_time)
    return t


def check_end(env) -> None:
    """Latency >= ideal service time for every completed task (and job), nothing lost."""
    sim = env.unwrapped.sim
    for t in sim.tasks:
        if t.state == DONE:
            assert t.finish - t.arrival >= t.ideal * (1 - 1e-9), (t.finish - t.arrival, t.ideal)
    for j in sim.jobs:
        if not math.isnan(j.finish):
            assert j.finish >= j.arrival
    assert all(t.state in (QUEUED, RUNNING, DONE, DROPPED) for t in sim.tasks)


def random_rollout(env, seed: int, steps: int, *, until_end: bool = False):
    """Random valid actions (waiting included) with the per-step invariants; returns
    (last info, steps taken, terminated, truncated). Stops at the episode's end."""
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    last = check_step(env, info, 0.0)
    term = trunc = False
    n = 0
    while until_end or n < steps:
        mask = env.unwrapped.action_masks()
        obs, r, term, trunc, info = env.step(int(rng.choice(np.flatnonzero(mask))))
        n += 1
        last = check_step(env, info, last)
        assert np.isfinite(r)
        if term or trunc:
            break
    check_end(env)
    return info, n, term, trunc


# ====================================================================== DAG jobs
def test_dag_job_golden():
    """Two DAG jobs on two GPUs; every step and metric computed by hand.

    Job A arrives at 0, SLO 1.5 (deadline 1.5): A0 (size 2) and A1 (size 1) are roots, A2 (size
    1) has parents A0 and A1 (fan-in). Job B arrives at 0.1, SLO 1.0 (deadline 1.1): B0 (size 1)
    -> B1 (size 2) (chain). Policy:
      t=0:    A0 -> small, GPU0, cold: 0.3 load + 0.2 exec -> ends 0.5.
              A1 -> small, GPU1, cold: 0.3 + 0.15 -> ends 0.45.
      t=0.1:  B arrives, B0 ready; no idle GPU.
      t=0.45: A1 done. A2 is NOT ready (A0 still running): the window holds B0 only.
              B0 -> small, GPU1, warm: 0.15 -> ends 0.6.
      t=0.5:  A0 done -> A2 ready (ready time 0.5). A2 -> small, GPU0, warm: ends 0.65.
      t=0.6:  B0 done -> B1 ready. B1 -> big, GPU1: 0.4 + 0.8 > 1 GB evicts small; cold 0.5 +
              exec 0.4 -> ends 1.5.
      t=0.65: A2 done: job A finishes, latency 0.65 <= 1.5 (met).
      t=1.5:  B1 done: job B finishes, latency 1.5 - 0.1 = 1.4 > 1.0 (missed).
    Job metrics: mean latency (0.65 + 1.4) / 2 = 1.025; p99 (linear interpolation of two
    points) 0.65 + 0.99 * 0.75 = 1.3925; job SLO attainment 1/2.
    Task latencies (from ready time): A0 0.5, A1 0.45, A2 0.15, B0 0.5, B1 0.9; mean 0.5. Every
    stage has its job's deadline: only B1 (1.5 > 1.1) is late, so task SLO attainment 4/5 and
    effective accuracy 4 x 0.7 / 5 = 0.56. Cold starts 3, evictions 1. The last step covers
    [0.6, 1.5] with completions A2 (on time, small: 0.7 - 0.9) and B1 (late, big: 0): reward
    terms slo = -1, accuracy = -0.2.
    """
    A = JobSpec(0.0, (StageSpec("cls", 2.0), StageSpec("cls", 1.0), StageSpec("cls", 1.0, parents=(0, 1))), 1.5)
    B = JobSpec(0.1, (StageSpec("cls", 1.0), StageSpec("cls", 2.0, parents=(0,))), 1.0)
    env = SchedulingEnv(make_scenario(golden_cluster(n_gpus=2), [A, B], primary_metric="job_slo_attainment"))
    _, info = env.reset(seed=0)
    sim = env.sim
    a0, a1, a2 = sim.jobs[0].tasks
    assert sim.now == 0.0 and sim.queue == [a0, a1]
    assert a2.state not in (QUEUED, RUNNING) and a2 not in sim.tasks  # pending: not yet arrived
    assert task_acc(info) == {"arrived": 2, "completed": 0, "dropped": 0, "queued": 2, "running": 0}
    assert job_acc(info)["jobs_arrived"] == 1

    env.step(action(env, 0, 0, 0))  # A0 -> small, GPU0
    assert sim.now == 0.0 and sim.queue == [a1]
    _, _, _, _, info = env.step(action(env, 0, 0, 1))  # A1 -> small, GPU1
    assert sim.now == pytest.approx(0.45)
    b0, b1 = sim.jobs[1].tasks
    assert sim.queue == [b0]  # A2 still waits for A0
    assert a1.state == DONE and a0.state == RUNNING and a2 not in sim.queue
    mask = env.action_masks()[:-1].reshape(env.K, env.V, env.D)
    assert not mask[1:].any()  # only one ready task
    assert task_acc(info) == {"arrived": 3, "completed": 1, "dropped": 0, "queued": 1, "running": 1}

    env.step(action(env, 0, 0, 1))  # B0 -> small, GPU1 (warm)
    assert sim.now == pytest.approx(0.5)
    assert sim.queue == [a2] and a2.ready_time == pytest.approx(0.5) == a0.finish
    env.step(action(env, 0, 0, 0))  # A2 -> small, GPU0 (warm)
    assert sim.now == pytest.approx(0.6)
    assert sim.queue == [b1] and b1.ready_time == pytest.approx(0.6)
    _, _, term, trunc, info = env.step(action(env, 0, 1, 1))  # B1 -> big, GPU1 (evicts small)
    assert term and not trunc
    assert sim.now == pytest.approx(1.5)
    assert info["reward_terms"]["slo"] == -1.0
    assert info["reward_terms"]["accuracy"] == pytest.approx(-0.2, abs=1e-12)
    assert sim.jobs[0].finish == pytest.approx(0.65) and sim.jobs[1].finish == pytest.approx(1.5)
    m = info["metrics"]
    assert m["job_mean_latency"] == pytest.approx(1.025, abs=1e-12)
    assert m["job_p99_latency"] == pytest.approx(1.3925, abs=1e-12)
    assert m["job_slo_attainment"] == pytest.approx(0.5, abs=1e-12)
    assert sorted(t.finish - t.arrival for t in sim.tasks) == pytest.approx([0.15, 0.45, 0.5, 0.5, 0.9], abs=1e-12)
    assert m["mean_latency"] == pytest.approx(0.5, abs=1e-12)
    assert m["slo_attainment"] == pytest.approx(0.8, abs=1e-12)
    assert m["effective_accuracy"] == pytest.approx(0.56, abs=1e-12)
    assert m["cold_starts"] == 3 and m["evictions"] == 1 and m["drops"] == 0
    assert task_acc(info) == {"arrived": 5, "completed": 5, "dropped": 0, "queued": 0, "running": 0}
    assert job_acc(info) == {"jobs_arrived": 2, "jobs_completed": 2, "jobs_dropped": 0,
                                      "jobs_in_progress": 0}


def test_dag_expired_stage_drops_the_rest_of_its_job():
    """drop_expired: a DAG job whose stage expires loses all its unfinished stages, counted.

    One GPU. Job A (arrives 0, SLO 0.4): A0 (size 1) -> A1 (size 1). Job C (arrives 0, SLO 5):
    one stage of size 2. C -> big (cold 0.5 + 0.4, ends 0.9) takes the GPU first, so A0 waits and
    expires at 0.4: A0 is dropped as expired and A1 (pending) with its job. A counts 2 arrived,
    2 dropped; the job is dropped; C completes. Nothing is lost: arrived 3 = 1 completed + 2
    dropped.
    """
    A = JobSpec(0.0, (StageSpec("cls", 1.0), StageSpec("cls", 1.0, parents=(0,))), 0.4)
    C = request(0.0, size=2.0, slo=5.0)
    env = SchedulingEnv(make_scenario(golden_cluster(), [C, A], drop_expired=True))
    env.reset(seed=0)
    _, _, term, _, info = env.step(action(env, 0, 1, 0))
    assert term
    c = env.sim.counters
    assert c.dropped_expired == 1 and c.dropped_with_job == 1 and c.jobs_dropped == 1
    assert task_acc(info) == {"arrived": 3, "completed": 1, "dropped": 2, "queued": 0, "running": 0}
    assert info["metrics"]["job_slo_attainment"] == pytest.approx(0.5)
    assert job_acc(info)["jobs_dropped"] == 1 and job_acc(info)["jobs_completed"] == 1


# ====================================================================== gang jobs
def test_gang_job_golden():
    """A 2-device data-parallel task on three identical GPUs (one node).

    Jobs at t=0: r0, r1 (1 device, size 1), g (2 devices, size 2), x (4 devices: more than
    the pool of 3, infeasible, dropped at arrival); r2 (1 device, size 1) at t=0.6.
      t=0:    r0 -> small, GPU0 (cold 0.3 + 0.15 -> 0.45). Now g may go to GPU1 or GPU2 (two idle).
              r1 -> small, GPU1 (-> 0.45). One idle GPU left: g is masked ("not enough idle
              devices"), so no decision is offered until 0.45.
      t=0.45: r0, r1 done; g -> big on GPU1. Its partner is the lowest-index idle GPU of the same
              type on the same node: GPU0. On each, big evicts small; load max(0.5, 0.5) = 0.5.
              Execution 0.4 / (1 + (2 - 1) * 0.5) = 0.26667 (scaling efficiency 0.5).
              Both GPUs busy until 0.45 + 0.5 + 0.26667 = 1.21667; GPU2 stays idle.
      t=0.6:  r2 arrives: only GPU2 is valid for it; r2 -> small, GPU2 (cold 0.3 + 0.15 -> 1.05).
      t=1.21667: g done. Ideal of g: small on 2 GPUs, (0.1 + 0.05 * 2) / 2 = 0.1.
    Utilization: GPU0 and GPU1 busy over [0, 1.21667], GPU2 over [0.6, 1.05]:
    (2 x 1.21667 + 0.45) / (3 x 1.21667). Cold starts 5 (r0, r1, g x 2, r2), evictions 2,
    infeasible 1.
    """
    end = 0.45 + 0.5 + 0.4 / 1.5
    jobs = [request(0.0), request(0.0), request(0.0, size=2.0, slo=5.0, devices=2),
            request(0.0, devices=4), request(0.6)]
    env = SchedulingEnv(make_scenario(golden_cluster(n_gpus=3), jobs))
    _, info = env.reset(seed=0)
    sim = env.sim
    assert task_acc(info) == {"arrived": 4, "completed": 0, "dropped": 1, "queued": 3, "running": 0}
    assert sim.counters.dropped_infeasible == 1
    env.step(action(env, 0, 0, 0))  # r0 -> GPU0
    g = sim.queue[1]
    assert g.devices_required == 2 and g.ideal == pytest.approx(0.1)
    mask = env.action_masks()[:-1].reshape(env.K, env.V, env.D)
    assert mask[1, :, 1:].all() and not mask[1, :, 0].any()  # two idle GPUs: valid there
    # With only one idle GPU the gang task is masked everywhere and refused with a reason.
    probe = copy.deepcopy(env)
    probe.sim.assign(0, 0, 1)
    assert probe.sim.queue[0].id == g.id and probe.sim.queue[0].devices_required == 2
    assert not probe.sim.action_mask()[0].any()
    assert probe.sim.check_assignment(0, 1, 2) == "gang"
    with pytest.raises(ValueError, match="not enough idle devices"):
        probe.step(action(probe, 0, 1, 2))

    env.step(action(env, 0, 0, 1))  # r1 -> GPU1: the gang cannot start, time moves on
    assert sim.now == pytest.approx(0.45)
    mask = env.action_masks()[:-1].reshape(env.K, env.V, env.D)
    assert mask[0].all()  # three idle GPUs, both variants
    env.step(action(env, 0, 1, 1))  # g -> big on GPU1 (+ GPU0)
    assert sim.now == pytest.approx(0.6)
    assert g.state == RUNNING and g.devices == (1, 0)
    assert sim.devices[0].task == g and sim.devices[1].task == g and sim.devices[2].task is None
    assert sim.dev_busy_until[0] == pytest.approx(end) and sim.dev_busy_until[1] == pytest.approx(end)
    assert not sim.dev_idle[0] and not sim.dev_idle[1] and sim.dev_idle[2]
    mask = env.action_masks()[:-1].reshape(env.K, env.V, env.D)
    assert mask[0, :, 2].all() and not mask[0, :, :2].any()  # r2: only GPU2
    _, _, term, trunc, info = env.step(action(env, 0, 0, 2))  # r2 -> GPU2
    assert term and not trunc
    assert sim.now == pytest.approx(end)
    assert g.finish == pytest.approx(end) and g.start == pytest.approx(0.45)
    m = info["metrics"]
    assert m["utilization"] == pytest.approx((2 * end + 0.45) / (3 * end), abs=1e-12)
    assert m["cold_starts"] == 5 and m["evictions"] == 2 and m["infeasible"] == 1
    assert task_acc(info) == {"arrived": 5, "completed": 4, "dropped": 1, "queued": 0, "running": 0}


# ====================================================================== failures
def test_failure_requeue_golden():
    """A device fails under a running task: requeue, models lost, recovery, completion.

    One GPU (MTTR 0.5 s, MTBF infinite: no failures are drawn; we push one FAIL event at 0.7).
    Job j0 (t=0, size 2, SLO 10) -> big: cold 0.5 + exec 0.4 -> would end at 0.9.
    At 0.7 the GPU fails: j0 goes back to the queue (requeues 1), big is no longer resident,
    memory 0, the GPU is down; its recovery is drawn from the failure stream: 0.7 + r with
    r = Exp(mean 0.5), the stream's first draw. The stale completion at 0.9 is ignored. At
    0.7 + r the next decision is offered: j0 -> big again, cold: ends 0.7 + r + 0.9.
    Latency 1.6 + r; busy time 0.7 (interrupted run) + 0.9 = 1.6, so utilization 1.6 / (1.6 + r).
    Cold starts 2, failures 1, requeues 1, nothing dropped.
    """
    r = fail_stream(0).exponential(0.5)
    env = SchedulingEnv(make_scenario(golden_cluster(n_gpus=1, mttr=0.5), [request(0.0, size=2.0, slo=10.0)]))
    env.reset(seed=0)
    sim = env.sim
    sim._push(0.7, FAIL, 0)
    j0 = sim.queue[0]
    sim.assign(0, 1, 0)
    assert sim.resident[1, 0] and sim.dev_memory_used[0] == pytest.approx(0.8)
    sim.process_until(0.7 + r / 2)  # the GPU is down now
    dev = sim.devices[0]
    assert not dev.up and not sim.dev_up[0] and dev.task is None
    assert j0.state == QUEUED and j0.requeues == 1 and j0.devices == () and sim.queue == [j0]
    assert sim.counters.requeues == 1 and sim.counters.failures == 1
    assert not sim.resident[:, 0].any() and not dev.resident
    assert sim.dev_memory_used[0] == 0.0 and dev.memory_used == 0.0
    assert sim.accounting() == {"arrived": 1, "completed": 0, "dropped": 0, "queued": 1, "running": 0}
    assert not sim.action_mask().any() and sim.check_assignment(0, 1, 0) == "down"

    _, _, term, _, info = env.step(env.wait_action)  # time runs to the recovery
    assert not term
    assert sim.now == pytest.approx(0.7 + r) and dev.up
    assert env.action_masks()[action(env, 0, 1, 0)]
    _, _, term, trunc, info = env.step(action(env, 0, 1, 0))
    assert term and not trunc
    assert j0.state == DONE and j0.finish == pytest.approx(1.6 + r)
    m = info["metrics"]
    assert m["mean_latency"] == pytest.approx(1.6 + r)
    assert m["requeues"] == 1 and m["failures"] == 1 and m["cold_starts"] == 2 and m["drops"] == 0
    assert m["utilization"] == pytest.approx(1.6 / (1.6 + r))
    assert task_acc(info) == {"arrived": 1, "completed": 1, "dropped": 0, "queued": 0, "running": 0}


def test_failure_of_one_gang_device_requeues_and_frees_the_other():
    """A 2-GPU task (big, size 2) starts at 0 on GPU0 + GPU1: load 0.5, exec 0.4 / 1.5, ends
    0.76667. GPU1 fails at 0.6: the task is requeued; GPU0 is released (idle, up) and keeps its
    resident big; GPU1 loses its models. While GPU1 is down the task is masked (one idle GPU).
    GPU1 recovers at 0.6 + r (first draw of the failure stream); the task restarts there: GPU0
    is warm, GPU1 cold, so the load is max(0, 0.5) = 0.5 and it ends at 0.6 + r + 0.5 + 0.26667.
    """
    r = fail_stream(0).exponential(0.5)
    env = SchedulingEnv(make_scenario(golden_cluster(n_gpus=2, mttr=0.5),
                                      [request(0.0, size=2.0, slo=10.0, devices=2)]))
    env.reset(seed=0)
    sim = env.sim
    sim._push(0.6, FAIL, 1)
    g = sim.assign(0, 1, 0)
    assert g.devices == (0, 1)
    sim.process_until(0.6 + r / 2)
    assert g.state == QUEUED and g.requeues == 1 and sim.counters.requeues == 1
    d0, d1 = sim.devices
    assert d0.up and d0.task is None and sim.dev_idle[0] and 1 in d0.resident
    assert sim.dev_memory_used[0] == pytest.approx(0.8)
    assert not d1.up and not d1.resident and sim.dev_memory_used[1] == 0.0
    assert not sim.action_mask().any() and sim.check_assignment(0, 1, 0) == "gang"
    env.step(env.wait_action)
    assert sim.now == pytest.approx(0.6 + r)
    _, _, term, _, info = env.step(action(env, 0, 1, 0))
    assert term and g.finish == pytest.approx(0.6 + r + 0.5 + 0.4 / 1.5)
    assert info["metrics"]["requeues"] == 1 and info["metrics"]["cold_starts"] == 3
    assert task_acc(info) == {"arrived": 1, "completed": 1, "dropped": 0, "queued": 0, "running": 0}


def expected_single_device_run(seed: int, mtbf: float, mttr: float, busy: float) -> tuple[float, int]:
    """Finish time and requeues of one task that needs ``busy`` seconds (cold load + execution,
    cold again after every failure) on one device that fails by the simulator's failure stream,
    if the policy restarts it as soon as the device is back."""
    rng = fail_stream(seed)
    t_fail = rng.exponential(mtbf)  # scheduled at reset
    start, requeues = 0.0, 0
    while t_fail < start + busy:
        requeues += 1
        start = t_fail + rng.exponential(mttr)  # recovery
        t_fail = start + rng.exponential(mtbf)  # next failure, scheduled at recovery
    return start + busy, requeues


@pytest.mark.parametrize("seed", range(6))
def test_random_failures_follow_the_failure_stream(seed):
    """With a tiny MTBF (1 s) and no noise, the outcome of a 0.9 s task (big, cold: 0.5 + 0.4)
    is fixed by the failure stream; the simulator must match the hand replay of that stream."""
    finish, requeues = expected_single_device_run(seed, 1.0, 0.3, 0.9)
    env = SchedulingEnv(make_scenario(golden_cluster(n_gpus=1, mtbf=1.0, mttr=0.3),
                                      [request(0.0, size=2.0, slo=100.0)]))
    _, info = env.reset(seed=seed)
    assert task_acc(info)["queued"] == 1 and env.sim.now == 0.0
    term = False
    for _ in range(100):
        _, _, term, trunc, info = env.step(action(env, 0, 1, 0))
        if term or trunc:
            break
    assert term
    t = env.sim.tasks[0]
    assert t.finish == pytest.approx(finish, abs=1e-9)
    assert env.sim.counters.requeues == requeues == t.requeues
    assert info["metrics"]["requeues"] == requeues and info["metrics"]["cold_starts"] == requeues + 1
    assert task_acc(info) == {"arrived": 1, "completed": 1, "dropped": 0, "queued": 0, "running": 0}


def test_some_seed_exercises_a_requeue():
    assert any(expected_single_device_run(s, 1.0, 0.3, 0.9)[1] > 0 for s in range(6))


# ====================================================================== trace replay
def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def azure_timestamp(t: float) -> str:
    """Seconds after 2023-11-16 18:00:00 in the Azure trace's 7-digit fractional format."""
    whole = int(t)
    frac = round((t - whole) * 1e7)
    if frac == 10**7:
        whole, frac = whole + 1, 0
    return f"2023-11-16 {18 + whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}.{frac:07d}"


@pytest.mark.skipif(not AZURE.is_file(), reason="shared Azure trace not available")
def test_llm_serving_replays_the_azure_trace():
    """gym.make(..., trace=PATH) on the real Azure conversation trace (19,366 requests):
    3,000 random valid steps with every invariant intact at every step. The ~8% of requests
    whose prompt + output exceed Llama 2's 4,096-token context are dropped as infeasible."""
    env = make("modelsched/LlmServing-v1", trace=str(AZURE))
    info, n, term, trunc = random_rollout(env, seed=0, steps=3000)
    assert n == 3000 and not (term or trunc)
    sim = env.unwrapped.sim
    assert info["workload_counters"]["trace_jobs"] == 19366
    assert info["workload_counters"]["bad_rows_skipped"] == 0
    too_long = sum(t.size + t.size2 > 4096 for t in sim.tasks)
    assert too_long > 0 and sim.counters.dropped_infeasible == too_long
    assert sim.counters.completed > 1000


def test_llm_serving_bursty_trace_with_over_long_prompts(tmp_path):
    """A synthetic Azure-format trace much burstier than the real one (500 requests in 10 bursts
    of 50 within 50 ms, 20 s apart) with far longer prompts (lognormal around 3,000 tokens,
    10% of 6,000-20,000 tokens). Requests beyond every model's 4,096-token context are dropped
    as infeasible and counted in metrics["infeasible"], never a crash; 4,096 exactly is served."""
    rng = np.random.default_rng(3)
    rows, expect_infeasible = [], 0
    for b in range(10):
        for i in range(50):
            t = 20.0 * b + 0.001 * i
            prompt = int(rng.integers(6000, 20001)) if rng.random() < 0.1 else int(min(rng.lognormal(8.0, 0.5), 4000))
            out = int(rng.integers(1, 400))
            if b == 0 and i == 0:
                prompt, out = 4000, 96  # exactly the context: feasible
            if b == 0 and i == 1:
                prompt, out = 4000, 97  # one token over: infeasible
            expect_infeasible += prompt + out > 4096
            rows.append(f"{azure_timestamp(t)},{prompt},{out}")
    path = write(tmp_path, "bursty.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n" + "\n".join(rows) + "\n")
    env = make("modelsched/LlmServing-v1", trace=str(path), time_scale=1.0)
    info, n, term, trunc = random_rollout(env, seed=1, steps=0, until_end=True)
    assert term and not trunc
    m = info["metrics"]
    assert 50 <= expect_infeasible <= 250
    assert m["infeasible"] == expect_infeasible
    assert info["workload_counters"]["trace_jobs"] == 500
    acc = task_acc(info)
    assert acc["arrived"] == 500 and acc["completed"] + acc["dropped"] == 500
    first = env.unwrapped.sim.tasks[0]
    assert first.size + first.size2 == 4096 and first.ideal < math.inf


PHILLY_CSV = """timestamp,duration,num_gpus,gpu_time,cluster
2017-10-09 07:01:55,66.0,1,66.0,11cb48
2017-10-09 06:13:03,2951.0,1,2951.0,6214e9
2017-10-09 07:05:10,120.0,0,0.0,6214e9
2017-10-09 07:06:00,86400.0,8,691200.0,11cb48
2017-10-09 07:06:00,5400.0,2,10800.0,11cb48
2017-10-09 07:10:30,1.0,1,1.0,b436b2
2017-10-09 07:11:00,36000.0,16,576000.0,b436b2
2017-10-09 07:12:00,700.0,4,2800.0,b436b2
2017-10-09 07:12:01,3600.0,3,10800.0,6214e9
2017-10-09 07:20:00,259200.0,1,259200.0,11cb48
2017-10-09 07:20:00,45.0,1,45.0,11cb48
2017-10-09 07:25:00,900.0,8,7200.0,6214e9
2017-10-09 07:30:00,15.0,2,30.0,6214e9
2017-10-09 07:31:00,8000.0,1,8000.0,6214e9
2017-10-09 07:40:00,400.0,4,1600.0,6214e9
"""

OPENB_CSV = """name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time
openb-pod-0000,12000,16384,1,1000,,LS,Succeeded,0,3600,10
openb-pod-0001,6000,12288,1,460,,LS,Succeeded,100,1000,100
openb-pod-0002,4000,8192,0,0,,BE,Succeeded,150,900,150
openb-pod-0003,32000,65536,8,1000,V100M32,LS,Succeeded,200,90200,260
openb-pod-0004,16000,32768,2,1000,,LS,Running,300,,300
openb-pod-0005,16000,32768,4,1000,P100,LS,Succeeded,320,7520,400
openb-pod-0006,8000,16384,1,500,T4,BE,Pending,400,,
openb-pod-0007,8000,16384,2,1000,,LS,Succeeded,500,2300,500
openb-pod-0008,8000,16384,1,250,,BE,Succeeded,600,605,600
openb-pod-0009,64000,131072,8,1000,,LS,Succeeded,700,50700,800
openb-pod-0010,8000,16384,1,1000,,LS,Failed,800,1000,900
openb-pod-0011,8000,16384,1,1000,,LS,Succeeded,900,300900,900
"""


@pytest.mark.parametrize("fmt,text,jobs,counters", [
    ("philly", PHILLY_CSV, 14, {"non_gpu_rows_skipped": 1, "devices_clipped": 1}),
    ("openb", OPENB_CSV, 9, {"non_gpu_rows_skipped": 1, "unfinished_skipped": 2, "devices_clipped": 0}),
])
def test_training_cluster_replays_philly_and_openb(tmp_path, fmt, text, jobs, counters):
    """Small Philly and openb fixtures through gym.make: every GPU job arrives with its GPU
    count (16 clipped to 8), gangs run on n devices of one type, every job completes (training
    jobs are never dropped), and the invariants hold at every step."""
    path = write(tmp_path, f"{fmt}.csv", text)
    env = make("modelsched/TrainingCluster-v1", trace=str(path))
    info, n, term, trunc = random_rollout(env, seed=2, steps=0, until_end=True)
    assert term and not trunc
    wc = info["workload_counters"]
    assert wc["trace_jobs"] == jobs
    for k, v in counters.items():
        assert wc[k] == v, k
    acc = task_acc(info)
    assert acc == {"arrived": jobs, "completed": jobs, "dropped": 0, "queued": 0, "running": 0}
    sim = env.unwrapped.sim
    gangs = [t for t in sim.tasks if t.devices_required > 1]
    assert gangs and max(t.devices_required for t in sim.tasks) == 8
    for t in gangs:  # all devices of one type
        assert len({int(sim.cluster.dev_type[d]) for d in t.devices}) == 1
    assert info["metrics"]["mean_slowdown"] >= 1.0


BAD_AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.2224670,lots,55
2023-11-16 18:15:51.3910170,91,16
2023-11-16 18:15:52.0000000,91
2023-11-16 18:15:53.0000000,120,30
"""


def test_malformed_trace_row_names_file_and_line(tmp_path):
    path = write(tmp_path, "bad_azure.csv", BAD_AZURE)
    with pytest.raises(ConfigError, match=r"bad_azure\.csv:4: ContextTokens 'lots' is not a number"):
        env = make("modelsched/LlmServing-v1", trace=str(path))
        env.reset(seed=0)
    bad_philly = PHILLY_CSV.replace("2017-10-09 07:10:30,1.0,1", "2017-10-09 07:10:30,-1.0,1")
    path = write(tmp_path, "bad_philly.csv", bad_philly)
    with pytest.raises(ConfigError, match=r"bad_philly\.csv:7: duration '-1.0' is negative"):
        env = make("modelsched/TrainingCluster-v1", trace=str(path))
        env.reset(seed=0)


def test_on_bad_rows_skip_counts_skipped_rows(tmp_path):
    path = write(tmp_path, "bad_azure.csv", BAD_AZURE)
    env = make("modelsched/LlmServing-v1", trace=str(path), on_bad_rows="skip")
    _, info = env.reset(seed=0)
    assert info["workload_counters"]["bad_rows_skipped"] == 2
    assert info["workload_counters"]["trace_jobs"] == 4
    info, n, term, trunc = random_rollout(env, seed=0, steps=0, until_end=True)
    assert term and task_acc(info)["arrived"] == 4
    assert info["workload_counters"]["bad_rows_skipped"] == 2


def test_trace_keywords_need_a_trace_replay_section():
    with pytest.raises(ConfigError, match="does not replay traces"):
        make("modelsched/FaultyCluster-v1", trace="requests.csv")


# ====================================================================== scenario invariants
@pytest.mark.parametrize("name", REALISM_SCENARIOS)
def test_invariants_with_random_valid_actions(name):
    """A few hundred random valid steps on each realism scenario: accounting (tasks and jobs)
    every step, memory within capacity and equal to the resident footprint, time monotone,
    latency >= ideal service time."""
    env = make(envs.env_id(name))
    random_rollout(env, seed=4, steps=300)


def test_faulty_cluster_fails_requeues_and_loses_nothing():
    """A whole faulty-cluster episode with random valid actions: devices fail (the rates are
    scaled so that they do within one episode), running requests are requeued, and at the end
    every arrived request is completed or dropped."""
    env = make("modelsched/FaultyCluster-v1")
    info, n, term, trunc = random_rollout(env, seed=0, steps=0, until_end=True)
    assert term
    m = info["metrics"]
    sim = env.unwrapped.sim
    assert m["failures"] >= 1 and m["failures"] == sim.counters.failures
    assert m["requeues"] == sim.counters.requeues >= 1
    acc = task_acc(info)
    assert acc["arrived"] == acc["completed"] + acc["dropped"] == env.unwrapped.scenario.raw["workload"]["num_jobs"]


def test_pipelines_jobs_are_dags_and_accounted():
    """Pipelines has chains, fan-in and fan-out jobs; a stage never starts before all its
    parents have finished."""
    env = make("modelsched/Pipelines-v1")
    random_rollout(env, seed=5, steps=400)
    sim = env.unwrapped.sim
    shapes = {tuple(st.parents for st in j.spec.stages) for j in sim.jobs}
    assert ((), (0,), (1,)) in shapes and ((), (), (0, 1)) in shapes and ((), (0,), (0,)) in shapes
    for j in sim.jobs:
        for t in j.tasks:
            if t.state in (RUNNING, DONE):
                for p in j.spec.stages[t.stage].parents:
                    assert j.tasks[p].state == DONE and j.tasks[p].finish <= t.start + 1e-12


def test_task_views_match_the_workload_and_the_metrics():
    """Task and job views read the simulator's per-id lists: every field agrees with the job's
    spec, the DAG links agree with the stages' parents, views are read-only, and the episode
    metrics (gathered from the lists) agree with the same figures computed from the views."""
    env = make("modelsched/Pipelines-v1")
    info, *_ = random_rollout(env, seed=9, steps=10**6, until_end=True)
    sim = env.unwrapped.sim
    assert sim.tasks and sim.jobs
    # The simulator keeps the job list by column; it rebuilds the workload's jobs exactly.
    episode_ss = np.random.SeedSequence(9).spawn(1)[0]  # the env's first episode (root seed 9)
    workload_ss = episode_ss.spawn(3)[0]
    assert sim.job_specs == sim.workload.generate(np.random.default_rng(workload_ss), sim.cluster).jobs
    assert [j.spec for j in sim.jobs] == sim.job_specs[:len(sim.jobs)]
    for t in sim.tasks:
        spec = t.job.spec
        st = spec.stages[t.stage]
        assert (t.capability, t.size, t.size2, t.devices_required, t.min_accuracy) == \
            (st.capability, st.size, st.size2, st.devices_required, st.min_accuracy)
        assert t.deadline == spec.arrival + spec.slo and t.priority == spec.priority and t.slo == spec.slo
        assert t.job.tasks[t.stage] == t and t in t.job.tasks
        assert sorted(c.stage for c in t.children) == [i for i, s in enumerate(spec.stages) if t.stage in s.parents]
        assert t.cap_index == sim.cluster.cap_index[t.capability]
    t = sim.tasks[0]
    assert t == sim.task(t.id) and hash(t) == hash(sim.task(t.id)) and t != sim.task(t.id + 1)
    with pytest.raises(AttributeError):
        t.state = QUEUED
    with pytest.raises(IndexError, match="task id"):
        sim.task(len(sim._tstate))
    # The metrics cover the tasks arriving after the warm-up (pipelines has one).
    assert sim.warmup > 0
    counted = [t for t in sim.tasks if t.arrival >= sim.warmup]
    assert 0 < len(counted) < len(sim.tasks)
    done = [t for t in counted if t.state == DONE]
    m = info["metrics"]
    lat = [t.finish - t.arrival for t in done]
    assert m["mean_latency"] == pytest.approx(sum(lat) / len(lat), rel=1e-12)
    assert m["slo_attainment"] == sum(t.finish <= t.deadline + 1e-12 for t in done) / len(counted)
    assert m["completed"] == len(done) and m["arrived"] == len(counted)
    assert m["drops"] == sum(t.state == DROPPED for t in counted)
    finished = [j for j in sim.jobs if not j.dropped and not math.isnan(j.finish) and j.arrival >= sim.warmup]
    assert finished and all(j.remaining == 0 for j in finished)
    assert m["job_mean_latency"] == pytest.approx(sum(j.finish - j.arrival for j in finished) / len(finished),
                                                  rel=1e-12)
    assert m["job_slo_attainment"] == sum(j.finish <= j.deadline + 1e-12 for j in finished) / sum(
        j.arrival >= sim.warmup for j in sim.jobs)


def test_task_shape_cache_is_bounded_across_episodes():
    """llm-serving draws fresh (prompt, output) sizes every episode, so nearly every request
    has a new shape. 45 episodes of 200 requests (9,000 distinct shapes) through the
    simulator: what it caches per shape must stay bounded (at most 10,000 entries), or memory
    grows by ~1.3 KB per request over a training run."""
    from envs.scenarios.loader import load_scenario
    from envs.sim.simulator import Simulator

    sc = load_scenario("llm-serving", workload_overrides={"num_jobs": 200})
    sim = Simulator(sc.cluster, sc.workload, visible_tasks=sc.visible_tasks, queue_capacity=sc.queue_capacity,
                    drop_expired=sc.drop_expired, noise_cv=sc.noise_cv)
    for seed in range(45):
        sim.reset(np.random.SeedSequence(seed))
        while not sim.done:
            sim.advance_to_next_decision()
            if sim.done:
                break
            k, v, d = map(int, np.argwhere(sim.action_mask())[0])
            sim.assign(k, v, d)
    assert len(getattr(sim, "_kinds", {})) <= 10_000


# ====================================================================== failures of late or dropped work
def test_requeued_task_past_its_deadline_is_dropped_with_drop_expired():
    """One GPU, j0 (size 2, SLO 0.8) -> big, would end at 0.9; the GPU fails at 0.85, after the
    deadline. With drop_expired the requeued task is past its deadline and should be dropped as
    expired rather than wait for the GPU and be served late."""
    env = SchedulingEnv(make_scenario(golden_cluster(n_gpus=1, mttr=0.5), [request(0.0, size=2.0, slo=0.8)],
                                      drop_expired=True))
    env.reset(seed=0)
    sim = env.sim
    sim._push(0.85, FAIL, 0)
    sim.assign(0, 1, 0)
    sim.process_until(0.86)
    assert sim.counters.requeues == 1
    assert sim.accounting() == {"arrived": 1, "completed": 0, "dropped": 1, "queued": 0, "running": 0}


def test_requeued_stage_of_a_dropped_job_is_dropped():
    """Job (SLO 0.5): A0 (size 2) and A1 roots, A2 after both. A0 -> big on the only GPU (ends
    0.9); A1 expires at 0.5, which drops the job (A2 too) while A0 keeps running. The GPU fails
    at 0.7: A0's job can no longer complete, so A0 should be dropped (with its job), not
    requeued for service."""
    jobs = [JobSpec(0.0, (StageSpec("cls", 2.0), StageSpec("cls", 1.0), StageSpec("cls", 1.0, parents=(0, 1))), 0.5)]
    env = SchedulingEnv(make_scenario(golden_cluster(n_gpus=1, mttr=0.5), jobs, drop_expired=True))
    env.reset(seed=0)
    sim = env.sim
    sim.assign(0, 1, 0)
    sim._push(0.7, FAIL, 0)
    sim.process_until(0.6)
    assert sim.jobs[0].dropped
    sim.process_until(0.75)
    assert sim.accounting() == {"arrived": 3, "completed": 0, "dropped": 3, "queued": 0, "running": 0}
    assert not sim.queue


def test_failed_device_has_no_finite_estimate():
    """While a device is down, no candidate on it looks attractive: its estimates are inf in the
    simulator's view and saturate (1.0) in the observation."""
    jobs = [request(0.0), request(0.0), request(0.0)]
    env = SchedulingEnv(make_scenario(golden_cluster(n_gpus=2, mtbf=1e9, mttr=5.0), jobs))
    env.reset(seed=0)
    sim = env.sim
    sim._push(0.0, FAIL, 1)
    sim.process_until(0.0)
    assert not sim.dev_up[1]
    assert np.isinf(sim.estimates()[:, :, 1]).all()
    assert np.isfinite(sim.estimates()[0, :, 0]).all()
    obs = env._observation()
    assert (obs["estimates"][:, :, 1] == 1.0).all()
    assert env.observation_space.contains(obs)
