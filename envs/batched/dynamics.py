"""The dynamics of :class:`envs.sim.Simulator` for one instance of a batch, compiled with numba.

Every function here takes the batch's state (:class:`envs.batched.state.State`, a namedtuple of
``[B, ...]`` arrays), the scenario's constants (:class:`envs.batched.state.Consts`) and the
instance index ``b``, and mirrors one method of the reference simulator (named in each
docstring) operation for operation: the same float operations in the same order, the same
event order (a binary heap keyed by (time, sequence number), the key of the reference's heapq
tuples), the same random draws (the k-th service-noise normal for the k-th execution started;
failure draws consumed in event order from per-instance buffers filled from the reference's
streams). Tests drive both with the same seeds and actions and compare them step by step.

The code allocates nothing and raises nothing (errors are status codes), so that one instance
is one straight-line loop: :func:`step_batch` runs the instances of a batch on all cores
(``prange``), each to its next decision, with no lockstep between instances.

Per-instance scalars live in two rows, ``sf[b]`` (float64) and ``si[b]`` (int64), at the
column constants below.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from envs.encoding import encode_into

# ---------------------------------------------------------------- float scalars: sf[b, X]
NOW, NEXT_ARR, INV_IDEAL, ST_DT, ST_SLOW, ST_BUSY, ST_ACC, SPAN, MEAN_RATE, UNTIL, PENALTY, REWARD = range(12)
R_LAT, R_SLO, R_DROP, R_ACC, R_UTIL, R_INV = range(12, 18)  # reward terms of the last step
NSF = 18
# ---------------------------------------------------------------- int scalars: si[b, X]
(C_ARRIVED, C_COMPLETED, C_DROPPED, C_QUEUED, C_RUNNING, C_DQFULL, C_DEXPIRED, C_DINFEASIBLE, C_DWITHJOB,
 C_REQUEUES, C_COLD, C_EVICT, C_FAILURES, C_JARRIVED, C_JCOMPLETED, C_JDROPPED) = range(16)
(ST_COMPL, ST_SLO, ST_DROPS, SEQ, NEXT_JOB, N_JOBS, N_TASKS, QLEN, N_ARRIVED, HEAP_N, BUSY_DEV, UP_DEV,
 IDLE_UP, HAS_GANGS, RATE_PTR, NOISE_POS, NOISE_LEN, FAIL_POS, FAIL_LEN, PHASE, STUCK, STATUS, SINGLE,
 TERM, TRUNC, EP_DONE, ACTION, REASON) = range(16, 44)
NSI = 44
# ---------------------------------------------------------------- float constants: cf[X]
CF_SIGMA, CF_HORIZON, CF_WLAT, CF_WSLO, CF_WDROP, CF_WACC, CF_WUTIL, CF_PENALTY, CF_TAU, CF_RATE_WINDOW = range(10)
# ---------------------------------------------------------------- int constants: ci[X]
CI_K, CI_V, CI_D, CI_M, CI_T, CI_QCAP, CI_DROP_EXPIRED, CI_FAILURES, CI_PENALIZE, CI_COL_PRIO, CI_E0 = range(11)

# Task states (as envs.sim.model).
PENDING, QUEUED, RUNNING, DONE, DROPPED = 0, 1, 2, 3, 4
# Event kinds (as envs.sim.simulator).
FINISH, EXPIRE, FAIL, RECOVER = 1, 2, 3, 4
# Step phases: an instance stopped for more failure draws resumes where it stopped.
PH_ACT, PH_WAIT, PH_POST, PH_ADVANCE, PH_FINISH, PH_RESET = 0, 1, 2, 3, 4, 5
# Statuses (si[b, STATUS]).
OK, NEED_DRAWS, ERR_HEAP, ERR_DRAWS, ERR_MEMORY, ERR_INVALID, ERR_CLOCK = 0, 1, 2, 3, 4, 5, 6
# Reasons an assignment is refused (keys of envs.sim.simulator.REASONS, in this order).
REASON_KEYS = ("no_task", "no_variant", "no_profile", "accuracy", "too_large", "down", "busy", "gang")
VALID = -1

_jit = njit(cache=True, nogil=True)


# ==================================================================== events
@_jit
def _push(S, b, t, kind, payload, extra):
    """Simulator._push: schedule an event keyed (t, next sequence number)."""
    si = S.si
    si[b, SEQ] += 1
    seq = si[b, SEQ]
    n = si[b, HEAP_N]
    ht, hs, hk, hp, hx = S.ht[b], S.hseq[b], S.hkind[b], S.hpay[b], S.hext[b]
    if n >= ht.shape[0]:
        si[b, STATUS] = ERR_HEAP
        return
    i = n
    while i > 0:
        p = (i - 1) >> 1
        if ht[p] < t or (ht[p] == t and hs[p] < seq):
            break
        ht[i], hs[i], hk[i], hp[i], hx[i] = ht[p], hs[p], hk[p], hp[p], hx[p]
        i = p
    ht[i], hs[i], hk[i], hp[i], hx[i] = t, seq, kind, payload, extra
    si[b, HEAP_N] = n + 1


@_jit
def _pop(S, b):
    """heapq.heappop of the event heap; returns (kind, payload, extra)."""
    si = S.si
    ht, hs, hk, hp, hx = S.ht[b], S.hseq[b], S.hkind[b], S.hpay[b], S.hext[b]
    kind, payload, extra = hk[0], hp[0], hx[0]
    n = si[b, HEAP_N] - 1
    si[b, HEAP_N] = n
    if n > 0:
        t, s, k, p, x = ht[n], hs[n], hk[n], hp[n], hx[n]
        i = 0
        while True:
            c = 2 * i + 1
            if c >= n:
                break
            r = c + 1
            if r < n and (ht[r] < ht[c] or (ht[r] == ht[c] and hs[r] < hs[c])):
                c = r
            if t < ht[c] or (t == ht[c] and s < hs[c]):
                break
            ht[i], hs[i], hk[i], hp[i], hx[i] = ht[c], hs[c], hk[c], hp[c], hx[c]
            i = c
        ht[i], hs[i], hk[i], hp[i], hx[i] = t, s, k, p, x
    return kind, payload, extra


@_jit
def _fail_draw(S, b):
    """The next standard exponential of the failure stream (Generator.exponential(scale) is
    scale times it, bit for bit)."""
    si = S.si
    i = si[b, FAIL_POS]
    if i >= si[b, FAIL_LEN]:
        si[b, STATUS] = ERR_DRAWS
        return 1.0
    si[b, FAIL_POS] = i + 1
    return S.fexp[b, i]


@_jit
def _schedule_failure(S, C, b, d):
    """Simulator._schedule_failure."""
    mtbf = C.mtbf[d]
    if math.isfinite(mtbf):
        _push(S, b, S.sf[b, NOW] + mtbf * _fail_draw(S, b), FAIL, d, 0)


@_jit
def _advance_clock(S, b, t):
    """Simulator._advance_clock."""
    sf, si = S.sf, S.si
    dt = t - sf[b, NOW]
    if dt < 0:
        si[b, STATUS] = ERR_CLOCK
        return
    if dt > 0:
        sf[b, ST_DT] += dt
        sf[b, ST_SLOW] += dt * sf[b, INV_IDEAL]
        if si[b, UP_DEV]:
            sf[b, ST_BUSY] += dt * si[b, BUSY_DEV] / si[b, UP_DEV]
        sf[b, NOW] = t


@_jit
def _episode_done(S, b):
    """Simulator.done."""
    si = S.si
    return (si[b, C_JCOMPLETED] + si[b, C_JDROPPED] == si[b, N_JOBS] and si[b, C_QUEUED] == 0
            and si[b, C_RUNNING] == 0)


@_jit
def _next_event_time(S, b):
    te = S.ht[b, 0] if S.si[b, HEAP_N] > 0 else np.inf
    na = S.sf[b, NEXT_ARR]
    return na if na < te else te


@_jit
def _run(S, C, b, until, decide):
    """Simulator._run. Returns 1 if it stopped because the next instant lies beyond ``until``,
    0 if not, NEED_DRAWS (2) if it stopped at an instant boundary for more failure draws (call
    again with the same arguments once they are there: the state is that of the boundary)."""
    sf, si = S.sf, S.si
    D = C.ci[CI_D]
    need = 2 * D if C.ci[CI_FAILURES] else 0  # failure draws one instant can take at most
    while True:
        now = sf[b, NOW]
        if decide:
            if _episode_done(S, b):
                return 0
            if now >= until:
                return 0
            if si[b, IDLE_UP] and si[b, QLEN] and has_decision(S, C, b):
                return 0
        t = S.ht[b, 0] if si[b, HEAP_N] > 0 else np.inf
        if sf[b, NEXT_ARR] < t:
            t = sf[b, NEXT_ARR]
        if t > until or t == np.inf:
            return 1 if t > until else 0
        if need and si[b, FAIL_LEN] - si[b, FAIL_POS] < need:
            return 2
        if t != now:
            _advance_clock(S, b, t)
        while True:  # every event at instant t
            if si[b, STATUS] > NEED_DRAWS:
                return 0
            if si[b, HEAP_N] > 0 and S.ht[b, 0] <= t:
                kind, payload, extra = _pop(S, b)
                if kind == EXPIRE:
                    if S.tstate[b, payload] == QUEUED:
                        _expire(S, C, b, payload)
                elif kind == FINISH:
                    _on_finish(S, C, b, payload, extra)
                elif kind == FAIL:
                    _on_fail(S, C, b, payload)
                else:
                    _on_recover(S, C, b, payload)
            elif sf[b, NEXT_ARR] <= t:
                _on_arrival(S, C, b, si[b, NEXT_JOB])
            else:
                break


# ==================================================================== handlers
@_jit
def _on_arrival(S, C, b, j):
    """Simulator._on_arrival (pending-parent counts and children are filled in at reset)."""
    sf, si = S.sf, S.si
    si[b, NEXT_JOB] = j + 1
    sf[b, NEXT_ARR] = S.jarr[b, j + 1] if j + 1 < si[b, N_JOBS] else np.inf
    si[b, C_JARRIVED] += 1
    tid = S.jfirst[b, j]
    count = S.jcount[b, j]
    if count == 1:
        if S.kideal[b, S.tkind[b, tid]] == np.inf:
            _drop_job(S, C, b, j, C_DINFEASIBLE, -1)
        else:
            _make_ready(S, C, b, tid)
        return
    feasible = True
    for i in range(tid, tid + count):
        feasible &= S.kideal[b, S.tkind[b, i]] < np.inf
    if not feasible:
        _drop_job(S, C, b, j, C_DINFEASIBLE, -1)
        return
    for i in range(tid, tid + count):
        if S.tpend[b, i] == 0:
            _make_ready(S, C, b, i)
            if S.jdrop[b, j]:
                return


@_jit
def _make_ready(S, C, b, tid):
    """Simulator._make_ready."""
    sf, si = S.sf, S.si
    now = sf[b, NOW]
    S.tready[b, tid] = now
    if not si[b, SINGLE]:
        S.ttimes[b, tid, 0] = now
    if si[b, C_QUEUED] >= C.ci[CI_QCAP]:
        _drop_job(S, C, b, S.tjob[b, tid], C_DQFULL, tid)
        return
    S.tstate[b, tid] = QUEUED
    S.arrived[b, si[b, N_ARRIVED]] = tid
    si[b, N_ARRIVED] += 1
    si[b, C_ARRIVED] += 1
    si[b, C_QUEUED] += 1
    S.queue[b, si[b, QLEN]] = tid
    si[b, QLEN] += 1
    kind = S.tkind[b, tid]
    sf[b, INV_IDEAL] += S.ttimes[b, tid, 2] / S.kideal[b, kind]
    if S.ktab[b, kind, 4] > 1:
        si[b, HAS_GANGS] = 1
    if C.ci[CI_DROP_EXPIRED]:
        deadline = S.ttimes[b, tid, 1]
        if deadline <= now:
            _drop_job(S, C, b, S.tjob[b, tid], C_DEXPIRED, tid)
        else:
            _push(S, b, deadline, EXPIRE, tid, 0)


@_jit
def _expire(S, C, b, tid):
    """Simulator._expire."""
    si = S.si
    j = S.tjob[b, tid]
    if S.jdrop[b, j] or S.jcount[b, j] != 1:
        _drop_job(S, C, b, j, C_DEXPIRED, tid)
        return
    S.jdrop[b, j] = True
    si[b, C_JDROPPED] += 1
    _drop_task(S, C, b, tid)
    si[b, C_DEXPIRED] += 1


@_jit
def _drop_job(S, C, b, j, reason, first):
    """Simulator._drop_job; ``reason`` is the column of its counter."""
    si = S.si
    if S.jdrop[b, j]:
        return
    S.jdrop[b, j] = True
    si[b, C_JDROPPED] += 1
    lo = S.jfirst[b, j]
    for tid in range(lo, lo + S.jcount[b, j]):
        s = S.tstate[b, tid]
        if s == DONE or s == DROPPED or s == RUNNING:
            pass  # (a running task finishes, but its job already failed)
        else:
            _drop_task(S, C, b, tid)
            if tid == first or reason == C_DINFEASIBLE or first < 0:
                si[b, reason] += 1
            else:
                si[b, C_DWITHJOB] += 1


@_jit
def _drop_task(S, C, b, tid):
    """Simulator._drop_task."""
    sf, si = S.sf, S.si
    if S.tstate[b, tid] == QUEUED:
        q = S.queue[b]
        n = si[b, QLEN]
        i = 0
        while q[i] != tid:
            i += 1
        for k in range(i, n - 1):
            q[k] = q[k + 1]
        si[b, QLEN] = n - 1
        si[b, C_QUEUED] -= 1
        sf[b, INV_IDEAL] -= S.ttimes[b, tid, 2] / S.kideal[b, S.tkind[b, tid]]
    else:
        si[b, C_ARRIVED] += 1
        S.arrived[b, si[b, N_ARRIVED]] = tid
        si[b, N_ARRIVED] += 1
        if math.isnan(S.ttimes[b, tid, 0]):
            S.ttimes[b, tid, 0] = sf[b, NOW]
    S.tstate[b, tid] = DROPPED
    S.tfin[b, tid] = sf[b, NOW]
    si[b, C_DROPPED] += 1
    si[b, ST_DROPS] += 1


@_jit
def _on_finish(S, C, b, tid, attempt):
    """Simulator._on_finish."""
    sf, si = S.sf, S.si
    if S.tstate[b, tid] != RUNNING or S.treq[b, tid] != attempt:
        return  # stale: the task was requeued after a failure
    now = sf[b, NOW]
    S.tstate[b, tid] = DONE
    S.tfin[b, tid] = now
    si[b, C_RUNNING] -= 1
    si[b, C_COMPLETED] += 1
    kind = S.tkind[b, tid]
    sf[b, INV_IDEAL] -= S.ttimes[b, tid, 2] / S.kideal[b, kind]
    for d in range(C.ci[CI_D]):
        if S.dtask[b, d] == tid:
            _release_device(S, C, b, d)
    si[b, ST_COMPL] += 1
    if now > S.ttimes[b, tid, 1] + 1e-12:
        si[b, ST_SLO] += 1
    sf[b, ST_ACC] += S.tacc[b, tid] - C.best_acc[int(S.ktab[b, kind, 3])]
    j = S.tjob[b, tid]
    S.jrem[b, j] -= 1
    if S.jdrop[b, j]:
        return
    for ci in range(S.cptr[b, tid], S.cptr[b, tid + 1]):
        child = S.cidx[b, ci]
        S.tpend[b, child] -= 1
        if S.tpend[b, child] == 0:
            _make_ready(S, C, b, child)
            if S.jdrop[b, j]:
                return
    if S.jrem[b, j] == 0:
        S.jfin[b, j] = now
        si[b, C_JCOMPLETED] += 1


@_jit
def _release_device(S, C, b, d):
    """Simulator._release_device."""
    si = S.si
    S.dtask[b, d] = -1
    S.dbusy[b, d] = S.sf[b, NOW]
    S.didle[b, d] = True
    si[b, BUSY_DEV] -= 1
    S.idle_type[b, C.dev_type[d]] += 1
    si[b, IDLE_UP] += 1


@_jit
def _on_fail(S, C, b, d):
    """Simulator._on_fail."""
    sf, si = S.sf, S.si
    if not S.dup[b, d]:
        return
    D = C.ci[CI_D]
    now = sf[b, NOW]
    si[b, C_FAILURES] += 1
    tid = S.dtask[b, d]
    if tid >= 0:  # requeue the task; free its other devices
        for e in range(D):
            if S.dtask[b, e] == tid:  # the time it would still have run was never busy
                S.dbtime[b, e] -= max(0.0, S.dbusy[b, e] - now)
        for e in range(D):
            if S.dtask[b, e] == tid:
                _release_device(S, C, b, e)
        S.treq[b, tid] += 1
        si[b, C_REQUEUES] += 1
        si[b, C_RUNNING] -= 1
        si[b, C_QUEUED] += 1
        S.tstate[b, tid] = QUEUED
        # Back in front of the queue, in ready-time order.
        q = S.queue[b]
        n = si[b, QLEN]
        r = S.tready[b, tid]
        i = 0
        while i < n and (S.tready[b, q[i]] < r or (S.tready[b, q[i]] == r and q[i] < tid)):
            i += 1
        for k in range(n, i, -1):
            q[k] = q[k - 1]
        q[i] = tid
        si[b, QLEN] = n + 1
        j = S.tjob[b, tid]
        if S.jdrop[b, j]:  # its job already failed while it ran: nothing left to serve
            _drop_task(S, C, b, tid)
            si[b, C_DWITHJOB] += 1
        elif C.ci[CI_DROP_EXPIRED] and S.ttimes[b, tid, 1] <= now:  # its expiry passed while it ran
            _drop_job(S, C, b, j, C_DEXPIRED, tid)
    S.dup[b, d] = False
    for m in range(C.ci[CI_M]):
        S.resident[b, m * D + d] = False
    S.dmem[b, d] = 0.0
    S.didle[b, d] = True
    S.dbusy[b, d] = now
    si[b, UP_DEV] -= 1
    S.idle_type[b, C.dev_type[d]] -= 1
    si[b, IDLE_UP] -= 1
    mttr = C.mttr[d]
    _push(S, b, now + mttr * _fail_draw(S, b) if mttr > 0 else now, RECOVER, d, 0)


@_jit
def _on_recover(S, C, b, d):
    """Simulator._on_recover."""
    si = S.si
    S.dup[b, d] = True
    si[b, UP_DEV] += 1
    S.idle_type[b, C.dev_type[d]] += 1
    si[b, IDLE_UP] += 1
    _schedule_failure(S, C, b, d)


# ==================================================================== decisions
@_jit
def has_decision(S, C, b):
    """Simulator.has_decision: some window task can start on some idle, up device now."""
    si = S.si
    if si[b, QLEN] == 0 or si[b, IDLE_UP] == 0:
        return False
    K, D = C.ci[CI_K], C.ci[CI_D]
    n = si[b, QLEN] if si[b, QLEN] < K else K
    for k in range(n):
        kind = S.tkind[b, S.queue[b, k]]
        nreq = S.ktab[b, kind, 4]
        for d in range(D):
            if S.kdev[b, kind, d] and S.dup[b, d] and S.didle[b, d]:
                if nreq == 1 or S.idle_type[b, C.dev_type[d]] >= nreq:
                    return True
    return False


@_jit
def check_assignment(S, C, b, k, v, d):
    """Simulator.check_assignment: VALID, or the index of the reason in REASON_KEYS."""
    if k >= C.ci[CI_K] or k >= S.si[b, QLEN]:
        return 0
    kind = S.tkind[b, S.queue[b, k]]
    c = int(S.ktab[b, kind, 3])
    if C.slot_variant[c, v] < 0:
        return 1
    if not C.slot_runs[c, v, d]:
        return 2
    if C.slot_acc[c, v] < S.ktab[b, kind, 2]:
        return 3
    if C.slot_max_size[c, v] < S.ktab[b, kind, 0] + S.ktab[b, kind, 1]:
        return 4
    if not S.dup[b, d]:
        return 5
    if not S.didle[b, d]:
        return 6
    n = S.ktab[b, kind, 4]
    if n > 1 and S.idle_type[b, C.dev_type[d]] < n:
        return 7
    return VALID


@_jit
def _assign(S, C, b, k, v, d):
    """Simulator.assign (checked): start window task k with variant slot v on device d, plus
    n - 1 more idle devices of its type for an n-device task (same node first)."""
    sf, si = S.sf, S.si
    D = C.ci[CI_D]
    tid = S.queue[b, k]
    kind = S.tkind[b, tid]
    m = C.slot_variant[int(S.ktab[b, kind, 3]), v]
    nreq = int(S.ktab[b, kind, 4])
    devs = S.gdev[b]
    devs[0] = d
    nd = 1
    if nreq > 1:
        for i in range(D - 1):
            if nd >= nreq:
                break
            e = C.gang_pref[d, i]
            if e < 0:
                break
            if S.dup[b, e] and S.didle[b, e]:
                devs[nd] = e
                nd += 1
    load = 0.0
    for i in range(nd):
        x = _make_resident(S, C, b, m, devs[i])
        if x > load:
            load = x
    exec_t = S.ktab[b, kind, C.ci[CI_E0] + v * D + d]
    sigma = C.cf[CF_SIGMA]
    if sigma > 0:
        i = si[b, NOISE_POS]
        si[b, NOISE_POS] = i + 1
        exec_t *= math.exp(sigma * abs(S.noise[b, i]))
    start = sf[b, NOW]
    end = start + load + exec_t
    S.tstate[b, tid] = RUNNING
    S.tvar[b, tid] = m
    S.tacc[b, tid] = C.var_acc[m]
    si[b, C_QUEUED] -= 1
    si[b, C_RUNNING] += 1
    q = S.queue[b]
    n = si[b, QLEN]
    for i in range(k, n - 1):
        q[i] = q[i + 1]
    si[b, QLEN] = n - 1
    for i in range(nd):
        e = devs[i]
        S.dtask[b, e] = tid
        S.dbusy[b, e] = end
        S.dbtime[b, e] += end - start
        S.didle[b, e] = False
    si[b, BUSY_DEV] += nd
    S.idle_type[b, C.dev_type[d]] -= nd
    si[b, IDLE_UP] -= nd
    _push(S, b, end, FINISH, tid, S.treq[b, tid])


@_jit
def _make_resident(S, C, b, m, d):
    """Simulator._make_resident: ensure variant m is resident on idle device d, evicting the
    least recently used variants; returns the load time (0 if it was resident)."""
    si = S.si
    D = C.ci[CI_D]
    now = S.sf[b, NOW]
    res, last = S.resident[b], S.lastuse[b]
    idx = m * D + d
    if res[idx]:
        last[idx] = now
        return 0.0
    need = C.var_mem[m]
    cap = C.dev_mem[d]
    while S.dmem[b, d] + need > cap + 1e-9:
        victim = -1
        for x in range(C.ci[CI_M]):  # min over resident variants of (last use, index)
            if res[x * D + d] and (victim < 0 or last[x * D + d] < last[victim * D + d]):
                victim = x
        if victim < 0:
            si[b, STATUS] = ERR_MEMORY
            return 0.0
        res[victim * D + d] = False
        S.dmem[b, d] -= C.var_mem[victim]
        si[b, C_EVICT] += 1
    last[idx] = now
    S.dmem[b, d] += need
    res[idx] = True
    si[b, C_COLD] += 1
    return C.load_time[m, d]


# ==================================================================== one env step
@_jit
def _recent_arrival_rate(S, b, window):
    """Simulator.recent_arrival_rate (the pointer restarts at each episode)."""
    si = S.si
    n = si[b, NEXT_JOB]
    lo = S.sf[b, NOW] - window
    i = si[b, RATE_PTR]
    while i < n and S.jarr[b, i] < lo:
        i += 1
    si[b, RATE_PTR] = i
    return (n - i) / window if window > 0 else 0.0


@_jit
def _encode(S, C, b):
    """SchedulingEnv._observation: the mask and the observation arrays of instance b."""
    sf, si = S.sf, S.si
    K = C.ci[CI_K]
    now = sf[b, NOW]
    q = si[b, QLEN]
    n = q if q < K else K
    ids = S.ids[b]
    for k in range(n):
        ids[k] = S.queue[b, k]
    for k in range(n, K):
        ids[k] = si[b, N_TASKS]  # the padding row
    backlog = q - K if q > K else 0
    rate = _recent_arrival_rate(S, b, C.cf[CF_RATE_WINDOW]) / sf[b, MEAN_RATE]
    up = si[b, UP_DEV]
    g0 = backlog / (backlog + K)
    g1 = min(now / sf[b, SPAN], 1.0)
    g2 = rate / (rate + 1.0)
    g3 = si[b, BUSY_DEV] / up if up else 0.0
    g4 = min(q / C.ci[CI_QCAP], 1.0)
    gangs = si[b, HAS_GANGS] != 0
    encode_into(S.mask[b], S.otasks[b], S.oest[b], S.odev[b], S.oglob[b], S.free_at[b], S.avail[b],
                now, ids, n, S.tkind[b], S.ttimes[b], S.ktab[b], S.kstat[b], S.kres[b], S.fk[b], S.dbusy[b],
                S.dup[b], S.didle[b], S.dmem[b], C.inv_mem, C.dev_type, S.idle_type[b], S.resident[b],
                C.dev_static, C.ci[CI_E0], C.ci[CI_V], C.ci[CI_D], C.cf[CF_TAU], C.ci[CI_COL_PRIO], C.ci[CI_T],
                gangs, g0, g1, g2, g3, g4)


@_jit
def _reset_stats(S, b):
    sf, si = S.sf, S.si
    sf[b, ST_DT] = sf[b, ST_SLOW] = sf[b, ST_BUSY] = sf[b, ST_ACC] = 0.0
    si[b, ST_COMPL] = si[b, ST_SLO] = si[b, ST_DROPS] = 0


@_jit
def _start_wait(S, C, b):
    """SchedulingEnv._wait / Simulator.step_time: the instant to run to, or stuck."""
    sf, si = S.sf, S.si
    h = C.cf[CF_HORIZON]
    t = _next_event_time(S, b)
    if h < t:
        t = h
    if not math.isfinite(t) or (t <= sf[b, NOW] and t >= h):
        si[b, STUCK] = 1
        return PH_POST
    sf[b, UNTIL] = t
    return PH_WAIT


@_jit
def step_instance(S, C, b):
    """SchedulingEnv.step (or, in phase PH_RESET, the end of SchedulingEnv.reset) for instance
    b, from the phase it is in to the next decision. The action is ``si[b, ACTION]``."""
    sf, si = S.sf, S.si
    h = C.cf[CF_HORIZON]
    ph = si[b, PHASE]
    if ph == PH_ACT:
        _reset_stats(S, b)
        sf[b, PENALTY] = 0.0
        a = si[b, ACTION]
        VD = C.ci[CI_V] * C.ci[CI_D]
        if a == C.ci[CI_K] * VD:
            ph = _start_wait(S, C, b)
        else:
            k = a // VD
            rest = a - k * VD
            v = rest // C.ci[CI_D]
            d = rest - v * C.ci[CI_D]
            reason = check_assignment(S, C, b, k, v, d)
            if reason == VALID:
                _assign(S, C, b, k, v, d)
                ph = PH_POST
            elif C.ci[CI_PENALIZE]:
                sf[b, PENALTY] = C.cf[CF_PENALTY]
                ph = _start_wait(S, C, b)
            else:
                si[b, STATUS] = ERR_INVALID
                si[b, REASON] = reason
                return
    if ph == PH_WAIT:
        if _run(S, C, b, sf[b, UNTIL], False) == 2:
            si[b, PHASE] = ph
            si[b, STATUS] = NEED_DRAWS
            return
        if math.isfinite(sf[b, UNTIL]):
            _advance_clock(S, b, sf[b, UNTIL])
        ph = PH_POST
    if ph == PH_POST:
        if (not _episode_done(S, b) and sf[b, NOW] < h and not si[b, STUCK]
                and not has_decision(S, C, b)):
            ph = PH_ADVANCE
        else:
            ph = PH_FINISH
    if ph == PH_ADVANCE or ph == PH_RESET:
        r = _run(S, C, b, h, True)
        if r == 2:
            si[b, PHASE] = ph
            si[b, STATUS] = NEED_DRAWS
            return
        if r == 1 and h < np.inf:
            _advance_clock(S, b, h)
        if ph == PH_RESET:
            _reset_stats(S, b)
            si[b, TERM] = si[b, TRUNC] = si[b, EP_DONE] = 0
            sf[b, REWARD] = 0.0
            _encode(S, C, b)
            si[b, PHASE] = PH_ACT
            return
        if not _episode_done(S, b) and sf[b, NOW] < h and not has_decision(S, C, b):
            si[b, STUCK] = 1
        ph = PH_FINISH
    # PH_FINISH
    term = _episode_done(S, b)
    si[b, TERM] = term
    si[b, TRUNC] = (not term) and (sf[b, NOW] >= h or si[b, STUCK] != 0)
    si[b, EP_DONE] = si[b, TERM] or si[b, TRUNC]
    cf = C.cf
    lat = -cf[CF_WLAT] * sf[b, ST_SLOW]
    slo = -cf[CF_WSLO] * si[b, ST_SLO]
    drop = -cf[CF_WDROP] * si[b, ST_DROPS]
    acc = cf[CF_WACC] * sf[b, ST_ACC]
    util = cf[CF_WUTIL] * sf[b, ST_BUSY]
    inv = -sf[b, PENALTY]
    sf[b, R_LAT], sf[b, R_SLO], sf[b, R_DROP], sf[b, R_ACC], sf[b, R_UTIL], sf[b, R_INV] = lat, slo, drop, acc, util, inv
    sf[b, REWARD] = 0.0 + lat + slo + drop + acc + util + inv
    _encode(S, C, b)
    si[b, PHASE] = PH_ACT


@njit(cache=True, nogil=True, parallel=True)
def step_batch(S, C, idx):
    """Run :func:`step_instance` on the instances ``idx``, in parallel over the cores."""
    for i in prange(idx.shape[0]):
        b = idx[i]
        S.si[b, STATUS] = OK
        step_instance(S, C, b)


@njit(cache=True, nogil=True)
def check_actions(S, C, actions, out_reason):
    """Reason code (VALID, or an index into REASON_KEYS) of each instance's action, without
    changing the state; the wait action is always valid."""
    VD = C.ci[CI_V] * C.ci[CI_D]
    wait = C.ci[CI_K] * VD
    for b in range(actions.shape[0]):
        a = actions[b]
        if a == wait:
            out_reason[b] = VALID
        else:
            k = a // VD
            rest = a - k * VD
            v = rest // C.ci[CI_D]
            out_reason[b] = check_assignment(S, C, b, k, v, rest - v * C.ci[CI_D])
