"""Episode metrics computed from a finished (or truncated) simulation.

Task-level metrics are over *arrived* tasks (ready or dropped). Tasks still queued or running
when an episode is truncated count as SLO misses and as 0 towards effective accuracy.

With a warm-up period (a scenario's ``warmup_s``), task and job metrics cover only the tasks
that arrive at or after it (jobs: that arrive at or after it), ``drops`` counts their drops,
and ``goodput``/``throughput`` are per second of the time after it; the counters
(``cold_starts``, ``requeues``, ``evictions``, ``failures``, ``infeasible``; with dynamic
batching ``batches``, executions of several requests, and ``mean_batch_size``, requests
started per such execution) and the
utilizations cover the whole episode. Continuous batching (LLM serving) adds the token metrics
of :func:`token_metrics` (TTFT, TPOT, their SLO attainments, preemptions).
"""

from __future__ import annotations

import math

import numpy as np

from envs.sim.model import DONE, DROPPED

#: Metrics where larger is better; all others are better when smaller.
HIGHER_IS_BETTER = frozenset({
    "slo_attainment", "goodput", "throughput", "utilization", "mean_accuracy", "effective_accuracy",
    "job_slo_attainment", "memory_utilization", "ttft_slo_attainment", "tpot_slo_attainment",
    "mean_decode_batch",
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


def _effective_busy(sim) -> list[float]:
    """Busy seconds of each device up to now (the rest of a running execution not counted)."""
    if hasattr(sim, "busy_seconds"):  # continuous batching: busy while holding requests
        return sim.busy_seconds()
    return [dev.busy_time - max(0.0, dev.busy_until - sim.now) if dev.task is not None else dev.busy_time
            for dev in sim.devices]


def episode_metrics(sim) -> dict[str, float]:
    """Metrics of the episode so far. ``sim`` is a :class:`envs.sim.simulator.Simulator`."""
    c = sim.counters
    n_jobs = sim._next_job  # jobs 0 .. n_jobs - 1 have arrived
    m = metrics_from_arrays(
        sim.cluster, sim.now, np.array(sim._arrived, dtype=np.int64), np.array(sim._tstate, dtype=np.int64),
        np.array(sim._tfinish), sim._ttimes, sim._tkind, np.array(sim._kideal), np.array(sim._tacc),
        np.array(sim._kcap, dtype=np.int64),
        {"dropped": c.dropped, "cold_starts": c.cold_starts, "requeues": c.requeues, "evictions": c.evictions,
         "failures": c.failures, "dropped_infeasible": c.dropped_infeasible},
        _effective_busy(sim), sim.dev_memory_used, np.array(sim._jfinish[:n_jobs]),
        np.array(sim._jdropped[:n_jobs], dtype=bool), np.array(sim._jfirst[:n_jobs], dtype=np.int64),
        np.array(sim._arrivals_l[:n_jobs]), warmup=sim.warmup)
    if getattr(sim, "B", 1) > 1:  # dynamic batching: executions of several requests (whole episode)
        m["batches"] = float(c.batches)
        m["mean_batch_size"] = c.batched_tasks / c.batches if c.batches else 1.0
    if getattr(sim.cluster, "continuous", False):
        m.update(token_metrics(sim))
    return m


def token_metrics(sim) -> dict[str, float]:
    """LLM serving metrics of a continuous-batching simulation, over the completed requests
    counted in the metrics (after the warm-up): time to first token (TTFT: first token -
    arrival), time per output token (TPOT: (finish - first token) / (output tokens - 1), requests
    of more than one token), their means and 99th percentiles; with the scenario's SLOs
    (``slo_ttft``/``slo_tpot``, set on the simulator), the fraction of arrived requests that
    completed within each; ``preemptions``; ``mean_decode_batch``, the decode batch size
    averaged over decode time (the whole episode)."""
    arrived, done = _completed(sim)
    if sim.warmup > 0 and arrived:
        ids = np.array(sim._arrived, dtype=np.int64)
        arrived = int(np.count_nonzero(sim._ttimes[ids, 0] >= sim.warmup))
        done = done[sim._ttimes[done, 0] >= sim.warmup]
    first, out = sim.token_times()
    ttft = first[done] - sim._ttimes[done, 0]
    many = out[done] > 1
    tpot = (np.array(sim._tfinish)[done][many] - first[done][many]) / (out[done][many] - 1)
    m = {
        "ttft_mean": float(ttft.mean()) if ttft.size else math.nan,
        "ttft_p99": _pct(ttft, 99),
        "tpot_mean": float(tpot.mean()) if tpot.size else math.nan,
        "tpot_p99": _pct(tpot, 99),
        "preemptions": float(sim.counters.preemptions),
        "mean_decode_batch": sim.decode_batch_area / sim.decode_time if sim.decode_time > 0 else 0.0,
    }
    slo_ttft, slo_tpot = getattr(sim, "slo_ttft", None), getattr(sim, "slo_tpot", None)
    if slo_ttft is not None:
        m["ttft_slo_attainment"] = int(np.count_nonzero(ttft <= slo_ttft + 1e-12)) / arrived if arrived else math.nan
    if slo_tpot is not None:
        ok = np.ones(len(done), dtype=bool)
        ok[many] = tpot <= slo_tpot + 1e-12
        m["tpot_slo_attainment"] = int(np.count_nonzero(ok)) / arrived if arrived else math.nan
    return m


def metrics_from_arrays(cl, now: float, arrived: np.ndarray, tstate: np.ndarray, tfinish: np.ndarray,
                        ttimes: np.ndarray, tkind: np.ndarray, kideal: np.ndarray, tacc: np.ndarray,
                        kcap: np.ndarray, counts: dict[str, int], busy: list[float],
                        dev_memory_used: np.ndarray, jfinish: np.ndarray, jdropped: np.ndarray,
                        jfirst: np.ndarray, jarrival: np.ndarray, warmup: float = 0.0) -> dict[str, float]:
    """Episode metrics from a simulation's per-task, per-job and per-device arrays (the
    reference simulator and the batched one both call this). ``arrived``: ids of the arrived
    tasks in arrival order; ``tstate``, ``tfinish``, ``tacc``: per task; ``ttimes``, ``tkind``:
    the per-task table; ``kideal``, ``kcap``: per task shape; ``busy``: busy seconds of each
    device so far; the job arrays cover the jobs arrived so far; ``warmup``: tasks and jobs
    arriving before it are left out (module docstring)."""
    drops = counts["dropped"]
    if warmup > 0:
        if len(arrived):
            arrived = arrived[ttimes[arrived, 0] >= warmup]
            drops = int(np.count_nonzero(tstate[arrived] == DROPPED))
        keep = jarrival >= warmup
        jfinish, jdropped, jfirst, jarrival = jfinish[keep], jdropped[keep], jfirst[keep], jarrival[keep]
    n = len(arrived)
    done = arrived[tstate[arrived] == DONE] if n else arrived
    finish = tfinish[done]
    lat = finish - ttimes[done, 0]
    kind = tkind[done]
    ideal = kideal[kind]
    acc = tacc[done]
    on_time = finish <= ttimes[done, 1] + 1e-12
    best = cl.best_accuracy[kcap[kind]]
    elapsed = now - warmup if now > warmup else 0.0
    busy_total = sum(busy)
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
        "utilization": busy_total / (D * now) if now > 0 else 0.0,
        "mean_accuracy": float(acc.mean()) if acc.size else math.nan,
        "accuracy_loss": float((best - acc).mean()) if acc.size else math.nan,
        "effective_accuracy": float(acc[on_time].sum()) / n if n else math.nan,
        "drops": float(drops),
        "cold_starts": float(counts["cold_starts"]),
        "requeues": float(counts["requeues"]),
        "evictions": float(counts["evictions"]),
        "failures": float(counts["failures"]),
        "infeasible": float(counts["dropped_infeasible"]),
        "completed": float(len(done)),
        "arrived": float(n),
        "makespan": float(finish.max()) if finish.size else 0.0,
        "memory_utilization": float(np.mean(dev_memory_used / cl.dev_memory)),
    }
    for ti, dt in enumerate(cl.device_types):
        idx = [d for d in range(D) if cl.dev_type[d] == ti]
        if idx and now > 0:
            m[f"utilization_{dt.name}"] = sum(busy[d] for d in idx) / (len(idx) * now)
    n_jobs = len(jfinish)
    if n_jobs:
        finished = ~jdropped & ~np.isnan(jfinish)
        jf = jfinish[finished]
        first = jfirst[finished]
        jl = jf - jarrival[finished]
        m["job_mean_latency"] = float(jl.mean()) if jl.size else math.nan
        m["job_p99_latency"] = _pct(jl, 99)
        m["job_slo_attainment"] = int(np.count_nonzero(jf <= ttimes[first, 1] + 1e-12)) / n_jobs
    else:
        m["job_mean_latency"] = m["job_p99_latency"] = m["job_slo_attainment"] = math.nan
    return m
