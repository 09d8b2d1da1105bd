"""A heuristic for continuous batching of LLM requests (a scenario's ``continuous_batching``).

On such a scenario an action makes a request *join* a device's running batch
(:mod:`envs.sim.continuous`): the device admits it when its KV cache has room, prefills it, and
decodes it together with the others, preempting (recomputing) the most recent request when the
cache runs out. What is left to the scheduler is which variant and device a request joins, and
when. Parameters per scenario come from ``baselines/tuned.yml`` (chosen on training seeds by
``benchmarks/tune_baselines.py``) where present, else the class defaults.
"""

from __future__ import annotations

import numpy as np

from baselines.base import DecisionView, Policy


class VllmPolicy(Policy):
    """``vllm``: first-come-first-served continuous batching with preemption, as a vLLM
    deployment serves it (Kwon et al., "Efficient Memory Management for Large Language Model
    Serving with PagedAttention", SOSP 2023: each engine admits waiting requests FCFS while its
    KV cache has room and preempts the latest request, recomputing it, when the cache runs out;
    the simulator does that part), behind a router that sends each request, oldest first, to an
    engine.

    ``variant`` picks the model: ``fastest``, ``median`` or ``most_accurate`` serve every
    request with that variant slot (one model per deployment, the common case); ``slo`` (what a
    serving engineer adds: the model choice by deadline, INFaaS-style) takes the most accurate
    variant whose estimated completion (:meth:`envs.sim.continuous.ContinuousBatchingSimulator.estimates`:
    the lone time, the decode slowed by the requests the device holds, at the 95th percentile of
    the noise) fits in ``headroom`` x the request's slack on some device that takes it, else
    the variant and device expected to finish first. ``route`` picks the device among those
    that take the request: ``kv``, the lowest KV-cache use, or ``held``, the fewest requests
    held (ties: the other, then the lower index). The oldest request that can join goes first;
    if none can (every device that could serve them is full or serves another variant), the
    router waits."""

    name = "vllm"
    #: The best of the grid points of ``benchmarks/tune_baselines.py`` evaluated on llm-continuous
    #: (training seeds 0..29; the grid's run was stopped before its last 5 points: see the README).
    DEFAULTS = {"variant": "median", "headroom": 0.5, "route": "held"}
    #: A rule made for scenarios with continuous batching (the final table of train.py leaves it
    #: out elsewhere).
    batching_rule = "continuous"

    def __init__(self, env, seed=None, **params):
        from baselines.tuned import scenario_name, tuned

        unknown = set(params) - set(self.DEFAULTS)
        if unknown:
            raise TypeError(f"{self.name}: unknown parameter(s) {sorted(unknown)} (known: {sorted(self.DEFAULTS)})")
        p = {**self.DEFAULTS, **tuned(self.name, scenario_name(env)),
             **{k: v for k, v in params.items() if v is not None}}
        if p["variant"] not in ("fastest", "median", "most_accurate", "slo"):
            raise ValueError(f"vllm: variant must be 'fastest', 'median', 'most_accurate' or 'slo', got {p['variant']!r}")
        if p["route"] not in ("kv", "held"):
            raise ValueError(f"vllm: route must be 'kv' or 'held', got {p['route']!r}")
        for key, value in p.items():
            setattr(self, key, value)
        super().__init__(env, seed)

    def _load(self, view: DecisionView) -> tuple[np.ndarray, np.ndarray]:
        sim = view.sim
        held = sim.held_counts() if hasattr(sim, "held_counts") else np.array(
            [len(sim.running_batch(d)) for d in range(view.D)])
        kv = sim.kv_use() if hasattr(sim, "kv_use") else np.zeros(view.D)
        return held.astype(float), kv

    def _device(self, ok: np.ndarray, held: np.ndarray, kv: np.ndarray) -> int:
        first, second = (kv, held) if self.route == "kv" else (held, kv)
        key = np.where(ok, first + second * 1e-6 + np.arange(len(ok)) * 1e-12, np.inf)
        return int(np.argmin(key))

    def decide(self, view: DecisionView) -> int | None:
        held, kv = self._load(view)
        for k in range(view.n):
            valid = view.mask[k]  # (V, D)
            if not valid.any():
                continue
            vs = np.flatnonzero(view.variant[k] >= 0)
            if self.variant != "slo":
                v = int({"fastest": vs[0], "median": vs[len(vs) // 2], "most_accurate": vs[-1]}[self.variant])
                if not valid[v].any():
                    continue
                return view.action(k, v, self._device(valid[v], held, kv))
            budget = self.headroom * view.slack[k]
            for v in vs[::-1]:  # most accurate first
                ok = valid[v] & (view.est_safe[k, v] <= budget)
                if ok.any():
                    return view.action(k, int(v), self._device(ok, held, kv))
            e = np.where(valid, view.est[k], np.inf)
            v, d = divmod(int(np.argmin(e)), view.D)
            return view.action(k, v, d)
        return None
