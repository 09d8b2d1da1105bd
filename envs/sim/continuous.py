"""Continuous batching of LLM requests (Orca / vLLM-style), iteration by iteration.

A device serving a continuous-batching variant (one with ``kv_mb_per_token``) runs many
requests at once. The scheduler's decision is which variant and device a request *joins*, and
when; the device then serves it:

* **One variant per device.** A device serves the requests of one variant at a time, its
  weights resident alone (joining a device that holds another variant loads this one and evicts
  the others, counted as cold start and evictions); the rest of its memory is the KV cache:
  ``floor((memory_gb - variant memory_gb) * 1000 / kv_mb_per_token)`` tokens
  (:attr:`envs.sim.cluster.Cluster.kv_tokens`). A device holds at most ``max_batch`` requests
  (running or waiting); while it holds any, only its variant may join it.
* **Iterations.** At each iteration boundary the device first admits waiting requests in join
  order (FCFS, the first that does not fit stops admission), each taking KV for its prompt (plus
  the tokens it had generated before a preemption) and the token it will emit. If it admitted
  any, the next iteration is a *prefill* of all of them together: ``alpha + beta * T`` for ``T``
  prompt tokens, during which the running requests wait (vLLM's default, prefill-first); it
  emits each admitted request's next token (for a new request its first token: the time to first
  token, TTFT). Otherwise it is a *decode* iteration of the ``n`` running requests, one token
  each: ``gamma + delta * (n - 1)``, each taking one more token of KV. A request of ``O`` output
  tokens is done after its prefill and ``O - 1`` decode iterations, when its KV is freed.
* **Memory.** When the next decode iteration's tokens do not fit in the free KV cache, the most
  recently joined running request is *preempted*: its KV is freed, it keeps the tokens it has
  generated, goes back to the front of the device's waiting requests and is recomputed (its
  prompt plus those tokens prefilled again) when memory allows: vLLM's recompute preemption,
  counted in ``preemptions``.
* **Time.** Between two changes of a device's batch every decode iteration takes the same time,
  so the simulator does not visit each iteration: it schedules one event at the next instant
  something changes (a request finishes, the KV cache runs out, or a request joined and waits
  for the next iteration boundary). Each prefill iteration and each run of decode iterations
  draws one service-noise factor, which multiplies its iteration time.
* **Failures.** A failing device sends every request it holds back to the cluster's queue,
  their progress lost (``requeues``); nothing is lost from the accounting.

A lone request of prompt ``P`` and ``O`` output tokens takes ``alpha + beta * P + gamma * (O -
1)`` (plus a load if cold): the ideal time the slowdown and the bounds use; batching only adds
to it. The calibration (Splitwise's measured Llama-2-70B prompt and token times per batch size)
and its held-out check are in ``benchmarks/fidelity.py``.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from envs.sim.model import QUEUED, RUNNING
from envs.sim.simulator import STEP, Simulator

#: Phases of a device.
IDLE, LOAD, PREFILL, DECODE = 0, 1, 2, 3


class ContinuousBatchingSimulator(Simulator):
    """:class:`envs.sim.simulator.Simulator` whose devices serve continuous-batching variants
    (module docstring). ``max_batch``: requests one device holds at most (vLLM's
    ``max_num_seqs``). The action is the same (window slot, variant slot, device) triple: the
    request joins the device; the mask (:meth:`action_mask`) is exact: the variant can ever serve
    the request on the device, with all of its tokens in the KV cache; the device is up, holds
    fewer than ``max_batch`` requests, and serves no other variant."""

    def __init__(self, cluster, workload, *, max_batch: int = 64, slo_ttft: float | None = None,
                 slo_tpot: float | None = None, **kwargs):
        if not cluster.continuous:
            raise ValueError("ContinuousBatchingSimulator needs variants with kv_mb_per_token")
        if kwargs.get("batch_sizes", (1,)) != (1,):
            raise ValueError("continuous batching and dynamic batching (batch_sizes) are exclusive")
        if not (isinstance(max_batch, int) and max_batch >= 1):
            raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
        super().__init__(cluster, workload, **kwargs)
        self.max_batch = max_batch
        #: SLOs of the token metrics (:func:`envs.sim.metrics.token_metrics`; None: not measured).
        self.slo_ttft, self.slo_tpot = slo_ttft, slo_tpot

    # ================================================================== episode
    def reset(self, seed_seq: np.random.SeedSequence) -> None:
        super().reset(seed_seq)
        D = self.cluster.num_devices
        N = len(self._tstate)
        #: Per device: the variant it serves (-1: none, any may join), the requests it runs
        #: (admitted, in admission order), those in its current prefill, those waiting to be
        #: admitted (join order), its phase, the event version (stale events are ignored).
        self._cb_var = [-1] * D
        self._cb_run: list[list[int]] = [[] for _ in range(D)]
        self._cb_pre: list[list[int]] = [[] for _ in range(D)]
        self._cb_wait: list[list[int]] = [[] for _ in range(D)]
        self._cb_phase = [IDLE] * D
        self._cb_ver = [0] * D
        self._cb_t0 = [0.0] * D  # start of the current decode run
        self._cb_tau = [0.0] * D  # its iteration time
        self._cb_iters = [0] * D  # its iterations until the next event
        self._cb_kv_used = [0.0] * D  # tokens of KV cache held
        self._cb_kv_cap = [0.0] * D  # tokens of KV cache with the current variant
        self._cb_busy_since = [0.0] * D
        #: Per task: tokens generated, tokens of KV held while admitted, time of the first token.
        self._tgen = [0] * N
        self._tctx = [0.0] * N
        self._tttft = [math.nan] * N
        self._tout = [0] * N  # output tokens (size2), filled in at join
        #: Integral over time of the decode batch size, and time spent decoding (all devices).
        self.decode_batch_area = 0.0
        self.decode_time = 0.0
        self._kv_tokens_l = self.cluster.kv_tokens.tolist()

    def _add_kinds(self, shapes, sources) -> None:
        for st, src in zip(shapes, sources):
            if st.devices_required != 1:
                raise ValueError(f"job from {src or 'workload'}: continuous batching serves single-device "
                                 f"requests, this one needs {st.devices_required} devices")
        super()._add_kinds(shapes, sources)

    # ================================================================== decisions
    def _refresh_window(self) -> None:
        if self._window_dirty:
            self._window_dirty = False
            self._dev_dirty = True
            self._build_window()
        if self._dev_dirty:
            self._dev_dirty = False
            cbv = np.array(self._cb_var)
            sv = self.cluster.slot_variant[self.w_caps]  # (K, V)
            compat = (cbv < 0)[None, None, :] | (sv[:, :, None] == cbv[None, None, :])
            self.mask = self.static_mask & self._avail & compat

    def has_decision(self) -> bool:
        if not self.queue_ids or self._idle_up == 0:
            return False
        return bool(self.action_mask().any())

    def check_assignment(self, k: int, v: int, d: int, b: int = 0) -> str | None:
        if b:
            return "no_batch"
        reason = super().check_assignment(k, v, d)
        if reason == "busy":
            return "batch_full"
        if reason is None:
            kind = self._tkind_l[self.queue_ids[k]]
            if not self._kstat[kind, v * self.cluster.num_devices + d]:
                return "no_profile"  # its tokens never fit in the device's KV cache
            m = self._slot_variant_l[self._kcap[kind]][v]
            if self._cb_var[d] >= 0 and self._cb_var[d] != m:
                return "other_variant"
        return reason

    def estimates(self) -> np.ndarray:
        """(K, V, D) estimated completion time from now of each candidate join (noise-free): the
        request's lone time, its decode iterations slowed by the requests the device already
        holds (``delta`` each), after the device drains if it serves another variant, plus a
        load if the variant is cold. ``inf`` where it can never run and on failed devices."""
        self._refresh_window()
        cl = self.cluster
        K, V = self.K, cl.num_slots
        cold = ~self.resident.ravel().take(self.w_resident_index()).reshape(K, V, -1)
        held = np.array([len(self._cb_run[d]) + len(self._cb_pre[d]) + len(self._cb_wait[d])
                         for d in range(cl.num_devices)], dtype=float)
        cbv = np.array(self._cb_var)
        sv = cl.slot_variant[self.w_caps]
        compat = (cbv < 0)[None, None, :] | (sv[:, :, None] == cbv[None, None, :])
        drain = np.maximum(self.dev_busy_until - self.now, 0.0)
        wait = np.where(self.dev_up, np.where(compat, 0.0, drain[None, None, :]), np.inf)
        delta = np.nan_to_num(cl.slot_delta[self.w_caps])  # (K, V, D)
        decode = np.maximum(self.w_size2 - 1.0, 0.0)[:, None, None]
        return self.w_exec + decode * delta * held[None, None, :] + wait + cold * self.w_load

    def assign(self, k: int, v: int, d: int, checked: bool = False, b: int = 0):
        """Request ``k`` of the window joins device ``d`` with variant slot ``v`` (module
        docstring). Raises ValueError with the reason if the join is invalid."""
        if not checked:
            reason = self.check_assignment(k, v, d, b)
            if reason is not None:
                from envs.sim.simulator import REASONS
                raise ValueError(f"invalid assignment (slot {k}, variant {v}, device {d}): {REASONS[reason]}")
        tid = self.queue_ids[k]
        kind = self._tkind_l[tid]
        m = self._slot_variant_l[self._kcap[kind]][v]
        now = self.now
        load = 0.0
        if self._cb_var[d] < 0:
            load = self._make_resident(m, d)
            self._cb_var[d] = m
            self._cb_kv_cap[d] = self._kv_tokens_l[m][d]
        self._tstate[tid] = RUNNING
        self._tstart[tid] = now
        self._tvariant[tid] = m
        self._tdevices[tid] = (d,)
        self._tacc[tid] = self._var_acc_l[m]
        self._tcold[tid] = load > 0
        self._tgen[tid] = 0
        self._tctx[tid] = 0.0
        self._tout[tid] = math.ceil(self._ktab[kind, 1])  # whole tokens, never fewer than size2
        c = self.counters
        c.queued -= 1
        c.running += 1
        del self.queue_ids[k]
        self._window_dirty = True
        self.queue_version += 1
        wait = self._cb_wait[d]
        first_waiting = not wait
        wait.append(tid)
        phase = self._cb_phase[d]
        if phase == IDLE:
            self._busy_on(d)
            self.devices[d].loading_until = now + load
            self._cb_phase[d] = LOAD
            self._schedule(d, now + load)  # admits at that instant (with the others joining then)
        elif phase == DECODE and first_waiting:  # cut the decode run at the next iteration boundary
            t0, tau = self._cb_t0[d], self._cb_tau[d]
            done = max(0, math.ceil((now - t0) / tau))  # iterations begun by now
            while t0 + done * tau < now:  # (rounding)
                done += 1
            if done < self._cb_iters[d]:
                self._cb_iters[d] = done
                self._schedule(d, self._cb_t0[d] + done * self._cb_tau[d])
        self._update_accept(d)
        from envs.sim.model import Task
        return Task(self, tid)

    # ================================================================== device state
    def _schedule(self, d: int, t: float) -> None:
        self._cb_ver[d] += 1
        self._seq += 1
        heapq.heappush(self._events, (t, self._seq, STEP, d, self._cb_ver[d]))

    def _held(self, d: int) -> int:
        return len(self._cb_run[d]) + len(self._cb_pre[d]) + len(self._cb_wait[d])

    def _update_accept(self, d: int) -> None:
        """Keep the availability arrays (a device accepts joins: up and below ``max_batch``)."""
        ok = self.devices[d].up and self._held(d) < self.max_batch
        if ok == bool(self._avail[d]):
            self.dev_idle[d] = self._cb_phase[d] == IDLE
            return
        self._avail[d] = ok
        tt = self._dev_type_l[d]
        if ok:
            self._avail_bits |= 1 << d
            self._idle_up += 1
            self._idle_by_type[tt] += 1
        else:
            self._avail_bits &= ~(1 << d)
            self._idle_up -= 1
            self._idle_by_type[tt] -= 1
        self.dev_idle[d] = self._cb_phase[d] == IDLE
        self._dev_dirty = True
        self.dev_version += 1

    def _busy_on(self, d: int) -> None:
        self._cb_busy_since[d] = self.now
        self._busy_devices += 1
        self.dev_idle[d] = False
        self._dev_dirty = True
        self.dev_version += 1

    def _busy_off(self, d: int) -> None:
        dev = self.devices[d]
        dev.busy_time += self.now - self._cb_busy_since[d]
        self._busy_devices -= 1
        self._cb_phase[d] = IDLE
        self._cb_var[d] = -1
        self.dev_idle[d] = True
        self.dev_busy_until[d] = self.now
        dev.busy_until = self.now
        self._dev_dirty = True
        self.dev_version += 1

    def busy_seconds(self) -> list[float]:
        """Busy seconds of each device up to now (a device is busy while it holds requests)."""
        return [dev.busy_time + (self.now - self._cb_busy_since[d] if self._cb_phase[d] != IDLE else 0.0)
                for d, dev in enumerate(self.devices)]

    def _make_resident(self, m: int, d: int) -> float:
        """The variant is resident alone (its KV cache takes the rest of the memory)."""
        dev = self.devices[d]
        for other in [x for x in dev.resident if x != m]:
            del dev.resident[other]
            dev.memory_used -= self._var_memory_l[other]
            self.resident[other, d] = False
            self.counters.evictions += 1
        return super()._make_resident(m, d)

    def _noise_factor(self) -> float:
        return math.exp(self.noise_sigma * abs(self._normal())) if self.noise_sigma > 0 else 1.0

    # ================================================================== iterations
    def _on_step(self, d: int, version: int) -> None:
        if version != self._cb_ver[d] or not self.devices[d].up:
            return  # stale: the run was cut, or the device failed
        now = self.now
        phase = self._cb_phase[d]
        gen, ctx, out = self._tgen, self._tctx, self._tout
        run = self._cb_run[d]
        done: list[int] = []
        if phase == DECODE:
            it = self._cb_iters[d]
            if it:
                n = len(run)
                self.decode_batch_area += n * it * self._cb_tau[d]
                self.decode_time += it * self._cb_tau[d]
                self.counters.decode_iterations += it
                self._cb_kv_used[d] += n * it
                for tid in run:
                    gen[tid] += it
                    ctx[tid] += it
                    if gen[tid] >= out[tid]:
                        done.append(tid)
        elif phase == PREFILL:
            ttft = self._tttft
            for tid in self._cb_pre[d]:
                gen[tid] += 1
                if math.isnan(ttft[tid]):
                    ttft[tid] = now
                run.append(tid)
                if gen[tid] >= out[tid]:
                    done.append(tid)
            self._cb_pre[d] = []
        for tid in done:
            run.remove(tid)
            self._cb_kv_used[d] -= ctx[tid]
            self._gantt.append((d, self._tstart[tid], now, self._tvariant[tid], self._tcold[tid], False, tid,
                                self.devices[d].loading_until))
            self._complete(tid)
        self._next_phase(d)
        self._update_accept(d)

    def _next_phase(self, d: int) -> None:
        """At an iteration boundary of device ``d``: admit, then prefill, decode or go idle."""
        now = self.now
        run, wait = self._cb_run[d], self._cb_wait[d]
        cap = self._cb_kv_cap[d]
        kt, tkind = self._ktab, self._tkind_l
        gen, ctx = self._tgen, self._tctx
        admitted = []
        tokens = 0.0
        while wait:
            tid = wait[0]
            need = kt[tkind[tid], 0] + gen[tid] + 1  # its context (prompt + generated) and the next token
            if self._cb_kv_used[d] + need > cap:
                break
            wait.pop(0)
            self._cb_kv_used[d] += need
            ctx[tid] = need
            tokens += need - 1
            admitted.append(tid)
        cl = self.cluster
        tt = self._dev_type_l[d]
        m = self._cb_var[d]
        if admitted:
            self._cb_pre[d] = admitted
            self._cb_phase[d] = PREFILL
            self.counters.prefill_iterations += 1
            t = (float(cl.var_alpha[m, tt]) + float(cl.var_beta[m, tt]) * tokens) * self._noise_factor()
            self._schedule(d, now + t)
            self._set_busy_until(d, now + t)
            return
        if run:
            n = len(run)
            free = cap - self._cb_kv_used[d]
            while n and free < n:  # the KV cache is full: preempt the most recently joined request
                victim = max(run, key=lambda x: (self._tstart[x], x))
                run.remove(victim)
                self._cb_kv_used[d] -= ctx[victim]
                free += ctx[victim]
                ctx[victim] = 0.0
                wait.insert(0, victim)
                self.counters.preemptions += 1
                n -= 1
            if n:
                out = self._tout
                left = min(out[x] - gen[x] for x in run)
                iters = int(min(left, free // n))
                tau = (float(cl.var_gamma[m, tt]) + float(cl.var_delta[m, tt]) * (n - 1)) * self._noise_factor()
                self._cb_phase[d] = DECODE
                self._cb_t0[d] = now
                self._cb_tau[d] = tau
                self._cb_iters[d] = iters
                self._schedule(d, now + iters * tau)
                self._set_busy_until(d, now + tau * max(out[x] - gen[x] for x in run))
                return
        if wait:  # nothing runs and the first waiting request does not fit: never (the mask)
            raise RuntimeError(f"device {d}: request {wait[0]} does not fit in an empty KV cache")
        self._busy_off(d)

    def _set_busy_until(self, d: int, t: float) -> None:
        """An estimate of when the device drains (a feature of the observation)."""
        self.dev_busy_until[d] = t
        self.devices[d].busy_until = t
        self.dev_version += 1

    # ================================================================== failures
    def _on_fail(self, d: int) -> None:
        dev = self.devices[d]
        if not dev.up:
            return
        self.counters.failures += 1
        held = self._cb_run[d] + self._cb_pre[d] + self._cb_wait[d]
        self._cb_run[d], self._cb_pre[d], self._cb_wait[d] = [], [], []
        self._cb_kv_used[d] = 0.0
        self._cb_ver[d] += 1  # its pending event is stale
        if self._cb_phase[d] != IDLE:
            self._busy_off(d)
        self._update_accept(d)  # accepting again (idle and up) before going down
        for tid in sorted(held, key=lambda x: (self._tready[x], x)):
            self._gantt.append((d, self._tstart[tid], self.now, self._tvariant[tid], self._tcold[tid], True, tid,
                                min(dev.loading_until, self.now)))
            self._tgen[tid] = 0
            self._tctx[tid] = 0.0
            self._tttft[tid] = math.nan
            if self._tstate[tid] == RUNNING:
                self._requeue(tid)
        self._device_down(dev)

    def _on_recover(self, d: int) -> None:
        super()._on_recover(d)
        self.dev_idle[d] = True

    # ================================================================== views
    def running_batch(self, d: int) -> tuple[int, ...]:
        """Task ids device ``d`` holds: running, in prefill, then waiting."""
        return tuple(self._cb_run[d] + self._cb_pre[d] + self._cb_wait[d])

    def kv_use(self) -> np.ndarray:
        """(D,) fraction of each device's KV cache held (0 when it serves nothing)."""
        return np.array([u / c if c > 0 and self._cb_phase[d] != IDLE else 0.0
                         for d, (u, c) in enumerate(zip(self._cb_kv_used, self._cb_kv_cap))])

    def held_counts(self) -> np.ndarray:
        """(D,) requests each device holds (running, in prefill, waiting)."""
        return np.array([self._held(d) for d in range(self.cluster.num_devices)], dtype=np.int64)

    def token_times(self) -> tuple[np.ndarray, np.ndarray]:
        """Per task: time of its first token (NaN: none yet) and its output tokens."""
        return np.array(self._tttft), np.array([math.ceil(self._ktab[k, 1]) for k in self._tkind_l])


__all__ = ["ContinuousBatchingSimulator", "IDLE", "LOAD", "PREFILL", "DECODE", "QUEUED"]
