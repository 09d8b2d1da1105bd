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
stream is the per-instance rule's, so the draws are a loop over rows), and ``tetris``
normalises its score with means over each instance's own candidates (computed row by row,
numpy's summation order, which a masked batched sum would not reproduce). ``genetic`` (a search
per decision) has no batched form: the batched evaluator runs it on the reference simulator
(``evaluate.py --backend batched`` says so).

The arrays are numpy: the batched simulator has a CPU backend only (no CUDA backend yet), so
the rules run on the CPU next to it.
"""

from __future__ import annotations

import math

import numpy as np

from baselines.base import NOISE_Z, rng_for
from envs.batched import dynamics as dyn


class BatchedView:
    """The decision arrays of the instances ``rows`` of a batched simulator (see the module)."""

    def __init__(self, bsim, rows: np.ndarray):
        S, cl = bsim.v, bsim.cluster
        self.bsim, self.cluster, self.rows = bsim, cl, rows
        K, V, D = self.K, self.V, self.D = bsim.K, bsim.V, bsim.D
        R = self.R = len(rows)
        si, sf = S.si[rows], S.sf[rows]
        self.now = now = sf[:, dyn.NOW]  # (R,)
        q = si[:, dyn.QLEN].astype(np.int64)
        self.qlen = q
        self.n = n = np.minimum(q, K)
        self.mask = S.mask[rows, :-1].reshape(R, K, V, D)
        ids = S.ids[rows].astype(np.int64)  # (R, K), padding: the padding row
        r = np.arange(R)[:, None]
        rr = rows[:, None]
        kid = S.tkind[rr, ids].astype(np.int64)  # (R, K) shape row of each slot
        rows_k = S.ktab[rr, kid]  # (R, K, KT)
        E0, VD = bsim.ci[dyn.CI_E0], V * D
        w_exec = rows_k[:, :, E0:E0 + VD].reshape(R, K, V, D)
        w_load = rows_k[:, :, E0 + VD:].reshape(R, K, V, D)
        resident = S.resident[rows].astype(bool)  # (R, M*D)
        kres = S.kres[rr, kid].astype(np.int64)  # (R, K, VD)
        cold_w = ~np.take_along_axis(resident, kres.reshape(R, K * VD), axis=1).reshape(R, K, V, D)
        dev_up = S.dup[rows].astype(bool)  # (R, D)
        busy_until = S.dbusy[rows]
        self.dev_up = dev_up
        self.dev_idle = S.didle[rows].astype(bool)
        wait_up = np.where(dev_up, np.maximum(busy_until - now[:, None], 0.0), np.inf)
        est = w_exec + wait_up[:, None, None, :] + cold_w * w_load  # Simulator.estimates
        present = np.arange(K)[None, :] < n[:, None]
        self.present = present
        times = S.ttimes[rr, ids]  # (R, K, 4)
        deadline = np.where(present, times[:, :, 1], np.inf)
        arrival = np.where(present, times[:, :, 0], 0.0)
        priority = np.where(present, times[:, :, 2], 0.0)
        caps = np.where(present, rows_k[:, :, 3].astype(np.int64), 0)
        self.deadline, self.arrival, self.priority, self.caps = deadline, arrival, priority, caps
        self.size = np.where(present, rows_k[:, :, 0] + rows_k[:, :, 1], 0.0)
        self.raw_size = rows_k[:, :, 0]
        self.slack = deadline - now[:, None]
        self.slo = np.where(present, np.maximum(deadline - arrival, 1e-12), 1.0)
        self.acc = np.where(present[:, :, None], cl.slot_accuracy[caps], -np.inf)  # (R, K, V)
        self.variant = np.where(present[:, :, None], cl.slot_variant[caps], -1)  # (R, K, V)
        self.wait = np.maximum(busy_until - now[:, None], 0.0)  # (R, D)
        self.load = cl.slot_load[caps]  # (R, K, V, D)
        self.resident = resident.reshape(R, cl.num_variants, D)
        var = np.maximum(self.variant, 0)
        self.cold = ~self.resident[r[:, :, None], var]  # (R, K, V, D)
        finite = np.isfinite(est)
        with np.errstate(invalid="ignore"):
            self.exec = np.where(finite, est - self.wait[:, None, None, :] - self.cold * self.load, np.inf)
        self.runs = finite & dev_up[:, None, None, :]
        self.est = np.where(self.runs, est, np.inf)
        sigma = float(bsim.cf[dyn.CF_SIGMA])
        factor = math.exp(NOISE_Z * sigma) if sigma > 0 else 1.0
        self.est_safe = self.est + (factor - 1.0) * self.exec if factor != 1.0 else self.est
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
class BatchedPolicy:
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

    def decide(self, view: BatchedView) -> np.ndarray:
        """(R,) actions of the view's rows, each with some valid assignment (wait allowed)."""
        raise NotImplementedError

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

    def act(self, bsim, rows=None):
        rows = np.arange(bsim.num_envs) if rows is None else np.asarray(rows, dtype=np.int64)
        masks = bsim.v.mask[rows]
        return np.array([int(self.rngs[b].choice(np.flatnonzero(m))) for b, m in zip(rows.tolist(), masks)],
                        dtype=np.int64)


