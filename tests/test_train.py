"""End-to-end tests of train.py (subprocesses with tiny budgets on a short scenario)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TINY = ["-p", "n_steps=64", "-p", "batch_size=32", "-p", "n_epochs=1", "--no-progress-bar", "--no-final-eval"]


def run_train(*args: str, timeout: float = 240, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def only_run(logdir: Path) -> Path:
    runs = [p for p in logdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def scalars(run_dir: Path) -> dict[str, list]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: acc.Scalars(tag) for tag in acc.Tags()["scalars"]}


def text_tags(run_dir: Path) -> list[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc.Tags()["tensors"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_scenario) -> Path:
    """One tiny run with periodic evaluation and checkpoints."""
    logdir = tmp_path_factory.mktemp("runs")
    run_train("--scenario", tiny_scenario, "--timesteps", "256", "--seed", "3", "--logdir", str(logdir),
              "--eval-freq", "128", "--eval-seeds", "10000", "--eval-heuristics", "mct", "infaas",
              "--checkpoint-freq", "128", *TINY)
    return only_run(logdir)


def test_run_folder_describes_itself(trained):
    for name in ("config.yml", "args.yml", "command.txt", "git.txt", "model.zip", "best_model.zip"):
        assert (trained / name).is_file(), name
    assert trained.name.startswith("serving-tiny__maskable_ppo__s3__")
    config = yaml.safe_load((trained / "config.yml").read_text())
    assert config["algo"] == "maskable_ppo" and config["primary_metric"] == "effective_accuracy"
    assert config["hyperparams"]["n_steps"] == 64 and config["hyperparams"]["n_timesteps"] == 256
    args = yaml.safe_load((trained / "args.yml").read_text())
    assert args["seed"] == 3 and args["eval_freq"] == 128
    assert "train.py" in (trained / "command.txt").read_text()
    assert "revision:" in (trained / "git.txt").read_text()
    ckpts = sorted(p.name for p in (trained / "checkpoints").iterdir())
    assert ckpts == ["last.zip", "model_128_steps.zip", "model_256_steps.zip"], ckpts


def test_tensorboard_has_sim_eval_and_hyperparameters(trained):
    tags = scalars(trained)
    assert "sim/effective_accuracy" in tags and "sim/slo_attainment" in tags
    assert "eval/agent/effective_accuracy" in tags
    assert any(t.startswith("eval/mct/") or t.startswith("eval/infaas/") for t in tags)
    assert "eval/advantage/effective_accuracy" in tags
    assert "rollout/ep_rew_mean" in tags and "train/loss" in tags
    assert any("hyperparameters" in t for t in text_tags(trained))


def test_init_from_continues_timesteps(tmp_path, trained, tiny_scenario):
    ckpt = trained / "checkpoints" / "model_128_steps.zip"
    assert ckpt.is_file()
    run_train("--scenario", tiny_scenario, "--init-from", str(ckpt), "--timesteps", "128", "--seed", "4",
              "--logdir", str(tmp_path), "--eval-freq", "0", "--checkpoint-freq", "0", *TINY)
    run = only_run(tmp_path)
    from sb3_contrib import MaskablePPO

    model = MaskablePPO.load(run / "model.zip", device="cpu")
    assert model.num_timesteps == 256  # 128 from the checkpoint + 128 more
    steps = [e.step for e in scalars(run)["time/fps"]]
    assert min(steps) > 128 and max(steps) == 256
    assert yaml.safe_load((run / "args.yml").read_text())["init_from"] == str(ckpt)


def test_subproc_vec_env_with_masks(tmp_path, tiny_scenario):
    run_train("--scenario", tiny_scenario, "--n-envs", "2", "--timesteps", "128", "--logdir", str(tmp_path),
              "--eval-freq", "0", "--checkpoint-freq", "0", *TINY)
    run = only_run(tmp_path)
    assert yaml.safe_load((run / "config.yml").read_text())["hyperparams"]["n_envs"] == 2
    assert "sim/effective_accuracy" in scalars(run)


def test_batched_vec_env_trains_with_its_hyperparameters(tmp_path, tiny_scenario):
    """--vec batched: the vec_batched entry applies (and is printed), explicit flags win, reward
    shaping works, the run logs episode and sim metrics like the other vectorisations."""
    r = run_train("--scenario", tiny_scenario, "--vec", "batched", "--n-envs", "8", "--timesteps", "256",
                  "--logdir", str(tmp_path), "--eval-freq", "0", "--checkpoint-freq", "0", "-p", "pretrain=null",
                  "-p", "n_steps=32", "-p", "batch_size=64", "-p", "n_epochs=1", "--no-progress-bar",
                  "--no-final-eval", "-p", "reward_shaping={base: effective_accuracy, potential: queue}")
    assert "--vec batched: 8 instances of the batched simulator" in r.stdout
    run = only_run(tmp_path)
    hp = yaml.safe_load((run / "config.yml").read_text())["hyperparams"]
    assert (hp["n_envs"], hp["n_steps"], hp["batch_size"]) == (8, 32, 64)
    assert hp["reward_shaping"] == {"base": "effective_accuracy", "potential": "queue"}
    tags = scalars(run)
    assert "sim/effective_accuracy" in tags and "rollout/ep_rew_mean" in tags


def test_bad_arguments_fail_with_clear_messages(tmp_path, capsys):
    import train

    cases = [(["--algo", "sac"], "unknown algorithm 'sac'"),
             (["-p", "learning_rat=1"], "unknown hyperparameter 'learning_rat'"),
             (["--seed", "10000"], "overlap the validation seeds"),
             (["--init-from", str(tmp_path / "missing.zip")], "no model file")]
    for argv, message in cases:  # in-process: each fails before any training starts
        assert train.main([*argv, "--logdir", str(tmp_path)]) == 2
        assert message in capsys.readouterr().err
    assert train.main(["--resume", str(tmp_path / "missing")]) == 2
    assert "no run folder or checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # a resumed run keeps its own arguments
        train.main(["--resume", str(tmp_path), "--seed", "5"])
    assert exit_.value.code == 2 and "--seed cannot be changed" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_ctrl_c_saves_the_model(tmp_path, tiny_scenario):
    proc = subprocess.Popen([sys.executable, "train.py", "--scenario", tiny_scenario, "--timesteps", "10000000",
                             "--logdir", str(tmp_path), "--eval-freq", "0", *TINY],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until training is under way (a rollout was logged)
        csvs = list(tmp_path.glob("*/progress.csv"))
        if csvs and csvs[0].stat().st_size > 0:
            break
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    run = only_run(tmp_path)
    assert (run / "model.zip").is_file() and "saving" in err


def _evaluate_py_ready() -> str | None:
    path = REPO / "evaluate.py"
    if not path.is_file() or not path.read_text().strip():
        return "evaluate.py does not exist yet"
    try:
        import baselines.evaluation  # noqa: F401
    except ImportError as e:
        return f"evaluate.py's backend is not importable yet: {e}"
    return None


def test_evaluate_py_accepts_the_saved_model(tmp_path, trained, tiny_scenario):
    reason = _evaluate_py_ready()
    if reason:
        pytest.skip(reason)
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "evaluate.py", "--scenario", tiny_scenario, "--policies", "mct",
                           str(trained / "best_model.zip"), "--seeds", "1000", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "best_model" in proc.stdout


def test_help_says_what_runs_and_prints_each_default_once(capsys):
    import train

    with pytest.raises(SystemExit) as e:
        train.parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for phase in ("1. pretraining", "2. RL training", "3. periodic evaluation", "4. final evaluation"):
        assert phase in text
    for switch in ("--no-pretrain", "--eval-freq 0", "--no-final-eval"):
        assert switch in text
    assert "(default: None)" not in text
    flat = " ".join(text.split())
    assert flat.count("(default: True)") == 2  # --final-eval and --progress-bar, once each
    assert "(default: True) (default: True)" not in flat


@pytest.mark.parametrize("argv, message", [
    (["--timesteps", "0"], "--timesteps must be >= 1"),
    (["--timesteps", "-5"], "--timesteps must be >= 1"),
    (["--n-envs", "0"], "--n-envs must be >= 1"),
    (["--eval-freq", "-1"], "must be >= 0"),
])
def test_bad_numbers_are_refused_by_the_parser(tmp_path, capsys, argv, message):
    import train

    with pytest.raises(SystemExit) as e:
        train.main([*argv, "--logdir", str(tmp_path)])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, message", [
    (["--run-name", "../escape"], "must be a plain folder name"),
    (["--run-name", "/tmp/abs"], "must be a plain folder name"),
    (["-p", "learning_rate=abc"], "-p learning_rate=...: hyperparameter 'learning_rate' must be a number"),
    (["-p", "n_steps=[1]"], "hyperparameter 'n_steps' must be a number"),
    (["-p", "normalize_advantage=3"], "must be true or false"),
])
def test_bad_values_fail_before_any_work(tmp_path, capsys, argv, message):
    import train

    assert train.main([*argv, "--logdir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_pretraining_switches():
    from agents.training import TrainConfig, resolve_hyperparams

    assert resolve_hyperparams(TrainConfig(scenario="serving-small"))["pretrain"]["heuristic"] == "adaptive"
    assert not resolve_hyperparams(TrainConfig(scenario="serving-small", pretrain=False))["pretrain"]
    assert resolve_hyperparams(TrainConfig(scenario="serving-small", overrides=["pretrain={}"]))["pretrain"] == {}
    assert resolve_hyperparams(TrainConfig(scenario="serving-small", overrides=["pretrain=null"]))["pretrain"] is None


def test_planned_timesteps_round_up_to_whole_rollouts():
    from agents.training import planned_timesteps

    assert planned_timesteps("maskable_ppo", {"n_timesteps": 1000, "n_envs": 1, "n_steps": 256}) == 1024
    assert planned_timesteps("ppo", {"n_timesteps": 1024, "n_envs": 2, "n_steps": 256}) == 1024
    assert planned_timesteps("ppo", {"n_timesteps": 1025, "n_envs": 2, "n_steps": 256}) == 1536
    assert planned_timesteps("dqn", {"n_timesteps": 1001, "n_envs": 4}) == 1004


def test_redirected_output_shows_each_phase_as_it_runs(tmp_path, tiny_scenario):
    """Output to a pipe (not a terminal): the plan, plain progress lines of the RL phase, the
    periodic evaluation; train_summary.json separates the phases and reports the RL fps."""
    r = run_train("--scenario", tiny_scenario, "--timesteps", "100", "--logdir", str(tmp_path), "--eval-freq", "64",
                  "--eval-seeds", "10000", "--eval-heuristics", "mct", "--checkpoint-freq", "0",
                  "-p", "n_steps=64", "-p", "batch_size=32", "-p", "n_epochs=1", "--no-final-eval")
    assert "2. RL training: 128 environment steps (asked 100: whole rollouts of 64 x 1)" in r.stdout
    assert "train (maskable_ppo): started, 128 steps" in r.stderr
    assert "train (maskable_ppo): 128/128 steps (100%)" in r.stderr
    assert "eval @ 64" in r.stdout
    summary = json.loads((only_run(tmp_path) / "train_summary.json").read_text())
    assert summary["rl_timesteps"] == summary["num_timesteps"] == 128 and summary["requested_timesteps"] == 100
    assert 0 < summary["periodic_eval_s"] < summary["rl_s"] <= summary["wall_s"]
    assert summary["fps"] > summary["rl_timesteps"] / summary["rl_s"]


def test_project_models_load_weights_only_and_predict_like_sb3(trained, tiny_scenario):
    import gymnasium as gym
    import numpy as np
    from sb3_contrib import MaskablePPO

    from baselines import load_policy

    env = gym.make("modelsched/Scheduling-v1", scenario=tiny_scenario, disable_env_checker=True)
    safe = load_policy(str(trained / "best_model.zip"), env, device="cpu")
    assert getattr(safe, "_modelsched_safe", False)
    ref = MaskablePPO.load(trained / "best_model.zip", device="cpu")
    obs, _ = env.reset(seed=7)
    for _ in range(20):
        mask = env.unwrapped.action_masks()
        a = safe.predict(obs, action_masks=mask, deterministic=True)[0]
        assert a == ref.predict(obs, action_masks=mask, deterministic=True)[0]
        obs, _, term, trunc, _ = env.step(int(a))
        if term or trunc:
            break
    for name, p in ref.policy.state_dict().items():
        assert np.array_equal(p.numpy(), safe.policy.state_dict()[name].numpy()), name


def test_a_crafted_model_in_a_run_folder_runs_no_code(tmp_path, trained):
    """A zip whose pickled fields would run a command: SB3's loader runs it (so the test can
    fail), the project's loader does not."""
    import base64
    import pickle
    import shutil
    import zipfile

    from baselines import load_policy

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained / "config.yml", run / "config.yml")
    bad = run / "best_model.zip"
    with zipfile.ZipFile(trained / "best_model.zip") as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "data":
                d = json.loads(data)
                d["policy_class"] = {":type:": "<class 'type'>",
                                     ":serialized:": base64.b64encode(pickle.dumps(Exploit())).decode()}
                data = json.dumps(d).encode()
            dst.writestr(item, data)
    model = load_policy(str(bad), None, device="cpu")
    assert getattr(model, "_modelsched_safe", False) and not marker.exists()
    from sb3_contrib import MaskablePPO

    try:
        MaskablePPO.load(bad, device="cpu")
    except Exception:  # noqa: BLE001 - the payload ran before the load failed
        pass
    assert marker.exists()


