"""Bounded-time fuzzing of scenario loading, actions and trace files (issue 15, item 7).

Nothing is planted: the cases are random perturbations of the built-in scenarios, random
mixes of valid and invalid actions, and random (often malformed) trace files, all drawn from
one fixed root seed (``ROOT_SEED``; ``FUZZ_SEED=<int>`` in the environment explores other
seeds, ``FUZZ_BUDGET_S`` changes the time budget). The contract checked:

* ``gym.make("modelsched/Scheduling-v1", scenario=d, ...)`` either succeeds or raises
  :class:`envs.config.ConfigError` / ``ValueError`` (a :class:`envs.config.ScenarioWarning`
  may be emitted); any other exception, or any other warning, is a failure reported with the
  case index and the perturbations that caused it;
* with ``invalid_action="raise"`` an invalid action raises ``ValueError`` and leaves the state
  unchanged (the episode then goes on); with ``"penalize"`` an invalid in-range action is a
  wait with reward term ``invalid == -invalid_penalty``; an out-of-range integer or a
  non-integer action always raises ``ValueError``;
* at every step: task and job accounting identities, non-negative counts, non-decreasing
  time, observation inside the observation space and finite, finite reward, device memory
  within capacity and equal to the memory of the resident variants; at the end of an episode
  ``info["metrics"]`` is present and consistent, with NaN only where nothing was measured.

Each test stops when its share of the time budget is spent and asserts that a minimum number
of cases (and actions) ran, so it cannot pass vacuously.
"""

from __future__ import annotations

import copy
import math
import os
import time
import traceback
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import envs
from envs.config import ConfigError, ScenarioWarning
from envs.scenarios.loader import library, read_scenario_dict
from envs.sim.model import DONE, DROPPED

ROOT_SEED = int(os.environ.get("FUZZ_SEED", "15007"))
#: Seconds of the whole fuzz run (scenario + trace tests) on the 2-core CI machine.
BUDGET_S = float(os.environ.get("FUZZ_BUDGET_S", "30"))
SCENARIO_SHARE, TRACE_SHARE = 0.8, 0.2
#: Minimum cases / actions each test must reach within its share of the budget.
MIN_SCENARIO_CASES = 100
MIN_ACTIONS = 2000
MIN_TRACE_CASES = 30
#: Steps of an episode at most (a perturbed scenario may never end).
MAX_STEPS = 120

INF, NAN = math.inf, math.nan
#: Replacement values for a perturbed leaf (or section).
VALUES: list[Any] = [0, 0.0, -1, -0.5, -1e-9, 1e-300, 0.5, 1, 2, 3, 7, 1e9, 1e300, 10**30, 2**63, INF, -INF,
                     NAN, "x", "", "1", "nan", True, False, None, [], {}, [1, 2], [[]], [None], {"a": 1},
                     {"dist": "lognormal", "mean": 1, "cv": 200}]
KINDS = ["poisson", "gamma", "diurnal", "dag", "training", "trace", "bogus"]

BUILTINS = envs.builtin_scenarios()
RAW = {name: read_scenario_dict(name)[0] for name in BUILTINS}
LIB = library()


def _streams(tag: int):
    """Independent generators for one test's cases, from the root seed (no global RNG): the
    i-th generator depends only on (ROOT_SEED, tag, i)."""
    ss = np.random.SeedSequence([ROOT_SEED, tag])
    while True:
        yield np.random.default_rng(ss.spawn(1)[0])


# ---------------------------------------------------------------------- perturbations
def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) in a nested dict/list, the root excluded."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out.extend(_paths(v, prefix + (k,)))
    return out


def _parent(d: Any, path: tuple) -> Any:
    for p in path[:-1]:
        d = d[p]
    return d


def _typo(rng: np.random.Generator, key: Any) -> Any:
    s = str(key)
    op = rng.integers(5)
    if op == 0 and len(s) > 1:
        i = int(rng.integers(len(s)))
        return s[:i] + s[i + 1:]
    if op == 1 and len(s) > 1:
        i = int(rng.integers(len(s) - 1))
        return s[:i] + s[i + 1] + s[i] + s[i + 2:]
    if op == 2:
        return s.upper()
    if op == 3:
        return s + "s"
    return s + "_" + "x"


