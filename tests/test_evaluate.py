"""Evaluation harness: common random numbers, metrics and bound by hand, bootstrap, the CLI."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import baselines
import envs  # noqa: F401  (registers the ids)
from baselines import make, run_episode
from baselines.evaluation import (
    EVAL_SEEDS,
    NOT_IN_ALL,
    TRAINING_SEEDS,
    build_parser,
    episode_seed,
    evaluate,
    without_run_fields,
)
from baselines.stats import bootstrap_ci, paired_difference, summarize
from envs.env import SchedulingEnv
from tests.conftest import golden_cluster, make_scenario, request

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ("mean_latency", "p99_latency", "slo_attainment", "utilization", "mean_accuracy",
            "effective_accuracy", "mean_slowdown")


# ---------------------------------------------------------------------- common random numbers
def test_same_seed_same_workload_for_every_policy():
    env = gym.make("modelsched/ServingSmall-v1", disable_env_checker=True, workload_overrides={"num_jobs": 60}, warmup_s=0.0)
    arrivals, digests = [], []
    for name in ("fifo", "random", "mct"):
        res = run_episode(env, make(name, env), 11)
        sim = env.unwrapped.sim
        arrivals.append([(j.arrival, j.slo, j.stages[0].capability, j.stages[0].size) for j in sim.job_specs])
        digests.append(res["workload_digest"])
        assert res["ideal_bound"] == run_episode(env, make("edf", env), 11)["ideal_bound"]
    assert arrivals[0] == arrivals[1] == arrivals[2]
    assert len(set(digests)) == 1
    other = run_episode(env, make("fifo", env), 12)["workload_digest"]
    assert other != digests[0]


def test_seed_sets_are_disjoint_and_episode_seeds_distinct():
    assert not set(EVAL_SEEDS) & set(TRAINING_SEEDS)
    assert episode_seed(1000, 0) == 1000
    seeds = {episode_seed(s, e) for s in range(5) for e in range(4)}
    assert len(seeds) == 20


# ---------------------------------------------------------------------- metrics by hand
def test_metrics_and_bound_on_a_hand_made_episode():
    """One GPU (golden cluster), no noise, fifo. At t=0 two tasks wait:
    t0 size 1 SLO 1.0, t1 size 2 SLO 0.5. fifo starts t0 with its fastest option: small cold
    (load 0.1 + 0.4/2 = 0.3, exec 0.15) = 0.45 (big: 0.5 + 0.3 = 0.8). Then t1: small resident
    0.2 (big would evict small: 0.5 + 0.4) -> ends 0.65 > 0.5: late.
    Latencies 0.45, 0.65; ideal 0.15, 0.2; slowdowns 3.0, 3.25; effective accuracy 0.7 / 2.
    Bound: latencies 0.15, 0.2, both on time; big meets both deadlines (0.3 <= 1, 0.4 <= 0.5),
    so bound accuracy 0.9 for each."""
    jobs = [request(0.0, size=1.0, slo=1.0), request(0.0, size=2.0, slo=0.5)]
    env = SchedulingEnv(make_scenario(golden_cluster(), jobs, K=2))
    res = run_episode(env, make("fifo", env), 0)
    np.testing.assert_allclose(np.sort(res["latencies"]), [0.45, 0.65])
    m = res["metrics"]
    assert m["mean_latency"] == pytest.approx(0.55)
    assert m["mean_slowdown"] == pytest.approx((3.0 + 3.25) / 2)
    assert m["slo_attainment"] == pytest.approx(0.5)
    assert m["effective_accuracy"] == pytest.approx(0.35)
    assert m["mean_accuracy"] == pytest.approx(0.7)
    assert m["utilization"] == pytest.approx(0.65 / 0.65)
    b = res["ideal_bound"]
    assert b["mean_latency"] == pytest.approx(0.175)
    assert b["mean_slowdown"] == 1.0
    assert b["slo_attainment"] == 1.0
    assert b["effective_accuracy"] == pytest.approx(0.9)
    assert b["mean_accuracy"] == pytest.approx(0.9)
    assert b["makespan"] == pytest.approx(0.2)
    assert b["utilization"] == pytest.approx(0.35 / 0.2)  # work of the bound schedule / (D x makespan)
    np.testing.assert_allclose(np.sort(res["ideal_bound_latencies"]), [0.15, 0.2])


def test_bound_of_a_pipeline_follows_the_critical_path():
    from envs.sim.model import JobSpec, StageSpec

    # Stages 0 -> 1 and 0 -> 2 (size 1 each: ideal 0.15 with small); job SLO 0.25.
    spec = JobSpec(0.0, (StageSpec("cls", 1.0), StageSpec("cls", 1.0, parents=(0,)),
                         StageSpec("cls", 1.0, parents=(0,))), slo=0.25)
    env = SchedulingEnv(make_scenario(golden_cluster(n_gpus=2), [spec], K=4))
    b = run_episode(env, make("fifo", env), 0)["ideal_bound"]
    assert b["job_mean_latency"] == pytest.approx(0.3)
    assert b["job_slo_attainment"] == 0.0
    assert b["slo_attainment"] == pytest.approx(1 / 3)  # only the first stage ends by 0.25


# ---------------------------------------------------------------------- statistics
def test_bootstrap_ci_on_known_samples():
    # Means of resamples of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4.
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    assert bootstrap_ci([2.5]) == (2.5, 2.5)
    assert all(math.isnan(x) for x in bootstrap_ci([math.nan]))
    x = np.random.default_rng(0).normal(10.0, 2.0, size=400)
    lo, hi = bootstrap_ci(x, method="percentile")
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.04) and hi == pytest.approx(x.mean() + half, abs=0.04)
    assert bootstrap_ci(x) == bootstrap_ci(x)  # seeded


def test_t_interval_iqm_and_probability_of_improvement_by_hand():
    from baselines.stats import iqm, mean_ci, t_interval, t_quantile

    # Student-t quantiles (tables): 12.706, 2.776, 2.262, 2.045, 1.984 at df 1, 4, 9, 29, 99.
    for df, q in [(1, 12.706), (4, 2.776), (9, 2.262), (29, 2.045), (99, 1.984), (5000, 1.9604)]:
        assert t_quantile(0.95, df) == pytest.approx(q, abs=5e-4)
    # [1, 2, 3, 4, 5]: mean 3, sd sqrt(2.5), half-width 2.776 x sqrt(2.5 / 5).
    lo, hi = t_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = t_quantile(0.95, 4) * math.sqrt(0.5)
    assert (lo, hi) == pytest.approx((3.0 - half, 3.0 + half), rel=1e-12)
    assert t_interval([2.0]) == (2.0, 2.0) and t_interval([1.0, 1.0]) == (1.0, 1.0)
    assert mean_ci([1.0, 2.0, 3.0, 4.0, 5.0]) == (lo, hi)  # the default is the t interval
    # IQM of 1..8: the middle half is 3, 4, 5, 6.
    assert iqm([8, 1, 7, 2, 6, 3, 5, 4]) == pytest.approx(4.5)
    assert iqm([0.0, 0.0, 0.0, 10.0]) == pytest.approx(0.0)  # one outlier does not move it
    assert iqm([1.0, 2.0, 3.0]) == pytest.approx(2.0)
    d = paired_difference([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 4.0, 3.0])
    assert d["prob_improvement"]["mean"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    lo_p, hi_p = d["prob_improvement"]["ci95"]
    assert 0.0 <= lo_p <= 0.625 <= hi_p <= 1.0
    # BCa on a symmetric sample is close to the percentile interval; on a skewed one it shifts
    # towards the long tail.
    x = np.random.default_rng(1).normal(0.0, 1.0, size=200)
    assert bootstrap_ci(x, method="bca") == pytest.approx(bootstrap_ci(x, method="percentile"), abs=0.02)
    y = np.random.default_rng(2).lognormal(0.0, 1.0, size=40)
    pb, bc = bootstrap_ci(y, method="percentile"), bootstrap_ci(y, method="bca")
    assert bc[0] > pb[0] and bc[1] > pb[1]
    with pytest.raises(ValueError, match="method"):
        bootstrap_ci(x, method="nope")


def test_summaries_skip_nan_seeds_and_pair_by_seed():
    s = summarize([1.0, math.nan, 3.0])
    assert s["mean"] == 2.0 and s["n"] == 2 and s["per_seed"] == [1.0, None, 3.0]
    assert summarize([math.nan])["mean"] is None and summarize([math.nan])["ci95"] is None
    d = paired_difference([1.0, 2.0, 3.0, math.nan], [0.5, 1.5, 2.5, 1.0])
    assert d["mean"] == pytest.approx(0.5) and d["ci95"] == pytest.approx([0.5, 0.5]) and d["n"] == 3


# ---------------------------------------------------------------------- CLI
def _run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args, "--no-progress"],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_tiny_run_writes_every_output(tmp_path):
    out, tb = tmp_path / "out", tmp_path / "tb"
    r = _run_cli("--scenario", "serving-small", "--seeds", "0", "--policies", "fifo", "random",
                 "--out", str(out), "--tensorboard", str(tb))
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["latency_cdf.png", "metrics.png", "paired_differences.png", "results.csv", "results.json",
                     "results.md"]
    data = json.loads((out / "results.json").read_text())
    assert data["scenario"] == "serving-small" and data["seeds"] == [0]
    assert data["primary_metric"] == "effective_accuracy"
    assert set(data["policies"]) == {"fifo", "random"}
    for pol in data["policies"].values():
        for m in REQUIRED:
            s = pol["metrics"][m]
            assert set(s) >= {"mean", "ci95", "per_seed"} and len(s["per_seed"]) == 1
            assert s["ci95"][0] <= s["mean"] <= s["ci95"][1]
        assert pol["paired_vs_best_heuristic"]["against"] == data["best_heuristic"]
    assert data["best_policy"] == "fifo"
    for m in REQUIRED:
        assert data["ideal_bound"]["metrics"][m]["mean"] is not None
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"scenario", "policy", "seed", "metric", "value"}
    assert {r["policy"] for r in rows} == {"fifo", "random", "ideal_bound"}
    md = (out / "results.md").read_text()
    assert "**" in md and "| fifo |" in md and "bound" in md
    bound = data["ideal_bound"]["metrics"]["effective_accuracy"]["mean"]
    for pol in data["policies"].values():  # the gap to the upper bound, paired per seed
        gap = pol["gap_to_upper_bound"]
        assert gap["mean"] == pytest.approx(bound - pol["metrics"]["effective_accuracy"]["mean"], abs=1e-12)
        assert gap["mean"] >= 0 and pol["gap_to_clairvoyant"] is None
    assert "| policy | gap to upper_bound |" in md and "gap to clairvoyant" not in md
    assert any(p.name.startswith("events.out.tfevents") for p in tb.rglob("*"))
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("args, message", [
    (["--policies", "no-such-policy"], "unknown policy 'no-such-policy'"),
    (["--policies", "models/none.zip"], "model file not found: models/none.zip"),
    (["--scenario", "no-such-scenario"], "scenario 'no-such-scenario'"),
    (["--policies", "fifo", "--jobs", "100000"], "--jobs 100000: this machine has"),
])
def test_cli_bad_input_exits_2_without_traceback(tmp_path, args, message):
    r = _run_cli(*args, "--seeds", "0", "--out", str(tmp_path / "o"))
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_parallel_and_serial_runs_agree(tmp_path):
    common = ["--scenario", "serving-small", "--seeds", "3", "4", "--policies", "edf", "random", "--no-progress"]
    serial = evaluate(build_parser().parse_args([*common, "--out", str(tmp_path / "a")]))[0]
    parallel = evaluate(build_parser().parse_args([*common, "--out", str(tmp_path / "b"), "--jobs", "2"]))[0]
    for name in ("edf", "random"):
        assert serial["policies"][name]["metrics"] == parallel["policies"][name]["metrics"]


def test_several_scenarios_get_one_folder_each(tmp_path):
    r = _run_cli("--scenario", "serving-small", "--scenario", "pipelines", "--seeds", "0",
                 "--policies", "fifo", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "results.json").read_text())
    assert [s["scenario"] for s in data["scenarios"]] == ["serving-small", "pipelines"]
    assert data["scenarios"][1]["primary_metric"] == "job_slo_attainment"
    for name in ("serving-small", "pipelines"):
        assert (tmp_path / name / "results.json").exists() and (tmp_path / name / "metrics.png").exists()
    assert (tmp_path / "results.csv").exists() and (tmp_path / "results.md").exists()


# ---------------------------------------------------------------------- batched backend


def test_batched_backend_gives_the_reference_results_and_outputs(tmp_path):
    """Same JSON (statistics, per-seed values, bounds, pairing), same CSV, same Markdown table, on a
    scenario with failures, two episodes per seed (episode seeds), chunks smaller than the seeds."""
    common = ["--scenario", "faulty-cluster", "--seeds", "5-7", "--episodes", "2", "--policies", "adaptive",
              "tetris", "random", "round-robin"]
    ref = _run_cli(*common, "--out", str(tmp_path / "ref"))
    bat = _run_cli(*common, "--out", str(tmp_path / "bat"), "--backend", "batched", "--batch-size", "4")
    assert ref.returncode == 0 and bat.returncode == 0, bat.stderr
    a = json.loads((tmp_path / "ref" / "results.json").read_text())
    b = json.loads((tmp_path / "bat" / "results.json").read_text())
    assert a["seeds"] == [5, 6, 7] and a["episodes_per_seed"] == 2
    assert without_run_fields(a) == without_run_fields(b)
    assert b["settings"]["backend"] == "batched" and b["settings"]["reference_backend_for"] == []
    assert (tmp_path / "ref" / "results.csv").read_text() == (tmp_path / "bat" / "results.csv").read_text()
    table = lambda p: [ln for ln in p.read_text().splitlines() if ln.startswith("|")]  # noqa: E731
    assert table(tmp_path / "ref" / "results.md") == table(tmp_path / "bat" / "results.md")
    assert "Warning: only 3 seed(s)" in (tmp_path / "bat" / "results.md").read_text()
    for f in ("metrics.png", "latency_cdf.png"):
        assert (tmp_path / "bat" / f).stat().st_size > 0


def test_a_policy_with_no_batched_form_runs_on_the_reference_with_a_notice(tmp_path, capsys):
    common = ["--scenario", "serving-small", "--seeds", "0", "--policies", "genetic", "fifo", "--no-progress"]
    ref = evaluate(build_parser().parse_args([*common, "--out", str(tmp_path / "a")]))[0]
    capsys.readouterr()
    bat = evaluate(build_parser().parse_args([*common, "--out", str(tmp_path / "b"), "--backend", "batched"]))[0]
    assert "'genetic' has no batched form: its episodes run on the reference simulator" in capsys.readouterr().err
    assert bat["settings"]["reference_backend_for"] == ["genetic"]
    assert without_run_fields(ref) == without_run_fields(bat)


def test_batched_backend_evaluates_a_trained_model_like_the_reference(tmp_path):
    from sb3_contrib import MaskablePPO

    env = gym.make("modelsched/ServingSmall-v1")
    model = MaskablePPO("MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(64)
    path = tmp_path / "tiny.zip"
    model.save(path)
    common = ["--scenario", "serving-small", "--seeds", "3", "4", "--policies", str(path), "fifo", "--device", "cpu"]
    ref = evaluate(build_parser().parse_args([*common, "--out", str(tmp_path / "a"), "--no-progress"]))[0]
    bat = evaluate(build_parser().parse_args([*common, "--out", str(tmp_path / "b"), "--no-progress",
                                              "--backend", "batched"]))[0]
    assert bat["policies"]["tiny"]["kind"] == "sb3:MaskablePPO"
    assert without_run_fields(ref["policies"]) == without_run_fields(bat["policies"])
    # A model of another scenario's spaces is refused with both shapes named.
    r = _run_cli("--scenario", "serving-hetero", "--seeds", "0", "--policies", str(path), "--backend", "batched",
                 "--out", str(tmp_path / "c"))
    assert r.returncode == 2 and "trained on other spaces" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--backend", "gpu"], "invalid choice: 'gpu'"),
    (["--batch-size", "4"], "--batch-size needs --backend batched"),
    (["--backend", "batched", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["--seeds", "9-3"], "seed range '9-3' is empty"),
    (["--seeds", "x"], "'x' is not a seed"),
    (["--exclude", "mct"], "--exclude: mct not among the policies asked for (fifo)"),
    (["--exclude", "fifo"], "--exclude leaves no policy to evaluate"),
])
def test_batched_cli_bad_input(tmp_path, args, message):
    r = _run_cli("--policies", "fifo", *(["--seeds", "0"] if "--seeds" not in args else []), *args,
                 "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_cuda_without_a_gpu_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = _run_cli("--policies", "fifo", "--seeds", "0", "--backend", "batched", "--device", "cuda",
                 "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "CUDA is not available" in r.stderr


def test_seed_ranges_expand_inclusively():
    args = build_parser().parse_args(["--seeds", "1000-1002", "7", "1001", "--policies", "all", "--exclude",
                                      "genetic", "random"])
    from baselines.evaluation import _check_inputs

    _, policies, seeds, _ = _check_inputs(args)
    assert seeds == [1000, 1001, 1002, 7]
    assert [p for p, _ in policies] == [n for n in baselines.names() if n not in ("genetic", "random", *NOT_IN_ALL)]
    _, policies, _, _ = _check_inputs(build_parser().parse_args(["--policies", "all", "planner", "--exclude", "fifo"]))
    assert [p for p, _ in policies][-1] == "planner" and "fifo" not in [p for p, _ in policies]
