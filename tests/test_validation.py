"""Input validation: infinities and non-positive horizons in scenarios, empty and non-text
traces, and actions that are not integers (single env and batched simulator)."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from envs.batched.simulator import BatchedSimulator
from envs.config import ConfigError
from envs.env import SchedulingEnv
from envs.scenarios.loader import SCENARIO_DIR, load_scenario
from envs.workloads.traces import TraceWorkload

SMALL = yaml.safe_load((SCENARIO_DIR / "serving-small.yaml").read_text())
INF = math.inf


def write(tmp_path: Path, data: dict, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def _set(data: dict, path: tuple, value) -> None:
    node = data
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value


# ------------------------------------------------------------------ infinity and horizon
@pytest.mark.parametrize("path,where", [
    (("workload", "slo_multiplier"), "bad.yaml.workload: key 'slo_multiplier'"),
    (("workload", "load"), "bad.yaml.workload: key 'load'"),
    (("reward", "drop"), "bad.yaml.reward: key 'drop'"),
    (("noise_cv",), "bad.yaml: key 'noise_cv'"),
    (("device_types", "A100", "load_overhead_s"), "bad.yaml: device_types.A100: key 'load_overhead_s'"),
    (("device_types", "A100", "mttr_s"), "bad.yaml: device_types.A100: key 'mttr_s'"),
])
def test_infinity_is_refused_where_it_means_nothing(tmp_path, path, where):
    data = copy.deepcopy(SMALL)
    data["device_types"] = {"A100": {"memory_gb": 40, "load_bandwidth_gbps": 13}}
    _set(data, path, INF)
    with pytest.raises(ConfigError, match=re.escape(f"{where} must be finite, got inf")):
        load_scenario(write(tmp_path, data))
    _set(data, path, -INF)
    with pytest.raises(ConfigError, match=re.escape(where)):
        load_scenario(write(tmp_path, data))


def test_infinite_rate_sizes_and_latency_coefficients_are_refused(tmp_path):
    data = copy.deepcopy(SMALL)
    del data["workload"]["load"]
    data["workload"]["rate"] = INF
    with pytest.raises(ConfigError, match=re.escape("bad.yaml.workload: key 'rate' must be finite, got inf")):
        load_scenario(write(tmp_path, data))
    data = copy.deepcopy(SMALL)
    data["workload"]["size"]["speech-recognition"] = INF
    with pytest.raises(ConfigError, match=re.escape("bad.yaml.workload.size.speech-recognition: a size is a "
                                                    "positive finite number")):
        load_scenario(write(tmp_path, data))
    data = copy.deepcopy(SMALL)
    data["variants"].append({"name": "x", "capability": "image-classification", "accuracy": 0.5,
                             "memory_gb": 1.0, "latency": {"A100": [0.001, INF]}})
    with pytest.raises(ConfigError, match=re.escape("variants[9] (x): latency.A100 must be [alpha, beta], "
                                                    "[alpha, beta, gamma] or [alpha, beta, gamma, delta] of finite "
                                                    "non-negative numbers, got [0.001, inf]")):
        load_scenario(write(tmp_path, data))
    data["variants"][-1]["latency"]["A100"] = [0.001, 0.001, float("nan")]
    with pytest.raises(ConfigError, match=re.escape("got [0.001, 0.001, nan]")):
        load_scenario(write(tmp_path, data))


def test_documented_infinities_are_accepted(tmp_path):
    data = copy.deepcopy(SMALL)
    data["horizon"] = INF
    data["device_types"] = {"A100": {"memory_gb": 40, "load_bandwidth_gbps": 13, "mtbf_s": INF}}
    data["variants"].append({"name": "x", "capability": "image-classification", "accuracy": 0.5,
                             "memory_gb": 1.0, "latency": {"A100": [0.001, 0.001]}, "max_size": INF})
    data["workload"]["size"]["speech-recognition"] = {"dist": "lognormal", "mean": 2.0, "cv": 1.0, "max": INF}
    sc = load_scenario(write(tmp_path, data))
    assert sc.horizon == INF and sc.cluster.device_types[0].mtbf_s == INF
    assert sc.cluster.variants[-1].max_size == INF
    assert sc.workload.sizes["speech-recognition"].high == INF


@pytest.mark.parametrize("horizon", [0, 0.0, -5])
def test_a_non_positive_horizon_is_refused(tmp_path, horizon):
    data = copy.deepcopy(SMALL)
    data["horizon"] = horizon
    with pytest.raises(ConfigError, match=re.escape(f"bad.yaml: key 'horizon' must be > 0.0, got {float(horizon)!r}")):
        load_scenario(write(tmp_path, data))
    with pytest.raises(ConfigError, match=re.escape("keyword 'horizon' (overriding scenario serving-small): key "
                                                    "'horizon' must be > 0.0")):
        load_scenario("serving-small", horizon=horizon)
    with pytest.raises(ConfigError, match="horizon' is NaN"):
        load_scenario("serving-small", horizon=float("nan"))


# ------------------------------------------------------------------ traces
HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def _trace(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    if isinstance(content, bytes):
        p.write_bytes(content)
    else:
        p.write_text(content)
    return p


def test_a_header_only_trace_is_refused(tmp_path):
    p = _trace(tmp_path, "h.csv", HEADER)
    with pytest.raises(ConfigError, match=re.escape(f"{p}: no usable rows: the file has a header and no data rows")):
        _ = TraceWorkload(p).format
    p = _trace(tmp_path, "blank.csv", HEADER + "\n\n")
    with pytest.raises(ConfigError, match="no usable rows: the file has a header and no data rows"):
        _ = TraceWorkload(p).format


def test_a_trace_whose_rows_are_all_skipped_is_refused(tmp_path):
    p = _trace(tmp_path, "bad.csv", HEADER + "x,1,1\n2.0,1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}: no usable rows: every row was skipped "
                                                    "({'bad_rows_skipped': 2})")):
        _ = TraceWorkload(p, on_bad_rows="skip").format


def test_a_trace_window_with_no_rows_is_refused_naming_file_and_window(tmp_path):
    p = _trace(tmp_path, "w.csv", HEADER + "10.0,5,1\n12.5,5,1\n30.0,5,1\n")
    with pytest.raises(ConfigError, match=re.escape(
            f"{p}: trace_window [5, 15) s holds no rows: the 3 usable rows lie 0 to 20 s after the trace origin")):
        _ = TraceWorkload(p, trace_window=(5.0, 15.0)).format
    wl = TraceWorkload(p, trace_window=(2.0, INF))  # an open end: to the end of the trace
    assert len(wl.generate(np.random.default_rng(0), _Ctx()).jobs) == 2
    # Through a scenario: the error surfaces when the env is made (the trace is read then).
    data = {**copy.deepcopy(SMALL), "workload": {"kind": "trace", "path": str(p), "window": [5, 15],
                                                 "capability": "text-classification"}}
    sc = load_scenario(write(tmp_path, data))
    with pytest.raises(ConfigError, match=re.escape("trace_window [5, 15) s holds no rows")):
        SchedulingEnv(sc)


class _Ctx:
    capabilities = ("text-generation",)

    def reference_time(self, capability, size=1.0, size2=0.0):
        return 0.01 + 0.001 * size + 0.01 * size2


def test_a_utf16_or_binary_trace_names_the_file_and_line(tmp_path):
    p = _trace(tmp_path, "u16.csv", (HEADER + "1.0,5,1\n").encode("utf-16"))
    with pytest.raises(ConfigError, match=re.escape(f"{p}:1: not UTF-8 text (invalid start byte); a trace is a "
                                                    "UTF-8 CSV file (is this a binary, compressed or UTF-16 file?)")):
        _ = TraceWorkload(p).format
    p = _trace(tmp_path, "u16le.csv", (HEADER + "1.0,5,1\n").encode("utf-16-le"))  # no BOM: NUL bytes
    with pytest.raises(ConfigError, match=re.escape(f"{p}:1: the header holds NUL characters")):
        _ = TraceWorkload(p).format
    p = _trace(tmp_path, "bin.csv", HEADER.encode() + b"1.0,5,1\n2.0,\xff\xfe\x00\x81,1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}:3: not UTF-8 text")):
        _ = TraceWorkload(p).format
    p = _trace(tmp_path, "gz.csv", b"\x1f\x8b\x08\x00" + bytes(range(256)))
    with pytest.raises(ConfigError, match=re.escape(f"{p}:1: not UTF-8 text")):
        _ = TraceWorkload(p).format


# ------------------------------------------------------------------ actions
@pytest.fixture(scope="module")
def env():
    e = SchedulingEnv("serving-small", horizon=5.0)
    e.reset(seed=0)
    return e


def test_step_and_action_masks_before_reset_say_to_call_reset():
    e = SchedulingEnv("serving-small", horizon=5.0)
    with pytest.raises(RuntimeError, match=re.escape("action_masks() called before reset(): call reset() first")):
        e.action_masks()
    with pytest.raises(RuntimeError, match=re.escape("step() called before reset(): call reset() first")):
        e.step(e.wait_action)
    e.reset(seed=0)
    assert e.action_masks()[-1]


@pytest.mark.parametrize("bad,what", [
    (3.7, "float: 3.7"),
    (3.0, "float: 3.0"),
    ("3", "str: '3'"),
    (True, "bool: True"),
    (np.float64(2.0), "float64: np.float64(2.0)" if np.__version__ >= "2" else "float64: 2.0"),
    (np.bool_(False), "bool"),
    (np.array(1.0), "ndarray of dtype float64 and shape ()"),
    (np.array([[1]]), "ndarray of dtype int64 and shape (1, 1)"),
    (np.array([1, 2]), "ndarray of dtype int64 and shape (2,)"),
    (None, "NoneType: None"),
])
def test_non_integer_actions_are_refused_naming_value_and_type(env, bad, what):
    before = env.sim.now, len(env.sim.queue_ids)
    with pytest.raises(ValueError, match=re.escape(f"action must be an integer in Discrete({env.n_actions})")) as e:
        env.step(bad)
    assert f"got {what}" in str(e.value)
    assert (env.sim.now, len(env.sim.queue_ids)) == before  # nothing happened


@pytest.mark.parametrize("make", [int, np.int64, np.int32, np.uint16, np.array,
                                  lambda a: np.array([a]), lambda a: np.array(a, dtype=np.int8)])
def test_integer_actions_of_every_usual_form_are_accepted(make):
    e = SchedulingEnv("serving-small", horizon=5.0)
    e.reset(seed=0)
    valid = int(np.flatnonzero(e.action_masks())[0])
    ref = SchedulingEnv("serving-small", horizon=5.0)
    ref.reset(seed=0)
    obs, reward, *_ = e.step(make(valid))
    obs_ref, reward_ref, *_ = ref.step(valid)
    assert reward == reward_ref and all(np.array_equal(obs[k], obs_ref[k]) for k in obs)


def test_batched_simulator_refuses_float_and_bool_action_arrays():
    bs = BatchedSimulator(load_scenario("serving-small", horizon=5.0), 2)
    bs.reset(seed=0)
    wait = bs.n_actions - 1
    for bad, shown in ((np.array([wait, wait], dtype=float), f"{float(wait)}"),
                       (np.array([True, False]), "True")):
        with pytest.raises(ValueError, match=re.escape(
                f"instance 0: action {shown} is not an integer: actions must be an integer array, "
                f"got dtype {bad.dtype}")):
            bs.step(bad)
    bs.step(np.array([wait, wait], dtype=np.int32))  # integer arrays are accepted
