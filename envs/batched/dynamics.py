"""The dynamics of :class:`envs.sim.Simulator` for one instance of a batch, compiled with numba.

Every function here takes one instance's two rows of the batch state, ``f`` (float64) and
``i`` (int32) (layout: :mod:`envs.batched.layout`, offsets in ``L``), and the scenario's
constants ``cf`` (float64) and ``ci`` (int64), and mirrors one method of the reference
simulator (named in its docstring) operation for operation: the same float operations in the
same order, the same event order (a binary heap keyed by (time, sequence number), the key of
the reference's heapq tuples), the same random draws (the k-th service-noise normal for the
k-th execution started; failure draws consumed in event order from buffers filled from the
reference's streams). Tests drive both with the same seeds and actions and compare them step
by step.

The code allocates nothing and raises nothing (errors are status codes), so that one instance
is one straight loop: :func:`step_batch` runs the instances of a batch on all cores
(``prange``), each to its next decision, with no lockstep between instances.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from envs.batched.layout import (
    LD_H,
    LD_KT,
    LD_N1,
    LD_S,
    LF_DBTIME,
    LF_DBUSY,
    LF_DMEM,
    LF_FEXP,
    LF_FREE_AT,
    LF_HT,
    LF_JARR,
    LF_JFIN,
    LF_KIDEAL,
    LF_KTAB,
    LF_LASTUSE,
    LF_NOISE,
    LF_TACC,
    LF_TFIN,
    LF_TREADY,
    LF_TTIMES,
    LI_ARRIVED,
    LI_AVAIL,
    LI_CIDX,
    LI_CPTR,
    LI_DIDLE,
    LI_DTASK,
    LI_DUP,
    LI_GDEV,
    LI_HEXT,
    LI_HKIND,
    LI_HPAY,
    LI_HSEQ,
    LI_IDLE_TYPE,
    LI_IDS,
    LI_JCOUNT,
    LI_JDROP,
    LI_JFIRST,
    LI_JREM,
    LI_KDEV,
    LI_KRES,
    LI_KSTAT,
    LI_QUEUE,
    LI_RESIDENT,
    LI_TJOB,
    LI_TKIND,
    LI_TPEND,
    LI_TREQ,
    LI_TSTATE,
    LI_TVAR,
)
from envs.encoding import encode_into

# ---------------------------------------------------------------- float scalars: f[X]
NOW, NEXT_ARR, INV_IDEAL, ST_DT, ST_SLOW, ST_BUSY, ST_ACC, SPAN, MEAN_RATE, UNTIL, PENALTY, REWARD = range(12)
R_LAT, R_SLO, R_DROP, R_ACC, R_UTIL, R_INV = range(12, 18)  # reward terms of the last step
NSF = 18
# ---------------------------------------------------------------- int scalars: i[X]
(C_ARRIVED, C_COMPLETED, C_DROPPED, C_QUEUED, C_RUNNING, C_DQFULL, C_DEXPIRED, C_DINFEASIBLE, C_DWITHJOB,
 C_REQUEUES, C_COLD, C_EVICT, C_FAILURES, C_JARRIVED, C_JCOMPLETED, C_JDROPPED) = range(16)
(ST_COMPL, ST_SLO, ST_DROPS, SEQ, NEXT_JOB, N_JOBS, N_TASKS, QLEN, N_ARRIVED, HEAP_N, BUSY_DEV, UP_DEV,
 IDLE_UP, HAS_GANGS, RATE_PTR, NOISE_POS, NOISE_LEN, FAIL_POS, FAIL_LEN, PHASE, STUCK, STATUS, SINGLE,
 TERM, TRUNC, EP_DONE, ACTION, REASON) = range(16, 44)
NSI = 44
# ---------------------------------------------------------------- float constants: cf[X]
(CF_SIGMA, CF_HORIZON, CF_WLAT, CF_WSLO, CF_WDROP, CF_WACC, CF_WUTIL, CF_PENALTY, CF_TAU, CF_RATE_WINDOW,
 CF_WARMUP) = range(11)
NCF = 11  # the tables follow (offsets in ci)
# ---------------------------------------------------------------- int constants: ci[X]
CI_K, CI_V, CI_D, CI_M, CI_T, CI_QCAP, CI_DROP_EXPIRED, CI_FAILURES, CI_PENALIZE, CI_COL_PRIO, CI_E0 = range(11)
# offsets of the tables: in cf (float), then in ci (int)
(CO_SLOT_ACC, CO_SLOT_MAX, CO_VAR_ACC, CO_BEST_ACC, CO_LOAD_TIME, CO_VAR_MEM, CO_DEV_MEM, CO_MTBF, CO_MTTR,
 CO_INV_MEM, CO_SLOT_VAR, CO_SLOT_RUNS, CO_DEV_TYPE, CO_GANG) = range(11, 25)
NCI = 25

# Task states (as envs.sim.model).
PENDING, QUEUED, RUNNING, DONE, DROPPED = 0, 1, 2, 3, 4
# Event kinds (as envs.sim.simulator).
FINISH, EXPIRE, FAIL, RECOVER = 1, 2, 3, 4
# Step phases: an instance stopped for more failure draws resumes where it stopped.
PH_ACT, PH_WAIT, PH_POST, PH_ADVANCE, PH_FINISH, PH_RESET = 0, 1, 2, 3, 4, 5
# Statuses (i[STATUS]).
OK, NEED_DRAWS, ERR_HEAP, ERR_DRAWS, ERR_MEMORY, ERR_INVALID, ERR_CLOCK = 0, 1, 2, 3, 4, 5, 6
# Reasons an assignment is refused (keys of envs.sim.simulator.REASONS, in this order).
REASON_KEYS = ("no_task", "no_variant", "no_profile", "accuracy", "too_large", "down", "busy", "gang")
VALID = -1

_jit = njit(cache=True, nogil=True, _nrt=False)


# ==================================================================== events
@_jit
def _push(f, i, L, t, kind, payload, extra):
    """Simulator._push: schedule an event keyed (t, next sequence number)."""
    i[SEQ] += 1
    seq = i[SEQ]
    n = i[HEAP_N]
    ht, hs, hk, hp, hx = L[LF_HT], L[LI_HSEQ], L[LI_HKIND], L[LI_HPAY], L[LI_HEXT]
    if n >= L[LD_H]:
        i[STATUS] = ERR_HEAP
        return
    j = n
    while j > 0:
        p = (j - 1) >> 1
        if f[ht + p] < t or (f[ht + p] == t and i[hs + p] < seq):
            break
        f[ht + j], i[hs + j], i[hk + j], i[hp + j], i[hx + j] = f[ht + p], i[hs + p], i[hk + p], i[hp + p], i[hx + p]
        j = p
    f[ht + j], i[hs + j], i[hk + j], i[hp + j], i[hx + j] = t, seq, kind, payload, extra
    i[HEAP_N] = n + 1


@_jit
def _pop(f, i, L):
    """heapq.heappop of the event heap; returns (kind, payload, extra)."""
    ht, hs, hk, hp, hx = L[LF_HT], L[LI_HSEQ], L[LI_HKIND], L[LI_HPAY], L[LI_HEXT]
    kind, payload, extra = i[hk], i[hp], i[hx]
    n = i[HEAP_N] - 1
    i[HEAP_N] = n
    if n > 0:
        t, s, k, p, x = f[ht + n], i[hs + n], i[hk + n], i[hp + n], i[hx + n]
        j = 0
        while True:
            c = 2 * j + 1
            if c >= n:
                break
            r = c + 1
            if r < n and (f[ht + r] < f[ht + c] or (f[ht + r] == f[ht + c] and i[hs + r] < i[hs + c])):
                c = r
            if t < f[ht + c] or (t == f[ht + c] and s < i[hs + c]):
                break
            f[ht + j], i[hs + j], i[hk + j], i[hp + j], i[hx + j] = f[ht + c], i[hs + c], i[hk + c], i[hp + c], i[hx + c]
            j = c
        f[ht + j], i[hs + j], i[hk + j], i[hp + j], i[hx + j] = t, s, k, p, x
    return kind, payload, extra


@_jit
def _fail_draw(f, i, L):
    """The next standard exponential of the failure stream (Generator.exponential(scale) is
    scale times it, bit for bit)."""
    j = i[FAIL_POS]
    if j >= i[FAIL_LEN]:
        i[STATUS] = ERR_DRAWS
        return 1.0
    i[FAIL_POS] = j + 1
    return f[L[LF_FEXP] + j]


@_jit
def _schedule_failure(f, i, L, cf, ci, d):
    """Simulator._schedule_failure."""
    mtbf = cf[ci[CO_MTBF] + d]
    if math.isfinite(mtbf):
        _push(f, i, L, f[NOW] + mtbf * _fail_draw(f, i, L), FAIL, d, 0)


@_jit
def _advance_clock(f, i, cf, t):
    """Simulator._advance_clock."""
    dt = t - f[NOW]
    if dt < 0:
        i[STATUS] = ERR_CLOCK
        return
    if dt > 0:
        f[ST_DT] += dt
        f[ST_SLOW] += dt * f[INV_IDEAL]
        if i[UP_DEV]:
            w = cf[CF_WARMUP]
            bdt = dt if f[NOW] >= w else (t - w if t > w else 0.0)
            f[ST_BUSY] += bdt * i[BUSY_DEV] / i[UP_DEV]
        f[NOW] = t


@_jit
def _episode_done(i):
    """Simulator.done."""
    return i[C_JCOMPLETED] + i[C_JDROPPED] == i[N_JOBS] and i[C_QUEUED] == 0 and i[C_RUNNING] == 0


@_jit
def _next_event_time(f, i, L):
    te = f[L[LF_HT]] if i[HEAP_N] > 0 else np.inf
    na = f[NEXT_ARR]
    return na if na < te else te


@_jit
def _run(f, i, L, cf, ci, until, decide):
    """Simulator._run. Returns 1 if it stopped because the next instant lies beyond ``until``,
    0 if not, 2 if it stopped at an instant boundary for more failure draws (call it again
    with the same arguments once they are there: the state is that of the boundary)."""
    need = 2 * ci[CI_D] if ci[CI_FAILURES] else 0  # failure draws one instant can take at most
    ht = L[LF_HT]
    tstate = L[LI_TSTATE]
    while True:
        now = f[NOW]
        if decide:
            if _episode_done(i):
                return 0
            if now >= until:
                return 0
            if i[IDLE_UP] and i[QLEN] and has_decision(f, i, L, cf, ci):
                return 0
        t = f[ht] if i[HEAP_N] > 0 else np.inf
        if f[NEXT_ARR] < t:
            t = f[NEXT_ARR]
        if t > until or t == np.inf:
            return 1 if t > until else 0
        if need and i[FAIL_LEN] - i[FAIL_POS] < need:
            return 2
        if t != now:
            _advance_clock(f, i, cf, t)
        while True:  # every event at instant t
            if i[STATUS] > NEED_DRAWS:
                return 0
            if i[HEAP_N] > 0 and f[ht] <= t:
                kind, payload, extra = _pop(f, i, L)
                if kind == EXPIRE:
                    if i[tstate + payload] == QUEUED:
                        _expire(f, i, L, cf, ci, payload)
                elif kind == FINISH:
                    _on_finish(f, i, L, cf, ci, payload, extra)
                elif kind == FAIL:
                    _on_fail(f, i, L, cf, ci, payload)
                else:
                    _on_recover(f, i, L, cf, ci, payload)
            elif f[NEXT_ARR] <= t:
                _on_arrival(f, i, L, cf, ci, i[NEXT_JOB])
            else:
                break


# ==================================================================== handlers
@_jit
def _on_arrival(f, i, L, cf, ci, j):
    """Simulator._on_arrival (pending-parent counts and children are filled in at reset)."""
    i[NEXT_JOB] = j + 1
    f[NEXT_ARR] = f[L[LF_JARR] + j + 1] if j + 1 < i[N_JOBS] else np.inf
    i[C_JARRIVED] += 1
    tid = i[L[LI_JFIRST] + j]
    count = i[L[LI_JCOUNT] + j]
    kideal, tkind = L[LF_KIDEAL], L[LI_TKIND]
    if count == 1:
        if f[kideal + i[tkind + tid]] == np.inf:
            _drop_job(f, i, L, cf, ci, j, C_DINFEASIBLE, -1)
        else:
            _make_ready(f, i, L, cf, ci, tid)
        return
    feasible = True
    for t in range(tid, tid + count):
        feasible &= f[kideal + i[tkind + t]] < np.inf
    if not feasible:
        _drop_job(f, i, L, cf, ci, j, C_DINFEASIBLE, -1)
        return
    for t in range(tid, tid + count):
        if i[L[LI_TPEND] + t] == 0:
            _make_ready(f, i, L, cf, ci, t)
            if i[L[LI_JDROP] + j]:
                return


@_jit
def _make_ready(f, i, L, cf, ci, tid):
    """Simulator._make_ready."""
    now = f[NOW]
    tt = L[LF_TTIMES] + 4 * tid
    f[L[LF_TREADY] + tid] = now
    if not i[SINGLE]:
        f[tt] = now
    if i[C_QUEUED] >= ci[CI_QCAP]:
        _drop_job(f, i, L, cf, ci, i[L[LI_TJOB] + tid], C_DQFULL, tid)
        return
    i[L[LI_TSTATE] + tid] = QUEUED
    i[L[LI_ARRIVED] + i[N_ARRIVED]] = tid
    i[N_ARRIVED] += 1
    i[C_ARRIVED] += 1
    i[C_QUEUED] += 1
    i[L[LI_QUEUE] + i[QLEN]] = tid
    i[QLEN] += 1
    kind = i[L[LI_TKIND] + tid]
    if f[tt] >= cf[CF_WARMUP]:
        f[INV_IDEAL] += f[tt + 2] / f[L[LF_KIDEAL] + kind]
    if f[L[LF_KTAB] + kind * L[LD_KT] + 4] > 1:
        i[HAS_GANGS] = 1
    if ci[CI_DROP_EXPIRED]:
        deadline = f[tt + 1]
        if deadline <= now:
            _drop_job(f, i, L, cf, ci, i[L[LI_TJOB] + tid], C_DEXPIRED, tid)
        else:
            _push(f, i, L, deadline, EXPIRE, tid, 0)


@_jit
def _expire(f, i, L, cf, ci, tid):
    """Simulator._expire."""
    j = i[L[LI_TJOB] + tid]
    if i[L[LI_JDROP] + j] or i[L[LI_JCOUNT] + j] != 1:
        _drop_job(f, i, L, cf, ci, j, C_DEXPIRED, tid)
        return
    i[L[LI_JDROP] + j] = 1
    i[C_JDROPPED] += 1
    _drop_task(f, i, L, cf, tid)
    i[C_DEXPIRED] += 1


@_jit
def _drop_job(f, i, L, cf, ci, j, reason, first):
    """Simulator._drop_job; ``reason`` is the column of its counter."""
    if i[L[LI_JDROP] + j]:
        return
    i[L[LI_JDROP] + j] = 1
    i[C_JDROPPED] += 1
    lo = i[L[LI_JFIRST] + j]
    tstate = L[LI_TSTATE]
    for tid in range(lo, lo + i[L[LI_JCOUNT] + j]):
        s = i[tstate + tid]
        if s == DONE or s == DROPPED or s == RUNNING:
            pass  # (a running task finishes, but its job already failed)
        else:
            _drop_task(f, i, L, cf, tid)
            if tid == first or reason == C_DINFEASIBLE or first < 0:
                i[reason] += 1
            else:
                i[C_DWITHJOB] += 1


@_jit
def _drop_task(f, i, L, cf, tid):
    """Simulator._drop_task."""
    tt = L[LF_TTIMES] + 4 * tid
    if i[L[LI_TSTATE] + tid] == QUEUED:
        q = L[LI_QUEUE]
        n = i[QLEN]
        k = 0
        while i[q + k] != tid:
            k += 1
        for m in range(q + k, q + n - 1):
            i[m] = i[m + 1]
        i[QLEN] = n - 1
        i[C_QUEUED] -= 1
        if f[tt] >= cf[CF_WARMUP]:
            f[INV_IDEAL] -= f[tt + 2] / f[L[LF_KIDEAL] + i[L[LI_TKIND] + tid]]
    else:
        i[C_ARRIVED] += 1
        i[L[LI_ARRIVED] + i[N_ARRIVED]] = tid
        i[N_ARRIVED] += 1
        if math.isnan(f[tt]):
            f[tt] = f[NOW]
    i[L[LI_TSTATE] + tid] = DROPPED
    f[L[LF_TFIN] + tid] = f[NOW]
    i[C_DROPPED] += 1
    if f[tt] >= cf[CF_WARMUP]:
        i[ST_DROPS] += 1


@_jit
def _on_finish(f, i, L, cf, ci, tid, attempt):
    """Simulator._on_finish."""
    if i[L[LI_TSTATE] + tid] != RUNNING or i[L[LI_TREQ] + tid] != attempt:
        return  # stale: the task was requeued after a failure
    now = f[NOW]
    tt = L[LF_TTIMES] + 4 * tid
    i[L[LI_TSTATE] + tid] = DONE
    f[L[LF_TFIN] + tid] = now
    i[C_RUNNING] -= 1
    i[C_COMPLETED] += 1
    kind = i[L[LI_TKIND] + tid]
    counted = f[tt] >= cf[CF_WARMUP]
    if counted:
        f[INV_IDEAL] -= f[tt + 2] / f[L[LF_KIDEAL] + kind]
    dtask = L[LI_DTASK]
    for d in range(ci[CI_D]):
        if i[dtask + d] == tid:
            _release_device(f, i, L, ci, d)
    if counted:
        i[ST_COMPL] += 1
        if now > f[tt + 1] + 1e-12:
            i[ST_SLO] += 1
        f[ST_ACC] += f[L[LF_TACC] + tid] - cf[ci[CO_BEST_ACC] + int(f[L[LF_KTAB] + kind * L[LD_KT] + 3])]
    j = i[L[LI_TJOB] + tid]
    i[L[LI_JREM] + j] -= 1
    if i[L[LI_JDROP] + j]:
        return
    cidx, tpend = L[LI_CIDX], L[LI_TPEND]
    for c in range(i[L[LI_CPTR] + tid], i[L[LI_CPTR] + tid + 1]):
        child = i[cidx + c]
        i[tpend + child] -= 1
        if i[tpend + child] == 0:
            _make_ready(f, i, L, cf, ci, child)
            if i[L[LI_JDROP] + j]:
                return
    if i[L[LI_JREM] + j] == 0:
        f[L[LF_JFIN] + j] = now
        i[C_JCOMPLETED] += 1


@_jit
def _release_device(f, i, L, ci, d):
    """Simulator._release_device."""
    i[L[LI_DTASK] + d] = -1
    f[L[LF_DBUSY] + d] = f[NOW]
    i[L[LI_DIDLE] + d] = 1
    i[BUSY_DEV] -= 1
    i[L[LI_IDLE_TYPE] + ci[ci[CO_DEV_TYPE] + d]] += 1
    i[IDLE_UP] += 1


@_jit
def _on_fail(f, i, L, cf, ci, d):
    """Simulator._on_fail."""
    if not i[L[LI_DUP] + d]:
        return
    D = ci[CI_D]
    now = f[NOW]
    i[C_FAILURES] += 1
    dtask = L[LI_DTASK]
    tid = i[dtask + d]
    if tid >= 0:  # requeue the task; free its other devices
        for e in range(D):
            if i[dtask + e] == tid:  # the time it would still have run was never busy
                f[L[LF_DBTIME] + e] -= max(0.0, f[L[LF_DBUSY] + e] - now)
        for e in range(D):
            if i[dtask + e] == tid:
                _release_device(f, i, L, ci, e)
        i[L[LI_TREQ] + tid] += 1
        i[C_REQUEUES] += 1
        i[C_RUNNING] -= 1
        i[C_QUEUED] += 1
        i[L[LI_TSTATE] + tid] = QUEUED
        # Back in front of the queue, in ready-time order.
        q, ready = L[LI_QUEUE], L[LF_TREADY]
        n = i[QLEN]
        r = f[ready + tid]
        k = 0
        while k < n and (f[ready + i[q + k]] < r or (f[ready + i[q + k]] == r and i[q + k] < tid)):
            k += 1
        for m in range(q + n, q + k, -1):
            i[m] = i[m - 1]
        i[q + k] = tid
        i[QLEN] = n + 1
        j = i[L[LI_TJOB] + tid]
        if i[L[LI_JDROP] + j]:  # its job already failed while it ran: nothing left to serve
            _drop_task(f, i, L, cf, tid)
            i[C_DWITHJOB] += 1
        elif ci[CI_DROP_EXPIRED] and f[L[LF_TTIMES] + 4 * tid + 1] <= now:  # its expiry passed while it ran
            _drop_job(f, i, L, cf, ci, j, C_DEXPIRED, tid)
    i[L[LI_DUP] + d] = 0
    res = L[LI_RESIDENT]
    for m in range(ci[CI_M]):
        i[res + m * D + d] = 0
    f[L[LF_DMEM] + d] = 0.0
    i[L[LI_DIDLE] + d] = 1
    f[L[LF_DBUSY] + d] = now
    i[UP_DEV] -= 1
    i[L[LI_IDLE_TYPE] + ci[ci[CO_DEV_TYPE] + d]] -= 1
    i[IDLE_UP] -= 1
    mttr = cf[ci[CO_MTTR] + d]
    _push(f, i, L, now + mttr * _fail_draw(f, i, L) if mttr > 0 else now, RECOVER, d, 0)


@_jit
def _on_recover(f, i, L, cf, ci, d):
    """Simulator._on_recover."""
    i[L[LI_DUP] + d] = 1
    i[UP_DEV] += 1
    i[L[LI_IDLE_TYPE] + ci[ci[CO_DEV_TYPE] + d]] += 1
    i[IDLE_UP] += 1
    _schedule_failure(f, i, L, cf, ci, d)


# ==================================================================== decisions
@_jit
def has_decision(f, i, L, cf, ci):
    """Simulator.has_decision: some window task can start on some idle, up device now."""
    if i[QLEN] == 0 or i[IDLE_UP] == 0:
        return False
    K, D = ci[CI_K], ci[CI_D]
    n = i[QLEN] if i[QLEN] < K else K
    q, tkind, kdev, ktab, KT = L[LI_QUEUE], L[LI_TKIND], L[LI_KDEV], L[LF_KTAB], L[LD_KT]
    dup, didle, idle_type, dev_type = L[LI_DUP], L[LI_DIDLE], L[LI_IDLE_TYPE], ci[CO_DEV_TYPE]
    for k in range(n):
        kind = i[tkind + i[q + k]]
        nreq = f[ktab + kind * KT + 4]
        for d in range(D):
            if i[kdev + kind * D + d] and i[dup + d] and i[didle + d]:
                if nreq == 1 or i[idle_type + ci[dev_type + d]] >= nreq:
                    return True
    return False


@_jit
def check_assignment(f, i, L, cf, ci, k, v, d):
    """Simulator.check_assignment: VALID, or the index of the reason in REASON_KEYS."""
    if k >= ci[CI_K] or k >= i[QLEN]:
        return 0
    V, D = ci[CI_V], ci[CI_D]
    kind = i[L[LI_TKIND] + i[L[LI_QUEUE] + k]]
    row = L[LF_KTAB] + kind * L[LD_KT]
    c = int(f[row + 3])
    if ci[ci[CO_SLOT_VAR] + c * V + v] < 0:
        return 1
    if not ci[ci[CO_SLOT_RUNS] + (c * V + v) * D + d]:
        return 2
    if cf[ci[CO_SLOT_ACC] + c * V + v] < f[row + 2]:
        return 3
    if cf[ci[CO_SLOT_MAX] + c * V + v] < f[row] + f[row + 1]:
        return 4
    if not i[L[LI_DUP] + d]:
        return 5
    if not i[L[LI_DIDLE] + d]:
        return 6
    n = f[row + 4]
    if n > 1 and i[L[LI_IDLE_TYPE] + ci[ci[CO_DEV_TYPE] + d]] < n:
        return 7
    return VALID


@_jit
def _assign(f, i, L, cf, ci, k, v, d):
    """Simulator.assign (checked): start window task k with variant slot v on device d, plus
    n - 1 more idle devices of its type for an n-device task (same node first)."""
    V, D = ci[CI_V], ci[CI_D]
    q = L[LI_QUEUE]
    tid = i[q + k]
    kind = i[L[LI_TKIND] + tid]
    row = L[LF_KTAB] + kind * L[LD_KT]
    m = ci[ci[CO_SLOT_VAR] + int(f[row + 3]) * V + v]
    nreq = int(f[row + 4])
    devs = L[LI_GDEV]
    dup, didle = L[LI_DUP], L[LI_DIDLE]
    i[devs] = d
    nd = 1
    if nreq > 1:
        gang = ci[CO_GANG] + d * (D - 1)
        for g in range(D - 1):
            if nd >= nreq:
                break
            e = ci[gang + g]
            if e < 0:
                break
            if i[dup + e] and i[didle + e]:
                i[devs + nd] = e
                nd += 1
    load = 0.0
    for g in range(nd):
        x = _make_resident(f, i, L, cf, ci, m, i[devs + g])
        if x > load:
            load = x
    exec_t = f[row + ci[CI_E0] + v * D + d]
    sigma = cf[CF_SIGMA]
    if sigma > 0:
        j = i[NOISE_POS]
        i[NOISE_POS] = j + 1
        exec_t *= math.exp(sigma * abs(f[L[LF_NOISE] + j]))
    start = f[NOW]
    end = start + load + exec_t
    i[L[LI_TSTATE] + tid] = RUNNING
    i[L[LI_TVAR] + tid] = m
    f[L[LF_TACC] + tid] = cf[ci[CO_VAR_ACC] + m]
    i[C_QUEUED] -= 1
    i[C_RUNNING] += 1
    n = i[QLEN]
    for g in range(q + k, q + n - 1):
        i[g] = i[g + 1]
    i[QLEN] = n - 1
    dtask, dbusy, dbtime = L[LI_DTASK], L[LF_DBUSY], L[LF_DBTIME]
    for g in range(nd):
        e = i[devs + g]
        i[dtask + e] = tid
        f[dbusy + e] = end
        f[dbtime + e] += end - start
        i[didle + e] = 0
    i[BUSY_DEV] += nd
    i[L[LI_IDLE_TYPE] + ci[ci[CO_DEV_TYPE] + d]] -= nd
    i[IDLE_UP] -= nd
    _push(f, i, L, end, FINISH, tid, i[L[LI_TREQ] + tid])


@_jit
def _make_resident(f, i, L, cf, ci, m, d):
    """Simulator._make_resident: ensure variant m is resident on idle device d, evicting the
    least recently used variants; returns the load time (0 if it was resident)."""
    D = ci[CI_D]
    now = f[NOW]
    res, last = L[LI_RESIDENT], L[LF_LASTUSE]
    idx = m * D + d
    if i[res + idx]:
        f[last + idx] = now
        return 0.0
    mem = ci[CO_VAR_MEM]
    need = cf[mem + m]
    cap = cf[ci[CO_DEV_MEM] + d]
    dmem = L[LF_DMEM] + d
    while f[dmem] + need > cap + 1e-9:
        victim = -1
        for x in range(ci[CI_M]):  # min over resident variants of (last use, index)
            if i[res + x * D + d] and (victim < 0 or f[last + x * D + d] < f[last + victim * D + d]):
                victim = x
        if victim < 0:
            i[STATUS] = ERR_MEMORY
            return 0.0
        i[res + victim * D + d] = 0
        f[dmem] -= cf[mem + victim]
        i[C_EVICT] += 1
    f[last + idx] = now
    f[dmem] += need
    i[res + idx] = 1
    i[C_COLD] += 1
    return cf[ci[CO_LOAD_TIME] + idx]


# ==================================================================== one env step
@_jit
def _recent_arrival_rate(f, i, L, window):
    """Simulator.recent_arrival_rate (the pointer restarts at each episode)."""
    n = i[NEXT_JOB]
    lo = f[NOW] - window
    jarr = L[LF_JARR]
    j = i[RATE_PTR]
    while j < n and f[jarr + j] < lo:
        j += 1
    i[RATE_PTR] = j
    return (n - j) / window if window > 0 else 0.0


@_jit
def _encode(f, i, L, cf, ci, fk, dev_static, mask, otasks, oest, odev, oglob):
    """SchedulingEnv._observation: the mask and the observation arrays of the instance (the
    shared :func:`envs.encoding.encode_into` on views of its rows)."""
    K, V, D, T, M = ci[CI_K], ci[CI_V], ci[CI_D], ci[CI_T], ci[CI_M]
    N1, S, KT = L[LD_N1], L[LD_S], L[LD_KT]
    now = f[NOW]
    q = i[QLEN]
    n = q if q < K else K
    ids = i[L[LI_IDS]:L[LI_IDS] + K]
    for k in range(n):
        ids[k] = i[L[LI_QUEUE] + k]
    for k in range(n, K):
        ids[k] = i[N_TASKS]  # the padding row
    backlog = q - K if q > K else 0
    rate = _recent_arrival_rate(f, i, L, cf[CF_RATE_WINDOW]) / f[MEAN_RATE]
    up = i[UP_DEV]
    g0 = backlog / (backlog + K)
    g1 = min(now / f[SPAN], 1.0)
    g2 = rate / (rate + 1.0)
    g3 = i[BUSY_DEV] / up if up else 0.0
    g4 = min(q / ci[CI_QCAP], 1.0)
    gangs = i[HAS_GANGS] != 0
    ttimes = f[L[LF_TTIMES]:L[LF_TTIMES] + 4 * N1].reshape(N1, 4)
    tkind = i[L[LI_TKIND]:L[LI_TKIND] + N1]
    ktab = f[L[LF_KTAB]:L[LF_KTAB] + S * KT].reshape(S, KT)
    kstat = i[L[LI_KSTAT]:L[LI_KSTAT] + S * V * D].reshape(S, V * D)
    kres = i[L[LI_KRES]:L[LI_KRES] + S * V * D].reshape(S, V * D)
    dbusy = f[L[LF_DBUSY]:L[LF_DBUSY] + D]
    dup = i[L[LI_DUP]:L[LI_DUP] + D]
    didle = i[L[LI_DIDLE]:L[LI_DIDLE] + D]
    dmem = f[L[LF_DMEM]:L[LF_DMEM] + D]
    idle_type = i[L[LI_IDLE_TYPE]:L[LI_IDLE_TYPE] + T]
    resident = i[L[LI_RESIDENT]:L[LI_RESIDENT] + M * D]
    free_at = f[L[LF_FREE_AT]:L[LF_FREE_AT] + D]
    avail = i[L[LI_AVAIL]:L[LI_AVAIL] + D]
    inv_mem = cf[ci[CO_INV_MEM]:ci[CO_INV_MEM] + D]
    dev_type = ci[ci[CO_DEV_TYPE]:ci[CO_DEV_TYPE] + D]
    encode_into(mask, otasks, oest, odev, oglob, free_at, avail, now, ids, n, tkind, ttimes, ktab, kstat, kres,
                fk, dbusy, dup, didle, dmem, inv_mem, dev_type, idle_type, resident, dev_static, ci[CI_E0], V, D,
                cf[CF_TAU], ci[CI_COL_PRIO], T, gangs, g0, g1, g2, g3, g4)


@_jit
def _reset_stats(f, i):
    f[ST_DT] = f[ST_SLOW] = f[ST_BUSY] = f[ST_ACC] = 0.0
    i[ST_COMPL] = i[ST_SLO] = i[ST_DROPS] = 0


@_jit
def _start_wait(f, i, L, cf):
    """SchedulingEnv._wait / Simulator.step_time: the instant to run to, or stuck."""
    h = cf[CF_HORIZON]
    t = _next_event_time(f, i, L)
    if h < t:
        t = h
    if not math.isfinite(t) or (t <= f[NOW] and t >= h):
        i[STUCK] = 1
        return PH_POST
    f[UNTIL] = t
    return PH_WAIT


@_jit
def step_instance(f, i, L, cf, ci, fk, dev_static, mask, otasks, oest, odev, oglob):
    """SchedulingEnv.step (or, in phase PH_RESET, the end of SchedulingEnv.reset) for one
    instance, from the phase it is in to the next decision. The action is ``i[ACTION]``."""
    h = cf[CF_HORIZON]
    ph = i[PHASE]
    if ph == PH_ACT:
        _reset_stats(f, i)
        f[PENALTY] = 0.0
        a = i[ACTION]
        D = ci[CI_D]
        VD = ci[CI_V] * D
        if a == ci[CI_K] * VD:
            ph = _start_wait(f, i, L, cf)
        else:
            k = a // VD
            rest = a - k * VD
            v = rest // D
            d = rest - v * D
            reason = check_assignment(f, i, L, cf, ci, k, v, d)
            if reason == VALID:
                _assign(f, i, L, cf, ci, k, v, d)
                ph = PH_POST
            elif ci[CI_PENALIZE]:
                f[PENALTY] = cf[CF_PENALTY]
                ph = _start_wait(f, i, L, cf)
            else:
                i[STATUS] = ERR_INVALID
                i[REASON] = reason
                return
    if ph == PH_WAIT:
        if _run(f, i, L, cf, ci, f[UNTIL], False) == 2:
            i[PHASE] = ph
            i[STATUS] = NEED_DRAWS
            return
        if math.isfinite(f[UNTIL]):
            _advance_clock(f, i, cf, f[UNTIL])
        ph = PH_POST
    if ph == PH_POST:
        if not _episode_done(i) and f[NOW] < h and not i[STUCK] and not has_decision(f, i, L, cf, ci):
            ph = PH_ADVANCE
        else:
            ph = PH_FINISH
    if ph == PH_ADVANCE or ph == PH_RESET:
        r = _run(f, i, L, cf, ci, h, True)
        if r == 2:
            i[PHASE] = ph
            i[STATUS] = NEED_DRAWS
            return
        if r == 1 and h < np.inf:
            _advance_clock(f, i, cf, h)
        if ph == PH_RESET:
            _reset_stats(f, i)
            i[TERM] = i[TRUNC] = i[EP_DONE] = 0
            f[REWARD] = 0.0
            _encode(f, i, L, cf, ci, fk, dev_static, mask, otasks, oest, odev, oglob)
            i[PHASE] = PH_ACT
            return
        if not _episode_done(i) and f[NOW] < h and not has_decision(f, i, L, cf, ci):
            i[STUCK] = 1
        ph = PH_FINISH
    # PH_FINISH: the episode's end, the reward, the observation.
    term = _episode_done(i)
    trunc = (not term) and (f[NOW] >= h or i[STUCK] != 0)
    i[TERM] = term
    i[TRUNC] = trunc
    i[EP_DONE] = term or trunc
    lat = -cf[CF_WLAT] * f[ST_SLOW]
    slo = -cf[CF_WSLO] * i[ST_SLO]
    drop = -cf[CF_WDROP] * i[ST_DROPS]
    acc = cf[CF_WACC] * f[ST_ACC]
    util = cf[CF_WUTIL] * f[ST_BUSY]
    inv = -f[PENALTY]
    f[R_LAT], f[R_SLO], f[R_DROP], f[R_ACC], f[R_UTIL], f[R_INV] = lat, slo, drop, acc, util, inv
    f[REWARD] = 0.0 + lat + slo + drop + acc + util + inv  # the order of sum(terms.values())
    _encode(f, i, L, cf, ci, fk, dev_static, mask, otasks, oest, odev, oglob)
    i[PHASE] = PH_ACT


@njit(cache=True, nogil=True, parallel=True)
def step_batch(FA, IA, L, cf, ci, fk, dev_static, mask, otasks, oest, odev, oglob, idx):
    """Run :func:`step_instance` on the instances ``idx``, in parallel over the cores. Returns
    how many stopped for failure draws, how many failed (a status above NEED_DRAWS), and how
    many have no service-noise draw left for their next assignment."""
    need = 0
    errors = 0
    low = 0
    for j in prange(idx.shape[0]):
        b = idx[j]
        IA[b, STATUS] = OK
        step_instance(FA[b], IA[b], L, cf, ci, fk[b], dev_static, mask[b], otasks[b], oest[b], odev[b], oglob[b])
        st = IA[b, STATUS]
        need += 1 if st == NEED_DRAWS else 0
        errors += 1 if st > NEED_DRAWS else 0
        low += 1 if IA[b, NOISE_POS] >= IA[b, NOISE_LEN] else 0
    return need, errors, low


@njit(cache=True, nogil=True, parallel=True)
def check_actions(FA, IA, L, cf, ci, actions, idx, out_reason):
    """Reason code (VALID, or an index into REASON_KEYS) of the action of each instance of
    ``idx``, without changing the state; the wait action is always valid."""
    D = ci[CI_D]
    VD = ci[CI_V] * D
    wait = ci[CI_K] * VD
    for j in prange(idx.shape[0]):
        b = idx[j]
        a = actions[b]
        if a == wait:
            out_reason[b] = VALID
        else:
            k = a // VD
            rest = a - k * VD
            v = rest // D
            out_reason[b] = check_assignment(FA[b], IA[b], L, cf, ci, k, v, rest - v * D)
