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


def episode_metrics(sim) -> dict[str, float]:
    """Metrics of the episode so far. ``sim`` is a :class:`envs.sim.simulator.Simulator`."""
    tasks = sim.tasks
    cl = sim.cluster
    n = len(tasks)
    done = [t for t in tasks if t.state == DONE]
    lat = np.array([t.finish - t.arrival for t in done])
    ideal = np.array([t.ideal for t in done])
    acc = np.array([t.accuracy for t in done])
    on_time = np.array([t.finish <= t.deadline + 1e-12 for t in done], dtype=bool)
    best = np.array([cl.best_accuracy[t.cap_index] for t in done])
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
        "makespan": float(max((t.finish for t in done), default=0.0)),
        "memory_utilization": float(np.mean(sim.dev_memory_used / cl.dev_memory)),
    }
    for ti, dt in enumerate(cl.device_types):
        idx = [dev for dev in sim.devices if dev.type_index == ti]
        if idx and elapsed > 0:
            b = sum(dev.busy_time - max(0.0, dev.busy_until - sim.now) if dev.task is not None else dev.busy_time
                    for dev in idx)
            m[f"utilization_{dt.name}"] = b / (len(idx) * elapsed)
    jobs = sim.jobs
    if jobs:
        finished = [j for j in jobs if not j.dropped and not math.isnan(j.finish)]
        jl = np.array([j.finish - j.arrival for j in finished])
        m["job_mean_latency"] = float(jl.mean()) if jl.size else math.nan
        m["job_p99_latency"] = _pct(jl, 99)
        m["job_slo_attainment"] = sum(j.finish <= j.deadline + 1e-12 for j in finished) / len(jobs)
    else:
        m["job_mean_latency"] = m["job_p99_latency"] = m["job_slo_attainment"] = math.nan
    return m
