"""Episode metrics computed from a finished (or truncated) simulation.

Task-level metrics are over *arrived* tasks (ready or dropped). Tasks still queued or running
when an episode is truncated count as SLO misses and as 0 towards effective accuracy.
"""

from __future__ import annotations

import math

import numpy as np

from envs.sim.model import DONE

#: Metrics where larger is better; all others are better when smaller.
HIGHER_IS_BETTER = frozenset({
    "slo_attainment", "goodput", "throughput", "utilization", "mean_accuracy", "effective_accuracy",
    "job_slo_attainment", "memory_utilization",
})


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if x.size else math.nan


def _completed(sim) -> tuple[int, np.ndarray]:
    """(arrived tasks, ids of the completed ones in arrival order), gathered from the
    simulator's per-task lists."""
    arrived = np.array(sim._arrived, dtype=np.int64)
    if not len(arrived):
        return 0, arrived
    return len(arrived), arrived[np.array(sim._tstate, dtype=np.int64)[arrived] == DONE]


def task_latencies(sim) -> np.ndarray:
    """Latency (finish - arrival) of each completed task, in arrival order."""
    done = _completed(sim)[1]
    return np.array(sim._tfinish)[done] - sim._ttimes[done, 0]


def episode_metrics(sim) -> dict[str, float]:
    """Metrics of the episode so far. ``sim`` is a :class:`envs.sim.simulator.Simulator`."""
    cl = sim.cluster
    n, done = _completed(sim)
    finish = np.array(sim._tfinish)[done]
    lat = finish - sim._ttimes[done, 0]
    kind = sim._tkind[done]
    ideal = np.array(sim._kideal)[kind]
    acc = np.array(sim._tacc)[done]
    on_time = finish <= np.array(sim._tdeadline)[done] + 1e-12
    best = cl.best_accuracy[np.array(sim._kcap, dtype=np.int64)[kind]]
    elapsed = sim.now
    c = sim.counters
    busy = sum(dev.busy_time - max(0.0, dev.busy_until - sim.now) if dev.task is not None else dev.busy_time
               for dev in sim.devices)
    D = cl.num_devices
    n_on_time = int(on_time.sum())
    m = {
        "mean_latency": float(lat.mean()) if lat.size else math.nan,
        "p50_latency": _pct(lat, 50),
        "p95_latency": _pct(lat, 95),
        "p99_latency": _pct(lat, 99),
        "mean_slowdown": float((lat / ideal).mean()) if lat.size else math.nan,
        "slo_attainment": n_on_time / n if n else math.nan,
        "goodput": n_on_time / elapsed if elapsed > 0 else 0.0,
        "throughput": len(done) / elapsed if elapsed > 0 else 0.0,
        "utilization": busy / (D * elapsed) if elapsed > 0 else 0.0,
        "mean_accuracy": float(acc.mean()) if acc.size else math.nan,
        "accuracy_loss": float((best - acc).mean()) if acc.size else math.nan,
        "effective_accuracy": float(acc[on_time].sum()) / n if n else math.nan,
        "drops": float(c.dropped),
        "cold_starts": float(c.cold_starts),
        "requeues": float(c.requeues),
        "evictions": float(c.evictions),
        "failures": float(c.failures),
        "infeasible": float(c.dropped_infeasible),
        "completed": float(len(done)),
        "arrived": float(n),
        "makespan": float(finish.max()) if finish.size else 0.0,
        "memory_utilization": float(np.mean(sim.dev_memory_used / cl.dev_memory)),
    }
    for ti, dt in enumerate(cl.device_types):
        idx = [dev for dev in sim.devices if dev.type_index == ti]
        if idx and elapsed > 0:
            b = sum(dev.busy_time - max(0.0, dev.busy_until - sim.now) if dev.task is not None else dev.busy_time
                    for dev in idx)
            m[f"utilization_{dt.name}"] = b / (len(idx) * elapsed)
    n_jobs = sim._next_job  # jobs 0 .. n_jobs - 1 have arrived
    if n_jobs:
        jfinish = np.array(sim._jfinish[:n_jobs])
        finished = ~np.array(sim._jdropped[:n_jobs], dtype=bool) & ~np.isnan(jfinish)
        jfinish = jfinish[finished]
        first = np.array(sim._jfirst[:n_jobs], dtype=np.int64)[finished]
        jl = jfinish - np.array(sim._arrivals_l[:n_jobs])[finished]
        m["job_mean_latency"] = float(jl.mean()) if jl.size else math.nan
        m["job_p99_latency"] = _pct(jl, 99)
        m["job_slo_attainment"] = int(np.count_nonzero(jfinish <= sim._ttimes[first, 1] + 1e-12)) / n_jobs
    else:
        m["job_mean_latency"] = m["job_p99_latency"] = m["job_slo_attainment"] = math.nan
    return m
