"""Pictures: the rgb_array Gantt chart, TensorBoard images / HParams / custom scalars of a
training run, and evaluate.py's plots."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from baselines import make, run_episode
from envs.env import SchedulingEnv
from envs.render import render_gantt
from tests.conftest import golden_cluster, make_scenario, request

REPO = Path(__file__).resolve().parents[1]


def miss_pixels(img: np.ndarray) -> int:
    """Pixels of the SLO-miss outline (pure red; no variant colour is near it)."""
    r, g, b = (img[:, :, k].astype(int) for k in range(3))
    return int(np.count_nonzero((r >= 230) & (g <= 40) & (b <= 40)))


def test_rgb_array_is_a_gantt_chart_that_changes_with_the_state():
    env = gym.make("modelsched/ServingSmall-v1", render_mode="rgb_array", workload_overrides={"num_jobs": 30}, warmup_s=0.0)
    env.reset(seed=0)
    first = env.render()
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[2] == 3
    assert first.shape[0] >= 200 and first.shape[1] >= 600
    assert len(np.unique(first.reshape(-1, 3), axis=0)) > 10  # axes, labels, legend: not blank
    policy = make("mct", env)
    run_episode(env, policy, 0)
    last = env.render()
    assert last.shape == first.shape
    assert np.count_nonzero(np.any(last != first, axis=2)) > 1000  # the bars were drawn
    env.unwrapped.render_mode = "ansi"
    assert "queue=" in env.render()  # the text rendering still works


def test_gantt_marks_the_task_that_missed_its_slo():
    """Golden cluster, one GPU, fifo (see test_evaluate): t0 (SLO 1.0) is on time, t1 (SLO 0.5)
    ends at 0.65: late. With SLOs of 10 s nothing is late and nothing is outlined in red."""
    pictures = []
    for slo0, slo1 in ((1.0, 0.5), (10.0, 10.0)):
        sc = make_scenario(golden_cluster(), [request(0.0, size=1.0, slo=slo0), request(0.0, size=2.0, slo=slo1)])
        env = SchedulingEnv(sc, render_mode="rgb_array")
        run_episode(env, make("fifo", env), 0)
        sim = env.sim
        late = [g for g in sim._gantt if g[2] > sim._tdeadline[g[6]] + 1e-12]
        assert len(late) == (1 if slo1 == 0.5 else 0)
        assert all(g[7] >= g[1] for g in sim._gantt)  # load end recorded (cold start of t0)
        pictures.append(env.render())
    assert miss_pixels(pictures[0]) > 150  # outline of the late bar (and the legend swatch)
    assert miss_pixels(pictures[1]) < miss_pixels(pictures[0]) / 3  # only the legend swatch


def test_gantt_shows_down_periods_and_is_fast():
    import time

    sc = make_scenario(golden_cluster(n_gpus=2, mtbf=0.3, mttr=0.2),
                       [request(0.1 * i, size=1.0, slo=2.0) for i in range(20)])
    env = SchedulingEnv(sc, render_mode="rgb_array")
    run_episode(env, make("fifo", env), 1)
    sim = env.sim
    assert sim.counters.failures > 0 and len(sim._gantt_down) == sim.counters.failures
    assert all(b >= a for _, a, b in sim._gantt_down)
    t0 = time.perf_counter()
    img = render_gantt(sim, window=1.0)
    assert time.perf_counter() - t0 < 1.5
    assert img.dtype == np.uint8
    grey = np.all(np.abs(img.astype(int) - 176) <= 4, axis=2)  # the down-period colour (#b0b0b0)
    assert np.count_nonzero(grey) > 50


def test_evaluate_writes_the_paired_difference_plot(tmp_path, tiny_scenario):
    from baselines.evaluation import build_parser, evaluate

    out = tmp_path / "out"
    evaluate(build_parser().parse_args(["--scenario", tiny_scenario, "--seeds", "0", "1", "--policies", "fifo",
                                        "mct", "--out", str(out), "--no-progress"]))
    for name in ("metrics.png", "paired_differences.png", "latency_cdf.png"):
        path = out / name
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    from PIL import Image

    img = np.asarray(Image.open(out / "paired_differences.png").convert("RGB"))
    assert img.shape[0] > 150 and len(np.unique(img.reshape(-1, 3), axis=0)) > 10


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_scenario) -> Path:
    logdir = tmp_path_factory.mktemp("runs")
    proc = subprocess.run(
        [sys.executable, "train.py", "--scenario", tiny_scenario, "--timesteps", "128", "--seed", "1",
         "--logdir", str(logdir), "--eval-freq", "64", "--eval-seeds", "10000", "--eval-heuristics", "mct",
         "--checkpoint-freq", "0", "-p", "pretrain=null", "-p", "n_steps=64", "-p", "batch_size=32",
         "-p", "n_epochs=1", "--no-progress-bar", "--no-final-eval"],
        cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = [p for p in logdir.iterdir() if p.is_dir()]
    return run


def test_tensorboard_has_gantt_images_hparams_and_custom_scalars(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(tiny_run), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    # Gantt images: the agent's at every evaluation (0, 64, 128), the heuristic's once.
    assert [e.step for e in acc.Images("eval/gantt/agent")] == [0, 64, 128]
    assert len(acc.Images("eval/gantt/mct")) == 1
    img = acc.Images("eval/gantt/agent")[-1]
    assert img.width >= 600 and img.height >= 200 and img.encoded_image_string[:4] == b"\x89PNG"
    # The heuristic is logged at every evaluation: a flat line next to the agent's curve.
    assert len(acc.Scalars("eval/mct/effective_accuracy")) == len(acc.Scalars("eval/agent/effective_accuracy")) == 3
    # Custom scalars: one multiline chart per metric with both curves, the primary metric first.
    (event,) = acc.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout()
    layout.ParseFromString(tensor_util.make_ndarray(event.tensor_proto).item())
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    first = layout.category[0].chart[0]
    assert first.title == "effective_accuracy: agent vs mct"
    assert list(first.multiline.tag)[:2] == ["^eval/agent/effective_accuracy$", "^eval/mct/effective_accuracy$"]
    assert charts["slo_attainment: agent vs mct"] == ["^eval/agent/slo_attainment$", "^eval/mct/slo_attainment$"]
    # HParams: the run's scalar hyperparameters and final metrics (logged as scalars too).
    content = acc.PluginTagToContent("hparams")
    data = plugin_data_pb2.HParamsPluginData()
    data.ParseFromString(content["_hparams_/session_start_info"])
    hp = data.session_start_info.hparams
    assert hp["algo"].string_value == "maskable_ppo" and hp["scenario"].string_value == "serving-tiny"
    assert hp["pretrain"].string_value == "off"
    assert hp["n_steps"].number_value == 64 and hp["seed"].number_value == 1
    assert hp["learning_rate"].number_value > 0 and hp["policy_net"].string_value
    data.ParseFromString(content["_hparams_/experiment"])
    metrics = [m.name.tag for m in data.experiment.metric_infos]
    assert "hparams/best_eval_effective_accuracy" in metrics
    assert "hparams/last_eval_advantage_effective_accuracy" in metrics
    for tag in metrics:
        assert tag in tags["scalars"] and math.isfinite(acc.Scalars(tag)[-1].value)
    assert acc.Scalars("hparams/best_eval_effective_accuracy")[-1].step == 128


def test_hparams_values_are_scalars_and_metrics_finite():
    from agents.callbacks import hparam_dict, run_metrics

    hp = {"n_steps": 64, "learning_rate": 3e-4, "policy_net": "attention", "pretrain": {"heuristic": "mct"},
          "reward_shaping": {"potential": "queue"}, "policy_kwargs": {"net_arch": [64]}, "env_kwargs": {},
          "normalize_reward": False, "target_kl": None}
    d = hparam_dict("maskable_ppo", "path/to/serving-tiny.yaml", 3, hp)
    assert d["scenario"] == "serving-tiny" and d["pretrain"] == "on" and d["pretrain_heuristic"] == "mct"
    assert d["reward_shaping"] == "queue" and d["target_kl"] == "None"
    assert "policy_kwargs" not in d and all(isinstance(v, (bool, int, float, str)) for v in d.values())
    final = {"policies": {"mct": {"kind": "heuristic", "mean": 0.7},
                          "agent:best_model": {"kind": "agent", "mean": 0.72, "diff_vs_best": {"mean": 0.02}},
                          "agent:model": {"kind": "agent", "mean": math.nan, "diff_vs_best": {"mean": math.nan}}}}
    assert run_metrics("effective_accuracy", None, final) == {
        "hparams/test_best_model_effective_accuracy": 0.72,
        "hparams/test_best_model_advantage_effective_accuracy": 0.02}
