"""Domain types of the simulator: device types, devices, model variants, tasks and jobs.

Units: seconds, gigabytes (GB), GB/s. Everything here is plain Python + numpy; the
simulator core never imports gymnasium or torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class DeviceType:
    """A kind of accelerator (or CPU) that devices are instances of."""

    name: str
    memory_gb: float
    """Memory available for resident model variants."""
    load_bandwidth_gbps: float
    """Host-to-device bandwidth used when loading a variant (cold start)."""
    load_overhead_s: float = 0.0
    """Fixed cost of a load (runtime initialisation), added to memory / bandwidth."""
    cost_per_hour: float = 0.0
    mtbf_s: float = math.inf
    """Mean time between failures of one device of this type (inf: never fails)."""
    mttr_s: float = 0.0
    """Mean time to repair a failed device."""

    def load_time(self, memory_gb: float) -> float:
        return self.load_overhead_s + memory_gb / self.load_bandwidth_gbps


@dataclass(frozen=True)
class LatencyProfile:
    """Execution time of one variant on one device type.

    ``time(size, size2) = alpha + beta * size + gamma * size2``. For a batch of images ``size`` is
    the batch size; for an LLM request ``size`` is prompt tokens (prefill) and ``size2`` output
    tokens (decode steps); for a training job ``size`` is the number of iterations.
    """

    alpha: float
    beta: float
    gamma: float = 0.0

    def time(self, size: float, size2: float = 0.0) -> float:
        return self.alpha + self.beta * size + self.gamma * size2


@dataclass(frozen=True)
class ModelVariant:
    """One servable variant of a model family (e.g. ResNet-18 vs ResNet-152)."""

    name: str
    capability: str
    accuracy: float
    memory_gb: float
    profiles: dict[str, LatencyProfile]
    """Latency per device-type name. A variant with no profile for a type cannot run there."""
    max_size: float = math.inf
    """Largest ``size + size2`` the variant accepts (e.g. an LLM's context length)."""
    scaling_efficiency: float = 1.0
    """Data-parallel efficiency: on n devices the time is t1 / (1 + (n - 1) * efficiency)."""

    def exec_time(self, device_type: str, size: float, size2: float = 0.0, n_devices: int = 1) -> float:
        t = self.profiles[device_type].time(size, size2)
        if n_devices > 1:
            t /= 1.0 + (n_devices - 1) * self.scaling_efficiency
        return t


class StageSpec(NamedTuple):
    """One stage (task) of a job as a workload describes it, before it enters the system.

    ``parents`` are indices of this job's stages that must finish before this one is ready.
    (A NamedTuple: immutable, and cheap to create by the thousand at every reset.)"""

    capability: str
    size: float
    size2: float = 0.0
    parents: tuple[int, ...] = ()
    devices_required: int = 1
    min_accuracy: float = 0.0


class JobSpec(NamedTuple):
    """A unit of work from a workload: one request (a single stage) or a DAG of stages.

    The SLO applies to the whole job: every stage's deadline is ``arrival + slo``. ``source``
    says where the job came from (e.g. ``trace.csv:42``), for error messages."""

    arrival: float
    stages: tuple[StageSpec, ...]
    slo: float
    priority: float = 1.0
    source: str = ""


@dataclass(eq=False, slots=True)
class Job:
    id: int
    spec: JobSpec
    members: Task | list[Task] | None = None
    """The job's task, or the list of its tasks for a multi-stage job (a single task is held
    directly, to keep one fewer object per request alive; use :attr:`tasks`)."""
    remaining: int = 0
    finish: float = math.nan
    dropped: bool = False

    @property
    def tasks(self) -> list[Task]:
        """The job's tasks, in stage order."""
        m = self.members
        if isinstance(m, list):
            return m
        return [] if m is None else [m]

    @property
    def arrival(self) -> float:
        return self.spec.arrival

    @property
    def deadline(self) -> float:
        return self.spec.arrival + self.spec.slo


# Task states.
PENDING = 0  # waiting for parent stages
QUEUED = 1
RUNNING = 2
DONE = 3
DROPPED = 4


@dataclass(eq=False, slots=True)
class Task:
    """A stage instance inside the simulator."""

    id: int
    job: Job
    stage: int
    capability: str
    cap_index: int
    size: float
    size2: float
    devices_required: int
    min_accuracy: float
    priority: float
    arrival: float
    """Time the task entered the queue (ready); task latency is measured from here. For a
    single-stage job it is the job's arrival."""
    deadline: float
    ideal: float
    """Fastest possible execution (best feasible variant and device type, resident, no queue)."""
    kind: int = 0
    """Index of the task's shape (capability, sizes, accuracy floor, devices required) in the
    simulator's table of precomputed per-shape arrays."""
    slo: float = 1.0
    """The job's SLO (relative deadline), the scale of the time features."""
    ready_time: float = math.nan
    """Time the task became ready (all parents done)."""
    state: int = PENDING
    pending_parents: int = 0
    children: list[Task] | tuple = ()
    """Stages that wait for this one (a list, created when the first child is added)."""
    start: float = math.nan
    finish: float = math.nan
    variant: int = -1
    devices: tuple[int, ...] = ()
    accuracy: float = math.nan
    requeues: int = 0
    cold_start: bool = False


@dataclass(eq=False)
class Device:
    """One device instance; mutable state kept by the simulator."""

    index: int
    type: DeviceType
    type_index: int
    node: str
    up: bool = True
    busy_until: float = 0.0
    """Time the current task finishes (== now when idle)."""
    task: Task | None = None
    loading_until: float = 0.0
    resident: dict[int, float] = field(default_factory=dict)
    """Resident variant index -> last-use time (for LRU eviction)."""
    memory_used: float = 0.0
    busy_time: float = 0.0
    """Accumulated busy seconds (for utilization)."""
    epoch: int = 0
    """Bumped on failure so that stale completion events are ignored (lazy cancellation)."""

    @property
    def idle(self) -> bool:
        return self.up and self.task is None