def _random_value(rng: np.random.Generator, old: Any) -> Any:
    r = rng.random()
    if r < 0.2 and isinstance(old, (int, float)) and not isinstance(old, bool):
        # a numeric nudge: scale by 10^U(-8, 8), flip the sign, or the neighbouring integer
        op = rng.integers(3)
        if op == 0:
            return old * 10.0 ** rng.uniform(-8, 8)
        if op == 1:
            return -old
        return int(old) + int(rng.choice([-1, 1])) if math.isfinite(old) else old
    if r < 0.25 and isinstance(old, (int, float)) and not isinstance(old, bool):
        return str(old)
    return copy.deepcopy(VALUES[int(rng.integers(len(VALUES)))])


def _enrich(rng: np.random.Generator, d: dict, log: list[str]) -> None:
    """Add optional keys (valid values) so that the perturbations also reach them."""
    wl = d.get("workload")
    if rng.random() < 0.3:
        d["horizon"] = float(rng.choice([0.01, 1.0, 5.0, 60.0, 1e6]))
        log.append(f"enrich horizon={d['horizon']}")
    if rng.random() < 0.3:
        d["queue_capacity"] = int(rng.integers(1, 6))
        log.append(f"enrich queue_capacity={d['queue_capacity']}")
    if rng.random() < 0.2:
        d["visible_tasks"] = int(rng.integers(1, 5))
        log.append(f"enrich visible_tasks={d['visible_tasks']}")
    if rng.random() < 0.2:
        d["drop_expired"] = not d.get("drop_expired", False)
        log.append(f"enrich drop_expired={d['drop_expired']}")
    if rng.random() < 0.2:
        d["noise_cv"] = float(rng.choice([0.0, 0.5, 2.0]))
        log.append(f"enrich noise_cv={d['noise_cv']}")
    if isinstance(wl, dict) and rng.random() < 0.25:
        wl["priorities"] = {1.0: 0.6, 4.0: 0.4}
        log.append("enrich workload.priorities")
    if isinstance(wl, dict) and wl.get("kind") in ("dag", "training") and rng.random() < 0.2:
        wl["arrival"] = "diurnal"
        wl.pop("cv", None)
        wl["period"] = float(rng.choice([1.0, 100.0]))
        log.append("enrich workload.arrival=diurnal")
    types = {dev.get("type") for dev in d.get("devices", []) if isinstance(dev, dict)}
    if rng.random() < 0.3 and types:
        t = sorted(str(x) for x in types)[int(rng.integers(len(types)))]
        spec = dict(d.get("device_types", {}).get(t) or LIB["device_types"].get(t) or {})
        if spec:
            spec["mtbf_s"] = float(rng.choice([0.5, 5.0, 100.0]))
            spec["mttr_s"] = float(rng.choice([0.0, 0.3, 10.0]))
            d.setdefault("device_types", {})[t] = spec
            d["failures"] = True
            log.append(f"enrich device_types.{t} failing")
    variants = d.get("variants")
    if isinstance(variants, list) and variants and rng.random() < 0.3:
        i = int(rng.integers(len(variants)))
        if isinstance(variants[i], str):
            name = variants[i]
            entry = {"name": name, "from_library": True}
            if rng.random() < 0.5:
                entry = {"name": name + "-copy", **LIB["variants"][name]}
            variants[i] = entry
            log.append(f"enrich variants[{i}] as a mapping")


NUMBERS: list[Any] = [0, 1e-300, 1e-9, 0.01, 0.5, 1, 2, 7, 64, 1e6, 1e9, 1e300, 10**30, 2**63, -1]


def _perturb_number(rng: np.random.Generator, d: dict, log: list[str]) -> None:
    """Set one numeric leaf to another number (such scenarios load more often: the simulator
    then runs on extreme but accepted values)."""
    paths = [p for p in _paths(d) if isinstance(_parent(d, p)[p[-1]], (int, float))
             and not isinstance(_parent(d, p)[p[-1]], bool)]
    if not paths:
        return
    path = paths[int(rng.integers(len(paths)))]
    parent, key = _parent(d, path), path[-1]
    old = parent[key]
    if rng.random() < 0.5 and math.isfinite(old):
        new = old * 10.0 ** float(rng.uniform(-6, 6))
        new = int(new) if isinstance(old, int) and abs(new) < 2**62 else new
    else:
        new = NUMBERS[int(rng.integers(len(NUMBERS)))]
    parent[key] = new
    log.append(f"number {'/'.join(map(str, path))} = {new!r}")


