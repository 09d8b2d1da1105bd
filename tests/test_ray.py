"""Ray (the optional extra ``[ray]``): ``evaluate.py --ray``, RLlib PPO with exact masks, and the
error messages without Ray. One local Ray instance (2 CPUs) serves the whole module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from baselines.evaluation import build_parser, evaluate, without_run_fields
from tests.conftest import BLOCK_HEAVY_IMPORTS

ray = pytest.importorskip("ray", reason='Ray is the optional extra: pip install -e ".[ray]"')

ROOT = Path(__file__).resolve().parents[1]

#: A small cluster where the choice matters: one A100 and one CPU, three image variants (the
#: vision transformer on the CPU misses most deadlines), 40 requests: episodes of tens of steps.
TOY = {"name": "rllib-toy", "primary_metric": "effective_accuracy", "visible_tasks": 2, "queue_capacity": 64,
       "drop_expired": True, "noise_cv": 0.05, "warmup_s": 0.0, "horizon": None,
       "devices": [{"type": "A100", "count": 1, "node": "gpu0"}, {"type": "CPU", "count": 1, "node": "cpu0"}],
       "variants": ["resnet18", "resnet50", "vit_b_16"],
       "workload": {"kind": "poisson", "num_jobs": 40, "load": 0.7, "mix": {"image-classification": 1.0},
                    "size": {"image-classification": [1, 8]}, "slo_multiplier": 5.0},
       "reward": {"latency": 0.01, "slo": 1.0, "drop": 1.0, "accuracy": 1.0, "utilization": 0.0}}


@pytest.fixture(scope="module")
def local_ray():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def toy_yaml(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "rllib-toy.yaml"
    path.write_text(yaml.safe_dump(TOY))
    return path




def _evaluate(*argv):
    return evaluate(build_parser().parse_args([*map(str, argv), "--no-progress"]))


# ---------------------------------------------------------------------- evaluate.py --ray
@pytest.mark.parametrize("backend, policies", [("reference", ["fifo", "edf", "random"]),
                                               ("batched", ["fifo", "random", "genetic"])])
def test_ray_evaluation_gives_the_local_results_and_files(local_ray, tmp_path, toy_yaml, backend, policies):
    """Same JSON, CSV and Markdown as the local run; with --backend batched each task runs the
    batched simulator (genetic, which has none, the reference: the same notice, the same list)."""
    scenario, seeds = ("serving-small", "0-5") if backend == "reference" else (str(toy_yaml), "0-2")
    common = ["--scenario", scenario, "--seeds", seeds, "--policies", *policies, "--backend", backend]
    local = _evaluate(*common, "--out", tmp_path / "local")[0]
    on_ray = _evaluate(*common, "--out", tmp_path / "ray", "--ray")[0]
    assert without_run_fields(local) == without_run_fields(on_ray)
    assert local["settings"] == on_ray["settings"]  # the same run, wherever its episodes ran
    for name in ("results.csv", "results.md"):
        assert (tmp_path / "local" / name).read_text() == (tmp_path / "ray" / name).read_text()
    a = json.loads((tmp_path / "local" / "results.json").read_text())
    b = json.loads((tmp_path / "ray" / "results.json").read_text())
    assert without_run_fields(a) == without_run_fields(b) and len(a["policies"]["fifo"]["metrics"]["effective_accuracy"]["per_seed"]) == (
        6 if backend == "reference" else 3)
    if backend == "batched":
        assert on_ray["settings"]["reference_backend_for"] == ["genetic"]
    assert not (tmp_path / "ray" / ".partial").exists()


DYING_POLICY = """
from pathlib import Path
import os
from baselines.heuristics import FifoPolicy

MARKER = {marker!r}


class DiesOnce(FifoPolicy):
    '''FIFO, except that the first process to play it dies (os._exit) on its first decision.'''

    def predict(self, *args, **kwargs):
        marker = Path(MARKER)
        if not marker.exists():
            marker.write_text("died once")
            os._exit(1)
        return super().predict(*args, **kwargs)
"""


def test_a_task_whose_worker_dies_is_retried(local_ray, tmp_path, monkeypatch):
    marker = tmp_path / "marker"  # (Ray's workers do not see this process's environment variables)
    (tmp_path / "dying.py").write_text(DYING_POLICY.replace("{marker!r}", repr(str(marker))))
    monkeypatch.chdir(tmp_path)  # the tasks start in the driver's folder: the relative path works
    spec = "dying.py:DiesOnce"
    on_ray = _evaluate("--seeds", "0", "1", "--policies", spec, "fifo", "--out", tmp_path / "ray", "--ray")[0]
    assert marker.read_text() == "died once"  # a worker did die, and its task ran again
    local = _evaluate("--seeds", "0", "1", "--policies", spec, "fifo", "--out", tmp_path / "local")[0]
    assert without_run_fields(on_ray) == without_run_fields(local)
    assert on_ray["policies"][spec]["metrics"] == on_ray["policies"]["fifo"]["metrics"]


FAILING_POLICY = """
from baselines.heuristics import FifoPolicy