def test_checkpoints_hold_the_update_their_name_says(trained):
    """model_<N>_steps.zip is saved after the update on the rollout ending at N (its counters
    and optimizer state are that update's); last.zip is the final update."""
    import zipfile

    import torch

    for name, steps in (("model_128_steps.zip", 128), ("model_256_steps.zip", 256), ("last.zip", 256)):
        with zipfile.ZipFile(trained / "checkpoints" / name) as zf:
            data = json.loads(zf.read("data"))
            import io

            opt = torch.load(io.BytesIO(zf.read("policy.optimizer.pth")), weights_only=True)
        assert data["num_timesteps"] == steps
        assert data["_n_updates"] == steps // 64  # n_steps 64, n_epochs 1: one update per rollout
        assert opt["state"], "the optimizer state of a checkpoint is never empty"


def test_interrupt_during_pretraining_leaves_no_best_model(tmp_path, tiny_scenario):
    proc = subprocess.Popen([sys.executable, "train.py", "--scenario", tiny_scenario, "--timesteps", "10000",
                             "--logdir", str(tmp_path), "--eval-freq", "0", "-p", "n_steps=64", "-p", "batch_size=32",
                             "-p", "pretrain={heuristic: fifo, episodes: 400, epochs: 500}", "--no-final-eval"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:  # wait until pretraining is under way
        lines.append(line)
        if "pretrain: fifo demonstrations: started" in line:
            break
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + out
    assert "interrupted during pretraining" in out
    run = only_run(tmp_path)
    assert (run / "model.zip").is_file() and not (run / "best_model.zip").exists()
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["interrupted"] and summary["phase"] == "pretrain"
    assert not list(run.rglob("*.tmp"))  # atomic writes leave no temporary files
