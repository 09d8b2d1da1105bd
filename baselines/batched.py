"""The heuristics over a leading batch axis: one decision for many instances of the batched simulator.

:class:`BatchedView` is :class:`baselines.base.DecisionView` for the instances ``rows`` of an
:class:`envs.batched.BatchedSimulator`: the same fields, with a leading axis (``mask``, ``est``,
``est_safe``, ``exec``, ``load``, ``cold``, ``runs`` are (R, K, V, D); ``deadline``, ``slack``,
... are (R, K); ``wait`` (R, D)). Every field is computed with the same elementwise arithmetic,
in the same order, as the per-instance view, so the arrays are bit-identical to it.

Each :class:`BatchedPolicy` is the rule of the registered heuristic of the same name, written as
an array program over the R rows. Where a rule takes "the first" of something (an ``argmin``,
``argmax``, ``lexsort``), the batched form takes the same one, so it returns the same action as
the per-instance rule at every decision (``tests/test_batched_policies.py`` checks this on every
built-in id). Rules that keep state across an episode (``round-robin``'s next device,
``adaptive``'s smallest SLO seen, ``random``'s generator) keep one per instance, reset with the
instance's episode seed.

Two rules are not fully vectorized: ``random`` draws from one generator per instance (its
stream is the per-instance rule's, so the draws are a loop over rows; the choice from them is
vectorized), and ``tetris``
normalises its score with means over each instance's own candidates (computed row by row,
numpy's summation order, which a masked batched sum would not reproduce). ``genetic`` and
``planner`` (a search per decision: a genetic algorithm, a CP-SAT model) have no batched form: the batched evaluator runs it on the reference simulator
(``evaluate.py --backend batched`` says so).

The arrays are numpy: the batched simulator has a CPU backend only (no CUDA backend yet), so
the rules run on the CPU next to it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
from numba import njit, prange

from baselines.base import NOISE_Z, rng_for
from envs.batched import dynamics as dyn

_TABLES: dict[int, tuple] = {}


def _tables(cl) -> tuple:
    """Per-capability tables of the cluster, contiguous, for the view kernel (cached)."""
    t = _TABLES.get(id(cl))
    if t is None or t[0] is not cl:
        t = (cl, np.ascontiguousarray(cl.slot_accuracy, dtype=np.float64),
             np.ascontiguousarray(cl.slot_variant, dtype=np.int64),
             np.ascontiguousarray(cl.slot_load, dtype=np.float64))
        _TABLES[id(cl)] = t
    return t[1:]


@njit(cache=True, nogil=True, parallel=True)
def _fill_view(rows, K, V, D, E0, factor, now_all, qlen_all, ids_all, tkind_all, ktab_all, kres_all, res_all, dup_all,
               dbusy_all, ttimes_all, slot_acc, slot_var, slot_load,
               n_out, est_o, safe_o, exec_o, load_o, cold_o, runs_o, dl_o, arr_o, prio_o, caps_o, size_o,
               raw_o, slack_o, slo_o, acc_o, var_o, wait_o):
    """Every field of the view, row by row, with the per-instance view's arithmetic (each
    element is the same IEEE operation sequence as the numpy expressions of
    ``base.DecisionView``, so the values are bit-identical)."""
    VD = V * D
    for j in prange(len(rows)):
        b = rows[j]
        now = now_all[b]
        q = qlen_all[b]
        n = q if q < K else K
        n_out[j] = n
        for d in range(D):
            x = dbusy_all[b, d] - now
            wait_o[j, d] = x if x > 0.0 else 0.0
        for k in range(K):
            t = ids_all[b, k]
            kid = tkind_all[b, t]
            present = k < n
            c = np.int64(ktab_all[b, kid, 3]) if present else 0
            caps_o[j, k] = c
            if present:
                dl, ar = ttimes_all[b, t, 1], ttimes_all[b, t, 0]
                dl_o[j, k], arr_o[j, k], prio_o[j, k] = dl, ar, ttimes_all[b, t, 2]
                size_o[j, k] = ktab_all[b, kid, 0] + ktab_all[b, kid, 1]
                x = dl - ar
                slo_o[j, k] = x if x > 1e-12 else 1e-12
            else:
                dl = np.inf
                dl_o[j, k], arr_o[j, k], prio_o[j, k], size_o[j, k], slo_o[j, k] = dl, 0.0, 0.0, 0.0, 1.0
            raw_o[j, k] = ktab_all[b, kid, 0]
            slack_o[j, k] = dl - now
            for v in range(V):
                var = slot_var[c, v] if present else -1
                acc_o[j, k, v] = slot_acc[c, v] if present else -np.inf
                var_o[j, k, v] = var
                m = var if var > 0 else 0
                for d in range(D):
                    e = v * D + d
                    up = dup_all[b, d] != 0
                    wu = wait_o[j, d] if up else np.inf
                    cold_w = 1.0 if res_all[b, kres_all[b, kid, e]] == 0 else 0.0
                    est = ktab_all[b, kid, E0 + e] + wu + cold_w * ktab_all[b, kid, E0 + VD + e]
                    ld = slot_load[c, v, d]
                    cold = res_all[b, m * D + d] == 0
                    load_o[j, k, v, d] = ld
                    cold_o[j, k, v, d] = cold
                    finite = np.isfinite(est)
                    ex = (est - wait_o[j, d]) - (1.0 if cold else 0.0) * ld if finite else np.inf
                    exec_o[j, k, v, d] = ex
                    runs = finite and up
                    runs_o[j, k, v, d] = runs
                    em = est if runs else np.inf
                    est_o[j, k, v, d] = em
                    safe_o[j, k, v, d] = em + (factor - 1.0) * ex if factor != 1.0 else em


class BatchedView:
    """The decision arrays of the instances ``rows`` of a batched simulator (see the module)."""

    def __init__(self, bsim, rows: np.ndarray):
        S, cl = bsim.v, bsim.cluster
        self.bsim, self.cluster, self.rows = bsim, cl, rows
        K, V, D = self.K, self.V, self.D = bsim.K, bsim.V, bsim.D
        R = self.R = len(rows)
        self.now = S.sf[rows, dyn.NOW]
        self.qlen = S.si[rows, dyn.QLEN].astype(np.int64)
        self.mask = S.mask[rows, :-1].reshape(R, K, V, D)
        sigma = float(bsim.cf[dyn.CF_SIGMA])
        factor = math.exp(NOISE_Z * sigma) if sigma > 0 else 1.0
        tabs = _tables(cl)
        f4 = lambda: np.empty((R, K, V, D))  # noqa: E731
        b4 = lambda: np.empty((R, K, V, D), dtype=np.bool_)  # noqa: E731
        f2 = lambda: np.empty((R, K))  # noqa: E731
        self.n = np.empty(R, dtype=np.int64)
        self.est, self.est_safe, self.exec, self.load = f4(), f4(), f4(), f4()
        self.cold, self.runs = b4(), b4()
        self.deadline, self.arrival, self.priority, self.size, self.raw_size, self.slack, self.slo = (
            f2(), f2(), f2(), f2(), f2(), f2(), f2())
        self.caps = np.empty((R, K), dtype=np.int64)
        self.acc = np.empty((R, K, V))
        self.variant = np.empty((R, K, V), dtype=np.int64)
        self.wait = np.empty((R, D))
        _fill_view(rows, K, V, D, int(bsim.ci[dyn.CI_E0]), factor, S.sf[:, dyn.NOW], S.si[:, dyn.QLEN], S.ids, S.tkind, S.ktab,
                   S.kres, S.resident, S.dup, S.dbusy, S.ttimes, *tabs,
                   self.n, self.est, self.est_safe, self.exec, self.load, self.cold, self.runs,
                   self.deadline, self.arrival, self.priority, self.caps, self.size, self.raw_size, self.slack,
                   self.slo, self.acc, self.variant, self.wait)
        self.present = np.arange(K)[None, :] < self.n[:, None]
        self.dev_up = S.dup[rows].astype(bool)
        self.dev_idle = S.didle[rows].astype(bool)
        self.resident = S.resident[rows].astype(bool).reshape(R, cl.num_variants, D)
        self.mem_used = S.dmem[rows]  # (R, D)
        self.busy_time = S.dbtime[rows]  # (R, D)

    @property
    def wait_action(self) -> int:
        return self.K * self.V * self.D

    def actions(self, k, v, d) -> np.ndarray:
        return (np.asarray(k, dtype=np.int64) * self.V + v) * self.D + d

    def task_has_valid(self) -> np.ndarray:
        return self.mask.any(axis=(2, 3))

    def decidable(self) -> np.ndarray:
        """(R,) some assignment is valid (``Policy.act`` calls the rule only then)."""
        return (self.n > 0) & self.mask.reshape(self.R, -1).any(axis=1)


# ====================================================================== shared helpers
def argmin_flat(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of (R, X, Y), the (x, y) of the first minimum (``base.argmin2`` per row)."""
    R, X, Y = a.shape
    return np.divmod(np.argmin(a.reshape(R, X * Y), axis=1), Y)