def _perturb_once(rng: np.random.Generator, d: dict, log: list[str]) -> None:
    paths = _paths(d)
    if not paths:
        d["name"] = "x"
        return
    path = paths[int(rng.integers(len(paths)))]
    parent = _parent(d, path)
    key = path[-1]
    old = parent[key]
    op = rng.choice(["delete", "rename", "value", "value", "value", "retype", "duplicate", "empty",
                     "swap", "kind"], p=[0.14, 0.1, 0.16, 0.16, 0.1, 0.07, 0.07, 0.07, 0.06, 0.07])
    where = "/".join(map(str, path))
    if op == "delete":
        del parent[key]
        log.append(f"delete {where}")
    elif op == "rename" and isinstance(parent, dict):
        new = _typo(rng, key)
        parent[new] = parent.pop(key)
        log.append(f"rename {where} -> {new!r}")
    elif op == "retype":
        if isinstance(old, dict):
            new = list(old.values())
        elif isinstance(old, list):
            new = {str(i): v for i, v in enumerate(old)}
        elif isinstance(old, str):
            new = {old: 1}
        else:
            new = [old]
        parent[key] = new
        log.append(f"retype {where}: {type(old).__name__} -> {new!r:.80}")
    elif op == "duplicate" and isinstance(old, list) and old:
        old.append(copy.deepcopy(old[int(rng.integers(len(old)))]))
        log.append(f"duplicate an element of {where}")
    elif op == "empty" and isinstance(old, (list, dict)):
        parent[key] = type(old)()
        log.append(f"empty {where}")
    elif op == "swap":
        other = paths[int(rng.integers(len(paths)))]
        if other[:len(path)] != path and path[:len(other)] != other:  # neither inside the other
            parent[key] = copy.deepcopy(_parent(d, other)[other[-1]])
            log.append(f"swap {where} := copy of {'/'.join(map(str, other))}")
        else:
            parent[key] = None
            log.append(f"swap {where} := None")
    elif op == "kind" and isinstance(d.get("workload"), dict):
        d["workload"]["kind"] = KINDS[int(rng.integers(len(KINDS)))]
        log.append(f"workload.kind = {d['workload']['kind']!r}")
    else:
        new = _random_value(rng, old)
        parent[key] = new
        log.append(f"set {where} = {new!r:.60}")


def _small(d: dict, rng: np.random.Generator) -> None:
    wl = d.get("workload")
    if isinstance(wl, dict) and "num_jobs" in wl:
        wl["num_jobs"] = int(rng.integers(20, 61))
    # A short episode inside a built-in warm-up would count nothing: a warm-up of none, a
    # small one or a long one instead.
    d["warmup_s"] = [0.0, 0.0, 0.05, 0.3][int(rng.integers(4))]


def _bound_cost(d: dict, log: list[str]) -> None:
    """Keep the cost of a case small: a scenario asking for many jobs or devices is valid and
    costs time and memory in proportion (``num_jobs: 4e8`` needs gigabytes), so accepted values
    above the fuzz's limits are lowered (values past the scenario's own bounds are kept: they
    must be refused, and quickly)."""
    wl = d.get("workload")
    n = wl.get("num_jobs") if isinstance(wl, dict) else None
    if isinstance(n, int) and not isinstance(n, bool) and 200 < n < 2**62:
        wl["num_jobs"] = 200
        log.append("(num_jobs lowered to 200)")
    for dev in d.get("devices") or [] if isinstance(d.get("devices"), list) else []:
        c = dev.get("count") if isinstance(dev, dict) else None
        if isinstance(c, int) and not isinstance(c, bool) and 64 < c <= 4096:
            dev["count"] = 64
            log.append("(a device count lowered to 64)")


