"""Policies of one's own: masks passed to any predict that takes them, evaluate.py --policies
module:Class / file.py:Class / entry points, the README's example, and report labels."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import baselines
import envs  # noqa: F401  (registers the ids)
from baselines import PolicyError, run_episode
from baselines.evaluation import build_parser, evaluate
from baselines.rollout import is_custom_spec, load_policy, policy_labels

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"workload_overrides": {"num_jobs": 40}, "warmup_s": 0.0}

FIRST_VALID = textwrap.dedent("""
    import numpy as np

    class FirstValid:
        '''A plain class (no base class): the first valid assignment, else wait.'''
        def __init__(self, env):
            self.env = env
            self.calls = 0
            self.masks_seen = 0

        def predict(self, observation, state=None, episode_start=None, deterministic=True, action_masks=None):
            self.calls += 1
            if action_masks is None:
                raise AssertionError("no action_masks passed")
            self.masks_seen += 1
            valid = np.flatnonzero(action_masks[:-1])
            return (int(valid[0]) if valid.size else len(action_masks) - 1), state

    class Waiter:
        '''Takes no constructor argument and no masks: always waits.'''
        def predict(self, observation, state=None, episode_start=None, deterministic=True):
            return 10 ** 6, state
""")


def readme_block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- tested: {marker} -->\s*```python\n(.*?)```", text, re.S)
    assert m, f"README.md has no python block after '<!-- tested: {marker} -->'"
    return m.group(1)


@pytest.fixture()
def policy_module(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text(FIRST_VALID)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mine", None)
    yield tmp_path
    sys.modules.pop("mine", None)


def test_run_episode_passes_masks_to_any_predict_that_takes_them(policy_module):
    env = gym.make("modelsched/ServingSmall-v1", disable_env_checker=True, **SMALL)
    policy = load_policy("mine:FirstValid", env)
    res = run_episode(env, policy, 5)
    assert policy.calls == res["steps"] > 0 and policy.masks_seen == policy.calls
    assert res["metrics"]["drops"] + env.unwrapped.sim.accounting()["completed"] == 40


def test_a_predict_without_masks_gets_none_and_invalid_actions_are_named(policy_module):
    env = gym.make("modelsched/ServingSmall-v1", disable_env_checker=True, **SMALL)
    waiter = load_policy("mine:Waiter", env)  # built with no argument
    with pytest.raises(ValueError, match="action"):
        run_episode(env, waiter, 5)


def test_custom_specs_and_their_errors(policy_module):
    assert is_custom_spec("mine:FirstValid") and is_custom_spec("mine.py:FirstValid")
    assert not is_custom_spec("fifo") and not is_custom_spec("runs/model.zip")
    env = gym.make("modelsched/ServingSmall-v1", disable_env_checker=True, **SMALL)
    assert type(load_policy(str(policy_module / "mine.py") + ":FirstValid", env)).__name__ == "FirstValid"
    with pytest.raises(PolicyError, match="cannot import module 'nosuchmodule'"):
        load_policy("nosuchmodule:X", env)
    with pytest.raises(PolicyError, match="has no attribute 'Nope'"):
        load_policy("mine:Nope", env)
    (policy_module / "bad.py").write_text("class NoPredict:\n    pass\n")
    with pytest.raises(PolicyError, match="has no predict"):
        load_policy("bad:NoPredict", env)


def test_evaluate_runs_a_custom_policy_next_to_the_heuristics(policy_module):
    out = policy_module / "out"
    summary = evaluate(build_parser().parse_args(
        ["--policies", "mine:FirstValid", "fifo", "mct", "--seeds", "3", "4", "--out", str(out), "--no-progress"]))[0]
    pols = summary["policies"]
    assert pols["mine:FirstValid"]["kind"] == "custom" and pols["fifo"]["kind"] == "heuristic"
    # the reference is the best built-in heuristic, never the custom policy
    assert summary["best_heuristic"] in ("fifo", "mct")
    assert pols["mine:FirstValid"]["paired_vs_best_heuristic"]["against"] == summary["best_heuristic"]
    # the same under the batched backend: the custom policy runs on the reference simulator
    bat = evaluate(build_parser().parse_args(
        ["--policies", "mine:FirstValid", "fifo", "mct", "--seeds", "3", "4", "--out", str(out / "b"),
         "--no-progress", "--backend", "batched"]))[0]
    assert bat["settings"]["reference_backend_for"] == ["mine:FirstValid"]
    for label in pols:
        assert bat["policies"][label]["metrics"] == pols[label]["metrics"]


def test_without_a_heuristic_there_is_no_best_heuristic(policy_module):
    out = policy_module / "out"
    summary = evaluate(build_parser().parse_args(
        ["--policies", "mine:FirstValid", "--seeds", "3", "--out", str(out), "--no-progress"]))[0]
    assert summary["best_heuristic"] is None
    assert summary["policies"]["mine:FirstValid"]["paired_vs_best_heuristic"] is None
    md = (out / "results.md").read_text()
    assert "no paired differences" in md and "best heuristic" not in md


def test_readme_policy_example_is_evaluated(tmp_path):
    (tmp_path / "my_policy.py").write_text(readme_block("custom-policy"))
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--policies", "my_policy:UrgentAccurate",
                           "fifo", "--seeds", "3", "--out", str(tmp_path / "out"), "--no-progress"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "out" / "results.json").read_text())
    row = data["policies"]["my_policy:UrgentAccurate"]
    assert row["kind"] == "custom" and row["metrics"]["effective_accuracy"]["mean"] > 0


def test_entry_point_plugins_are_found_by_name(tmp_path):
    pkg = tmp_path / "site"
    (pkg / "plugpol").mkdir(parents=True)
    (pkg / "plugpol" / "__init__.py").write_text(FIRST_VALID)
    dist = pkg / "plugpol-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugpol\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[modelsched.policies]\nfirst-valid = plugpol:FirstValid\n")
    code = textwrap.dedent("""
        import gymnasium as gym, envs
        from baselines.rollout import load_policy, plugin_policies, is_custom_spec, policy_label
        assert plugin_policies() == {"first-valid": "plugpol:FirstValid"}, plugin_policies()
        assert is_custom_spec("first-valid") and policy_label("first-valid") == "first-valid"
        env = gym.make("modelsched/ServingSmall-v1", disable_env_checker=True)
        print(type(load_policy("first-valid", env)).__name__)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(pkg)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "FirstValid"


