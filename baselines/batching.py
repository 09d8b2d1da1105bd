"""Heuristics that batch: dynamic batching of DNN requests (a scenario's ``batching.sizes``).

A batch of ``n`` led by window task ``k`` with variant slot ``v`` takes ``k`` and the next
``n - 1`` queued tasks of its capability that ``v`` can serve (``envs.sim.simulator.Simulator``,
``batch_sizes``); it executes once, in ``alpha + beta * sum(size) + gamma * sum(size2)``, and
every member finishes at its end, so a batch meets its SLO only if it completes before the
earliest deadline of its members. :class:`BatchOptions` computes, for one window task, every
batch it could lead: sizes, members' earliest deadline, and the noise-free execution time of
each (batch size, variant slot, device).

* ``clockwork``: the batch expected to serve the most members by their deadlines (Clockwork).
* ``triton``: Triton's dynamic batcher, a maximum batch size and a maximum queue delay, with a
  fixed variant per capability.
* ``infaas-batch``: INFaaS choosing variant and batch size together, the cheapest per request
  that meets accuracy and SLO.

On a scenario without batching they behave as their batch-1 rules. Parameters per scenario
come from ``baselines/tuned.yml`` (chosen on training seeds by ``benchmarks/tune_baselines.py``)
where present, else the class defaults, which are the choices made there for serving-batched
(training seeds 0..29; evaluation seeds never used).
"""

from __future__ import annotations

import math

import numpy as np

from baselines.base import NOISE_Z, DecisionView, Policy


class BatchOptions:
    """The batches window task ``k`` could lead now, for every variant slot.

    ``sizes`` (B,) batch sizes of the action space; ``ok`` (B, V) the batch size is possible
    (enough batchable tasks queued, within ``max_batch``; size 1 always, for a task that can
    run at all); ``deadline`` (B, V) earliest deadline of the members (-inf where not
    possible); ``exec`` (B, V, D)
    noise-free execution time (inf where the pair cannot run or the size is not possible)."""

    def __init__(self, view: DecisionView, k: int, queue: dict):
        cl = view.cluster
        B, V = view.B, view.V
        sizes = np.array(view.batch_sizes)
        self.sizes = sizes
        c = int(view.caps[k])
        ok = np.zeros((B, V), dtype=bool)
        deadline = np.full((B, V), -np.inf)  # (never met where the batch is not possible)
        s1 = np.zeros((B, V))
        s2 = np.zeros((B, V))
        top = int(sizes[-1])
        #: (V, top) deadlines of the members in batch order (the first m form a batch of m),
        #: -inf past the batchable tasks queued.
        self.member_deadlines = md = np.full((V, top), -np.inf)
        caps, batchable, dl, z1, z2 = queue["caps"], queue["ok"], queue["deadline"], queue["size"], queue["size2"]
        same = caps[k:] == c
        limit = cl.slot_max_batch[c]  # (V,)
        for v in range(V):
            if view.variant[k, v] < 0:
                continue
            ok[0, v] = True
            deadline[0, v] = md[v, 0] = dl[k]
            s1[0, v], s2[0, v] = z1[k], z2[k]
            if B == 1 or not batchable[k, v]:
                continue
            pos = k + np.flatnonzero(same & batchable[k:, v])[:top]  # pos[0] == k
            n = len(pos)
            md[v, :n] = dl[pos]
            cmin = np.minimum.accumulate(dl[pos])
            c1, c2 = np.cumsum(z1[pos]), np.cumsum(z2[pos])
            for b in range(1, B):
                m = int(sizes[b])
                if m <= n and m <= limit[v]:
                    ok[b, v] = True
                    deadline[b, v] = cmin[m - 1]
                    s1[b, v], s2[b, v] = c1[m - 1], c2[m - 1]
        alpha, beta, gamma = cl.slot_alpha[c], cl.slot_beta[c], cl.slot_gamma[c]  # (V, D)
        with np.errstate(invalid="ignore"):
            ex = alpha[None] + beta[None] * s1[:, :, None] + gamma[None] * s2[:, :, None]
        runs = view.runs[k]  # (V, D): the task can run the pair on an up device
        self.ok = ok
        self.upto = np.arange(top)[None, :] < sizes[:, None]  # (B, top) member i is in batch b
        self.deadline = deadline
        self.exec = np.where(ok[:, :, None] & runs[None], ex, np.inf)

    def on_time(self, finish: np.ndarray) -> np.ndarray:
        """(B, V, D) int: members of each batch whose own deadline is at or after its
        ``finish`` time (B, V, D) (absolute; inf where not possible: 0 on time)."""
        meet = self.member_deadlines[None, :, None, :] >= finish[:, :, :, None]  # (B, V, D, top)
        meet &= self.upto[:, None, None, :]
        return meet.sum(axis=3)