class Fails(FifoPolicy):
    '''FIFO, except on seed 3, where it raises.'''

    def reset(self, seed=None):
        if seed == 3:
            raise RuntimeError("broken on purpose")
        super().reset(seed)
"""


def test_a_failing_task_writes_no_results_and_keeps_the_finished_episodes(local_ray, tmp_path, monkeypatch):
    (tmp_path / "failing.py").write_text(FAILING_POLICY)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="broken on purpose"):
        _evaluate("--seeds", "0-3", "--policies", "fifo", "failing.py:Fails", "--out", out, "--ray")
    assert not (out / "results.json").exists() and not (out / "results.md").exists()
    kept = list((out / ".partial").glob("*.npz"))
    assert kept  # the journal holds what finished (the fifo episodes), for the next run to reuse
    assert not [p for p in tmp_path.iterdir() if "staging" in p.name]


def _cli(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *map(str, args), "--no-progress"], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_an_unreachable_address_is_one_clear_error(tmp_path):
    r = _cli("--seeds", "0", "--policies", "fifo", "--out", tmp_path / "o", "--ray", "127.0.0.1:1")
    assert r.returncode == 2, r.stderr
    assert "--ray 127.0.0.1:1: cannot reach a Ray cluster there" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_ray_with_jobs_is_refused(tmp_path):
    r = _cli("--seeds", "0", "--policies", "fifo", "--out", tmp_path / "o", "--ray", "--jobs", "2")
    assert r.returncode == 2 and "--jobs is for local processes" in r.stderr


def test_without_ray_installed_the_error_names_the_extra(tmp_path):
    block = BLOCK_HEAVY_IMPORTS.replace("('gymnasium', 'torch', 'stable_baselines3', 'sb3_contrib')", "('ray',)")
    code = block + textwrap.dedent(f"""
        import sys
        from baselines.evaluation import main
        sys.exit(main(["--seeds", "0", "--policies", "fifo", "--out", {str(tmp_path / 'o')!r}, "--ray",
                       "--no-progress"]))
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert 'pip install -e ".[ray]"' in r.stderr and "Traceback" not in r.stderr


# ---------------------------------------------------------------------- RLlib PPO
@pytest.fixture(scope="module")
def rllib_run(local_ray, toy_yaml, tmp_path_factory):
    """RLlib PPO on the toy cluster: 2 env runners, 7 iterations of 1,000 steps (about 45 s)."""
    from agents.rllib import train

    logdir = tmp_path_factory.mktemp("rllib")
    return train(str(toy_yaml), iterations=7, seed=0, logdir=logdir, run_name="toy", progress=False,
                 env_runners=2, train_batch_size=1000, gamma=0.9)


