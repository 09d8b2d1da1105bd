"""Shared test helpers: tiny hand-built scenarios and a fixed-list workload."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

import envs
from envs.scenarios.loader import RewardWeights, Scenario
from envs.sim.cluster import Cluster, DeviceSpec
from envs.sim.model import DeviceType, JobSpec, LatencyProfile, ModelVariant, StageSpec
from envs.workloads.base import GeneratedWorkload, Workload

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"

#: Prepended to a script run in a subprocess: importing gymnasium, torch or SB3 there fails.
BLOCK_HEAVY_IMPORTS = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('gymnasium', 'torch', 'stable_baselines3', 'sb3_contrib'):
            raise ImportError('blocked: ' + name)
        return None
sys.meta_path.insert(0, Block())
"""


def run_without_heavy_imports(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter at the project root with gymnasium, torch and SB3
    unimportable."""
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, "-c", BLOCK_HEAVY_IMPORTS + textwrap.dedent(code)], cwd=root,
                          capture_output=True, text=True)


class ListWorkload(Workload):
    """Replays a fixed list of jobs (ignores the RNG)."""

    def __init__(self, jobs):
        self.jobs = sorted(jobs, key=lambda j: j.arrival)

    def generate(self, rng, ctx):
        return GeneratedWorkload(list(self.jobs))


def request(arrival, capability="cls", size=1.0, slo=1.0, min_accuracy=0.0, priority=1.0, devices=1):
    return JobSpec(arrival, (StageSpec(capability, size, devices_required=devices, min_accuracy=min_accuracy),),
                   slo, priority)


def make_scenario(cluster: Cluster, jobs, *, K=4, reward=None, horizon=math.inf, noise_cv=0.0,
                  drop_expired=False, queue_capacity=1024, primary_metric="effective_accuracy",
                  warmup_s=0.0) -> Scenario:
    return Scenario(name="test", cluster=cluster, workload=ListWorkload(jobs), primary_metric=primary_metric,
                    reward=reward or RewardWeights(latency=1.0, slo=1.0, drop=1.0, accuracy=1.0, utilization=0.0),
                    visible_tasks=K, queue_capacity=queue_capacity, drop_expired=drop_expired,
                    noise_cv=noise_cv, horizon=horizon, warmup_s=warmup_s)


def golden_cluster(n_gpus=1, mtbf=math.inf, mttr=0.0) -> Cluster:
    """One GPU type (1 GB, 2 GB/s, 0.1 s load overhead) and two variants of one capability."""
    gpu = DeviceType("GPU", memory_gb=1.0, load_bandwidth_gbps=2.0, load_overhead_s=0.1, mtbf_s=mtbf, mttr_s=mttr)
    small = ModelVariant("small", "cls", 0.7, 0.4, {"GPU": LatencyProfile(0.1, 0.05)})
    big = ModelVariant("big", "cls", 0.9, 0.8, {"GPU": LatencyProfile(0.2, 0.1)}, scaling_efficiency=0.5)
    return Cluster([gpu], [DeviceSpec("GPU", "n0") for _ in range(n_gpus)], [small, big])


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def short_serving_small(folder: Path, name: str, num_jobs: int) -> str:
    """A YAML copy of serving-small named ``name`` with ``num_jobs`` requests, in ``folder``."""
    raw = yaml.safe_load((Path(envs.__file__).parent / "scenarios" / "serving-small.yaml").read_text())
    raw["name"] = name
    raw["workload"]["num_jobs"] = num_jobs
    raw["warmup_s"] = 0.0  # (a few dozen requests arrive within the built-in warm-up: none would count)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


@pytest.fixture(scope="module")
def tiny_scenario(tmp_path_factory) -> str:
    """serving-small with a 40-request workload: same spaces, short episodes."""
    return short_serving_small(tmp_path_factory.mktemp("scenario"), "serving-tiny", 40)


def without_reference_only_features(name: str):
    """Scenario ``name`` as the batched simulator can run it: with dynamic batching off
    (``batching: null``) or continuous batching off (the section removed, and with it each
    variant's ``kv_mb_per_token`` and decode slope: each request served alone, as without)."""
    from envs.scenarios.loader import load_scenario, read_scenario_dict

    sc = load_scenario(name)
    if sc.batch_sizes != (1,):
        return load_scenario(name, batching=None)
    if sc.continuous is not None:
        raw, _, _ = read_scenario_dict(name)
        raw.pop("continuous_batching")
        for v in raw["variants"]:
            if isinstance(v, dict):
                v.pop("kv_mb_per_token", None)
                v["latency"] = {t: c[:3] for t, c in v.get("latency", {}).items()}
        return load_scenario(raw)
    return sc
