"""Per-step encoding of the observation and the action mask from the simulator's arrays.

One function computes, for the visible window of K tasks, the joint action mask and the four
observation arrays (layout documented in :class:`envs.env.SchedulingEnv`). It runs at every
step, on arrays of a few hundred numbers, so its cost is almost all per-call overhead: as numpy
code it is about 30 small array operations (tens of microseconds); compiled with numba it is one
call of a few microseconds. Both implementations are here:

* :func:`encode_numpy`, the reference (plain numpy), used when numba is not installed or when
  ``MODELSCHED_JIT=0`` is set in the environment;
* :func:`encode_loops`, the same computation as explicit loops, compiled with ``numba.njit``
  when numba is available (``ENCODE`` is the one the environment uses).

Tests check that both give the same mask exactly and the same observation to float32 rounding.

Inputs (A: simulator arrays; shapes with N tasks in the episode, S task shapes):

* ``now``; ``ids`` (K,) window task ids, padded with N; ``n_present`` tasks in the window;
* per task (A): ``tkind`` (N+1,) shape row, ``ttimes`` (N+1, 4) arrival, deadline, priority, SLO;
* per shape (A): ``ktab`` (S, 5 + 2VD) with execution times from column ``E0`` and load times
  from ``E0 + VD``; ``kstat`` (S, VD) static validity; ``kres`` (S, VD) flat index into
  ``resident``; ``fk`` (S, F) float32 time-independent task features;
* per device (A): ``busy_until``, ``dev_up``, ``dev_idle``, ``mem_used`` and ``inv_mem`` (1 /
  capacity), ``dev_type``; ``idle_by_type`` (T,); ``resident`` (M*D,) flattened (variant, device);
* ``dev_static`` (D, Fd) float32 device features with the type one-hot filled in;
* scalars: ``tau`` (duration scale), ``col_prio`` (priority column of ``tasks``; waited and
  slack follow it), ``T`` (device types), ``gangs`` (some window task needs several devices),
  ``g0`` .. ``g4`` the global features, computed by the caller.

Returns ``(mask, tasks, estimates, devices, global)``; ``mask`` has K*V*D + 1 entries, the last
(wait) always True.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np


def encode_numpy(now, ids, n_present, tkind, ttimes, ktab, kstat, kres, fk, busy_until, dev_up, dev_idle,
                 mem_used, inv_mem, dev_type, idle_by_type, resident, dev_static, E0, V, D, tau, col_prio, T, gangs,
                 g0, g1, g2, g3, g4):
    K = ids.shape[0]
    VD = V * D
    kid = tkind[ids]
    # Mask: the shape can ever run the pair, the device is idle and up, and a multi-device
    # task finds enough idle devices of the device's type.
    mask = np.ones(K * VD + 1, dtype=bool)
    m = kstat[kid].reshape(K, V, D) & (dev_idle & dev_up)
    if gangs:
        nreq = ktab[kid, 4]
        m &= (idle_by_type[dev_type][None, :] >= nreq[:, None])[:, None, :]
    mask[:-1] = m.ravel()
    # Tasks: shape features, priority p / (1 + p), waited / (4 SLO) in [0, 1], slack / SLO in
    # [-1, 1] (padding rows stay zero).
    tasks = fk[kid]
    tm = ttimes[ids]
    present = np.arange(K) < n_present
    prio = tm[:, 2]
    tasks[:, col_prio] = prio / (1.0 + prio)
    inv_slo = 1.0 / tm[:, 3]
    x = (tm[:, :2] - now) * (np.array([-0.25, 1.0]) * (inv_slo * present)[:, None])
    tasks[:, col_prio + 1:col_prio + 3] = np.clip(x, -1.0, 1.0)
    # Devices: remaining busy time r / (r + tau), up, busy, free memory, residency.
    free_at = np.maximum(busy_until, now)
    remaining = free_at - now
    dev = dev_static.copy()
    dev[:, T] = dev_up
    dev[:, T + 1] = ~dev_idle
    dev[:, T + 2] = remaining / (remaining + tau)
    dev[:, T + 3] = 1.0 - mem_used * inv_mem
    dev[:, T + 4:] = resident.reshape(-1, D).T
    # Estimates: (free_at - arrival + load if cold + exec) / SLO -> min(x, 4) / 2 - 1; a failed
    # device never completes anything (until it is repaired), nor does a pair that never runs.
    free_at = np.where(dev_up, free_at, np.inf)
    rows = ktab[kid]
    cold = ~resident[kres[kid]]
    est = rows[:, E0:E0 + VD] + cold * rows[:, E0 + VD:E0 + 2 * VD]
    est = est.reshape(K, V, D) + free_at
    est -= tm[:, 0][:, None, None]
    est *= (0.5 * inv_slo)[:, None, None]
    est -= 1.0
    est = np.minimum(est, 1.0).astype(np.float32)
    return mask, tasks, est, dev, np.array([g0, g1, g2, g3, g4], dtype=np.float32)


def encode_loops(now, ids, n_present, tkind, ttimes, ktab, kstat, kres, fk, busy_until, dev_up, dev_idle,
                 mem_used, inv_mem, dev_type, idle_by_type, resident, dev_static, E0, V, D, tau, col_prio, T, gangs,
                 g0, g1, g2, g3, g4):
    K = ids.shape[0]
    mask = np.empty(K * V * D + 1, dtype=np.bool_)
    tasks = np.empty((K, fk.shape[1]), dtype=np.float32)
    est = np.empty((K, V, D), dtype=np.float32)
    dev = np.empty_like(dev_static)
    glob = np.empty(5, dtype=np.float32)
    encode_into(mask, tasks, est, dev, glob, np.empty(D), np.empty(D, dtype=np.bool_),
                now, ids, n_present, tkind, ttimes, ktab, kstat, kres, fk, busy_until, dev_up, dev_idle,
                mem_used, inv_mem, dev_type, idle_by_type, resident, dev_static, E0, V, D, tau, col_prio, T, gangs,
                g0, g1, g2, g3, g4)
    return mask, tasks, est, dev, glob


def encode_into(mask, tasks, est, dev, glob, free_at, avail,
                now, ids, n_present, tkind, ttimes, ktab, kstat, kres, fk, busy_until, dev_up, dev_idle,
                mem_used, inv_mem, dev_type, idle_by_type, resident, dev_static, E0, V, D, tau, col_prio, T, gangs,
                g0, g1, g2, g3, g4):
    """:func:`encode_loops` writing into given arrays (``free_at`` (D,) and ``avail`` (D,) are
    scratch): no allocation, so the batched simulator calls it once per instance on rows of its
    (B, ...) output arrays, and the single env and the batched one share one computation."""
    K = ids.shape[0]
    VD = V * D
    F = fk.shape[1]
    mask[K * VD] = True
    glob[0], glob[1], glob[2], glob[3], glob[4] = g0, g1, g2, g3, g4
    M = resident.shape[0] // D
    Fd = dev_static.shape[1]
    for d in range(D):
        for j in range(Fd):
            dev[d, j] = dev_static[d, j]
        f = busy_until[d]
        if f < now:
            f = now
        r = f - now
        dev[d, T] = 1.0 if dev_up[d] else 0.0
        dev[d, T + 1] = 0.0 if dev_idle[d] else 1.0
        dev[d, T + 2] = r / (r + tau)
        dev[d, T + 3] = 1.0 - mem_used[d] * inv_mem[d]
        for m in range(M):
            dev[d, T + 4 + m] = 1.0 if resident[m * D + d] else 0.0
        free_at[d] = f if dev_up[d] else np.inf
        avail[d] = dev_up[d] and dev_idle[d]
    for k in range(K):
        i = ids[k]
        s = tkind[i]
        for j in range(F):
            tasks[k, j] = fk[s, j]
        arrival = ttimes[i, 0]
        inv_slo = 1.0 / ttimes[i, 3]
        if k < n_present:
            p = ttimes[i, 2]
            tasks[k, col_prio] = p / (1.0 + p)
            x = (arrival - now) * (-0.25 * inv_slo)
            tasks[k, col_prio + 1] = min(max(x, -1.0), 1.0)
            x = (ttimes[i, 1] - now) * inv_slo
            tasks[k, col_prio + 2] = min(max(x, -1.0), 1.0)
        else:
            tasks[k, col_prio] = 0.0
            tasks[k, col_prio + 1] = 0.0
            tasks[k, col_prio + 2] = 0.0
        nreq = ktab[s, 4]
        half = 0.5 * inv_slo
        for v in range(V):
            for d in range(D):
                j = v * D + d
                ok = kstat[s, j] and avail[d]
                if ok and gangs and nreq > 1:
                    ok = idle_by_type[dev_type[d]] >= nreq
                mask[k * VD + j] = ok
                x = ktab[s, E0 + j]
                if not resident[kres[s, j]]:
                    x += ktab[s, E0 + VD + j]
                x = (x + free_at[d] - arrival) * half - 1.0
                est[k, v, d] = x if x < 1.0 else 1.0


def _queue_counts(sim) -> np.ndarray:
    """(C,) queued tasks of each capability q, as q / (q + K), float32."""
    C, K = sim.cluster.num_caps, sim.K
    q = sim.queue_ids
    if q:
        caps = sim._ktab[sim._tkind[np.array(q, dtype=np.int64)], 3].astype(np.int64)
        per_cap = np.bincount(caps, minlength=C).astype(np.float64)
    else:
        per_cap = np.zeros(C)
    return (per_cap / (per_cap + K)).astype(np.float32)


def continuous_features(sim) -> dict[str, np.ndarray]:
    """The observation keys of continuous batching (layout in :class:`envs.env.SchedulingEnv`):
    ``queues`` (C,), ``device_batch`` (D,) requests held over ``max_batch``, ``kv_use`` (D,)."""
    held = sim.held_counts() / float(sim.max_batch)
    return {"queues": _queue_counts(sim), "device_batch": np.minimum(held, 1.0).astype(np.float32),
            "kv_use": np.clip(sim.kv_use(), 0.0, 1.0).astype(np.float32)}


def batch_features(sim) -> dict[str, np.ndarray]:
    """The observation keys of dynamic batching (layout in :class:`envs.env.SchedulingEnv`):
    ``batch`` (K, V), ``queues`` (C,), ``device_batch`` (D,), float32 in [0, 1]."""
    top = float(sim.batch_sizes[-1])
    batch = np.minimum(sim.batch_counts() / top, 1.0).astype(np.float32)
    queues = _queue_counts(sim)
    running = np.array([len(sim.running_batch(d)) for d in range(sim.cluster.num_devices)], dtype=np.float64)
    device_batch = np.minimum(running / top, 1.0).astype(np.float32)
    return {"batch": batch, "queues": queues, "device_batch": device_batch}


@dataclass(frozen=True)
class ObservationScales:
    """Scales of the observation, fixed for an env's lifetime (and shared by every instance of a
    batched simulator) so that features mean the same in every episode: durations squash with
    ``tau``, the median job SLO of a reference draw of the workload (seed 0); the arrival-rate
    window holds about 20 arrivals on average; sizes saturate well above the largest drawn
    size (``log_size``); ``max_pool`` is the largest device pool."""

    tau: float
    rate_window: float
    log_size: float
    max_pool: float

    @classmethod
    def of(cls, scenario) -> ObservationScales:
        """From one reference draw of the scenario's workload (for a trace this reads the file,
        so a malformed trace fails here)."""
        cl = scenario.cluster
        ref = scenario.workload.generate(np.random.default_rng(np.random.SeedSequence(0)), cl).jobs
        if ref:
            tau = float(np.median([j.slo for j in ref]))
            span = max(ref[-1].arrival - ref[0].arrival, 1e-9)
            rate_window = 20.0 * span / max(len(ref) - 1, 1)
            biggest = max(max(st.size, st.size2) for j in ref for st in j.stages)
        else:
            tau = float(np.median([cl.reference_time(c) for c in cl.capabilities]))
            rate_window, biggest = 10.0 * tau, 0.0
        return cls(tau, rate_window, math.log1p(max(1e5, 2.0 * biggest)), float(cl.type_count.max()))


def shape_features(ktab_rows: np.ndarray, num_caps: int, num_features: int,
                   scales: ObservationScales) -> np.ndarray:
    """Time-independent task features (float32, one row per task shape) of rows of a
    simulator's shape table: present, capability one-hot, log sizes, minimum accuracy, devices
    required (the columns between are filled in per step)."""
    C = num_caps
    n = len(ktab_rows)
    fk = np.zeros((n, num_features), dtype=np.float32)
    fk[:, 0] = 1.0
    fk[np.arange(n), 1 + ktab_rows[:, 3].astype(np.int64)] = 1.0
    fk[:, 1 + C] = np.minimum(np.log1p(ktab_rows[:, 0]) / scales.log_size, 1.0)
    fk[:, 2 + C] = np.minimum(np.log1p(ktab_rows[:, 1]) / scales.log_size, 1.0)
    fk[:, 6 + C] = ktab_rows[:, 2]
    fk[:, 7 + C] = np.minimum(ktab_rows[:, 4] / scales.max_pool, 1.0)
    return fk


def _compile():
    global encode_into
    if os.environ.get("MODELSCHED_JIT", "1") == "0":
        return encode_numpy, False
    try:
        import numba
    except ImportError:
        return encode_numpy, False
    # The compiled loops call the compiled ``encode_into`` (a global, resolved when compiled).
    encode_into = numba.njit(cache=True, nogil=True)(encode_into)
    return numba.njit(cache=True, nogil=True)(encode_loops), True


#: The implementation the environment uses, and whether it is compiled.
ENCODE, JIT = _compile()