class BatchedFifo(BatchedPolicy):
    name = "fifo"

    def decide(self, view):
        k = np.argmax(view.task_has_valid(), axis=1)
        r = np.arange(view.R)
        v, d, found = fastest(view.est[r, k], view.mask[r, k])
        return np.where(found, view.actions(k, v, d), view.wait_action)


class _DeviceFirst(BatchedPolicy):
    """Pick a device first, then the oldest task it can start (round-robin, least-loaded)."""

    def device(self, view, usable):
        raise NotImplementedError

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
class _CompletionTime(BatchedPolicy):
    """Tasks oldest first; each picks (v, d) over every up device by :meth:`choose`; an idle
    choice is started, a busy one reserved (``heuristics._CompletionTimePolicy``)."""

    def prepare(self, view):  # noqa: B027 (a hook)
        pass

    def choose(self, view, k, est, est_safe, extra, r):
        """(v, d, found) for slot k of rows r given (n, V, D) estimates with reservations."""
        raise NotImplementedError

    def decide(self, view):
        R, K = view.R, view.K
        self.prepare(view)
        extra = np.zeros((R, view.D))
        out = np.full(R, view.wait_action, dtype=np.int64)
        pending = np.ones(R, dtype=bool)
        for k in range(K):
            live = pending & (k < view.n) & view.runs[:, k].reshape(R, -1).any(axis=1)
            r = np.flatnonzero(live)
            if not len(r):
                if not (pending & (k < view.n)).any():
                    break
                continue
            runs = view.runs[r, k]
            ex = extra[r][:, None, :]
            est = np.where(runs, view.est[r, k] + ex, np.inf)
            est_safe = np.where(runs, view.est_safe[r, k] + ex, np.inf)
            v, d, found = self.choose(view, k, est, est_safe, extra[r], r)
            r, v, d = r[found], v[found], d[found]
            start = view.mask[r, k, v, d]
            out[r[start]] = view.actions(k, v[start], d[start])
            pending[r[start]] = False
            rb, vb, db = r[~start], v[~start], d[~start]
            extra[rb, db] += view.exec[rb, k, vb, db] + view.cold[rb, k, vb, db] * view.load[rb, k, vb, db]
        return out


def _mct(est):
    v, d = argmin_flat(est)
    return v, d, np.ones(len(est), dtype=bool)


class BatchedMct(_CompletionTime):
    name = "mct"

    def choose(self, view, k, est, est_safe, extra, r):
        return _mct(est)


def _best_device(ok_v, est_v):
    return np.argmin(np.where(ok_v, est_v, np.inf), axis=1)


