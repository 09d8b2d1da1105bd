"""benchmarks/agent_study.py: seed parsing, held-out seeds kept apart, and the study's
aggregation (reference chosen on training seeds, every run reported, paired differences, gap
closed) on hand-made evaluation results (training and evaluation are faked: they have their
own tests)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import agent_study  # noqa: E402


def test_seed_list():
    assert agent_study.seed_list(["0-4"]) == [0, 1, 2, 3, 4]
    assert agent_study.seed_list(["1000-1002,1005", "7"]) == [1000, 1001, 1002, 1005, 7]


def test_eval_seeds_must_be_held_out(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        agent_study.main(["--train-seeds", "0-4", "--eval-seeds", "3-10", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "disjoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        agent_study.main(["--select-seeds", "1000-1004", "--out", str(tmp_path)])


def _summary(pm, values: dict[str, list[float]], kinds: dict[str, str], bound: list[float], best: str):
    from baselines.stats import paired_difference, summarize

    pols = {}
    for lbl, v in values.items():
        pols[lbl] = {"kind": kinds[lbl], "metrics": {pm: summarize(v)},
                     "paired_vs_best_heuristic": {"metric": pm, "against": best,
                                                  **paired_difference(v, values[best])}}
    return {"scenario": "serving-small", "primary_metric": pm, "best_heuristic": best, "policies": pols,
            "ideal_bound": {"metrics": {pm: summarize(bound)}}}


def test_aggregation_on_hand_made_results(tmp_path, monkeypatch):
    pm = "effective_accuracy"
    calls = []

    def fake_run(cmd, log):
        calls.append(cmd)
        if "train.py" in cmd[1]:
            folder = Path(cmd[cmd.index("--logdir") + 1]) / cmd[cmd.index("--run-name") + 1]
            folder.mkdir(parents=True)
            (folder / "config.yml").write_text("algo: maskable_ppo\n")
            (folder / "model.zip").write_bytes(b"")
            (folder / "train_summary.json").write_text(json.dumps(
                {"phase": "done", "num_timesteps": 16384, "pretrain_s": 1.0, "rl_s": 2.0, "wall_s": 3.0}))
            return
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True)
        policies = cmd[cmd.index("--policies") + 1:cmd.index("--seeds")]
        if "select-" in out.name:  # selection on training seeds: priced is best there
            values = {p: [0.5, 0.5] for p in policies}
            values["priced"] = [0.8, 0.8]
            res = _summary(pm, values, dict.fromkeys(policies, "heuristic"), [0.9, 0.9], "priced")
        else:  # held-out: the reference and two models
            assert policies[0] == "priced"
            values = {"priced": [0.80, 0.82, 0.84],
                      "serving-small__s0/model": [0.82, 0.84, 0.86],  # +0.02 on every seed
                      "serving-small__s1/model": [0.79, 0.81, 0.83]}  # -0.01 on every seed
            kinds = {"priced": "heuristic", "serving-small__s0/model": "sb3:MaskablePPO",
                     "serving-small__s1/model": "sb3:MaskablePPO"}
            res = _summary(pm, values, kinds, [0.90, 0.92, 0.94], "priced")
        (out / "results.json").write_text(json.dumps(res))

    monkeypatch.setattr(agent_study, "run", fake_run)
    out = tmp_path / "out"
    assert agent_study.main(["--scenario", "serving-small", "--train-seeds", "0-1", "--select-seeds", "0-1",
                             "--eval-seeds", "1000-1002", "--logdir", str(tmp_path / "runs"),
                             "--out", str(out)]) == 0
    train_cmds = [c for c in calls if "train.py" in c[1]]
    assert len(train_cmds) == 2
    assert all("pretrain.heuristic=priced" in c for c in train_cmds)  # the teacher: best on training seeds
    rep = json.loads((out / "summary.json").read_text())["scenarios"]["serving-small"]
    assert rep["reference"] == "priced"
    assert rep["reference_mean"] == pytest.approx(0.82)
    assert [r["seed"] for r in rep["runs"]] == [0, 1]
    assert rep["runs"][0]["diff"] == pytest.approx(0.02)
    assert rep["runs"][1]["diff"] == pytest.approx(-0.01)
    assert rep["runs"][0]["gap_closed"] == pytest.approx(0.02 / 0.10)
    assert rep["mean_diff"] == pytest.approx(0.005)
    lo, hi = rep["mean_diff_ci_over_runs"]
    assert lo < 0.005 < hi and math.isfinite(lo)
    assert rep["runs_better"] == 1 and rep["runs_worse"] == 1  # constant differences: degenerate CIs
    md = (out / "summary.md").read_text()
    assert "| serving-small | seed 0 | 0.8400" in md and "+0.0200" in md and "-0.0100" in md
    # a second call reuses the finished runs and evaluations
    calls.clear()
    agent_study.main(["--scenario", "serving-small", "--train-seeds", "0-1", "--select-seeds", "0-1",
                      "--eval-seeds", "1000-1002", "--logdir", str(tmp_path / "runs"), "--out", str(out)])
    assert calls == []
    # the README section is the study's own table
    from benchmarks import readme_tables as rt

    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- agent-study:begin -->\nold\n<!-- agent-study:end -->\nb\n")
    assert rt.main([str(out / "summary.json"), "--section", "agent-study", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert md.strip() in text and "old" not in text and text.endswith("<!-- agent-study:end -->\nb\n")


def test_an_interrupted_run_is_resumed_as_it_was_started(tmp_path, monkeypatch):
    """A run folder with a checkpoint and no finished summary continues with ``--resume`` (which
    takes no hyperparameter overrides); one stopped before its first checkpoint starts again."""
    import argparse

    calls = []

    def fake_run(cmd, log):
        calls.append(cmd)
        folder = Path(cmd[cmd.index("--resume") + 1]) if "--resume" in cmd else \
            Path(cmd[cmd.index("--logdir") + 1]) / cmd[cmd.index("--run-name") + 1]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train_summary.json").write_text(json.dumps({"phase": "done"}))

    monkeypatch.setattr(agent_study, "run", fake_run)
    args = argparse.Namespace(logdir=str(tmp_path), eval_freq=0, timesteps=16384, param=["pretrain.episodes=5"])
    (tmp_path / "a__s0" / "checkpoints").mkdir(parents=True)
    (tmp_path / "a__s0" / "checkpoints" / "last.zip").write_bytes(b"")
    (tmp_path / "a__s1").mkdir()
    (tmp_path / "a__s1" / "stale.txt").write_text("x")
    agent_study.train("a", 0, "priced", args, tmp_path / "log")
    agent_study.train("a", 1, "priced", args, tmp_path / "log")
    assert "--resume" in calls[0] and "-p" not in calls[0]
    assert "--resume" not in calls[1] and calls[1][-2:] == ["-p", "pretrain.episodes=5"]
    assert not (tmp_path / "a__s1" / "stale.txt").exists()
