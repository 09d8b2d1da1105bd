"""Offered load of a scenario: the work its workload brings, against the cluster's capacity.

The synthetic workloads calibrate their arrival rate on the capacity of the cluster serving
each capability with its median-accuracy variant (:meth:`envs.sim.cluster.Cluster.cluster_rate`),
execution times including the mean service noise. The same load is higher against the
capacity with the most accurate variants and lower with the fastest ones; :func:`offered_load`
measures all three on generated episodes (trace replays included), so that a scenario states
how hard it is whichever variants a policy chooses.
"""

from __future__ import annotations

import numpy as np

from envs.sim.simulator import Simulator

CHOICES = ("fastest", "median", "most_accurate")


def offered_load(scenario, seeds: range | list[int] = range(8)) -> dict[str, float]:
    """Mean over the episodes of ``seeds`` of (cluster-seconds of work) / (arrival span), the
    work of a task being ``1 / cluster_rate(capability, size, ..., variant=choice)`` for each
    choice of :data:`CHOICES`; also ``span_s``, the mean arrival span. A load of 1 keeps every
    device busy with that choice of variants; above 1 a queue grows without bound."""
    sc = scenario
    cl = sc.cluster
    sim = Simulator(cl, sc.workload, visible_tasks=sc.visible_tasks, noise_cv=sc.noise_cv, failures=False)
    loads = {c: [] for c in CHOICES}
    spans = []
    memo: dict[tuple, float] = {}
    for seed in seeds:
        sim.reset(np.random.SeedSequence(seed))
        specs = sim.job_specs
        if len(specs) < 2:
            continue
        arrivals = [j.arrival for j in specs]
        span = max(arrivals) - min(arrivals)
        if not span > 0:
            continue
        spans.append(span)
        for choice in CHOICES:
            work = 0.0
            for j in specs:
                for st in j.stages:
                    key = (choice, st.capability, st.size, st.size2, st.devices_required)
                    w = memo.get(key)
                    if w is None:
                        w = memo[key] = 1.0 / cl.cluster_rate(st.capability, st.size, st.size2,
                                                              st.devices_required, variant=choice)
                    work += w
            loads[choice].append(work / span)
    out = {c: float(np.mean(v)) if v else float("nan") for c, v in loads.items()}
    out["span_s"] = float(np.mean(spans)) if spans else float("nan")
    return out
