"""The compiled observation/mask kernel against its numpy reference and the simulator.

``envs.encoding`` has two implementations of one computation: ``encode_numpy`` (plain numpy,
the reference) and ``encode_loops`` (explicit loops, compiled with numba when it is installed).
At random states of every registered env they must give the same mask exactly, the same
observation to float32 rounding, and the mask must be the simulator's own ``action_mask()``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.encoding import ENCODE, JIT, encode_loops, encode_numpy
from envs.env import SchedulingEnv
from tests.conftest import golden_cluster, make_scenario, request

IDS = envs.registered_ids()


def _mixed_pipeline_env():
    """Pipelines plus single-stage requests in one workload (task arrivals come from two paths)."""
    from envs.sim.model import JobSpec, StageSpec
    jobs = [JobSpec(0.01 * i, (StageSpec("cls", 1.0),) if i % 2 else
                    (StageSpec("cls", 1.0), StageSpec("cls", 2.0, parents=(0,))), 1.0) for i in range(60)]
    return SchedulingEnv(make_scenario(golden_cluster(n_gpus=2), jobs, drop_expired=True))


def _compare(env) -> None:
    u = env.unwrapped
    args = u._encode_args()
    ref = encode_numpy(*args)
    fast = ENCODE(*args)
    loops = encode_loops(*args)  # the uncompiled loops, when ENCODE is compiled
    for got in (fast, loops):
        assert np.array_equal(got[0], ref[0])
        for a, b in zip(got[1:], ref[1:]):
            assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    sim = u.sim
    if u.continuous:  # joins are valid on busy devices: the env takes the simulator's mask
        assert np.array_equal(u.action_masks()[:-1], sim.action_mask().ravel())
    else:
        assert np.array_equal(ref[0][:-1], sim.action_mask().ravel()) and ref[0][-1]
    # The per-task table the kernel reads agrees with the queued Task objects.
    for t in sim.queue[:sim.K]:
        assert tuple(sim._ttimes[t.id]) == (t.arrival, t.deadline, t.priority, t.slo)
        assert sim._tkind[t.id] == t.kind
    # The bit-set decision test agrees with the mask.
    assert sim.has_decision() == bool(sim.action_mask().any())


@pytest.mark.parametrize("env_id", IDS)
def test_kernel_matches_numpy_reference_and_simulator_mask(env_id):
    env = gym.make(env_id, disable_env_checker=True)
    u = env.unwrapped
    rng = np.random.default_rng(3)
    env.reset(seed=11)
    for step in range(400):
        if step % 20 == 0:
            _compare(env)
        valid = np.flatnonzero(u.action_masks())
        _, _, term, trunc, _ = env.step(int(rng.choice(valid)))
        if term or trunc:
            env.reset()


def test_kernel_on_a_workload_mixing_pipelines_and_requests():
    env = _mixed_pipeline_env()
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    for _ in range(60):
        _compare(env)
        _, _, term, trunc, _ = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
        if term or trunc:
            break


def test_kernel_is_compiled_when_numba_is_installed():
    try:
        import numba  # noqa: F401
    except ImportError:
        pytest.skip("numba not installed: the numpy reference is used")
    import os
    assert JIT == (os.environ.get("MODELSCHED_JIT", "1") != "0")


def test_action_masks_follow_direct_changes_to_the_simulator():
    """The mask is cached with the observation; changing the simulator directly (as tests and
    tools do) must not leave a stale mask."""
    env = SchedulingEnv(make_scenario(golden_cluster(n_gpus=2), [request(0.0), request(0.0)]))
    env.reset(seed=0)
    before = env.action_masks()
    assert before[:-1].reshape(env.K, env.V, env.D)[0, :, 1].all()
    before[:] = False  # a copy: writing to it leaves the cached mask intact
    assert env.action_masks()[:-1].reshape(env.K, env.V, env.D)[0, :, 1].all()
    env.sim.assign(0, 0, 1)  # device 1 is busy now; one task left
    after = env.action_masks()
    assert not after[:-1].reshape(env.K, env.V, env.D)[:, :, 1].any()
    assert np.array_equal(after[:-1], env.sim.action_mask().ravel())
