"""The per-episode reference bound: every task served in its ideal time with no queueing.

For each task of the episode's workload (jobs arriving before the horizon), the bound schedule
runs every stage the moment it is ready, for its *ideal* service time (``task.ideal``: the
fastest feasible variant on its fastest device type, resident, no queueing); a DAG stage is
ready when its parents finish in the bound schedule. Accuracy: each task gets the most accurate
variant (meeting its floor and size) whose ideal time on its best device type still meets the
deadline; if none does, the fastest variant (late). Jobs with a stage no variant can ever serve
count as dropped (as in the simulator).

Named ``ideal_bound`` in every output (it was ``lower_bound``, a misnomer: it is an upper bound of
the accuracy and SLO metrics and a lower bound of the latencies). It is not an optimum of the
scheduling problem: it ignores capacity, so for accuracy it is loose wherever queueing matters.

What the bound row means per metric:

* latency (mean, p50, p95, p99, job latencies) and slowdown (= 1): lower bounds; the simulator
  guarantees latency >= ideal service time for every task.
* ``slo_attainment``, ``effective_accuracy``, ``mean_accuracy``, ``job_slo_attainment``,
  ``accuracy_loss``: the best each task could achieve on its own (upper bounds for the higher-is-
  better ones): the reference for an optimality gap.
* ``utilization``, ``goodput``, ``throughput``, ``makespan``: those of the bound schedule
  (ideal busy time over D x its makespan); a reference, not a bound. The bound schedule ignores
  capacity, so its utilization exceeds 1 when the offered work exceeds what the cluster can
  serve even at ideal speed (an overloaded trace).
* ``drops``: tasks no variant can ever serve.
"""

from __future__ import annotations

import math

import numpy as np


def _pct(x: np.ndarray, q: float) -> float:
    return float(np.percentile(x, q)) if x.size else math.nan


def ideal_bound_metrics(sim, *, return_latencies: bool = False):
    """Bound metrics for the workload of the simulator's current episode (policy-independent);
    with ``return_latencies``, also the bound's per-task latencies (the ideal times)."""
    cl = sim.cluster
    horizon = sim.horizon
    options: dict[tuple, list[tuple[float, float, float]]] = {}  # key -> [(time, acc, ideal)]

    def variant_options(key):
        # (fastest time of each feasible variant, its accuracy), sorted by accuracy descending.
        opts = options.get(key)
        if opts is None:
            best: dict[int, float] = {}
            for m, t in cl.feasible_pairs(*key):
                x = cl.exec_time(m, t, key[1], key[2], key[4])
                best[m] = min(best.get(m, math.inf), x)
            opts = sorted(((x, float(cl.var_accuracy[m])) for m, x in best.items()), key=lambda p: -p[1])
            options[key] = opts
        return opts

    # One entry per served task (tasks of infeasible jobs are only counted in ``drops``).
    lat, acc, on_time, best_acc, ideal_busy = [], [], [], [], []
    job_lat, job_on_time = [], []
    n_tasks = drops = 0
    makespan = 0.0
    for spec in sim.job_specs:
        if spec.arrival >= horizon:
            break
        stages = spec.stages
        n_tasks += len(stages)
        deadline = spec.arrival + spec.slo
        keys = [(cl.cap_index[s.capability], s.size, s.size2, s.min_accuracy, s.devices_required)
                for s in stages]
        opts = [variant_options(k) for k in keys]
        if any(not o for o in opts):
            drops += len(stages)
            job_on_time.append(False)
            continue
        ideal = [min(x for x, _ in o) for o in opts]
        finish = _dag_finish(spec.arrival, [s.parents for s in stages], ideal)
        for i, s in enumerate(stages):
            ready = finish[i] - ideal[i]
            meet = [a for x, a in opts[i] if x <= deadline - ready + 1e-12]
            lat.append(ideal[i])
            acc.append(meet[0] if meet else min(opts[i])[1])
            on_time.append(finish[i] <= deadline + 1e-12)
            best_acc.append(float(cl.best_accuracy[keys[i][0]]))
            ideal_busy.append(ideal[i] * s.devices_required)
        end = max(finish)
        makespan = max(makespan, end)
        job_lat.append(end - spec.arrival)
        job_on_time.append(end <= deadline + 1e-12)

    lat_a, acc_a = np.array(lat), np.array(acc)
    on = np.array(on_time, dtype=bool)
    n, n_served = n_tasks, lat_a.size
    elapsed = makespan
    D = cl.num_devices
    jl_a = np.array(job_lat)
    metrics = {
        "mean_latency": float(lat_a.mean()) if n_served else math.nan,
        "p50_latency": _pct(lat_a, 50),
        "p95_latency": _pct(lat_a, 95),
        "p99_latency": _pct(lat_a, 99),
        "mean_slowdown": 1.0 if n_served else math.nan,
        "slo_attainment": float(on.sum()) / n if n else math.nan,
        "goodput": float(on.sum()) / elapsed if elapsed > 0 else 0.0,
        "throughput": n_served / elapsed if elapsed > 0 else 0.0,
        "utilization": float(np.sum(ideal_busy)) / (D * elapsed) if elapsed > 0 else 0.0,
        "mean_accuracy": float(acc_a.mean()) if n_served else math.nan,
        "accuracy_loss": float((np.array(best_acc) - acc_a).mean()) if n_served else math.nan,
        "effective_accuracy": float(acc_a[on].sum()) / n if n else math.nan,
        "drops": float(drops),
        "completed": float(n_served),
        "arrived": float(n),
        "makespan": float(makespan),
        "job_mean_latency": float(jl_a.mean()) if jl_a.size else math.nan,
        "job_p99_latency": _pct(jl_a, 99),
        "job_slo_attainment": float(np.mean(job_on_time)) if job_on_time else math.nan,
    }
    return (metrics, lat_a) if return_latencies else metrics


def _dag_finish(arrival: float, parents: list[tuple[int, ...]], ideal: list[float]) -> list[float]:
    """Finish time of each stage when every stage starts as soon as its parents finish."""
    finish = [math.nan] * len(ideal)
    state = [0] * len(ideal)  # 0 new, 1 on the stack, 2 done

    def visit(i: int) -> float:
        if state[i] == 2:
            return finish[i]
        if state[i] == 1:
            raise ValueError("cyclic job DAG")
        state[i] = 1
        ready = max((visit(p) for p in parents[i]), default=arrival)
        finish[i] = ready + ideal[i]
        state[i] = 2
        return finish[i]

    for i in range(len(ideal)):
        visit(i)
    return finish
