"""benchmarks/readme_tables.py: the README's generated sections, from the files the commands write."""

from __future__ import annotations

import json

from benchmarks import readme_tables as rt


def scenario(name="s", means=(0.8, 0.7)):
    pols = {}
    for i, m in enumerate(means):
        pols[f"p{i}"] = {"metrics": {"acc": {"mean": m, "ci95": [m - 0.01, m + 0.01], "n": 30}},
                         **({"paired_vs_best_heuristic": {"mean": m - means[0], "ci95": [m - means[0] - 0.005,
                                                                                          m - means[0] + 0.005]}}
                            if i else {})}
    return {"scenario": name, "primary_metric": "acc", "primary_higher_is_better": True, "best_heuristic": "p0",
            "policies": pols, "ideal_bound": {"metrics": {"acc": {"mean": 0.9}}}}


def test_tables_of_one_or_several_scenarios():
    one = rt.tables(scenario())
    assert rt.tables({"scenarios": [scenario()]}) == one
    assert "| p0 | 0.8000 [0.7900, 0.8100] | — |" in one
    assert "| p1 | 0.7000 [0.6900, 0.7100] | -0.1000 [-0.1050, -0.0950] |" in one
    assert "| *bound (ideal, no queueing)* | 0.9000 | |" in one and "30 seeds" in one


def test_sections_are_rewritten_between_their_markers_only(tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("head\n<!-- planner:begin -->\nold\n<!-- planner:end -->\ntail\n")
    res = tmp_path / "results.json"
    res.write_text(json.dumps(scenario()))
    assert rt.main([str(res), "--section", "planner", "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("head\n<!-- planner:begin -->\n**s**") and text.endswith("<!-- planner:end -->\ntail\n")
    assert "old" not in text
    assert rt.main([str(res), "--section", "demo", "--readme", str(readme)]) == 2  # not a run folder
    assert "not a train.py run folder" in capsys.readouterr().err
    assert rt.main([str(res), "--readme", str(readme)]) == 2  # no heuristics-200 markers
    assert "has no <!-- heuristics-200:begin -->" in capsys.readouterr().err


def test_demo_table_from_a_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    row = {"kind": "heuristic", "mean": 0.8, "ci": [0.79, 0.81], "secondary": {"drops": 12.0}}
    agent = {"kind": "agent", "mean": 0.75, "ci": [0.7, 0.8], "secondary": {"drops": 44.0},
             "diff_vs_best": {"mean": -0.05, "ci": [-0.1, 0.0]}}
    (run / "final_eval.json").write_text(json.dumps({
        "metric": "effective_accuracy", "best_heuristic": "priced", "seeds": [20000, 20001],
        "policies": {"priced": row, "agent:best_model": agent}, "left_out": ["planner"]}))
    (run / "train_summary.json").write_text(json.dumps({"num_timesteps": 41000, "wall_s": 257.0,
                                                        "pretrain_s": 60.0, "fps": 400.0}))
    text = rt.demo_table(run)
    assert "41,000 steps in 257 s" in text and "20000..20001 (2 seeds" in text
    lines = text.splitlines()
    i = lines.index("| priced | 0.8000 [0.7900, 0.8100] | — | 12.0 |")
    assert lines[i + 1] == "| **agent:best_model** | 0.7500 [0.7000, 0.8000] | -0.0500 [-0.1000, +0.0000] | 44.0 |"
    assert "Not in this table: planner" in text