def test_unknown_custom_policy_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--policies", "nosuch:Thing", "--seeds", "0",
                           "--out", str(tmp_path / "o")], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "cannot import module 'nosuch'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def test_model_labels_come_from_run_folders(tmp_path):
    for run in ("run-a", "run-b"):
        (tmp_path / run / "checkpoints").mkdir(parents=True)
        (tmp_path / run / "config.yml").write_text("algo: maskable_ppo\n")
        (tmp_path / run / "best_model.zip").write_bytes(b"")
        (tmp_path / run / "checkpoints" / "model_128_steps.zip").write_bytes(b"")
    (tmp_path / "x" / "m").mkdir(parents=True)
    (tmp_path / "y" / "m").mkdir(parents=True)
    for d in ("x", "y"):
        (tmp_path / d / "m" / "best_model.zip").write_bytes(b"")
    specs = [str(tmp_path / "run-a" / "best_model.zip"), str(tmp_path / "run-b" / "best_model.zip"),
             str(tmp_path / "run-a" / "checkpoints" / "model_128_steps.zip"), "fifo",
             str(tmp_path / "x" / "m" / "best_model.zip"), str(tmp_path / "y" / "m" / "best_model.zip")]
    assert policy_labels(specs) == ["run-a/best_model", "run-b/best_model", "run-a/model_128_steps", "fifo",
                                    "x/m/best_model", "y/m/best_model"]
    assert "best_model-2" not in policy_labels([specs[0], specs[0]])


def test_predict_signature_detection():
    from baselines.rollout import accepts_masks

    class A:
        def predict(self, obs, state=None, episode_start=None, deterministic=True, action_masks=None):
            return 0, None

    class B:
        def predict(self, obs, **kwargs):
            return 0, None

    class C:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return 0, None

    env = gym.make("modelsched/ServingSmall-v1", disable_env_checker=True)
    env.reset(seed=0)
    assert accepts_masks(A()) and accepts_masks(B()) and not accepts_masks(C())
    assert accepts_masks(baselines.make("fifo", env))
    assert np.asarray(baselines.make("fifo", env).predict(None)[0]).ndim == 0


def test_models_are_checked_before_any_episode_runs(tmp_path):
    """A model of another scenario's spaces, a file that is no model, an --out that is a file:
    one-line errors (exit 2) before any episode, and no output folder."""
    from sb3_contrib import MaskablePPO

    env = gym.make("modelsched/ServingSmall-v1")
    model = MaskablePPO("MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    path = tmp_path / "small.zip"
    model.save(path)
    (tmp_path / "garbage.zip").write_bytes(b"not a zip")
    (tmp_path / "afile").write_text("x")
    cases = [(["--scenario", "serving-hetero", "--policies", str(path)], "trained on other spaces"),
             (["--policies", str(tmp_path / "garbage.zip")], "is not a Stable-Baselines3 model archive"),
             (["--policies", "fifo", "--out", str(tmp_path / "afile")], "is a file, not a folder")]
    for argv, message in cases:
        out = ["--out", str(tmp_path / "o")] if "--out" not in argv else []
        proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *argv, "--seeds", "0", *out],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()