def test_rllib_ppo_learns_with_exact_masks(rllib_run):
    """The env raises on an invalid action (its default), so 7,000 sampled steps on 2 env runners
    without an error are 7,000 valid actions; and the mean return improves."""
    lines = [json.loads(x) for x in (rllib_run / "progress.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == list(range(1, 8))
    assert lines[-1]["env_steps_lifetime"] >= 7000
    returns = [r["episode_return_mean"] for r in lines]
    first, last = returns[0], float(np.mean(returns[-2:]))
    assert last > first + 3.0, returns  # measured: -51.9 -> about -42
    assert all(r["sample_steps_per_s"] and r["sample_steps_per_s"] > 0 for r in lines)
    assert (rllib_run / "checkpoint" / "rllib_checkpoint.json").is_file()
    assert any(p.name.startswith("events.out.tfevents") for p in rllib_run.iterdir())


def test_the_masked_module_never_samples_a_masked_action(rllib_run, toy_yaml):
    import gymnasium as gym
    import torch

    from agents.rllib import RLlibPolicy, make_masked_env

    env = make_masked_env({"scenario": str(toy_yaml)})
    module = RLlibPolicy(rllib_run, gym.make("modelsched/Scheduling-v1", scenario=str(toy_yaml))).module
    rng = np.random.default_rng(0)
    obs_list = []
    obs, _ = env.reset(seed=5)
    for _ in range(300):
        obs_list.append(obs)
        obs, _, term, trunc, _ = env.step(int(rng.choice(np.flatnonzero(obs["action_mask"]))))
        if term or trunc:
            obs, _ = env.reset()
    masks = np.stack([o["action_mask"] for o in obs_list])
    # also masks that leave one random action besides waiting: the most constrained case
    n = masks.shape[1]
    for i in range(0, len(obs_list), 3):
        m = np.zeros(n, dtype=np.float32)
        m[[rng.integers(n - 1), n - 1]] = 1.0
        masks[i] = m
    batch = {"obs": {"observations": torch.from_numpy(np.stack([o["observations"] for o in obs_list])),
                     "action_mask": torch.from_numpy(masks)}}
    with torch.no_grad():
        logits = module.forward_exploration(batch)["action_dist_inputs"]
    dist = torch.distributions.Categorical(logits=logits)
    actions = dist.sample((200,)).numpy()  # 200 x 300 sampled actions
    assert masks[np.arange(len(obs_list))[None, :], actions].min() == 1.0
    probs = dist.probs.numpy()
    assert probs[masks == 0].max() == 0.0 and np.allclose(probs.sum(1), 1.0)
    assert (masks.sum(1) > 1).any() and len(np.unique(actions)) > 2  # not trivially always waiting


def test_evaluate_plays_the_rllib_policy_against_the_heuristics(rllib_run, toy_yaml, tmp_path):
    s = _evaluate("--scenario", toy_yaml, "--seeds", "0", "1", "--policies", "fifo", "edf", rllib_run,
                  "--out", tmp_path / "out")[0]
    pol = s["policies"]["toy"]
    assert pol["kind"] == "rllib:PPO"
    assert len(pol["metrics"]["effective_accuracy"]["per_seed"]) == 2
    assert pol["paired_vs_best_heuristic"]["against"] in ("fifo", "edf")
    assert "| toy |" in (tmp_path / "out" / "results.md").read_text()
    # the batched backend plays the RLlib policy on the reference simulator, with the same results
    b = _evaluate("--scenario", toy_yaml, "--seeds", "0", "1", "--policies", "fifo", "edf", rllib_run,
                  "--out", tmp_path / "batched", "--backend", "batched")[0]
    assert b["settings"]["reference_backend_for"] == ["toy"]
    assert without_run_fields(b) == without_run_fields(s)


# ---------------------------------------------------------------------- train.py --sweep
def _sweep_file(folder: Path, toy_yaml: Path, timesteps: int, **extra) -> Path:
    sweep = {"name": "tiny", "scenario": str(toy_yaml), "algo": "maskable_ppo", "seeds": [0, 1],
             "timesteps": timesteps, "grid": {"learning_rate": [0.001]},
             "params": {"n_steps": 64, "batch_size": 32, "n_epochs": 1},
             "train": {"eval_freq": 0, "final_eval": False, "checkpoint_freq": 0}, **extra}
    path = folder / "sweep.yml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


@pytest.mark.parametrize("extra, message", [
    ({"seed": [0]}, "unknown key 'seed'; did you mean 'seeds'?"),
    ({"train": {"eval_frq": 0}}, "train: unknown key 'eval_frq'; did you mean 'eval_freq'?"),
    ({"params": {"learning_rat": 0.1}}, "unknown hyperparameter 'learning_rat'"),
])
def test_a_bad_sweep_file_is_one_error_naming_the_key_and_the_file(tmp_path, toy_yaml, capsys, extra, message):
    import train

    path = _sweep_file(tmp_path, toy_yaml, 128, **extra)
    assert train.main(["--sweep", str(path), "--logdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_an_interrupted_sweep_continues_and_writes_its_summary(local_ray, tmp_path, toy_yaml):
    """Ctrl-C during a sweep of 2 trials: no summary; the same command again keeps what finished,
    resumes each unfinished run folder from its last checkpoint, and writes the summary."""
    import signal
    import time

    from agents.sweep import run_sweep

    path = _sweep_file(tmp_path, toy_yaml, 4096)
    logdir = tmp_path / "runs"
    runs = logdir / "tiny" / "runs"
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--sweep", str(path), "--logdir", str(logdir)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(runs.glob("*/checkpoints/last.zip")):
        time.sleep(0.5)
    assert list(runs.glob("*/checkpoints/last.zip")), "no trial reached its first checkpoint"
    proc.send_signal(signal.SIGINT)  # Tune stops gracefully (saving its state), waiting for running trials;
    try:  # a second Ctrl-C skips the wait, as Tune says
        out, _ = proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out
    assert not (logdir / "tiny" / "sweep_summary.md").exists()
    unfinished = [d for d in runs.iterdir() if not (d / "train_summary.json").is_file()]
    assert unfinished, "both trials finished before the interrupt: nothing to resume"
    assert run_sweep(path, logdir) == 0
    for d in runs.iterdir():
        summary = json.loads((d / "train_summary.json").read_text())
        assert summary["phase"] == "done" and summary["num_timesteps"] == 4096
    for d in unfinished:
        if (d / "checkpoints" / "last.zip").is_file() and "resumed" in (d / "command.txt").read_text():
            break
    else:
        raise AssertionError("no unfinished trial was resumed from its checkpoint")
    data = json.loads((logdir / "tiny" / "sweep_summary.json").read_text())
    assert [t["seed"] for t in data["trials"]] == [0, 1] and all(t["fps"] > 0 for t in data["trials"])
    md = (logdir / "tiny" / "sweep_summary.md").read_text()
    assert "| rllib-toy__maskable_ppo__s0__learning_rate=0.001 |" in md and "| rllib-toy__maskable_ppo__s1__" in md