def queue_arrays(view: DecisionView) -> dict:
    """Per queued task (queue order): capability, batchable per variant slot, deadline, sizes."""
    sim = view.sim
    q = np.array(sim.queue_ids, dtype=np.int64)
    kinds = sim._tkind[q]
    rows = sim._ktab[kinds]
    return {"caps": rows[:, 3].astype(np.int64), "ok": sim._kbatch[kinds], "deadline": sim._ttimes[q, 1],
            "size": rows[:, 0], "size2": rows[:, 1]}


class _BatchingPolicy(Policy):
    """Shared parts: parameters from ``baselines/tuned.yml``, the noise margin, and the
    completion estimate of a batch on each device (wait + reserved work + cold load + execution)."""

    DEFAULTS: dict = {}
    #: A rule made for scenarios with dynamic batching (without, its batch-1 rule; the final
    #: table of train.py leaves it out elsewhere).
    batching_rule = "dynamic"

    def __init__(self, env, seed=None, **params):
        from baselines.tuned import scenario_name, tuned

        unknown = set(params) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"{self.name}: unknown parameter(s) {sorted(unknown)} (known: {sorted(self.DEFAULTS)})")
        p = {**self.DEFAULTS, **tuned(self.name, scenario_name(env)),
             **{k: v for k, v in params.items() if v is not None}}
        for key, value in p.items():
            setattr(self, key, value)
        super().__init__(env, seed)

    def _completion(self, view: DecisionView, k: int, opts: BatchOptions, extra: np.ndarray, safe: bool):
        """(B, V, D) expected seconds from now to the batch's completion: device wait, work
        reserved in this decision, the cold-start load, execution. With ``safe``, the execution
        at the 95th percentile of the noise, and a cold load left out where the variant fits in
        the device's free memory without evicting anything: an investment (it stays resident
        for the next batches; Clockwork loads models ahead of demand), as ``adaptive`` does."""
        sigma = float(getattr(view.sim, "noise_sigma", 0.0))
        factor = math.exp(NOISE_Z * sigma) if (safe and sigma > 0) else 1.0
        load = view.cold[k] * view.load[k]  # (V, D)
        if safe:
            cl, sim = view.cluster, view.sim
            free = cl.dev_memory - sim.dev_memory_used
            fits = cl.var_memory[np.maximum(view.variant[k], 0)][:, None] <= free[None, :]
            load = np.where(fits, 0.0, load)
        start = view.wait + extra + load
        return start[None] + factor * opts.exec

    def _slot(self, view, k, variant: str | None = None) -> int:
        variant = self.variant if variant is None else variant
        vs = np.flatnonzero(view.variant[k] >= 0)
        if variant == "fastest":
            return int(vs[0])
        if variant == "most_accurate":
            return int(vs[-1])
        if variant == "median":
            return int(vs[len(vs) // 2])
        raise ValueError(f"{self.name}: variant must be 'fastest', 'median' or 'most_accurate', got {variant!r}")

    def _dispatch(self, view, k, v, d, b, opts: BatchOptions, extra):
        """The action if device ``d`` is free now, else reserve the batch's work on it (for
        the next tasks of this decision) and return None."""
        if view.mask[k, v, d]:
            return view.action(k, v, d, b)
        extra[d] += opts.exec[b, v, d] + view.cold[k, v, d] * view.load[k, v, d]
        return None


class ClockworkPolicy(_BatchingPolicy):
    """``clockwork``: the batch that serves the most requests on time (Gujarati et al.,
    "Serving DNNs like Clockwork: performance predictability from the bottom up", OSDI 2020:
    the controller issues, for a model's queue, the largest batch whose predicted completion
    meets its requests' deadlines, and drops requests that can no longer meet theirs).

    Tasks oldest first; for each, every (batch size, variant, device) over the devices that are
    up, busy ones included (their remaining time plus work reserved in this decision, as in
    ``mct``), with the execution at the 95th percentile of the noise and a cold load counted.
    A batch's members are fixed by the action space (the leader and the next batchable tasks),
    so where Clockwork would drop a request that cannot meet its deadline and batch the rest,
    this rule counts the members that would finish on time. With ``prefer: batch``, the option
    with the most members on time, then the most accurate variant, then the smaller batch; with
    ``prefer: accuracy``, the most on-time accuracy (members on time x variant accuracy), then
    the smaller batch; then the earliest completion. A busy device is reserved and the next
    task considered. A task none of whose options serves anyone on time is skipped when the
    scenario drops expired requests (a late completion is worth nothing; it expires in the
    queue), else served alone where it completes first. Clockwork serves the model it is
    given: ``variant`` = ``fastest``, ``median`` or ``most_accurate`` fixes the variant slot
    per capability (as ``triton``), ``any`` lets the rule above choose, and ``adaptive`` (what
    a serving engineer adds, Proteus-style accuracy scaling) is ``fastest`` while the backlog
    (queued tasks per device that is up) exceeds ``threshold``, ``any`` below it."""

    name = "clockwork"
    DEFAULTS = {"prefer": "batch", "variant": "fastest", "threshold": 2.0}

    def _choose(self, view, k, opts, done, on_time) -> tuple[int, int, int]:
        """(b, v, d) among the options with members on time (some have)."""
        good = on_time.max(axis=2)  # (B, V)
        b, v = self._pick(opts, good, np.where(np.isfinite(view.acc[k]), view.acc[k], 0.0))
        return b, v, int(np.argmin(np.where(on_time[b, v] == good[b, v], done[b, v], np.inf)))

    def _pick(self, opts, good, acc):
        """(b, v) among options with ``good`` (B, V) on-time members (at least one)."""
        B = len(opts.sizes)
        small = (B - np.arange(B))[:, None] * 1e-6  # tie-break: the smaller batch
        if self.prefer == "batch":
            score = good + acc[None, :] * 1e-3 + small
        elif self.prefer == "accuracy":
            score = good * acc[None, :] + small
        else:
            raise ValueError(f"clockwork: prefer must be 'batch' or 'accuracy', got {self.prefer!r}")
        score = np.where(good > 0, score, -np.inf)
        return np.unravel_index(int(np.argmax(score)), score.shape)

    def decide(self, view):
        queue = queue_arrays(view)
        extra = np.zeros(view.D)
        drop = view.sim.drop_expired
        variant = self.variant
        if variant == "adaptive":
            up = max(int(view.sim.dev_up.sum()), 1)
            variant = "fastest" if len(view.sim.queue_ids) / up > self.threshold else "any"
        for k in range(view.n):
            if not view.runs[k].any():
                continue
            opts = BatchOptions(view, k, queue)
            done = self._completion(view, k, opts, extra, safe=True)
            if variant != "any":
                keep = np.arange(view.V) == self._slot(view, k, variant)
                done = np.where(keep[None, :, None], done, np.inf)
            on_time = opts.on_time(view.now + done)  # (B, V, D)
            if on_time.max() > 0:
                b, v, d = self._choose(view, k, opts, done, on_time)
            elif drop:
                continue
            else:
                alone = self._completion(view, k, opts, extra, safe=False)[0]
                v, d = np.unravel_index(int(np.argmin(alone)), alone.shape)
                b = 0
            a = self._dispatch(view, k, int(v), int(d), int(b), opts, extra)
            if a is not None:
                return a
        return None


class TritonPolicy(_BatchingPolicy):
    """``triton``: the NVIDIA Triton Inference Server's dynamic batcher (its documented
    ``max_batch_size`` / ``preferred_batch_size`` and ``max_queue_delay_microseconds``): requests
    of a model queue until a batch of ``max_batch`` is ready or the oldest has waited
    ``max_delay`` x its SLO, then the largest batch available (at most ``max_batch``) runs on
    the free device where it completes first. Triton serves the model it is given: here one
    fixed variant per capability, ``variant`` = ``fastest``, ``median`` or ``most_accurate``
    (slot order); it does not look at deadlines. Capabilities are taken in the order of their
    oldest window task; a capability whose batch is not ready waits."""

    name = "triton"
    DEFAULTS = {"max_batch": 16, "max_delay": 0.1, "variant": "fastest"}

    def decide(self, view):
        queue = queue_arrays(view)
        seen = set()
        for k in range(view.n):
            c = int(view.caps[k])
            if c in seen or not view.runs[k].any():
                continue
            seen.add(c)
            v = self._slot(view, k)
            runs = view.runs[k, v]
            if not runs.any():  # the chosen variant cannot serve this task: the runnable one nearest it
                vs = np.flatnonzero(view.runs[k].any(axis=1))
                v = int(vs[np.argmin(np.abs(vs - v))])
            opts = BatchOptions(view, k, queue)
            fits = opts.ok[:, v] & (opts.sizes <= self.max_batch)
            b = int(np.flatnonzero(fits).max())
            full = opts.sizes[b] >= min(self.max_batch, opts.sizes[-1])
            waited = view.now - view.arrival[k]
            if not (full or waited >= self.max_delay * view.slo[k] or view.sim.next_event_time() == math.inf):
                continue
            idle = view.mask[k, v]
            if not idle.any():
                continue
            done = np.where(idle, self._completion(view, k, opts, np.zeros(view.D), safe=False)[b, v], np.inf)
            return view.action(k, v, int(np.argmin(done)), b)
        return None


class InfaasBatchPolicy(ClockworkPolicy):
    """``infaas-batch``: INFaaS choosing the variant and the batch size together (Romero et
    al., "INFaaS: automated model-less inference serving", USENIX ATC 2021: the cheapest
    variant configuration, batch size included, that meets the accuracy and latency targets).
    As ``clockwork`` (options, on-time members, reservations, skipping), but the option chosen
    is the one with the least device time per on-time request (execution / members on time;
    ties: more members on time, the more accurate variant); with ``accuracy_first``, the most
    accurate variant that serves anyone on time, at its cheapest option per on-time request."""

    name = "infaas-batch"
    DEFAULTS = {"accuracy_first": False}
    variant = "any"

    def _choose(self, view, k, opts, done, on_time) -> tuple[int, int, int]:
        acc = np.where(np.isfinite(view.acc[k]), view.acc[k], 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            cost = np.where(on_time > 0, opts.exec / on_time, np.inf)  # (B, V, D)
        if self.accuracy_first:
            v = int(np.flatnonzero(np.isfinite(cost).any(axis=(0, 2))).max())
            cost = np.where(np.arange(view.V)[None, :, None] == v, cost, np.inf)
        score = -cost + 1e-9 * on_time + 1e-12 * acc[None, :, None]
        b, v, d = np.unravel_index(int(np.argmax(score)), score.shape)
        return int(b), int(v), int(d)