def _make_case(rng: np.random.Generator) -> tuple[str, dict, dict, list[str]]:
    name = BUILTINS[int(rng.integers(len(BUILTINS)))]
    d = copy.deepcopy(RAW[name])
    _small(d, rng)
    log: list[str] = []
    if rng.random() < 0.7:
        _enrich(rng, d, log)
    n = int(rng.choice([0, 1, 1, 1, 2, 2, 3])) if rng.random() > 0.05 else 8
    numeric = rng.random() < 0.35
    for _ in range(n):
        (_perturb_number if numeric else _perturb_once)(rng, d, log)
    _bound_cost(d, log)
    kwargs: dict[str, Any] = {"invalid_action": "raise" if rng.random() < 0.5 else "penalize"}
    if kwargs["invalid_action"] == "penalize" and rng.random() < 0.5:
        kwargs["invalid_penalty"] = float(rng.choice([0.1, 2.0, 1e6]))
    r = rng.random()
    if r < 0.08:
        key = ["horizon", "visible_tasks", "queue_capacity", "noise_cv", "horizn", "trace_window",
               "time_scale"][int(rng.integers(7))]
        kwargs[key] = _random_value(rng, 1.0)
    elif r < 0.14:
        kwargs["workload_overrides"] = {
            ["num_jobs", "load", "rate", "slo_multiplier", "mix", "cv", "nmu_jobs"][int(rng.integers(7))]:
            _random_value(rng, 10)}
    elif r < 0.16:
        kwargs["workload_overrides"] = _random_value(rng, "x")
    log.extend(f"keyword {k}={v!r:.60}" for k, v in kwargs.items() if k != "invalid_action")
    return name, d, kwargs, log


# ---------------------------------------------------------------------- invariants
TASK_KEYS = ("arrived", "completed", "dropped", "queued", "running")
JOB_KEYS = ("jobs_arrived", "jobs_completed", "jobs_dropped", "jobs_in_progress")
#: Metrics that may be NaN only when no task completed / no task arrived / no job finished.
NAN_IF_NO_COMPLETION = ("mean_latency", "p50_latency", "p95_latency", "p99_latency", "mean_slowdown",
                        "mean_accuracy", "accuracy_loss", "ttft_mean", "ttft_p99")
#: NaN where no completed request has more than one output token (continuous batching).
NAN_IF_NO_DECODE = ("tpot_mean", "tpot_p99")
NAN_IF_NO_ARRIVAL = ("slo_attainment", "effective_accuracy", "ttft_slo_attainment", "tpot_slo_attainment")
NAN_IF_NO_JOB = ("job_slo_attainment",)
NAN_IF_NO_JOB_DONE = ("job_mean_latency", "job_p99_latency")


def _check_accounting(acc: dict) -> None:
    assert all(isinstance(acc[k], int) and acc[k] >= 0 for k in TASK_KEYS + JOB_KEYS), acc
    assert acc["arrived"] == acc["completed"] + acc["dropped"] + acc["queued"] + acc["running"], acc
    assert acc["jobs_arrived"] == acc["jobs_completed"] + acc["jobs_dropped"] + acc["jobs_in_progress"], acc


def _check_state(env, obs, info, prev_time: float) -> float:
    u = env.unwrapped
    sim = u.sim
    _check_accounting(info["accounting"])
    assert info["accounting"] == {**sim.accounting(), **sim.job_accounting()}
    assert info["time"] == sim.now >= prev_time, (info["time"], sim.now, prev_time)
    assert not math.isnan(sim.now)
    assert env.observation_space.contains(obs), {k: (v.shape, v.dtype, float(np.min(v)), float(np.max(v)))
                                                 for k, v in obs.items()}
    assert all(np.isfinite(v).all() for v in obs.values())
    cl = sim.cluster
    used = np.asarray(sim.dev_memory_used)
    assert np.all(used >= -1e-9) and np.all(used <= cl.dev_memory + 1e-6), (used, cl.dev_memory)
    resident_mem = (sim.resident * cl.var_memory[:, None]).sum(axis=0)
    assert np.allclose(resident_mem, used, atol=1e-6), (resident_mem, used)
    assert [dev.memory_used for dev in sim.devices] == pytest.approx(list(used), abs=1e-9)
    mask = u.action_masks()
    assert mask.shape == (u.n_actions,) and mask.dtype == bool and mask[-1]
    return sim.now


def _counted(sim, acc: dict) -> dict:
    """The accounting of the tasks and jobs the metrics cover: those arriving at or after the
    warm-up (all of them without one)."""
    w = sim.warmup
    if not w:
        return acc
    ids = [t for t in sim._arrived if sim._ttimes[t, 0] >= w]
    state = sim._tstate
    n_jobs = sim._next_job
    jobs = [j for j in range(n_jobs) if sim._arrivals_l[j] >= w]
    return {"arrived": len(ids), "completed": sum(state[t] == DONE for t in ids),
            "dropped": sum(state[t] == DROPPED for t in ids), "jobs_arrived": len(jobs),
            "jobs_completed": sum(not sim._jdropped[j] and not math.isnan(sim._jfinish[j]) for j in jobs)}


