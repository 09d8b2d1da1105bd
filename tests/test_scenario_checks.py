"""Scenario checks: variants and device types that can never be used, unknown keys reported
before missing ones (with a suggestion), keyword overrides blamed on the keyword, duplicate YAML
keys, ``python -m envs``, and docs/scenarios.md against the keys the code accepts."""

from __future__ import annotations

import copy
import re
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
import yaml

import envs  # noqa: F401  (registers the ids)
from envs.config import ConfigError, ScenarioWarning, load_yaml
from envs.scenarios import loader
from envs.scenarios.loader import (
    BATCHING_KEYS,
    CONTINUOUS_KEYS,
    DEVICE_KEYS,
    DEVICE_TYPE_KEYS,
    REWARD_KEYS,
    SCENARIO_DIR,
    TOP_KEYS,
    VARIANT_ENTRY_KEYS,
    VARIANT_KEYS,
    builtin_names,
    load_scenario,
)
from envs.workloads import WORKLOADS, workload_keys
from envs.workloads.dag import STAGE_KEYS, TEMPLATE_KEYS
from envs.workloads.distributions import POPULARITY_KEYS, SIZE_KEYS
from envs.workloads.synthetic import FLOOR_KEYS
from tests.conftest import run_without_heavy_imports

ROOT = Path(__file__).resolve().parents[1]
SMALL = yaml.safe_load((SCENARIO_DIR / "serving-small.yaml").read_text())
TINY_VARIANT = {"name": "tiny", "capability": "image-classification", "accuracy": 0.5, "memory_gb": 0.1,
                "latency": {"A100": [0.001, 0.001]}}


def small(**changes) -> dict:
    data = copy.deepcopy(SMALL)
    data.update(copy.deepcopy(changes))
    return data


