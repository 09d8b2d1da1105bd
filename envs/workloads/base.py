"""The workload interface: every generator and trace replayer produces a list of jobs.

A workload is an object passed into the simulator. At each reset the simulator calls
``generate(rng, ctx)`` with its own workload RNG stream, so the same seed gives the same jobs
for every policy (common random numbers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from envs.sim.model import JobSpec


class WorkloadContext(Protocol):
    """What a workload may ask of the scenario it runs in (implemented by the simulator).

    A context may also offer ``reference_times(capability, sizes, sizes2)``: the reference
    times of arrays of sizes at once, the same floats as :meth:`reference_time` element for
    element (:class:`envs.sim.cluster.Cluster` does). Workloads use it, through
    :class:`envs.workloads.assembly.ContextCache`, where it exists."""

    capabilities: tuple[str, ...]

    def reference_time(self, capability: str, size: float = 1.0, size2: float = 0.0) -> float:
        """Batch-1-style reference latency: the most accurate variant of ``capability`` on the
        device type where it runs fastest, resident, with no queueing. SLOs are multiples of it."""
        ...

    def cluster_rate(self, capability: str, size: float, size2: float = 0.0, devices_required: int = 1) -> float:
        """Tasks per second the whole cluster completes if it serves only ``capability`` tasks of
        this size with the median-accuracy variant. Used to turn a target load into a rate."""
        ...


@dataclass
class GeneratedWorkload:
    jobs: list[JobSpec]
    """Sorted by arrival time."""
    counters: dict[str, int] = field(default_factory=dict)
    """Counts reported in ``info`` (e.g. ``bad_rows_skipped``)."""


@dataclass
class RequestColumns:
    """A workload of single-stage requests as columns (J jobs, G distinct stage shapes): what
    :meth:`Workload.generate` would return, before it is built into :class:`JobSpec` tuples.
    Job j arrives at ``arrival[j]`` with the stage ``(capability[g], size[g], size2[g],
    devices_required[g], min_accuracy[g])`` of its group ``g = group[j]`` (``group`` None: job
    j has stage shape j), SLO ``slo[j]`` and priority ``priority[j]``."""

    arrival: np.ndarray          # (J,) sorted
    group: np.ndarray | None     # (J,) int: the stage shape of each job
    capability: list[str]        # (G,)
    size: np.ndarray             # (G,)
    size2: np.ndarray            # (G,)
    devices_required: np.ndarray  # (G,) int
    min_accuracy: np.ndarray     # (G,)
    slo: np.ndarray              # (J,)
    priority: np.ndarray         # (J,)
    counters: dict[str, int] = field(default_factory=dict)


class Workload(ABC):
    """Base class of workloads. Subclasses hold configuration only; all randomness comes from
    the ``rng`` passed to :meth:`generate`."""

    @abstractmethod
    def generate(self, rng: np.random.Generator, ctx: WorkloadContext) -> GeneratedWorkload: ...

    def generate_columns(self, rng: np.random.Generator, ctx: WorkloadContext) -> RequestColumns | None:
        """The same episode as :meth:`generate` (same draws from ``rng``) as columns, for
        workloads of single-stage requests that can give them (the batched simulator sets up
        episodes from them without building job tuples); None where the workload cannot."""
        return None

    def __getstate__(self) -> dict:
        """Pickles and copies hold the configuration, not the values cached for a context (the
        arrival rate, :class:`envs.workloads.assembly.ContextCache`): they are recomputed."""
        state = self.__dict__.copy()
        state.pop("_rate_cache", None)
        state.pop("_ctx_cache", None)
        return state

    @property
    def horizon_hint(self) -> float | None:
        """Time span of the workload, if known in advance (used for the time-fraction feature)."""
        return None


def arrival_rate_for_load(
    load: float, mix: dict[str, float], ctx: WorkloadContext, mean_size: dict[str, float],
    mean_size2: dict[str, float] | None = None,
) -> float:
    """Poisson rate (requests/s) giving an average offered ``load`` (fraction of cluster capacity).

    Each capability c is served at ``ctx.cluster_rate(c, mean size)``; a mix needs
    ``sum_c p_c / rate_c`` cluster-seconds per request on average.
    """
    mean_size2 = mean_size2 or {}
    total = sum(mix.values())
    seconds_per_request = sum(
        (p / total) / ctx.cluster_rate(c, mean_size[c], mean_size2.get(c, 0.0)) for c, p in mix.items()
    )
    return load / seconds_per_request
