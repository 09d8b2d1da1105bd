"""Static description of a cluster and its model zoo, compiled into dense arrays.

The arrays let the simulator build masks and completion-time estimates for a window of tasks
with a handful of numpy operations instead of Python loops over (task, variant, device).
Axis names: C capabilities, V variant slots per capability (sorted by accuracy, ascending),
D devices, M model variants (global index), T device types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from envs.sim.model import DeviceType, ModelVariant

#: Devices a cluster may have at most, and so devices a task may require at most (scenario
#: validation refuses more: a huge count would exhaust memory or overflow int64 arrays).
MAX_DEVICES = 4096


@dataclass(frozen=True)
class DeviceSpec:
    type: str
    node: str


class Cluster:
    """Device types, devices, model variants and the arrays derived from them.

    ``service_factor``: the mean execution time over the profile time under the scenario's
    service noise (:func:`envs.sim.noise.factor_mean`; a scenario sets it from its
    ``noise_cv``). Capacities (:meth:`cluster_rate`), and so the arrival rates that synthetic
    workloads derive from a target load, divide by it; ideal times and SLOs do not (they are
    the unloaded profile times)."""

    def __init__(self, device_types: list[DeviceType], devices: list[DeviceSpec], variants: list[ModelVariant],
                 service_factor: float = 1.0):
        if not (math.isfinite(service_factor) and service_factor >= 1.0):
            raise ValueError(f"service_factor must be a finite number >= 1, got {service_factor}")
        self.service_factor = float(service_factor)
        if not devices:
            raise ValueError("a cluster needs at least one device")
        if not variants:
            raise ValueError("a cluster needs at least one model variant")
        self.device_types = list(device_types)
        self.type_index = {t.name: i for i, t in enumerate(self.device_types)}
        for d in devices:
            if d.type not in self.type_index:
                raise ValueError(f"device of unknown type '{d.type}'")
        self.device_specs = list(devices)
        self.variants = list(variants)
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError("variant names must be unique")
        self.capabilities: tuple[str, ...] = tuple(dict.fromkeys(v.capability for v in self.variants))
        self.cap_index = {c: i for i, c in enumerate(self.capabilities)}

        C, D, M, T = len(self.capabilities), len(devices), len(self.variants), len(self.device_types)
        by_cap: list[list[int]] = [[] for _ in range(C)]
        for m, v in enumerate(self.variants):
            by_cap[self.cap_index[v.capability]].append(m)
        for lst in by_cap:
            lst.sort(key=lambda m: (self.variants[m].accuracy, self.variants[m].name))
        V = max(len(lst) for lst in by_cap)
        self.num_caps, self.num_slots, self.num_devices, self.num_variants, self.num_types = C, V, D, M, T

        #: (C, V) global variant index of each slot, -1 where a capability has fewer variants.
        self.slot_variant = np.full((C, V), -1, dtype=np.int64)
        for c, lst in enumerate(by_cap):
            self.slot_variant[c, : len(lst)] = lst
        self.variants_of_cap = [tuple(lst) for lst in by_cap]

        #: (D,) type index of each device; (D,) memory capacity.
        self.dev_type = np.array([self.type_index[d.type] for d in devices], dtype=np.int64)
        self.dev_memory = np.array([self.device_types[t].memory_gb for t in self.dev_type], dtype=float)
        self.nodes = [d.node for d in devices]
        self.type_count = np.bincount(self.dev_type, minlength=T)

        #: (M,) per-variant attributes.
        self.var_memory = np.array([v.memory_gb for v in self.variants], dtype=float)
        self.var_accuracy = np.array([v.accuracy for v in self.variants], dtype=float)
        self.var_max_size = np.array([v.max_size for v in self.variants], dtype=float)
        self.var_scaling = np.array([v.scaling_efficiency for v in self.variants], dtype=float)
        self.var_max_batch = np.array([v.max_batch for v in self.variants], dtype=float)
        #: (M, T) latency coefficients, NaN where the variant has no profile for the type.
        self.var_alpha = np.full((M, T), np.nan)
        self.var_beta = np.full((M, T), np.nan)
        self.var_gamma = np.full((M, T), np.nan)
        self.var_delta = np.full((M, T), np.nan)
        for m, v in enumerate(self.variants):
            for tname, prof in v.profiles.items():
                if tname not in self.type_index:
                    continue  # a profile for a type this cluster does not have
                t = self.type_index[tname]
                self.var_alpha[m, t], self.var_beta[m, t], self.var_gamma[m, t] = prof.alpha, prof.beta, prof.gamma
                self.var_delta[m, t] = prof.delta
        #: (M, T) the variant can run on the type at all (profile and memory capacity).
        type_mem = np.array([t.memory_gb for t in self.device_types])
        self.var_runs_on = ~np.isnan(self.var_alpha) & (self.var_memory[:, None] <= type_mem[None, :])
        #: (M, D) cold-start time of each variant on each device.
        bw = np.array([self.device_types[t].load_bandwidth_gbps for t in self.dev_type])
        ovh = np.array([self.device_types[t].load_overhead_s for t in self.dev_type])
        self.load_time = ovh[None, :] + self.var_memory[:, None] / bw[None, :]

        # Slot-indexed copies, (C, V, D), for vectorised masks and estimates.
        sv = np.where(self.slot_variant >= 0, self.slot_variant, 0)
        exists = self.slot_variant >= 0
        self.slot_exists = exists
        self.slot_accuracy = np.where(exists, self.var_accuracy[sv], -np.inf)
        self.slot_max_size = np.where(exists, self.var_max_size[sv], -np.inf)
        self.slot_scaling = self.var_scaling[sv]
        #: (C, V) most requests one execution of the slot's variant batches (0 where no variant).
        self.slot_max_batch = np.where(exists, self.var_max_batch[sv], 0.0)
        dt = self.dev_type
        self.slot_alpha = self.var_alpha[sv][:, :, dt]
        self.slot_beta = self.var_beta[sv][:, :, dt]
        self.slot_gamma = self.var_gamma[sv][:, :, dt]
        self.slot_runs = self.var_runs_on[sv][:, :, dt] & exists[:, :, None]
        self.slot_load = self.load_time[sv]
        self.best_accuracy = np.array([max(self.var_accuracy[m] for m in lst) for lst in by_cap])

        # Continuous batching (LLM serving, :mod:`envs.sim.continuous`): variants with a KV-cache
        # footprint per token. A device serves one such variant at a time, its weights resident
        # and the rest of its memory holding the KV cache of the requests it runs.
        #: (M,) KV-cache MB per token (NaN: not served by continuous batching).
        self.var_kv_mb = np.array([v.kv_mb_per_token for v in self.variants], dtype=float)
        #: Some variant is served by continuous batching (the loader makes it all of them).
        self.continuous = bool(np.any(~np.isnan(self.var_kv_mb)))
        kv = np.where(np.isnan(self.var_kv_mb), np.inf, self.var_kv_mb)
        free_mb = (self.dev_memory[None, :] - self.var_memory[:, None]) * 1000.0
        #: (M, D) tokens of KV cache device d holds with variant m resident alone (inf: no limit).
        self.kv_tokens = np.where(np.isinf(kv)[:, None], np.inf, np.floor(np.maximum(free_mb, 0.0) / kv[:, None]))
        #: (C, V, D) the same per slot; (C, V, D) decode slope delta per slot and device.
        self.slot_kv_tokens = np.where(exists[:, :, None], self.kv_tokens[sv], 0.0)
        self.slot_delta = self.var_delta[sv][:, :, dt]
        #: (C, V) 1 where the slot's variant emits a request's first token in its prefill (a
        #: continuous-batching variant: ``size2`` output tokens take ``size2 - 1`` decode
        #: iterations), else 0.
        self.slot_prefill_token = np.where(exists & ~np.isnan(self.var_kv_mb[sv]), 1.0, 0.0)

    # ------------------------------------------------------------------ queries
    def exec_time(self, m: int, t: int, size: float, size2: float = 0.0, n: int = 1) -> float:
        """Noise-free execution time of variant ``m`` on ``n`` devices of type ``t``."""
        base = self.var_alpha[m, t] + self.var_beta[m, t] * size + self.var_gamma[m, t] * size2
        if n > 1:
            base /= 1.0 + (n - 1) * self.var_scaling[m]
        return float(base)

    def feasible_pairs(self, cap: int, size: float, size2: float, min_accuracy: float, n: int):
        """(variant, type) pairs that could ever serve such a task in this cluster."""
        for m in self.variants_of_cap[cap]:
            if self.var_accuracy[m] < min_accuracy or size + size2 > self.var_max_size[m]:
                continue
            for t in range(self.num_types):
                if self.var_runs_on[m, t] and self.type_count[t] >= n:
                    yield m, t

    def ideal_time(self, cap: int, size: float, size2: float, min_accuracy: float, n: int) -> float:
        """Fastest execution over feasible (variant, device type), resident, no queueing;
        ``inf`` if no variant can ever serve the task here."""
        best = math.inf
        for m, t in self.feasible_pairs(cap, size, size2, min_accuracy, n):
            best = min(best, self.exec_time(m, t, size, size2, n))
        return best

    def reference_time(self, capability: str, size: float = 1.0, size2: float = 0.0) -> float:
        """The most accurate variant of ``capability`` on its fastest device type (SLO anchor)."""
        c = self.cap_index[capability]
        for m in reversed(self.variants_of_cap[c]):  # most accurate first
            ts = [self.exec_time(m, t, size, size2) for t in range(self.num_types) if self.var_runs_on[m, t]]
            if ts:
                return min(ts)
        raise ValueError(f"no variant of '{capability}' can run on any device type of the cluster")

    def reference_times(self, capability: str, sizes, sizes2=0.0) -> np.ndarray:
        """:meth:`reference_time` of many sizes at once: ``out[i] == reference_time(capability,
        sizes[i], sizes2[i])`` exactly (``sizes2`` an array of the same length or one number).

        Same arithmetic in the same order, elementwise: ``alpha + beta * size + gamma * size2``
        of the most accurate variant that runs on some device type, then the minimum over the
        device types it runs on, in type order, keeping the earlier of equal times (as ``min``
        does). Returns a float64 array (``tolist()`` gives the scalar method's floats)."""
        c = self.cap_index[capability]
        sizes = np.asarray(sizes, dtype=np.float64)
        if not isinstance(sizes2, (int, float)):
            sizes2 = np.asarray(sizes2, dtype=np.float64)
        for m in reversed(self.variants_of_cap[c]):  # most accurate first
            types = np.flatnonzero(self.var_runs_on[m]).tolist()
            if not types:
                continue
            alpha, beta, gamma = self.var_alpha[m], self.var_beta[m], self.var_gamma[m]
            best = None
            for t in types:
                x = alpha[t] + beta[t] * sizes
                x += gamma[t] * sizes2
                best = x if best is None else np.where(x < best, x, best)
            return best
        raise ValueError(f"no variant of '{capability}' can run on any device type of the cluster")

    def cluster_rate(self, capability: str, size: float, size2: float = 0.0, devices_required: int = 1,
                     variant: str = "median") -> float:
        """Tasks/s of the whole cluster serving only this capability, every device with the
        same choice of variant: ``"median"`` (the median-accuracy variant, the fastest one
        where the median cannot run on a device: the load calibration of the synthetic
        workloads), ``"fastest"`` (the fastest variant on each device) or
        ``"most_accurate"`` (the most accurate variant that runs on each device). Execution
        times are the profile times times :attr:`service_factor` (the mean noise)."""
        c = self.cap_index[capability]
        lst = self.variants_of_cap[c]
        if variant == "median":
            order = [lst[len(lst) // 2]] + [m for m in lst if m != lst[len(lst) // 2]]
        elif variant == "most_accurate":
            order = lst[::-1]
        elif variant == "fastest":
            order = lst
        else:
            raise ValueError(f"variant must be 'median', 'fastest' or 'most_accurate', got {variant!r}")
        rate = 0.0
        for d in range(self.num_devices):
            t = int(self.dev_type[d])
            ts = [self.exec_time(m, t, size, size2, devices_required) for m in order if self.var_runs_on[m, t]]
            if ts:
                rate += 1.0 / ((min(ts) if variant == "fastest" else ts[0]) * self.service_factor) / devices_required
        if rate <= 0:
            raise ValueError(f"no device of the cluster can serve '{capability}'")
        return rate