class BatchedInfaas(_CompletionTime):
    name = "infaas"

    def choose(self, view, k, est, est_safe, extra, r):
        n = len(r)
        ok = est_safe <= view.slack[r, k][:, None, None]
        has = ok.reshape(n, -1).any(axis=1)
        v0, d0, _ = _mct(est)
        ex = view.exec[r, k]
        cost = np.where(np.isfinite(ex), ex, np.inf).min(axis=2)  # (n, V)
        cost = np.where(ok.any(axis=2), cost, np.inf)
        v1 = np.argmin(cost, axis=1)
        i = np.arange(n)
        d1 = _best_device(ok[i, v1], est[i, v1])
        return np.where(has, v1, v0), np.where(has, d1, d0), np.ones(n, dtype=bool)


class _BatchedClipper(_CompletionTime):
    high = True

    def choose(self, view, k, est, est_safe, extra, r):
        n = len(r)
        usable = np.isfinite(est).any(axis=2)  # (n, V)
        found = usable.any(axis=1)
        V = usable.shape[1]
        v = (V - 1 - np.argmax(usable[:, ::-1], axis=1)) if self.high else np.argmax(usable, axis=1)
        d = np.argmin(est[np.arange(n), v], axis=1)
        return v, d, found


class BatchedClipperHighAcc(_BatchedClipper):
    name = "clipper-high-acc"
    high = True


class BatchedClipperLowAcc(_BatchedClipper):
    name = "clipper-low-acc"
    high = False


class BatchedAdaptive(_CompletionTime):
    """``adaptive`` (``heuristics.AdaptivePolicy``); the reference latency of each task shape
    is computed once per episode set-up with ``Cluster.reference_times`` (the same numbers)."""

    name = "adaptive"

    def __init__(self, num_envs, seed=None, threshold: float | None = None, occupancy: float | None = None, **kw):
        from baselines.heuristics import AdaptivePolicy

        super().__init__(num_envs, seed, **kw)
        self.threshold = AdaptivePolicy.DEFAULT_THRESHOLD if threshold is None else float(threshold)
        self.occupancy = AdaptivePolicy.DEFAULT_OCCUPANCY if occupancy is None else float(occupancy)
        self.min_slo = np.full(self.num_envs, np.inf)
        self._floor: float | None = None

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
        self._fast = (view.qlen + busy) / up > self.threshold
        free = cl.dev_memory[None, :] - view.mem_used  # (R, D)
        fits = cl.var_memory[np.maximum(view.variant, 0)][:, :, :, None] <= free[:, None, None, :]
        amortised = view.est_safe - np.where(fits, view.cold * view.load, 0.0)
        self._amortised = np.where(view.runs, amortised, np.inf)
        self._cap = view.exec <= self.occupancy * m[:, None, None, None]

    def choose(self, view, k, est, est_safe, extra, r):
        n = len(r)
        v0, d0, _ = _mct(est)
        ok = (self._amortised[r, k] + extra[:, None, :] <= view.slack[r, k][:, None, None]) & self._cap[r, k]
        slow = ~self._fast[r] & ok.reshape(n, -1).any(axis=1)
        acc = np.where(ok.any(axis=2), view.acc[r, k], -np.inf)
        v1 = np.argmax(acc, axis=1)
        i = np.arange(n)
        d1 = _best_device(ok[i, v1], est[i, v1])
        return np.where(slow, v1, v0), np.where(slow, d1, d0), np.ones(n, dtype=bool)


#: name -> batched rule, for every registered heuristic that has one (all but ``genetic``).
BATCHED: dict[str, type[BatchedPolicy]] = {cls.name: cls for cls in (
    BatchedRandom, BatchedFifo, BatchedRoundRobin, BatchedLeastLoaded, BatchedSjf, BatchedEdf,
    BatchedPriorityGreedy, BatchedMct, BatchedInfaas, BatchedClipperHighAcc, BatchedClipperLowAcc,
    BatchedTetris, BatchedAdaptive,
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
