"""Workload generators and trace replayers, behind the :class:`Workload` interface.

Kinds (``workload.kind`` in a scenario): ``poisson``, ``gamma``, ``diurnal`` (single-stage
requests; :mod:`envs.workloads.synthetic`), ``dag`` (multi-model pipelines;
:mod:`envs.workloads.dag`), ``training`` (Philly-like DL training jobs;
:mod:`envs.workloads.training`) and ``trace`` (Azure LLM / Philly / Alibaba CSV replay;
:mod:`envs.workloads.traces`).
"""

from __future__ import annotations

import inspect
from pathlib import Path

from envs.config import ConfigError, Section
from envs.workloads.arrivals import ARRIVAL_KEYS
from envs.workloads.base import GeneratedWorkload, Workload, WorkloadContext
from envs.workloads.dag import DagWorkload
from envs.workloads.synthetic import DiurnalWorkload, GammaWorkload, PoissonWorkload
from envs.workloads.traces import TraceWorkload
from envs.workloads.training import TrainingWorkload

#: kind name -> class with ``from_config(section, capabilities)``.
WORKLOADS: dict[str, type] = {
    "poisson": PoissonWorkload,
    "gamma": GammaWorkload,
    "diurnal": DiurnalWorkload,
    "dag": DagWorkload,
    "training": TrainingWorkload,
    "trace": TraceWorkload,
}


def workload_keys(kind: str) -> tuple[str, ...]:
    """Every key a workload section of ``kind`` may have (for every arrival process)."""
    cls = WORKLOADS[kind]
    if "arrival" in cls.KEYS:  # the arrival process is chosen by the 'arrival' key
        return cls.KEYS + tuple(k for keys in ARRIVAL_KEYS.values() for k in keys)
    return cls.KEYS + ARRIVAL_KEYS.get(kind, ())


def build_workload(sec: Section, capabilities: tuple[str, ...], base_dir: str | Path | None = None) -> Workload:
    """Build the workload a scenario's ``workload`` section describes. ``base_dir`` (e.g. the
    scenario file's folder) resolves relative trace paths."""
    kind = sec.get("kind", str, choices=tuple(WORKLOADS))
    cls = WORKLOADS[kind]
    sec.expect(cls.config_keys(sec))  # unknown keys first, with a suggestion, then missing ones
    if base_dir is not None and "base_dir" in inspect.signature(cls.from_config).parameters:
        workload = cls.from_config(sec, capabilities, base_dir=base_dir)
    else:
        workload = cls.from_config(sec, capabilities)
    sec.done()
    return workload


__all__ = [
    "ConfigError", "DagWorkload", "DiurnalWorkload", "GammaWorkload", "GeneratedWorkload", "PoissonWorkload",
    "TraceWorkload", "TrainingWorkload", "Workload", "WorkloadContext", "WORKLOADS", "build_workload",
    "workload_keys",
]
