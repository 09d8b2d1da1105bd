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

    Continuous batching (a variant with ``kv_mb_per_token``, :mod:`envs.sim.continuous`) reads
    the coefficients per iteration: a prefill iteration of ``T`` prompt tokens (all the
    requests it admits) takes ``alpha + beta * T``; a decode iteration of ``n`` requests (one
    token each) takes ``gamma + delta * (n - 1)``.
    """

    alpha: float
    beta: float
    gamma: float = 0.0
    delta: float = 0.0
    """Continuous batching: extra decode-iteration time per request beyond the first."""

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
    max_batch: float = math.inf
    """Most requests one execution of the variant may batch together (dynamic batching, a
    scenario's ``batching``); ``inf``: no limit of its own."""
    kv_mb_per_token: float = math.nan
    """KV-cache memory per token held (MB; continuous batching, a scenario's
    ``continuous_batching``); NaN: the variant is not served by continuous batching."""

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


# Task states.
PENDING = 0  # waiting for parent stages
QUEUED = 1
RUNNING = 2
DONE = 3
DROPPED = 4


def _column(name: str, doc: str) -> property:
    """A read-only attribute of a task or job view: entry ``id`` of the simulator's list ``name``."""
    return property(lambda self: getattr(self._sim, name)[self.id], doc=doc)


class _View:
    """A read-only live view of entry ``id`` of a simulator's per-id lists. Views are created on
    demand; two views are equal when they name the same entry of the same simulator."""

    __slots__ = ("_sim", "id")

    def __init__(self, sim, id: int):
        self._sim = sim
        self.id = id

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and other.id == self.id and other._sim is self._sim

    def __hash__(self) -> int:
        return hash(self.id)


class Job(_View):
    """Read-only live view of one job of a simulation (its state lives in the simulator's
    per-job lists)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"Job({self.id}, remaining={self.remaining}, finish={self.finish}, dropped={self.dropped})"

    spec = property(lambda self: self._sim.job_spec(self.id), doc="The workload's description.")
    remaining = _column("_jremaining", "Tasks not finished yet.")
    finish = _column("_jfinish", "Time the last task finished (nan until then).")
    dropped = _column("_jdropped", "Some task of the job was dropped (the job failed).")

    @property
    def tasks(self) -> list[Task]:
        """The job's tasks, in stage order."""
        first = self._sim._jfirst[self.id]
        return [Task(self._sim, i) for i in range(first, first + self._sim._jcount[self.id])]

    @property
    def arrival(self) -> float:
        return self.spec.arrival

    @property
    def deadline(self) -> float:
        return self.spec.arrival + self.spec.slo


class Task(_View):
    """Read-only live view of one task (a stage instance) of a simulation.

    The simulator keeps task state in per-task lists indexed by task id (no object per task, so
    a busy episode creates no garbage-collected objects per request); a view reads them on
    access."""

    __slots__ = ()

    def __repr__(self) -> str:
        return (f"Task({self.id}, job={self._sim._tjob[self.id]}, {self.capability}, "
                f"state={self.state}, arrival={self.arrival}, finish={self.finish})")

    # Static: fixed by the workload at reset.
    @property
    def job(self) -> Job:
        return Job(self._sim, self._sim._tjob[self.id])

    @property
    def stage(self) -> int:
        return self.id - self._sim._jfirst[self._sim._tjob[self.id]]

    kind = _column("_tkind_l", "Index of the task's shape (capability, sizes, accuracy floor, devices "
                               "required) in the simulator's table of per-shape arrays.")
    deadline = _column("_tdeadline", "The job's arrival plus its SLO.")
    priority = _column("_tprio", "The job's priority.")

    @property
    def slo(self) -> float:
        """The job's SLO (relative deadline), the scale of the time features."""
        return float(self._sim._ttimes[self.id, 3])

    @property
    def _shape(self) -> StageSpec:
        return self._sim._kspec[self._sim._tkind_l[self.id]]

    capability = property(lambda self: self._shape.capability)
    size = property(lambda self: self._shape.size)
    size2 = property(lambda self: self._shape.size2)
    devices_required = property(lambda self: self._shape.devices_required)
    min_accuracy = property(lambda self: self._shape.min_accuracy)

    @property
    def cap_index(self) -> int:
        return self._sim._kcap[self._sim._tkind_l[self.id]]

    @property
    def ideal(self) -> float:
        """Fastest possible execution (best feasible variant and device type, resident, no queue)."""
        return self._sim._kideal[self._sim._tkind_l[self.id]]

    # Dynamic.
    state = _column("_tstate", "PENDING, QUEUED, RUNNING, DONE or DROPPED.")

    @property
    def arrival(self) -> float:
        """Time the task entered the queue (ready), or was dropped before; task latency is
        measured from here (nan before). For a single-stage job, the job's arrival."""
        return float(self._sim._ttimes[self.id, 0])

    ready_time = _column("_tready", "Time the task became ready (all parents done).")
    pending_parents = _column("_tpending", "Parent stages not finished yet.")
    start = _column("_tstart", "Start of the current (or last) execution.")
    finish = _column("_tfinish", "Completion or drop time.")
    variant = _column("_tvariant", "Global index of the serving variant (-1: none).")
    devices = _column("_tdevices", "Devices of the current (or last) execution.")
    accuracy = _column("_tacc", "Accuracy of the serving variant.")
    requeues = _column("_trequeues", "Times the task went back to the queue after a device failure.")
    cold_start = _column("_tcold", "The last execution had to load its variant.")

    @property
    def children(self) -> list[Task]:
        """Stages that wait for this one."""
        return [Task(self._sim, i) for i in self._sim._tchildren[self.id]]


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

    @property
    def idle(self) -> bool:
        return self.up and self.task is None