def _check_metrics(m: dict, acc: dict) -> None:
    assert all(isinstance(v, float) and not math.isinf(v) for v in m.values()), m
    allowed_nan = set(NAN_IF_NO_DECODE)
    if acc["completed"] == 0:
        allowed_nan.update(NAN_IF_NO_COMPLETION)
    if acc["arrived"] == 0:
        allowed_nan.update(NAN_IF_NO_ARRIVAL)
    if acc["jobs_arrived"] == 0:
        allowed_nan.update(NAN_IF_NO_JOB)
    if acc["jobs_completed"] == 0:
        allowed_nan.update(NAN_IF_NO_JOB_DONE)
    nan = {k for k, v in m.items() if math.isnan(v)}
    assert nan <= allowed_nan, (sorted(nan - allowed_nan), acc)
    assert m["completed"] == acc["completed"] and m["arrived"] == acc["arrived"], (m, acc)
    assert m["drops"] == acc["dropped"]
    for k in ("slo_attainment", "effective_accuracy", "mean_accuracy", "job_slo_attainment"):
        assert math.isnan(m[k]) or -1e-12 <= m[k] <= 1 + 1e-12, (k, m[k])
    assert 0.0 <= m["utilization"] <= 1 + 1e-9 and 0.0 <= m["memory_utilization"] <= 1 + 1e-9, m


def _huge_weights(raw: dict) -> bool:
    """Whether a reward weight or a priority of the scenario is so large (> 1e100) that the
    reward may overflow to +-inf: the scale the scenario asked for (only NaN is refused then)."""
    rw = raw.get("reward") or {}
    pr = (raw.get("workload") or {}).get("priorities") or {}
    values = [*rw.values(), *(float(k) for k in pr)]
    return any(isinstance(v, (int, float)) and abs(v) > 1e100 for v in values)


#: Failure and repair events an episode may need at most before the fuzz skips it (see below).
MAX_FAILURE_EVENTS = 50_000


def _failure_storm(u) -> float:
    """Known issue (not fixed; reported in issue 15): the simulator processes every device
    failure and repair in order, also while nothing can be decided (an idle cluster waiting for
    a distant arrival, or devices that fail and recover while a long task runs elsewhere), and
    records each in the Gantt list. A perturbed scenario with failing devices and huge task
    sizes or inter-arrival gaps (e.g. ``size: 1e9`` in faulty-cluster, first arrival ~1e10 s
    away, MTBF 10 s) therefore spends minutes and gigabytes in one ``reset()``/``step()``.
    Returns the expected number of failure events over the episode (0 without failures) so that
    the fuzz skips, and counts, the episodes above ``MAX_FAILURE_EVENTS``."""
    sim = u.sim
    if not sim.failures_enabled:
        return 0.0
    jobs = u.scenario.workload.generate(np.random.default_rng(0), sim.cluster).jobs
    span = max((j.arrival + j.slo for j in jobs), default=0.0)
    span = min(span, sim.horizon)
    rate = sum(2.0 / (d.type.mtbf_s + d.type.mttr_s) for d in sim.devices) if hasattr(sim, "devices") else \
        sum(2.0 / (sim.cluster.device_types[t].mtbf_s + sim.cluster.device_types[t].mttr_s)
            for t in sim.cluster.dev_type)
    return span * rate


def _snapshot(env) -> tuple:
    u = env.unwrapped
    sim = u.sim
    return (sim.now, {**sim.accounting(), **sim.job_accounting()}, list(sim.queue_ids),
            sim.dev_memory_used.copy(), sim.dev_busy_until.copy(), sim.resident.copy(), sim.dev_up.copy(),
            u.action_masks(), sim.counters.cold_starts, len(sim._events))


def _same(a: tuple, b: tuple) -> bool:
    return all(np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y for x, y in zip(a, b))


def _bad_type_actions(a: int) -> list[Any]:
    return [float(a), np.float32(a), str(a), True, False, np.bool_(True), None, [a], (a,), np.array([a, a]),
            np.array([[a]]), np.array(float(a)), np.array([True]), b"1", complex(a), {}, np.array([], dtype=int)]


def _make_and_play(case: str, log: list, failures: list, rng: np.random.Generator, seed, stats: dict,
                   refused_key: str, ep_stats: dict, *make_args, **make_kwargs) -> None:
    """One fuzz case: make the env (a refusal must be a named error, counted under
    ``refused_key``), then play one episode on a stream spawned from ``rng`` with reset seed
    ``seed()``, counting its actions into ``ep_stats``."""
    env = _guarded(case + " make", log, failures, LOAD_ERRORS, _make, *make_args, **make_kwargs)
    stats["cases"] += 1
    if env is None:
        stats[refused_key] += 1
        return
    stats["loaded"] += 1
    try:
        ep_rng = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])
        _guarded(case + " episode", log, failures, (), _run_episode, env, ep_rng, seed(), ep_stats)
    finally:
        env.close()


