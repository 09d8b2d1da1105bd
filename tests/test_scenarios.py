"""Scenario loading and validation: every error names the key and the file."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

import envs
from envs.config import ConfigError
from envs.scenarios.loader import SCENARIO_DIR, builtin_names, load_scenario
from tests.conftest import run_without_heavy_imports

SMALL = yaml.safe_load((SCENARIO_DIR / "serving-small.yaml").read_text())


def write(tmp_path: Path, data: dict, name="bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("name", builtin_names())
def test_builtins_load_and_declare_primary_metric(name):
    sc = load_scenario(name)
    assert sc.name == name
    assert sc.primary_metric
    assert envs.env_id(name) in gym.registry


def test_loader_accepts_name_path_and_dict(tmp_path):
    by_name = load_scenario("serving-small")
    by_path = load_scenario(SCENARIO_DIR / "serving-small.yaml")
    by_dict = load_scenario(copy.deepcopy(SMALL))
    for sc in (by_path, by_dict):
        assert sc.cluster.num_devices == by_name.cluster.num_devices
        assert [v.name for v in sc.cluster.variants] == [v.name for v in by_name.cluster.variants]
    env = gym.make("modelsched/Scheduling-v1", scenario=str(write(tmp_path, SMALL, "mine.yaml")),
                   disable_env_checker=True)
    env.reset(seed=0)


@pytest.mark.parametrize("path,key", [
    ((), "colour"),
    (("workload",), "burstiness"),
    (("reward",), "latncy"),
    (("devices", 0), "gpus"),
])
def test_unknown_key_is_refused_naming_key_and_file(tmp_path, path, key):
    data = copy.deepcopy(SMALL)
    node = data
    for p in path:
        node = node[p]
    node[key] = 1
    f = write(tmp_path, data)
    with pytest.raises(ConfigError, match=rf"bad\.yaml.*unknown key '{key}'"):
        load_scenario(f)
    with pytest.raises(ConfigError, match=rf"unknown key '{key}'"):
        gym.make("modelsched/Scheduling-v1", scenario=str(f))


def test_missing_and_ill_typed_keys(tmp_path):
    data = copy.deepcopy(SMALL)
    del data["primary_metric"]
    with pytest.raises(ConfigError, match=r"bad\.yaml: missing required key 'primary_metric'"):
        load_scenario(write(tmp_path, data))
    data = copy.deepcopy(SMALL)
    data["visible_tasks"] = "eight"
    with pytest.raises(ConfigError, match=r"bad\.yaml: key 'visible_tasks' must be an integer, got str 'eight'"):
        load_scenario(write(tmp_path, data))
    data = copy.deepcopy(SMALL)
    data["workload"]["load"] = -1
    with pytest.raises(ConfigError, match=r"bad\.yaml\.workload: key 'load' must be >= "):
        load_scenario(write(tmp_path, data))
    data = copy.deepcopy(SMALL)
    data["drop_expired"] = 1
    with pytest.raises(ConfigError, match="drop_expired"):
        load_scenario(write(tmp_path, data))
    data = copy.deepcopy(SMALL)
    data["primary_metric"] = "happiness"
    with pytest.raises(ConfigError, match="primary_metric.*one of"):
        load_scenario(write(tmp_path, data))


def test_bad_devices_and_variants(tmp_path):
    data = copy.deepcopy(SMALL)
    data["devices"][0]["type"] = "TPU9"
    with pytest.raises(ConfigError, match=r"devices\[0\]: unknown device type 'TPU9'"):
        load_scenario(write(tmp_path, data))
    data = copy.deepcopy(SMALL)
    data["variants"].append("resnet9000")
    with pytest.raises(ConfigError, match=r"variants\[9\]: unknown library variant 'resnet9000'"):
        load_scenario(write(tmp_path, data))
    data = copy.deepcopy(SMALL)
    data["variants"].append({"name": "x", "capability": "image-classification", "accuracy": 1.5,
                             "memory_gb": 1.0, "latency": {"A100": [0.001, 0.001]}})
    with pytest.raises(ConfigError, match=r"variants\[9\] \(x\): key 'accuracy' must be <= 1"):
        load_scenario(write(tmp_path, data))
    data = copy.deepcopy(SMALL)
    data["variants"].append({"name": "y", "capability": "image-classification", "accuracy": 0.5,
                             "memory_gb": 1.0, "latency": {"A100": [0.001]}})
    with pytest.raises(ConfigError, match=r"latency\.A100 must be \[alpha, beta\]"):
        load_scenario(write(tmp_path, data))
    data = copy.deepcopy(SMALL)
    data["variants"] = ["resnet18", "resnet18"]
    with pytest.raises(ConfigError, match="duplicate name 'resnet18'"):
        load_scenario(write(tmp_path, data))
    data = copy.deepcopy(SMALL)
    data["variants"] = [{"name": "z", "capability": "image-classification", "accuracy": 0.5,
                         "memory_gb": 1.0, "latency": {"H100": [0.001, 0.001]}}]
    data["workload"]["mix"] = {"image-classification": 1.0}
    data["workload"]["size"] = 1
    with pytest.raises(ConfigError, match=r"variant 'z' can run on no device type of the cluster: its latency "
                                          r"profiles name \['H100'\], the cluster's device types are "
                                          r"\['A100', 'T4', 'CPU'\]"):
        load_scenario(write(tmp_path, data))


def test_workload_mix_must_name_known_capabilities(tmp_path):
    data = copy.deepcopy(SMALL)
    data["workload"]["mix"]["telepathy"] = 1.0
    with pytest.raises(ConfigError, match="capability 'telepathy'"):
        load_scenario(write(tmp_path, data))


def test_invalid_yaml_and_unknown_name(tmp_path):
    p = tmp_path / "broken.yaml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_scenario(p)
    with pytest.raises(ConfigError, match="neither a built-in"):
        load_scenario("no-such-scenario")


def test_overrides_apply():
    sc = load_scenario("serving-small", horizon=2.0, visible_tasks=4, workload_overrides={"num_jobs": 10}, warmup_s=0.0)
    assert sc.horizon == 2.0 and sc.visible_tasks == 4 and sc.workload.num_jobs == 10
    env = gym.make("modelsched/ServingSmall-v1", horizon=2.0, disable_env_checker=True)
    assert env.unwrapped.sim.horizon == 2.0
    assert math.isinf(load_scenario("serving-small").horizon)


def test_simulator_core_imports_neither_gymnasium_nor_torch():
    """The core runs in a process where importing gymnasium or torch fails."""
    out = run_without_heavy_imports("""
        import numpy as np
        from envs.scenarios.loader import load_scenario
        from envs.sim.simulator import Simulator
        from envs.sim.metrics import episode_metrics
        import envs.workloads
        sc = load_scenario('serving-small', workload_overrides={'num_jobs': 50})
        sim = Simulator(sc.cluster, sc.workload, visible_tasks=sc.visible_tasks)
        sim.reset(np.random.SeedSequence(0))
        while not sim.done:
            sim.advance_to_next_decision()
            if sim.done:
                break
            k, v, d = map(int, np.argwhere(sim.action_mask())[0])
            sim.assign(k, v, d)
        assert episode_metrics(sim)['completed'] > 0
        bad = [m for m in sys.modules if m.split('.')[0] in ('gymnasium', 'torch')]
        assert not bad, bad
        print('ok')
    """)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