def write(tmp_path: Path, data: dict, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


# ------------------------------------------------------------------ unusable variants / types
def test_a_variant_that_runs_on_no_device_type_of_the_cluster_is_refused(tmp_path):
    data = small()
    data["variants"].append({**TINY_VARIANT, "latency": {"H100": [0.001, 0.001], "V100": [0.001, 0.002]}})
    with pytest.raises(ConfigError, match=re.escape(
            "bad.yaml: variant 'tiny' can run on no device type of the cluster: its latency profiles name "
            "['H100', 'V100'], the cluster's device types are ['A100', 'T4', 'CPU']")):
        load_scenario(write(tmp_path, data))


def test_a_variant_too_large_for_every_device_type_it_is_profiled_on_is_refused(tmp_path):
    data = small()
    data["variants"].append({**TINY_VARIANT, "memory_gb": 50.0, "latency": {"A100": [0.001, 0.001],
                                                                             "T4": [0.002, 0.002]}})
    with pytest.raises(ConfigError, match=re.escape(
            "bad.yaml: variant 'tiny' (50 GB) fits in the memory of none of the cluster's device types it has "
            "a latency profile for: A100 (40 GB), T4 (16 GB)")):
        load_scenario(write(tmp_path, data))


def test_a_device_type_no_variant_runs_on_warns_that_it_is_always_masked(tmp_path):
    data = small(device_types={"NPU": {"memory_gb": 16, "load_bandwidth_gbps": 10}})
    data["devices"].append({"type": "NPU", "count": 2, "node": "npu0"})
    with pytest.warns(ScenarioWarning, match=re.escape(
            "bad.yaml: device type 'NPU' runs no variant of the scenario (none has a latency profile for it "
            "that fits its 16 GB): its 2 device(s) will always be masked out")):
        sc = load_scenario(write(tmp_path, data))
    assert "NPU" in [t.name for t in sc.cluster.device_types]
    # A variant that runs there: no warning.
    data["variants"].append({**TINY_VARIANT, "latency": {"NPU": [0.001, 0.001]}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_scenario(write(tmp_path, data))


@pytest.mark.parametrize("name", builtin_names())
def test_builtins_load_without_warnings(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_scenario(name)


# ------------------------------------------------------------------ unknown before missing
def _rename(section: dict, old: str, new: str) -> None:
    section[new] = section.pop(old)


DAG = {"kind": "dag", "num_jobs": 5, "slo_multiplier": 2.0, "load": 0.5,
       "templates": [{"name": "t", "stages": [{"capability": "image-classification", "size": 2}]}]}


@pytest.mark.parametrize("where,build,old,new", [
    ("bad.yaml", lambda d: d, "primary_metric", "primary_metirc"),
    ("bad.yaml: devices[0]", lambda d: d["devices"][0], "type", "tpye"),
    ("bad.yaml: variants[9]", lambda d: d["variants"].append(dict(TINY_VARIANT)) or d["variants"][9],
     "capability", "capabilty"),
    ("bad.yaml.workload", lambda d: d["workload"], "slo_multiplier", "slo_multiplyer"),
    ("bad.yaml.workload", lambda d: d["workload"], "num_jobs", "numjobs"),
    ("bad.yaml.reward", lambda d: d["reward"], "latency", "latncy"),
    ("bad.yaml: device_types.A100",
     lambda d: d.setdefault("device_types", {}).setdefault("A100", {"memory_gb": 40, "load_bandwidth_gbps": 13}),
     "memory_gb", "memory_gib"),
    ("bad.yaml.workload.size.image-classification",
     lambda d: d["workload"]["size"].update({"image-classification": {"dist": "uniform", "low": 1, "high": 4}})
     or d["workload"]["size"]["image-classification"], "dist", "dsit"),
    ("bad.yaml.workload.popularity",
     lambda d: d["workload"].pop("mix") and d["workload"].setdefault("popularity", {"zipf": 1.0}),
     "zipf", "zpif"),
    ("bad.yaml.workload.min_accuracy.image-classification",
     lambda d: d["workload"].setdefault("min_accuracy", {"image-classification": {"prob": 0.5, "value": 0.7}})
     ["image-classification"], "prob", "prb"),
    ("bad.yaml.workload", lambda d: d.update(workload={**d["workload"], "kind": "gamma", "cv": 2.0})
     or d["workload"], "cv", "cvv"),
    ("bad.yaml.workload", lambda d: d.update(workload={**d["workload"], "kind": "diurnal", "period": 60.0})
     or d["workload"], "period", "perod"),
    ("bad.yaml.workload.templates[0]", lambda d: d.update(workload=copy.deepcopy(DAG))
     or d["workload"]["templates"][0], "stages", "stagse"),
    ("bad.yaml.workload.templates[0].stages[0]", lambda d: d.update(workload=copy.deepcopy(DAG))
     or d["workload"]["templates"][0]["stages"][0], "capability", "capabilit"),
    ("bad.yaml.workload", lambda d: d.update(workload={"kind": "training", "num_jobs": 5, "load": 0.5,
                                                       "mix": {"image-classification": 1.0}}) or d["workload"],
     "num_jobs", "num_job"),
])
def test_a_misspelt_key_is_reported_as_unknown_with_a_suggestion_not_as_missing(tmp_path, where, build, old, new):
    data = small()
    section = build(data)
    _rename(section, old, new)
    with pytest.raises(ConfigError, match=re.escape(f"{where}: unknown key '{new}'; did you mean '{old}'?")):
        load_scenario(write(tmp_path, data))


def test_misspelt_trace_keys_are_reported_with_a_suggestion(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n1.0,10,5\n2.0,20,5\n")
    data = small(workload={"kind": "trace", "pth": str(trace)})
    with pytest.raises(ConfigError, match=re.escape("bad.yaml.workload: unknown key 'pth'; did you mean 'path'?")):
        load_scenario(write(tmp_path, data))
    data = small(trace_replay={"slo_multiplier": 2.0, "time_scal": 2.0})
    with pytest.raises(ConfigError, match=re.escape(
            "bad.yaml: trace_replay: unknown key 'time_scal'; did you mean 'time_scale'?")):
        load_scenario(write(tmp_path, data))


def test_several_unknown_keys_are_all_named_and_a_far_key_gets_no_suggestion(tmp_path):
    data = small()
    data["workload"]["zzz"] = 1
    data["workload"]["qqq"] = 2
    with pytest.raises(ConfigError) as e:
        load_scenario(write(tmp_path, data))
    assert str(e.value) == "bad.yaml.workload: unknown key 'zzz' (other unknown keys: ['qqq'])"


def test_a_misspelt_choice_gets_a_suggestion(tmp_path):
    data = small()
    data["workload"]["kind"] = "poison"
    with pytest.raises(ConfigError, match=re.escape(
            "bad.yaml.workload: key 'kind' must be one of ['poisson', 'gamma', 'diurnal', 'dag', 'training', "
            "'trace'], got 'poison'; did you mean 'poisson'?")):
        load_scenario(write(tmp_path, data))


# ------------------------------------------------------------------ keyword overrides
def test_a_misspelt_gym_make_keyword_is_blamed_on_the_keyword():
    with pytest.raises(ConfigError) as e:
        gym.make("modelsched/ServingSmall-v1", visibel_tasks=16)
    assert str(e.value) == ("gym.make keyword 'visibel_tasks' (overriding scenario serving-small): unknown key; "
                            "did you mean 'visible_tasks'?")
    with pytest.raises(ConfigError) as e:
        gym.make("modelsched/ServingSmall-v1", workload_overrides={"num_jbos": 10})
    assert str(e.value) == ("gym.make keyword workload_overrides['num_jbos'] (overriding scenario serving-small): "
                            "unknown key; did you mean 'num_jobs'?")
    with pytest.raises(ConfigError, match=re.escape(
            "gym.make keyword 'visible_tasks' (overriding scenario serving-small): key 'visible_tasks' must be an "
            "integer, got str 'many'")):
        gym.make("modelsched/ServingSmall-v1", visible_tasks="many")
    with pytest.raises(ConfigError, match=re.escape(
            "gym.make keyword workload_overrides['load'] (overriding scenario serving-small): key 'load' must be "
            ">= 1e-06, got -1.0")):
        gym.make("modelsched/ServingSmall-v1", workload_overrides={"load": -1})
    with pytest.raises(ConfigError, match=re.escape(
            "gym.make keyword 'workload_overrides' (overriding scenario serving-small): expected a mapping")):
        gym.make("modelsched/ServingSmall-v1", workload_overrides=[("load", 1)])


def test_load_scenario_keywords_are_blamed_on_the_keyword_and_valid_ones_apply():
    with pytest.raises(ConfigError, match=re.escape(
            "keyword 'horizn' (overriding scenario serving-small): unknown key; did you mean 'horizon'?")):
        load_scenario("serving-small", horizn=5)
    sc = load_scenario("serving-small", horizon=5, workload_overrides={"num_jobs": 7}, warmup_s=0.0)
    assert sc.horizon == 5.0 and sc.workload.num_jobs == 7


# ------------------------------------------------------------------ duplicate YAML keys
def test_duplicate_keys_are_refused_with_file_and_lines(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text("name: x\nprimary_metric: goodput\nname: y\n")
    with pytest.raises(ConfigError, match=re.escape(f"{p}:3: duplicate key 'name' (first given on line 1)")):
        load_scenario(p)
    text = (SCENARIO_DIR / "serving-small.yaml").read_text()
    nested = text.replace("  num_jobs: 1200\n", "  num_jobs: 1200\n  load: 0.5\n")
    line = nested.splitlines().index("  load: 0.5") + 1
    first = nested.splitlines().index("  load: 0.8") + 1
    p.write_text(nested)
    with pytest.raises(ConfigError, match=re.escape(
            f"{p}:{max(line, first)}: duplicate key 'load' (first given on line {min(line, first)})")):
        load_scenario(p)
    p.write_text("a:\n  - {x: 1, x: 2}\n")  # in a flow mapping inside a list
    with pytest.raises(ConfigError, match=re.escape(f"{p}:2: duplicate key 'x' (first given on line 2)")):
        load_yaml(p)
    p.write_text("a: &base {x: 1}\nb:\n  <<: *base\n  x: 2\n")  # a merge key is not a duplicate
    assert load_yaml(p) == {"a": {"x": 1}, "b": {"x": 2}}


def test_duplicate_keys_in_the_library_are_refused(tmp_path, monkeypatch):
    lib = tmp_path / "library.yaml"
    lib.write_text("device_types:\n  A100: {memory_gb: 40, load_bandwidth_gbps: 13}\n"
                   "  A100: {memory_gb: 80, load_bandwidth_gbps: 13}\nvariants: {}\n")
    monkeypatch.setattr(loader, "LIBRARY_PATH", lib)
    loader._library.cache_clear()
    try:
        with pytest.raises(ConfigError, match=re.escape(f"{lib}:3: duplicate key 'A100' (first given on line 2)")):
            load_scenario("serving-small")
    finally:
        monkeypatch.undo()
        loader._library.cache_clear()
    load_scenario("serving-small")  # the real library again


# ------------------------------------------------------------------ python -m envs
def test_python_m_envs_lists_and_shows_without_gymnasium_or_torch():
    r = run_without_heavy_imports("""
        import contextlib, io
        from envs.__main__ import main
        for argv in (["list", "devices"], ["list", "variants"], ["list", "scenarios"], ["show", "pipelines"]):
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert main(argv) == 0, argv
            print("=== " + " ".join(argv))
            print(buf.getvalue())
        buf = io.StringIO()
        with contextlib.redirect_stderr(buf):
            assert main(["show", "no-such-scenario"]) == 2
        print("=== error")
        print(buf.getvalue())
        assert "gymnasium" not in __import__("sys").modules
    """)
    assert r.returncode == 0, r.stderr
    parts = dict(p.split("\n", 1) for p in r.stdout.split("=== ")[1:])
    devices = parts["list devices"].splitlines()
    assert devices[0].split()[:3] == ["name", "memory_gb", "load_GB/s"]
    a100 = next(line.split() for line in devices if line.startswith("A100 "))
    assert a100 == ["A100", "40", "13", "0.05", "4.1", "inf", "0"]
    variants = parts["list variants"]
    assert re.search(r"^resnet50\s+image-classification\s+0\.7613\s+0\.45\s+inf\s+\S*V100", variants, re.M)
    scenarios = parts["list scenarios"]
    for name in builtin_names():
        assert re.search(rf"^{re.escape(name)}\s+{re.escape(envs.env_id(name))}\s+\w+", scenarios, re.M)
    assert re.search(r"^training-cluster\s+\S+\s+mean_slowdown\s+8 x K80", scenarios, re.M)
    show = parts["show pipelines"]
    assert "gym id: modelsched/Pipelines-v1" in show and "workload: dag (DagWorkload)" in show
    assert re.search(r"^T4\s+4\s+turing0\s+16", show, re.M)
    assert "error: scenario 'no-such-scenario' is neither a built-in" in parts["error"]


def test_python_m_envs_help():
    r = run_without_heavy_imports("""
        import runpy, sys
        sys.argv = ["python -m envs", "--help"]
        try:
            runpy.run_module("envs", run_name="__main__")
        except SystemExit as e:
            assert e.code == 0
    """)
    assert r.returncode == 0, r.stderr
    assert "usage: python -m envs" in r.stdout and "{list,show}" in r.stdout and "docs/scenarios.md" in r.stdout


# ------------------------------------------------------------------ docs/scenarios.md
DOCS = ROOT / "docs" / "scenarios.md"


def doc_tables() -> dict[str, dict[str, str]]:
    """``{marker: {key: required/default column}}`` of the tables after ``<!-- keys: marker -->``."""
    tables: dict[str, dict[str, str]] = {}
    current = None
    for line in DOCS.read_text().splitlines():
        m = re.match(r"<!-- keys: (\S+) -->", line)
        if m:
            current = tables.setdefault(m.group(1), {})
            continue
        if current is not None and line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            current[cells[0].strip("`")] = cells[1]
        elif current is not None and not line.startswith("|"):
            current = None
    return tables


def code_keys() -> dict[str, tuple[str, ...]]:
    poisson = workload_keys("poisson")
    keys = {
        "top": TOP_KEYS, "device": DEVICE_KEYS, "device_type": DEVICE_TYPE_KEYS,
        "variant": VARIANT_ENTRY_KEYS + VARIANT_KEYS, "reward": REWARD_KEYS, "batching": BATCHING_KEYS,
        "continuous_batching": CONTINUOUS_KEYS,
        "popularity": POPULARITY_KEYS, "min_accuracy": FLOOR_KEYS,
        "dag.template": TEMPLATE_KEYS, "dag.stage": STAGE_KEYS,
        "workload.poisson": poisson,
        "workload.gamma": tuple(k for k in workload_keys("gamma") if k not in poisson),
        "workload.diurnal": tuple(k for k in workload_keys("diurnal") if k not in poisson),
        **{f"workload.{k}": workload_keys(k) for k in ("dag", "training", "trace")},
        **{f"size.{d}": keys for d, keys in SIZE_KEYS.items()},
    }
    assert set(WORKLOADS) == {"poisson", "gamma", "diurnal", "dag", "training", "trace"}
    return keys


def test_the_docs_list_exactly_the_keys_the_code_accepts():
    docs, code = doc_tables(), code_keys()
    assert sorted(docs) == sorted(code)
    for marker, keys in code.items():
        assert sorted(docs[marker]) == sorted(keys), marker


def _azure_trace(tmp_path: Path) -> str:
    p = tmp_path / "az.csv"
    p.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n1.0,10,5\n2.0,20,5\n")
    return str(p)


def _size_case(dist: str, spec: dict):
    def build(d: dict, tmp: Path) -> tuple[dict, dict]:
        # (per capability: a mapping without 'dist' at the top is {capability: size})
        size = d["workload"]["size"]["image-classification"] = {"dist": dist, **spec}
        return d, size
    return build


#: marker -> (build a scenario whose section is minimal, return (scenario, the section)).
MINIMAL = {
    "top": lambda d, tmp: ({k: d[k] for k in ("name", "primary_metric", "devices", "variants", "workload")},) * 2,
    "device": lambda d, tmp: (d, d["devices"].__setitem__(0, {"type": "A100"}) or d["devices"][0]),
    "device_type": lambda d, tmp: (d, d.setdefault("device_types", {}).setdefault(
        "A100", {"memory_gb": 40, "load_bandwidth_gbps": 13})),
    "variant": lambda d, tmp: (d, d["variants"].append(
        {k: v for k, v in TINY_VARIANT.items()}) or d["variants"][-1]),
    "reward": lambda d, tmp: (d, d.__setitem__("reward", {}) or d["reward"]),
    "batching": lambda d, tmp: (d, d.__setitem__("batching", {"sizes": [1, 2]}) or d["batching"]),
    "workload.poisson": lambda d, tmp: (d, d.__setitem__("workload", {
        "kind": "poisson", "num_jobs": 5, "slo_multiplier": 2.0, "mix": {"image-classification": 1}, "load": 0.5})
        or d["workload"]),
    "workload.gamma": lambda d, tmp: (d, d.__setitem__("workload", {
        "kind": "gamma", "num_jobs": 5, "slo_multiplier": 2.0, "mix": {"image-classification": 1}, "load": 0.5,
        "cv": 2.0}) or d["workload"]),
    "workload.diurnal": lambda d, tmp: (d, d.__setitem__("workload", {
        "kind": "diurnal", "num_jobs": 5, "slo_multiplier": 2.0, "mix": {"image-classification": 1}, "load": 0.5,
        "period": 60.0}) or d["workload"]),
    "workload.dag": lambda d, tmp: (d, d.__setitem__("workload", copy.deepcopy(
        {**DAG, "templates": [{"stages": [{"capability": "image-classification"}]}]})) or d["workload"]),
    "dag.template": lambda d, tmp: (d, d.__setitem__("workload", copy.deepcopy(
        {**DAG, "templates": [{"stages": [{"capability": "image-classification"}]}]}))
        or d["workload"]["templates"][0]),
    "dag.stage": lambda d, tmp: (d, d.__setitem__("workload", copy.deepcopy(
        {**DAG, "templates": [{"stages": [{"capability": "image-classification"}]}]}))
        or d["workload"]["templates"][0]["stages"][0]),
    "workload.training": lambda d, tmp: (d, d.__setitem__("workload", {
        "kind": "training", "num_jobs": 5, "load": 0.5}) or d["workload"]),
    "workload.trace": lambda d, tmp: (d, d.__setitem__("workload", {
        "kind": "trace", "path": _azure_trace(tmp)}) or d["workload"]),
    "popularity": lambda d, tmp: (d, d["workload"].pop("mix") and d["workload"].setdefault("popularity", {"zipf": 1.0})),
    "min_accuracy": lambda d, tmp: (d, d["workload"].setdefault(
        "min_accuracy", {"image-classification": {"prob": 0.5, "value": 0.7}})["image-classification"]),
    **{f"size.{dist}": _size_case(dist, spec) for dist, spec in (
        ("constant", {"value": 2}), ("uniform", {"low": 1, "high": 4}), ("lognormal", {"mean": 3.0, "cv": 1.0}))},
}


def _base(marker: str) -> dict:
    if marker == "workload.training":  # needs train-* capabilities for its default mix
        return yaml.safe_load((SCENARIO_DIR / "training-cluster.yaml").read_text())
    return small()


@pytest.mark.parametrize("marker", sorted(MINIMAL))
def test_required_keys_in_the_docs_are_required_and_the_rest_have_defaults(tmp_path, marker):
    documented = doc_tables()[marker]
    if marker in ("workload.gamma", "workload.diurnal"):  # their tables add to poisson's
        documented = {**doc_tables()["workload.poisson"], **documented}
    required = [k for k, col in documented.items() if col == "required"]
    one_of = {k for k, col in documented.items() if col.startswith("one of")}
    data, section = MINIMAL[marker](_base(marker), tmp_path)
    # The minimal section holds only the documented required keys (and one key of each
    # 'one of' group): it must load.
    extra = set(section) - set(required) - one_of
    assert not extra, extra
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_scenario(write(tmp_path, data))
    for key in required:
        value = section.pop(key)
        try:
            with pytest.raises(ConfigError, match=re.escape(f"missing required key '{key}'")):
                load_scenario(write(tmp_path, data))
        finally:
            section[key] = value
    for key in one_of & set(section):
        value = section.pop(key)
        try:
            with pytest.raises(ConfigError, match="give exactly one of"):
                load_scenario(write(tmp_path, data))
        finally:
            section[key] = value