def _run_episode(env, rng: np.random.Generator, seed: int, stats: dict) -> None:
    u = env.unwrapped
    if _failure_storm(u) > MAX_FAILURE_EVENTS:  # the known issue above: counted, not run
        stats["known_issue_failure_storm"] = stats.get("known_issue_failure_storm", 0) + 1
        return
    try:
        obs, info = env.reset(seed=seed)
    except ValueError:  # a workload that cannot be drawn (counted; the case is then over)
        stats["refused_at_reset"] = stats.get("refused_at_reset", 0) + 1
        return
    now = _check_state(env, obs, info, 0.0)
    if "metrics" in info:  # the episode was over at reset (nothing can ever happen)
        _check_metrics(info["metrics"], _counted(env.unwrapped.sim, info["accounting"]))
    n = u.n_actions
    penalize = u.invalid_action == "penalize"
    huge_weights = _huge_weights(u.scenario.raw)
    for _ in range(MAX_STEPS):
        if u._episode_done:
            break
        mask = u.action_masks()
        valid = np.flatnonzero(mask)
        invalid = np.flatnonzero(~mask)
        r = rng.random()
        expect_error, penalized = False, False
        if r < 0.6 or (r < 0.75 and not len(invalid)):
            a = int(rng.choice(valid[:-1])) if len(valid) > 1 and rng.random() < 0.85 else u.wait_action
            action = [a, np.int64(a), np.int32(a), np.array(a), np.array([a], dtype=np.uint32)][int(rng.integers(5))]
        elif r < 0.75:
            action = int(rng.choice(invalid))
            expect_error, penalized = not penalize, penalize
        elif r < 0.85:
            action = [n, n + 1, -1, -n, 2**70, -(2**70), np.int64(n), np.uint64(2**64 - 1)][int(rng.integers(8))]
            expect_error = True
        else:
            bad = _bad_type_actions(int(rng.integers(n)))
            action = bad[int(rng.integers(len(bad)))]
            expect_error = True
        stats["actions"] += 1
        if expect_error:
            before = _snapshot(env)
            with pytest.raises(ValueError):
                env.step(action)
            assert _same(before, _snapshot(env)), f"state changed by the refused action {action!r}"
            stats["refused"] += 1
            continue
        obs, reward, terminated, truncated, info = env.step(action)
        terms = info["reward_terms"]
        assert isinstance(reward, float) and not math.isnan(reward), (reward, terms)
        assert not any(math.isnan(v) for v in terms.values()), terms
        if not huge_weights:
            assert math.isfinite(reward) and all(math.isfinite(v) for v in terms.values()), terms
            assert sum(terms.values()) == pytest.approx(reward)
        if penalized:
            assert terms["invalid"] == -u.invalid_penalty < 0, terms
            stats["penalized"] += 1
        else:
            assert terms["invalid"] == 0.0, terms
        now = _check_state(env, obs, info, now)
        if terminated or truncated:
            assert "metrics" in info
            _check_metrics(info["metrics"], _counted(u.sim, info["accounting"]))
            if terminated:
                acc = info["accounting"]
                assert acc["queued"] == acc["running"] == acc["jobs_in_progress"] == 0, acc
            with pytest.raises(RuntimeError):
                env.step(u.wait_action)
            stats["episodes_done"] += 1
            return
    _check_metrics(u.episode_metrics(), _counted(u.sim, {**u.sim.accounting(), **u.sim.job_accounting()}))


#: What loading a malformed scenario or trace may raise (ConfigError is a ValueError; a few
#: checks outside the loader raise a plain ValueError).
LOAD_ERRORS = (ConfigError, ValueError)
#: Messages of the plain ValueErrors (not ConfigError) met, with their counts (printed).
PLAIN_VALUE_ERRORS: dict[str, int] = {}


def _make(scenario: Any, **kwargs: Any):
    return gym.make("modelsched/Scheduling-v1", scenario=scenario, disable_env_checker=True, **kwargs)


