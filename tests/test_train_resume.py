"""train.py survives kills: a run killed (SIGKILL, no chance to save anything) and resumed with
``--resume RUN`` ends with the same parameters, optimizer state, best model, evaluations,
progress.csv and TensorBoard curves as the same run left alone (deterministic on CPU), for the
reference envs (DummyVecEnv) and the batched simulator's VecEnv; a run killed before its first
checkpoint starts again in its folder; resuming refuses what it cannot continue exactly."""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TOTAL = 1536


def args(scenario: str, logdir: Path, vec: str) -> list[str]:
    return ["--scenario", scenario, "--timesteps", str(TOTAL), "--n-envs", "2", "--vec", vec,
            "--eval-freq", "256", "--eval-seeds", "10000", "--eval-heuristics", "mct", "--checkpoint-freq", "512",
            "-p", "n_steps=64", "-p", "batch_size=64", "-p", "n_epochs=1", "-p", "pretrain.episodes=2",
            "-p", "pretrain.epochs=1", "--no-final-eval", "--no-progress-bar", "--logdir", str(logdir)]


def train(*argv: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"train.py {' '.join(argv)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def steps_of(path: Path) -> int:
    try:
        with zipfile.ZipFile(path) as zf:
            return int(json.loads(zf.read("data"))["num_timesteps"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return -1


def kill_when(argv: list[str], ready) -> None:
    """Start train.py and SIGKILL it as soon as ``ready()`` holds (it must not finish first)."""
    proc = subprocess.Popen([sys.executable, "train.py", *argv], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()


def tensors(path: Path, name: str) -> dict:
    with zipfile.ZipFile(path) as zf:
        return torch.load(io.BytesIO(zf.read(name)), weights_only=True)


def same_tensors(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_tensors(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_tensors(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


#: Logged values that measure the machine, not the run.
CLOCK = ("time/", "pretrain/seconds")


def progress_rows(run: Path) -> list[dict]:
    with open(run / "progress.csv") as f:
        return [{k: v for k, v in row.items() if not k.startswith(CLOCK)} for row in csv.DictReader(f)]


def curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()  # applies the resumed run's purge of what the killed process wrote past its checkpoint
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]
            if not tag.startswith(CLOCK)}


def assert_same_run(a: Path, b: Path) -> None:
    for name in ("model.zip", "best_model.zip"):
        assert same_tensors(tensors(a / name, "policy.pth"), tensors(b / name, "policy.pth")), name
    assert same_tensors(tensors(a / "model.zip", "policy.optimizer.pth"), tensors(b / "model.zip", "policy.optimizer.pth"))
    assert (a / "evaluations.jsonl").read_text() == (b / "evaluations.jsonl").read_text()
    assert progress_rows(a) == progress_rows(b)
    ca, cb = curves(a), curves(b)
    assert ca.keys() == cb.keys()
    for tag in ca:
        assert ca[tag] == cb[tag], tag
    assert sorted(p.name for p in (a / "checkpoints").iterdir()) == sorted(p.name for p in (b / "checkpoints").iterdir())


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="module")
def straight(logdir, tiny_scenario) -> dict[str, Path]:
    """The runs left alone, one per vectorisation."""
    out = {}
    for vec in ("dummy", "batched"):
        train(*args(tiny_scenario, logdir, vec), "--run-name", f"straight-{vec}")
        out[vec] = logdir / f"straight-{vec}"
    return out


@pytest.mark.parametrize("vec", ["dummy", "batched"])
def test_a_killed_run_resumes_to_the_same_run(straight, logdir, tiny_scenario, vec):
    run = logdir / f"killed-{vec}"
    last = run / "checkpoints" / "last.zip"
    kill_when([*args(tiny_scenario, logdir, vec), "--run-name", run.name], lambda: steps_of(last) >= 512)
    killed_at = steps_of(last)
    assert 512 <= killed_at < TOTAL and not (run / "model.zip").exists()  # SIGKILL: nothing saved on the way out
    out = train("--resume", str(run)).stdout
    assert f"resuming {run} at {killed_at} steps" in out
    assert_same_run(straight[vec], run)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["phase"] == "done" and summary["resumed_from_timesteps"] == killed_at
    assert summary["num_timesteps"] == TOTAL
    assert "# resumed" in (run / "command.txt").read_text()


def test_a_run_killed_before_its_first_checkpoint_starts_again(straight, logdir, tiny_scenario):
    run = logdir / "killed-early"
    kill_when([*args(tiny_scenario, logdir, "dummy"), "--run-name", run.name],
              lambda: (run / "config.yml").is_file())
    had_checkpoint = (run / "checkpoints" / "last.zip").exists()
    out = train("--resume", str(run)).stdout
    if not had_checkpoint:  # the usual case: killed while it prepared or pretrained
        assert "stopped before its first checkpoint, so it starts again" in out
    assert_same_run(straight["dummy"], run)


def test_resume_refuses_what_it_cannot_continue(straight, tmp_path, capsys):
    import train as cli

    run = tmp_path / "run"
    shutil.copytree(straight["dummy"], run)
    assert cli.main(["--resume", str(run)]) == 2  # finished: a new total is needed
    assert f"is at {TOTAL} steps and the run's total is {TOTAL}: give --timesteps above {TOTAL}" in capsys.readouterr().err
    assert cli.main(["--resume", str(run / "model.zip"), "--timesteps", "2048"]) == 2
    err = capsys.readouterr().err
    assert "has no resume state" in err and "--init-from" in err
    # a checkpoint whose environments no longer rebuild to what it saved (here: a tampered observation)
    last = run / "checkpoints" / "last.zip"
    with zipfile.ZipFile(last) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    with np.load(io.BytesIO(entries["modelsched_resume.npz"])) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["obs/global"] = arrays["obs/global"] + 1.0
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    entries["modelsched_resume.npz"] = buf.getvalue()
    with zipfile.ZipFile(last, "w") as zf:
        for n, data in entries.items():
            zf.writestr(n, data)
    before = (run / "progress.csv").read_text()
    assert cli.main(["--resume", str(run), "--timesteps", "2048", "--no-progress-bar"]) == 2
    assert "the rebuilt training envs differ from the checkpoint's" in capsys.readouterr().err
    assert (run / "progress.csv").read_text() == before  # refused before the run's logs were touched
    assert json.loads((run / "train_summary.json").read_text())["phase"] == "done"


def test_a_finished_run_trains_further(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight["dummy"], run)
    train("--resume", str(run), "--timesteps", str(TOTAL + 256))
    assert steps_of(run / "model.zip") == TOTAL + 256
    before, after = curves(straight["dummy"])["train/loss"], curves(run)["train/loss"]
    assert after[:len(before)] == before  # one curve: the finished run's, then the new steps
    steps = [s for s, _ in after[len(before):]]
    assert steps == sorted(steps) and steps[0] > TOTAL and steps[-1] == TOTAL + 256
    import yaml

    assert yaml.safe_load((run / "config.yml").read_text())["hyperparams"]["n_timesteps"] == TOTAL + 256


def test_a_run_that_fails_before_its_first_checkpoint_leaves_no_folder(tmp_path, tiny_scenario, monkeypatch):
    import agents.training as training

    def broken(*a, **k):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(training, "make_vec_env", broken)
    cfg = training.TrainConfig(scenario=tiny_scenario, timesteps=64, logdir=str(tmp_path), eval_freq=0,
                               final_eval=False, progress_bar=False, pretrain=False)
    with pytest.raises(RuntimeError, match="planted failure"):
        training.train(cfg)
    assert not any(tmp_path.iterdir())


def test_the_same_command_gives_the_same_run(straight, logdir, tiny_scenario):
    """Training is reproducible on CPU: the same command and seed, the same model and logs."""
    train(*args(tiny_scenario, logdir, "dummy"), "--run-name", "again")
    assert_same_run(straight["dummy"], logdir / "again")
