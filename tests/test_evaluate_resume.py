"""evaluate.py survives kills: finished episodes kept as they finish, the same command resumes,
outputs replaced as a set, workers end with their parent."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from baselines.evaluation import PARTIAL, build_parser, evaluate
from baselines.journal import Journal
from tests.conftest import short_serving_small

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> str:
    """serving-small with 150 requests: episodes of a fraction of a second."""
    return short_serving_small(tmp_path_factory.mktemp("scenario"), "serving-150", 150)


@pytest.fixture()
def COMMON(scenario) -> list[str]:  # noqa: N802 - reads as the constant it is
    return ["--scenario", scenario, "--policies", "fifo", "mct", "--no-progress"]


def strip(summary: dict) -> dict:
    s = json.loads(json.dumps(summary))
    s.pop("wall_s_total", None)
    for p in s["policies"].values():
        p.pop("wall_s", None)
    return s


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(cond, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_the_journal_round_trips_a_result_exactly(tmp_path, COMMON):
    summary = evaluate(build_parser().parse_args([*COMMON, "--seeds", "3", "--out", str(tmp_path / "a")]))[0]
    assert not (tmp_path / "a" / PARTIAL).exists()  # removed once the outputs are complete
    import gymnasium as gym
    import numpy as np

    import envs  # noqa: F401
    from baselines import make, run_episode

    env = gym.make("modelsched/Scheduling-v1", scenario=COMMON[1], disable_env_checker=True)
    res = run_episode(env, make("mct", env), 3)
    res["kind"] = "heuristic"
    j = Journal(tmp_path / "j")
    j.save("k", res)
    back = j.load("k")
    assert back["metrics"] == res["metrics"] and back["ideal_bound"] == res["ideal_bound"]
    assert np.array_equal(back["latencies"], res["latencies"]) and back["steps"] == res["steps"]
    assert summary["policies"]["mct"]["metrics"]["effective_accuracy"]["per_seed"][0] == res["metrics"]["effective_accuracy"]
    (tmp_path / "j" / "k.npz").write_bytes(b"truncated")  # a file cut by a kill is ignored
    assert j.load("k") is None


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_kill_then_rerun_gives_the_uninterrupted_results(tmp_path, jobs, COMMON):
    seeds = ["--seeds", "1000-1015"]
    ref = evaluate(build_parser().parse_args([*COMMON, *seeds, "--out", str(tmp_path / "ref")]))[0]
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "evaluate.py"), *COMMON, *seeds, "--out", str(out), "--jobs", jobs]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    journal = out / PARTIAL
    wait_for(lambda: journal.is_dir() and len(list(journal.glob("*.npz"))) >= 3)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    kept = len(list(journal.glob("*.npz")))
    assert 3 <= kept < 32 and not (out / "results.json").exists()
    wait_for(lambda: not any(alive(w) for w in workers), timeout=20)  # workers end with their parent
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "resuming: " in again.stderr
    done = int(again.stderr.split("resuming: ")[1].split(" of ")[0])
    assert done >= kept
    got = json.loads((out / "results.json").read_text())
    assert strip(got)["policies"] == strip(ref)["policies"]
    assert not journal.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no staging left


def test_sigterm_keeps_the_work_and_says_how_to_continue(tmp_path, COMMON):
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "evaluate.py"), *COMMON, "--seeds", "1000-1015", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(list((out / PARTIAL).glob("*.npz"))) >= 2 if (out / PARTIAL).is_dir() else False)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again to continue" in err
    assert "Traceback" not in err and len(list((out / PARTIAL).glob("*.npz"))) >= 2


def test_outputs_are_replaced_as_a_set(tmp_path, COMMON):
    """A finished two-scenario run, then a one-scenario run into the same --out: the new set
    replaces the old one whole (no stale sub-folders or plots), and --no-resume starts afresh."""
    out = tmp_path / "out"
    evaluate(build_parser().parse_args(["--scenario", COMMON[1], "--scenario", "faulty-cluster",
                                        "--policies", "fifo", "--seeds", "3", "--out", str(out), "--no-progress"]))
    assert (out / "serving-150").is_dir() and (out / "faulty-cluster").is_dir()
    # a stale journal entry of another command is not reused (its key differs) and is removed
    evaluate(build_parser().parse_args([*COMMON, "--seeds", "3", "--out", str(out)]))
    names = sorted(p.name for p in out.iterdir())
    assert "serving-150" not in names and "faulty-cluster" not in names and "results.json" in names
    assert json.loads((out / "results.json").read_text())["scenario"] == "serving-150"
    args = build_parser().parse_args([*COMMON, "--seeds", "3", "--out", str(out), "--no-resume"])
    assert args.resume is False
    evaluate(args)
    assert (out / "results.json").is_file() and not (out / PARTIAL).exists()