def _guarded(case: str, log: list[str], failures: list[str], allowed: tuple, fn, *args, **kwargs) -> Any:
    """Run ``fn(*args, **kwargs)`` with every warning recorded: return its result, or None on an
    ``allowed`` exception; record any other exception (a broken invariant included) or warning
    as a failure."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = fn(*args, **kwargs)
        except allowed as e:
            if not isinstance(e, ConfigError):  # allowed, but reported: the message may not name the key
                PLAIN_VALUE_ERRORS[str(e)[:100]] = PLAIN_VALUE_ERRORS.get(str(e)[:100], 0) + 1
            result = None
        except (Exception, pytest.fail.Exception) as e:  # every other exception is the bug we look for
            failures.append(f"{case}: {type(e).__name__}: {e}\n  perturbations: {log}\n"
                            + "".join(traceback.format_exception(e)[-4:]))
            return None
    other = [w for w in caught if not issubclass(w.category, ScenarioWarning)]
    if other:
        failures.append(f"{case}: unexpected warning {other[0].category.__name__}: {other[0].message}\n"
                        f"  perturbations: {log}")
    return result


# ---------------------------------------------------------------------- tests
def test_fuzz_scenarios_and_actions():
    budget = BUDGET_S * SCENARIO_SHARE
    start = time.perf_counter()
    stats = {"cases": 0, "loaded": 0, "refused_at_make": 0, "actions": 0, "refused": 0, "penalized": 0,
             "episodes_done": 0}
    failures: list[str] = []
    gen_rngs = _streams(1)
    i = 0
    while time.perf_counter() - start < budget or stats["cases"] < MIN_SCENARIO_CASES \
            or stats["actions"] < MIN_ACTIONS:
        assert time.perf_counter() - start < 3 * budget, f"too slow to reach the minimum: {stats}"
        rng = next(gen_rngs)
        name, d, kwargs, log = _make_case(rng)
        case = f"case {i} (seed {ROOT_SEED}, from {name})"
        i += 1
        _make_and_play(case, log, failures, rng, lambda r=rng: int(r.integers(2**31)), stats, "refused_at_make",
                       stats, d, **kwargs)
        if len(failures) >= 5:
            break
    elapsed = time.perf_counter() - start
    print(f"\nfuzz scenarios: {stats} in {elapsed:.1f} s ({stats['cases'] / elapsed:.1f} cases/s, "
          f"{stats['actions'] / elapsed:.0f} actions/s); plain ValueErrors: {PLAIN_VALUE_ERRORS}")
    assert not failures, "\n\n".join(failures)
    assert stats["cases"] >= MIN_SCENARIO_CASES and stats["actions"] >= MIN_ACTIONS, stats
    # both outcomes must occur, or the perturbations are too mild (or too wild) to test anything
    assert stats["loaded"] >= 10 and stats["refused_at_make"] >= 10, stats
    assert stats["refused"] >= 100 and stats["penalized"] >= 20, stats


# ---------------------------------------------------------------------- traces
AZURE_HEADER = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
PHILLY_HEADER = ["timestamp", "duration", "num_gpus"]
ALIBABA_HEADER = ["name", "num_gpu", "creation_time", "deletion_time", "scheduled_time"]
TOKENS = ["", "nan", "inf", "-inf", "-1", "0", "1e999", "abc", "1.5", "99999999999999999999999", "-0",
          "2023-13-45 99:99:99", "2023-11-16 18:15:46.68059001234Z", "1e-300", " 7", "\x00", "é"]


def _trace_rows(rng: np.random.Generator, fmt: str, n: int) -> list[list[str]]:
    rows, t = [], 1_700_000_000.0
    for j in range(n):
        t += float(rng.exponential(5.0))
        if fmt == "azure":
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + f".{int(rng.integers(10**7)):07d}"
            rows.append([stamp, str(int(rng.integers(1, 4000))), str(int(rng.integers(0, 600)))])
        elif fmt == "philly":
            rows.append([f"{t:.1f}", str(int(rng.integers(1, 100_000))), str(int(rng.choice([1, 2, 4, 8, 16])))])
        else:
            sched = t + float(rng.integers(0, 100))
            rows.append([f"pod-{j}", str(int(rng.choice([0, 1, 2, 8]))), f"{t:.0f}",
                         f"{sched + float(rng.integers(1, 10_000)):.0f}", f"{sched:.0f}"])
    return rows


def _trace_bytes(rng: np.random.Generator, log: list[str]) -> tuple[str, bytes]:
    fmt = ["azure", "philly", "alibaba"][int(rng.integers(3))]
    header = {"azure": AZURE_HEADER, "philly": PHILLY_HEADER, "alibaba": ALIBABA_HEADER}[fmt]
    rows = _trace_rows(rng, fmt, int(rng.integers(0, 30)))
    op = rng.choice(["none", "field", "field", "drop_col", "add_col", "header", "blank", "bytes", "truncate",
                     "utf16", "bom"])
    log.append(f"{fmt} trace, {len(rows)} rows, {op}")
    if op == "field" and rows:
        for _ in range(int(rng.integers(1, 4))):
            r, c = int(rng.integers(len(rows))), int(rng.integers(len(header)))
            rows[r][c] = TOKENS[int(rng.integers(len(TOKENS)))]
            log.append(f"row {r} col {c} = {rows[r][c]!r}")
    elif op == "drop_col" and rows:
        del rows[int(rng.integers(len(rows)))][-1]
    elif op == "add_col" and rows:
        rows[int(rng.integers(len(rows)))].append("1")
    elif op == "header":
        header = list(header)
        header[int(rng.integers(len(header)))] = "bogus"
    lines = [",".join(header)] + [",".join(r) for r in rows]
    if op == "blank" and lines:
        lines.insert(int(rng.integers(len(lines) + 1)), "")
    text = "\n".join(lines) + ("\n" if rng.random() < 0.8 else "")
    data = text.encode("utf-8")
    if op == "bytes":
        data = rng.bytes(int(rng.integers(0, 200))) if rng.random() < 0.5 else data + rng.bytes(20)
    elif op == "truncate":
        data = data[:int(rng.integers(len(data) + 1))]
    elif op == "utf16":
        data = text.encode("utf-16")
    elif op == "bom":
        data = b"\xef\xbb\xbf" + data
    return ("llm-serving" if fmt == "azure" else "training-cluster"), data


def test_fuzz_trace_files(tmp_path):
    budget = BUDGET_S * TRACE_SHARE
    start = time.perf_counter()
    stats = {"cases": 0, "loaded": 0, "refused": 0, "actions": 0, "refused_actions": 0, "penalized": 0,
             "episodes_done": 0}
    failures: list[str] = []
    gen_rngs = _streams(2)
    i = 0
    while time.perf_counter() - start < budget or stats["cases"] < MIN_TRACE_CASES:
        assert time.perf_counter() - start < 3 * budget, f"too slow to reach the minimum: {stats}"
        rng = next(gen_rngs)
        log: list[str] = []
        scenario, data = _trace_bytes(rng, log)
        path = tmp_path / f"trace{i}.csv"
        path.write_bytes(data)
        kwargs: dict[str, Any] = {"trace": str(path), "invalid_action": ["raise", "penalize"][int(rng.integers(2))]}
        if rng.random() < 0.4:
            kwargs["on_bad_rows"] = ["skip", "error", "skp"][int(rng.integers(3))]
        for key, values in (("time_scale", [0.001, 1.0, 1e6, 0, -1, NAN, INF, "1", None]),
                            ("trace_window", [(0, 60), (0, 1e9), (5, 1), (-1, 5), [0, NAN], (0,), 7, "ab"]),
                            ("max_jobs", [1, 5, 0, -3, 2.5, "3", True])):
            if rng.random() < 0.2:
                kwargs[key] = values[int(rng.integers(len(values)))]
        log.append(f"keywords {({k: v for k, v in kwargs.items() if k != 'trace'})}")
        case = f"trace case {i} (seed {ROOT_SEED}, {scenario})"
        i += 1
        ep_stats = {"actions": 0, "refused": 0, "penalized": 0, "episodes_done": 0}
        _make_and_play(case, log, failures, rng, lambda n=i: n, stats, "refused", ep_stats, scenario, **kwargs)
        stats["actions"] += ep_stats["actions"]
        stats["refused_actions"] += ep_stats["refused"]
        stats["penalized"] += ep_stats["penalized"]
        stats["episodes_done"] += ep_stats["episodes_done"]
        if len(failures) >= 5:
            break
    elapsed = time.perf_counter() - start
    print(f"\nfuzz traces: {stats} in {elapsed:.1f} s ({stats['cases'] / elapsed:.1f} cases/s)")
    assert not failures, "\n\n".join(failures)
    assert stats["cases"] >= MIN_TRACE_CASES and stats["loaded"] >= 3 and stats["refused"] >= 3, stats