def fastest(est_k: np.ndarray, allowed: np.ndarray):
    """``base.fastest_completion`` per row: (v, d, found) of the allowed (V, D) option with the
    smallest estimate (``found`` False where no allowed option is finite)."""
    e = np.where(allowed, est_k, np.inf)
    v, d = argmin_flat(e)
    found = np.isfinite(e).reshape(len(e), -1).any(axis=1)
    return v, d, found


def first_lexmin(valid: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Per row of (R, X): the first index among ``valid`` minimising ``keys`` in order (the
    first key primary), i.e. ``idx[np.lexsort((..., keys[1][idx], keys[0][idx]))[0]]``."""
    sel = valid.copy()
    for key in keys:
        kk = np.where(sel, key, np.inf)
        best = kk.min(axis=1, keepdims=True)
        sel &= kk == best
    return np.argmax(sel, axis=1)


# ====================================================================== policies
class BatchedPolicy(ABC):
    """A heuristic's rule over the instances of a batched simulator. ``reset(rows, seeds)`` at
    the start of those instances' episodes; ``act(bsim, rows)`` returns (R,) actions."""

    name = "policy"

    def __init__(self, num_envs: int, seed=None, **kwargs):
        if kwargs:
            raise TypeError(f"{self.name}: unexpected options {sorted(kwargs)}")
        self.num_envs = int(num_envs)

    def reset(self, rows: np.ndarray, seeds) -> None:  # noqa: B027 (a hook)
        """Start of the episodes of instances ``rows`` (reset seeds ``seeds``)."""

    def act(self, bsim, rows: np.ndarray | None = None) -> np.ndarray:
        rows = np.arange(bsim.num_envs) if rows is None else np.asarray(rows, dtype=np.int64)
        view = BatchedView(bsim, rows)
        out = np.full(len(rows), view.wait_action, dtype=np.int64)
        ok = np.flatnonzero(view.decidable())
        if len(ok):
            sub = view if len(ok) == len(rows) else _subview(view, ok)
            out[ok] = self.decide(sub)
        return out

    @abstractmethod
    def decide(self, view: BatchedView) -> np.ndarray:
        """(R,) actions of the view's rows, each with some valid assignment (wait allowed)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} (batched)>"


def _subview(view: BatchedView, ok: np.ndarray) -> BatchedView:
    sub = object.__new__(BatchedView)
    for name, value in vars(view).items():
        if isinstance(value, np.ndarray) and value.ndim >= 1 and value.shape[0] == view.R:
            value = value[ok]
        setattr(sub, name, value)
    sub.R = len(ok)
    return sub


class BatchedRandom(BatchedPolicy):
    name = "random"

    def __init__(self, num_envs, seed=None, **kw):
        super().__init__(num_envs, seed, **kw)
        self.rngs = [rng_for(seed, 0x52A4D)] * self.num_envs

    def reset(self, rows, seeds):
        for b, s in zip(np.asarray(rows).tolist(), seeds):
            self.rngs[b] = rng_for(s, 0x52A4D)

    def act(self, bsim, rows=None):  # runs even where only waiting is valid, as the per-instance rule
        rows = np.arange(bsim.num_envs) if rows is None else np.asarray(rows, dtype=np.int64)
        return self._choose(bsim, rows)

    def decide(self, view):
        return self._choose(view.bsim, view.rows)

    def _choose(self, bsim, rows):
        masks = bsim.v.mask[rows]
        counts = masks.sum(axis=1).tolist()
        # rng.choice(valid) draws rng.integers(0, len(valid)) and indexes valid with it (the
        # same stream: tests/test_batched_policies.py); the draw-th valid action is found with
        # one cumulative sum over the rows.
        draws = np.array([self.rngs[b].integers(0, c) for b, c in zip(rows.tolist(), counts)], dtype=np.int64)
        return np.argmax(np.cumsum(masks, axis=1) > draws[:, None], axis=1).astype(np.int64)


class BatchedFifo(BatchedPolicy):
    name = "fifo"

    def decide(self, view):
        k = np.argmax(view.task_has_valid(), axis=1)
        r = np.arange(view.R)
        v, d, found = fastest(view.est[r, k], view.mask[r, k])
        return np.where(found, view.actions(k, v, d), view.wait_action)


class _DeviceFirst(BatchedPolicy):
    """Pick a device first, then the oldest task it can start (round-robin, least-loaded)."""

    @abstractmethod
    def device(self, view, usable) -> np.ndarray:
        """(R,) the device each row assigns to, among its ``usable`` (R, D) ones."""

    def decide(self, view):
        usable = view.mask.any(axis=(1, 2))  # (R, D)
        d = self.device(view, usable)
        r = np.arange(view.R)
        col = view.mask[r, :, :, d]  # (R, K, V)
        k = np.argmax(col.any(axis=2), axis=1)
        allowed = np.zeros((view.R, view.V, view.D), dtype=bool)
        allowed[r, :, d] = col[r, k]
        v, d2, found = fastest(view.est[r, k], allowed)
        self.chosen(view, d2)
        return np.where(found, view.actions(k, v, d2), view.wait_action)

    def chosen(self, view, d):  # noqa: B027 (a hook)
        pass


class BatchedRoundRobin(_DeviceFirst):
    name = "round-robin"

    def __init__(self, num_envs, seed=None, **kw):
        super().__init__(num_envs, seed, **kw)
        self.next_device = np.zeros(self.num_envs, dtype=np.int64)

    def reset(self, rows, seeds):
        self.next_device[rows] = 0

    def device(self, view, usable):
        D = view.D
        order = (self.next_device[view.rows][:, None] + np.arange(D)[None, :]) % D  # (R, D)
        first = np.argmax(np.take_along_axis(usable, order, axis=1), axis=1)
        return order[np.arange(view.R), first]

    def chosen(self, view, d):
        self.next_device[view.rows] = (d + 1) % view.D


class BatchedLeastLoaded(_DeviceFirst):
    name = "least-loaded"

    def device(self, view, usable):
        return np.argmin(np.where(usable, view.busy_time, np.inf), axis=1)


class BatchedSjf(BatchedPolicy):
    name = "sjf"

    def decide(self, view):
        shortest = np.where(view.mask, view.est, np.inf).min(axis=(2, 3))
        k = np.argmin(shortest, axis=1)
        r = np.arange(view.R)
        v, d, found = fastest(view.est[r, k], view.mask[r, k])
        return np.where(found, view.actions(k, v, d), view.wait_action)


class BatchedEdf(BatchedPolicy):
    name = "edf"

    def decide(self, view):
        dl = np.where(view.task_has_valid(), view.deadline, np.inf)
        k = np.argmin(dl, axis=1)
        r = np.arange(view.R)
        v, d, found = fastest(view.est[r, k], view.mask[r, k])
        return np.where(found, view.actions(k, v, d), view.wait_action)


class BatchedPriorityGreedy(BatchedPolicy):
    name = "priority-greedy"

    def decide(self, view):
        cl = view.cluster
        r = np.arange(view.R)
        prio = np.where(view.task_has_valid(), view.priority, -np.inf)
        k = np.argmax(prio, axis=1)
        allowed = view.mask[r, k]  # (R, V, D)
        ok = allowed & (view.est_safe[r, k] <= view.slack[r, k][:, None, None])
        has_ok = ok.reshape(view.R, -1).any(axis=1)
        # No option meets the deadline: the earliest-finishing valid option.
        v0, d0 = argmin_flat(np.where(allowed, view.est[r, k], np.inf))
        # Otherwise the least complex variant (memory, then accuracy, then index) on the
        # smallest device (memory capacity, then completion, then index) meeting the deadline.
        var = view.variant[r, k]  # (R, V)
        mem = np.where(var >= 0, cl.var_memory[np.maximum(var, 0)], np.inf)
        v1 = first_lexmin(ok.any(axis=2), mem, view.acc[r, k])
        devmem = np.broadcast_to(cl.dev_memory[None, :], (view.R, view.D))
        d1 = first_lexmin(ok[r, v1], devmem, view.est[r, k, v1])
        v, d = np.where(has_ok, v1, v0), np.where(has_ok, d1, d0)
        return view.actions(k, v, d)


class BatchedTetris(BatchedPolicy):
    name = "tetris"

    def __init__(self, num_envs, seed=None, epsilon: float = 1.0, **kw):
        super().__init__(num_envs, seed, **kw)
        self.epsilon = float(epsilon)

    def decide(self, view):
        cl = view.cluster
        R = view.R
        cand = view.mask & (view.est_safe <= view.slack[:, :, None, None])
        none = ~cand.reshape(R, -1).any(axis=1)
        cand[none] = view.mask[none]
        var = np.maximum(view.variant, 0)  # (R, K, V)
        mem = cl.var_memory[var][:, :, :, None]  # (R, K, V, 1)
        cap = cl.dev_memory[None, None, None, :]
        res = view.resident[np.arange(R)[:, None, None], var]  # (R, K, V, D)
        free = (cap - view.mem_used[:, None, None, :]) + mem * res
        align = (mem / cap) * (free / cap) + 1.0
        short = view.est / view.slo[:, :, None, None]
        # Means over each row's candidates, in numpy's own summation order for that row.
        eps = np.empty(R)
        for i in range(R):
            c = cand[i]
            eps[i] = self.epsilon * align[i][c].mean() / max(short[i][c].mean(), 1e-12)
        score = np.where(cand, align - eps[:, None, None, None] * short, -np.inf)
        flat = np.argmax(score.reshape(R, -1), axis=1)
        return flat  # (k * V + v) * D + d is the flat index itself


# ====================================================================== completion-time placement
MCT, INFAAS, CLIPPER_HIGH, CLIPPER_LOW, ADAPTIVE, PRICED = range(6)


@njit(cache=True, nogil=True, inline="always")
def _argmin_vd(e, ok, v, D, use_ok):
    """First d minimising e[v, d] (over ok[v, d] if use_ok; inf elsewhere), np.argmin's choice."""
    best, bd = np.inf, 0
    for d in range(D):
        x = e[v, d] if (ok[v, d] or not use_ok) else np.inf
        if x < best:
            best, bd = x, d
    return bd


@njit(cache=True, nogil=True, parallel=True)
def _completion_time(rule, n, runs, est, est_safe, exec_, cold, load, mask, slack, acc, amort, capok, fast,
                     price, slo, skip, V, D, wait_action, out):
    """``heuristics._CompletionTimePolicy.decide`` and the ``choose`` of each rule, per row: tasks
    oldest first, each picks (v, d) over the up devices with the work reserved so far added;
    an idle choice is the action, a busy one reserves its work on that device."""
    for j in prange(len(n)):
        extra = np.zeros(D)
        e = np.empty((V, D))
        es = np.empty((V, D))
        ok = np.zeros((V, D), dtype=np.bool_)
        out[j] = wait_action
        for k in range(n[j]):
            anyrun = False
            for v in range(V):
                for d in range(D):
                    r = runs[j, k, v, d]
                    anyrun = anyrun or r
                    e[v, d] = est[j, k, v, d] + extra[d] if r else np.inf
                    es[v, d] = est_safe[j, k, v, d] + extra[d] if r else np.inf
            if not anyrun:
                continue
            # mct: the first (v, d) of least completion (np.argmin over the flattened array)
            best, bv, bd = np.inf, 0, 0
            for v in range(V):
                for d in range(D):
                    if e[v, d] < best:
                        best, bv, bd = e[v, d], v, d
            found = True
            if rule == INFAAS:
                anyok = False
                for v in range(V):
                    for d in range(D):
                        ok[v, d] = es[v, d] <= slack[j, k]
                        anyok = anyok or ok[v, d]
                if anyok:
                    bc, cv = np.inf, 0
                    for v in range(V):
                        c, rowok = np.inf, False
                        for d in range(D):
                            x = exec_[j, k, v, d]
                            x = x if np.isfinite(x) else np.inf
                            if x < c:
                                c = x
                            rowok = rowok or ok[v, d]
                        if not rowok:
                            c = np.inf
                        if c < bc:
                            bc, cv = c, v
                    bv = cv
                    bd = _argmin_vd(e, ok, bv, D, True)
            elif rule == CLIPPER_HIGH or rule == CLIPPER_LOW:
                found = False
                for v in range(V):
                    usable = False
                    for d in range(D):
                        usable = usable or np.isfinite(e[v, d])
                    if usable:
                        bv = v
                        found = True
                        if rule == CLIPPER_LOW:
                            break
                if found:
                    bd = _argmin_vd(e, ok, bv, D, False)
            elif rule == ADAPTIVE or rule == PRICED:  # adaptive: price 0, no skipping
                hopeless = skip
                if skip:
                    for v in range(V):
                        for d in range(D):
                            warm = e[v, d] - (1.0 if cold[j, k, v, d] else 0.0) * load[j, k, v, d]
                            hopeless = hopeless and not warm <= slack[j, k]
                if hopeless:
                    found = False  # skipped: dropped at its deadline
                elif not fast[j]:
                    anyok = False
                    for v in range(V):
                        for d in range(D):
                            ok[v, d] = (amort[j, k, v, d] + extra[d] <= slack[j, k]) and capok[j, k, v, d]
                            anyok = anyok or ok[v, d]
                    if anyok:  # the variant of best accuracy - price x device-seconds / SLO
                        bs, sv = -np.inf, 0
                        for v in range(V):
                            rowok, c = False, np.inf
                            for d in range(D):
                                if ok[v, d]:
                                    rowok = True
                                    x = exec_[j, k, v, d] + (1.0 if cold[j, k, v, d] else 0.0) * load[j, k, v, d]
                                    if x < c:
                                        c = x
                            sc = acc[j, k, v] - price[j] * c / slo[j, k] if rowok else -np.inf
                            if sc > bs:
                                bs, sv = sc, v
                        bv = sv
                        bd = _argmin_vd(e, ok, bv, D, True)
            if not found:
                continue
            if mask[j, k, bv, bd]:
                out[j] = (k * V + bv) * D + bd
                break
            extra[bd] += exec_[j, k, bv, bd] + (1.0 if cold[j, k, bv, bd] else 0.0) * load[j, k, bv, bd]


class _CompletionTime(BatchedPolicy):
    """Tasks oldest first; each picks (v, d) over every up device by the rule's choice; an idle
    choice is started, a busy one reserved (``heuristics._CompletionTimePolicy``). The loop is
    compiled (:func:`_completion_time`), one row per instance."""

    rule = MCT

    def prepare(self, view):
        """(amortised, cap, fast) arrays of ``adaptive``; placeholders for the other rules."""
        z = np.zeros((1, 1, 1, 1))
        return z, z.astype(bool), np.zeros(view.R, dtype=bool)

    def pricing(self, view):
        """(price per row, skip hopeless) of ``priced``; placeholders for the other rules."""
        return np.zeros(view.R), False

    def decide(self, view):
        amort, capok, fast = self.prepare(view)
        price, skip = self.pricing(view)
        out = np.empty(view.R, dtype=np.int64)
        _completion_time(self.rule, view.n, view.runs, view.est, view.est_safe, view.exec, view.cold, view.load,
                         np.ascontiguousarray(view.mask), view.slack, view.acc, amort, capok, fast, price, view.slo,
                         skip, view.V, view.D, view.wait_action, out)
        return out


class BatchedMct(_CompletionTime):
    name = "mct"
    rule = MCT


class BatchedInfaas(_CompletionTime):
    name = "infaas"
    rule = INFAAS


class BatchedClipperHighAcc(_CompletionTime):
    name = "clipper-high-acc"
    rule = CLIPPER_HIGH


class BatchedClipperLowAcc(_CompletionTime):
    name = "clipper-low-acc"
    rule = CLIPPER_LOW


class BatchedAdaptive(_CompletionTime):
    """``adaptive`` (``heuristics.AdaptivePolicy``); the reference latency of each window task
    comes from ``Cluster.reference_times`` (the same numbers as its cached scalar method)."""

    name = "adaptive"
    rule = ADAPTIVE

    def __init__(self, num_envs, seed=None, threshold: float | None = None, occupancy: float | None = None, **kw):
        super().__init__(num_envs, seed, **kw)
        self._given = {"threshold": threshold, "occupancy": occupancy}
        self._params: dict | None = None
        self.min_slo = np.full(self.num_envs, np.inf)
        self._floor: float | None = None

    def _defaults(self) -> dict:
        from baselines.heuristics import AdaptivePolicy

        return {"threshold": AdaptivePolicy.DEFAULT_THRESHOLD, "occupancy": AdaptivePolicy.DEFAULT_OCCUPANCY}

    def _resolve(self, scenario) -> dict:
        """The parameters as the per-instance rule resolves them: keyword arguments, then
        ``baselines/tuned.yml`` for the scenario, then the class defaults (on the first
        decision, when the scenario is known)."""
        from baselines.tuned import tuned

        if self._params is None:
            name = getattr(scenario, "name", None)
            p = {**self._defaults(), **tuned("adaptive", name)}
            if self.name != "adaptive":
                p.update(tuned(self.name, name))
            p.update({k: v for k, v in self._given.items() if v is not None})
            self._params = p
            self.threshold, self.occupancy = float(p["threshold"]), float(p["occupancy"])
        return self._params

    def reset(self, rows, seeds):
        self.min_slo[rows] = np.inf

    def _reference(self, cl, caps: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        out = np.full(caps.shape, np.nan)
        for c in np.unique(caps).tolist():
            sel = caps == c
            try:
                out[sel] = cl.reference_times(cl.capabilities[c], sizes[sel])
            except ValueError:
                pass
        return out

    def _floor_of(self, cl) -> float:
        if self._floor is None:
            vals = []
            for c in range(cl.num_caps):
                try:
                    vals.append(cl.reference_time(cl.capabilities[c], 1.0))
                except ValueError:
                    vals.append(math.nan)
            self._floor = min(vals)  # Python's min, as the per-instance rule takes it
        return self._floor

    def prepare(self, view):
        self._resolve(view.bsim.scenario)
        cl = view.cluster
        rows = view.rows
        # Smallest SLO seen (heuristics.AdaptivePolicy._update_min_slo) over the window's tasks.
        slo = np.where(view.present, view.deadline - view.arrival, np.inf)
        m = np.minimum(self.min_slo[rows], slo.min(axis=1))
        ref = self._reference(cl, view.caps, view.raw_size)
        floor = self._floor_of(cl)
        if floor > 0:
            with np.errstate(invalid="ignore", divide="ignore"):
                scaled = np.where(view.present & (ref > 0), slo / ref * floor, np.inf)
            m = np.minimum(m, scaled.min(axis=1))
        self.min_slo[rows] = m
        up = np.maximum(view.dev_up.sum(axis=1), 1)
        busy = (~view.dev_idle & view.dev_up).sum(axis=1)
        fast = (view.qlen + busy) / up > self.threshold
        cap = view.exec <= self.occupancy * m[:, None, None, None]
        return amortised_estimates(view), cap, fast


def amortised_estimates(view: BatchedView) -> np.ndarray:
    """(R, K, V, D) ``heuristics.amortised_estimates`` of every row."""
    cl = view.cluster
    free = cl.dev_memory[None, :] - view.mem_used  # (R, D)
    fits = cl.var_memory[np.maximum(view.variant, 0)][:, :, :, None] <= free[:, None, None, :]
    amortised = view.est_safe - np.where(fits, view.cold * view.load, 0.0)
    return np.where(view.runs, amortised, np.inf)


class BatchedPriced(BatchedAdaptive):
    """``priced`` (``heuristics.PricedPolicy``), its parameters resolved as ``adaptive``'s are."""

    name = "priced"
    rule = PRICED

    def __init__(self, num_envs, seed=None, threshold: float | None = None, occupancy: float | None = None,
                 price: float | None = None, skip_hopeless: bool | None = None, **kw):
        super().__init__(num_envs, seed, threshold=threshold, occupancy=occupancy, **kw)
        self._given.update(price=price, skip_hopeless=skip_hopeless)

    def _defaults(self) -> dict:
        from baselines.heuristics import PricedPolicy

        return {**super()._defaults(), "price": PricedPolicy.DEFAULT_PRICE, "skip_hopeless": PricedPolicy.DEFAULT_SKIP}

    def pricing(self, view):
        p = self._resolve(view.bsim.scenario)
        skip = bool(p["skip_hopeless"]) and bool(view.bsim.scenario.drop_expired)
        return np.full(view.R, float(p["price"])), skip


#: name -> batched rule, for every registered heuristic that has one (all but ``genetic`` and ``planner``).
BATCHED: dict[str, type[BatchedPolicy]] = {cls.name: cls for cls in (
    BatchedRandom, BatchedFifo, BatchedRoundRobin, BatchedLeastLoaded, BatchedSjf, BatchedEdf,
    BatchedPriorityGreedy, BatchedMct, BatchedInfaas, BatchedClipperHighAcc, BatchedClipperLowAcc,
    BatchedTetris, BatchedAdaptive, BatchedPriced,
)}


def has_batched(name: str) -> bool:
    return name in BATCHED


def make_batched(name: str, num_envs: int, **kwargs) -> BatchedPolicy:
    """The batched rule of heuristic ``name`` for ``num_envs`` instances; raises
    :class:`baselines.PolicyError` for a name with no batched form."""
    from baselines import REGISTRY, PolicyError

    if name not in BATCHED:
        if name in REGISTRY:
            raise PolicyError(f"policy '{name}' has no batched form (it runs on the reference simulator)")
        raise PolicyError(f"unknown policy '{name}' (batched: {', '.join(BATCHED)})")
    return BATCHED[name](num_envs, **kwargs)
