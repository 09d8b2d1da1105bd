"""Workload generators and trace replayers, behind the :class:`Workload` interface."""

from __future__ import annotations

from envs.config import ConfigError, Section
from envs.workloads.base import GeneratedWorkload, Workload, WorkloadContext
from envs.workloads.synthetic import PoissonWorkload

#: kind name -> class with ``from_config(section, capabilities)``.
WORKLOADS: dict[str, type] = {
    "poisson": PoissonWorkload,
}


def build_workload(sec: Section, capabilities: tuple[str, ...]) -> Workload:
    kind = sec.get("kind", str, choices=tuple(WORKLOADS))
    workload = WORKLOADS[kind].from_config(sec, capabilities)
    sec.done()
    return workload


__all__ = ["ConfigError", "GeneratedWorkload", "Workload", "WorkloadContext", "WORKLOADS", "build_workload"]
