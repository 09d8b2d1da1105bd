"""Trace replay: format detection, exact parsing, windows, time scaling, bad rows, real traces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from envs.config import ConfigError, Section
from envs.workloads import build_workload
from envs.workloads.traces import ALIBABA, AZURE, PHILLY, TraceWorkload, parse_timestamp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"

CAPS = ("text-generation", "train-resnet50", "train-lm", "translation")


class FakeCtx:
    capabilities = CAPS

    def reference_time(self, capability, size=1.0, size2=0.0):
        if capability == "text-generation":
            return 0.01 + 0.0002 * size + 0.03 * size2
        if capability == "train-resnet50":
            return 0.25 * size
        if capability == "train-lm":
            return 0.5 + 0.02 * size
        return 0.05 + 0.01 * size

    def cluster_rate(self, capability, size, size2=0.0, devices_required=1):
        return 1.0 / self.reference_time(capability, size, size2)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def gen(wl: TraceWorkload, seed: int = 0):
    return wl.generate(np.random.default_rng(seed), FakeCtx())


AZURE_CSV = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:15:46.6805900,374,44
2023-11-16 18:15:50.9951690,396,109
2023-11-16 18:15:51.0000000,879,0
2023-11-16 18:16:01.5,100,20
2023-11-16 18:17:46.6805900,2000,300
"""


# ---------------------------------------------------------------------------- Azure LLM

def test_azure_exact_sizes_and_arrivals(tmp_path):
    wl = TraceWorkload(write(tmp_path, "az.csv", AZURE_CSV))
    out = gen(wl)
    assert wl.format == AZURE
    jobs = out.jobs
    assert [j.stages[0].size for j in jobs] == [374, 396, 879, 100, 2000]
    assert [j.stages[0].size2 for j in jobs] == [44, 109, 0, 20, 300]
    assert all(j.stages[0].capability == "text-generation" for j in jobs)
    arr = [j.arrival for j in jobs]
    assert arr == pytest.approx([0.0, 4.314579, 4.31941, 14.81941, 120.0], abs=1e-6)
    ctx = FakeCtx()
    assert jobs[1].slo == pytest.approx(5.0 * ctx.reference_time("text-generation", 396, 109))
    assert jobs[0].source == "az.csv:2" and jobs[4].source == "az.csv:6"
    assert out.counters["bad_rows_skipped"] == 0 and out.counters["trace_jobs"] == 5
    assert wl.horizon_hint == pytest.approx(120.0)


def test_time_scale_compresses_arrivals(tmp_path):
    path = write(tmp_path, "az.csv", AZURE_CSV)
    base = [j.arrival for j in gen(TraceWorkload(path)).jobs]
    fast = [j.arrival for j in gen(TraceWorkload(path, time_scale=4.0)).jobs]
    slow = [j.arrival for j in gen(TraceWorkload(path, time_scale=0.5)).jobs]
    assert fast == pytest.approx([a / 4 for a in base])
    assert slow == pytest.approx([a * 2 for a in base])
    with pytest.raises(ConfigError, match="time_scale"):
        TraceWorkload(path, time_scale=0)


def test_trace_window_and_max_jobs(tmp_path):
    path = write(tmp_path, "az.csv", AZURE_CSV)
    wl = TraceWorkload(path, trace_window=(4.0, 60.0), time_scale=2.0, slo_multiplier=3.0)
    out = gen(wl)
    assert [j.stages[0].size for j in out.jobs] == [396, 879, 100]
    # arrivals relative to the first row of the window, then scaled
    assert [j.arrival for j in out.jobs] == pytest.approx([0.0, 0.004831 / 2, 10.504831 / 2], abs=1e-6)
    assert out.counters["rows_outside_window"] == 2
    assert out.jobs[0].slo == pytest.approx(3.0 * FakeCtx().reference_time("text-generation", 396, 109))
    out = gen(TraceWorkload(path, max_jobs=2))
    assert [j.stages[0].size for j in out.jobs] == [374, 396]
    assert out.counters["rows_beyond_max_jobs"] == 3
    with pytest.raises(ConfigError, match="trace_window"):
        TraceWorkload(path, trace_window=(10.0, 5.0))


def test_unsorted_rows_are_sorted_by_time(tmp_path):
    text = "TIMESTAMP,ContextTokens,GeneratedTokens\n10.5,3,1\n2.5,1,1\n7.0,2,1\n"
    jobs = gen(TraceWorkload(write(tmp_path, "u.csv", text))).jobs
    assert [j.stages[0].size for j in jobs] == [1, 2, 3]
    assert [j.arrival for j in jobs] == [0.0, 4.5, 8.0]


@pytest.mark.parametrize("row,reason", [
    ("2023-11-16 18:15:47.0,12", "expected 3 columns, found 2"),
    ("2023-11-16 18:15:47.0,12,4,9", "expected 3 columns, found 4"),
    ("2023-11-16 18:15:47.0,twelve,4", "ContextTokens 'twelve' is not a number"),
    ("2023-11-16 18:15:47.0,12,-4", "GeneratedTokens '-4' is negative"),
    ("2023-11-16 18:15:47.0,12.5,4", "not an integer"),
    ("2023-11-16 18:15:47.0,nan,4", "not finite"),
    ("yesterday,12,4", "cannot parse timestamp"),
])
def test_malformed_rows_name_file_and_line(tmp_path, row, reason):
    lines = AZURE_CSV.splitlines()
    lines.insert(3, row)  # becomes line 4 of the file
    path = write(tmp_path, "bad.csv", "\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as e:
        gen(TraceWorkload(path))
    assert f"{path}:4:" in str(e.value) and reason in str(e.value)
    out = gen(TraceWorkload(path, on_bad_rows="skip"))
    assert out.counters["bad_rows_skipped"] == 1 and len(out.jobs) == 5


def test_skip_mode_counts_every_bad_row(tmp_path):
    text = AZURE_CSV + "x,1,1\n2023-11-16 18:18:00,1\n2023-11-16 18:18:00,-1,1\n\n2023-11-16 18:18:01,7,7\n"
    out = gen(TraceWorkload(write(tmp_path, "b.csv", text), on_bad_rows="skip"))
    assert out.counters["bad_rows_skipped"] == 3
    assert [j.stages[0].size for j in out.jobs][-1] == 7 and len(out.jobs) == 6


def test_unknown_header_names_file_and_columns(tmp_path):
    path = write(tmp_path, "odd.csv", "time,tokens_in,tokens_out\n1,2,3\n")
    with pytest.raises(ConfigError) as e:
        TraceWorkload(path).generate(np.random.default_rng(0), FakeCtx())
    msg = str(e.value)
    assert str(path) in msg and "['time', 'tokens_in', 'tokens_out']" in msg
    with pytest.raises(ConfigError, match="empty file"):
        gen(TraceWorkload(write(tmp_path, "empty.csv", "")))
    with pytest.raises(ConfigError, match="not found"):
        TraceWorkload(tmp_path / "missing.csv")


def test_timestamp_parsing():
    assert parse_timestamp("2023-11-16 18:15:46.6805900") - parse_timestamp("2023-11-16 18:15:46") \
        == pytest.approx(0.68059, abs=1e-6)  # epoch seconds: ~2e-7 s resolution
    assert parse_timestamp("1970-01-01 00:01:00") == 60.0
    assert parse_timestamp("1970-01-01T00:01:00Z") == 60.0
    assert parse_timestamp("1970-01-01 01:01:00+01:00") == 60.0
    assert parse_timestamp(" 12.25 ") == 12.25


# ---------------------------------------------------------------------------- Philly

PHILLY_CSV = """timestamp,duration,num_gpus,gpu_time,cluster
2017-10-09 07:01:55,100.0,1,100.0,11cb48
2017-10-09 06:13:03,50.0,16,800.0,6214e9
2017-10-09 07:00:00,0.0,4,0.0,6214e9
2017-10-09 06:13:04,2000.0,2,4000.0,6214e9
"""


def test_philly_jobs(tmp_path):
    path = write(tmp_path, "philly.csv", PHILLY_CSV)
    wl = TraceWorkload(path, job_types={"train-resnet50": 1.0}, max_devices=8)
    out = gen(wl)
    assert wl.format == PHILLY
    jobs = out.jobs
    # sorted by submit time; arrivals from the earliest row
    assert [j.arrival for j in jobs] == [0.0, 1.0, 2817.0, 2932.0]
    assert [j.stages[0].devices_required for j in jobs] == [8, 2, 4, 1]
    assert out.counters["devices_clipped"] == 1
    # reference time is 0.25 s/iteration: size = duration / 0.25 (at least 1 iteration)
    assert [j.stages[0].size for j in jobs] == [200, 8000, 1, 400]
    assert all(j.stages[0].capability == "train-resnet50" for j in jobs)
    assert jobs[3].slo == pytest.approx(5.0 * 100.0)
    assert jobs[0].source == "philly.csv:3"


def test_philly_job_types_drawn_with_the_rng(tmp_path):
    rows = "".join(f"2017-10-09 07:{i // 60:02d}:{i % 60:02d},{100 + i},1,1,c\n" for i in range(600))
    path = write(tmp_path, "p.csv", "timestamp,duration,num_gpus,gpu_time,cluster\n" + rows)
    wl = TraceWorkload(path)  # default: every train* capability of the scenario
    a, b, c = gen(wl, 1).jobs, gen(wl, 1).jobs, gen(wl, 2).jobs
    caps_a = [j.stages[0].capability for j in a]
    assert caps_a == [j.stages[0].capability for j in b]
    assert caps_a != [j.stages[0].capability for j in c]
    assert set(caps_a) == {"train-resnet50", "train-lm"}
    ctx = FakeCtx()
    for j, d in zip(a, range(100, 700), strict=True):  # run time on the reference device ~ duration
        s = j.stages[0]
        assert abs(ctx.reference_time(s.capability, s.size) - d) <= 0.25 / 2 + 1e-9


# ---------------------------------------------------------------------------- Alibaba openb

ALI_HEADER = "name,cpu_milli,memory_mib,num_gpu,gpu_milli,gpu_spec,qos,pod_phase,creation_time,deletion_time,scheduled_time\n"
ALI_CSV = ALI_HEADER + """openb-pod-0000,12000,16384,1,1000,,LS,Running,100,1100,200
openb-pod-0001,6000,12288,0,0,,LS,Running,150,900,150
openb-pod-0002,6000,12288,8,1000,V100M16,BE,Succeeded,160,460,160
openb-pod-0003,6000,12288,1,460,,LS,Pending,170,1000,
openb-pod-0004,6000,12288,2,1000,,LS,Failed,400,401,400
"""


def test_alibaba_jobs(tmp_path):
    path = write(tmp_path, "openb.csv", ALI_CSV)
    wl = TraceWorkload(path, job_types={"train-resnet50": 1.0}, max_devices=4)
    out = gen(wl)
    assert wl.format == ALIBABA
    jobs = out.jobs
    assert [j.arrival for j in jobs] == [0.0, 60.0, 300.0]
    assert [j.stages[0].devices_required for j in jobs] == [1, 4, 2]
    assert [j.stages[0].size for j in jobs] == [3600, 1200, 4]  # (deletion - scheduled) / 0.25 s
    assert out.counters["non_gpu_rows_skipped"] == 1
    assert out.counters["unscheduled_skipped"] == 1
    assert out.counters["devices_clipped"] == 1
    out = gen(TraceWorkload(path, job_types={"train-resnet50": 1.0}, duration_from="creation"))
    assert [j.stages[0].size for j in out.jobs] == [4000, 1200, 3320, 4]
    bad = write(tmp_path, "neg.csv", ALI_HEADER + "p,1,1,1,1000,,LS,Running,500,100,500\n")
    with pytest.raises(ConfigError, match=r"neg.csv:2: deletion_time 100 is before"):
        gen(TraceWorkload(bad))


# ---------------------------------------------------------------------------- config

def test_trace_from_config(tmp_path):
    write(tmp_path, "az.csv", AZURE_CSV)
    cfg = {"kind": "trace", "path": "az.csv", "time_scale": 2.0, "window": [0, 60], "slo_multiplier": 4.0,
           "on_bad_rows": "skip", "max_jobs": 10}
    wl = build_workload(Section(dict(cfg), "s.yaml: workload"), CAPS, base_dir=tmp_path)
    jobs = gen(wl).jobs
    assert len(jobs) == 4 and jobs[1].arrival == pytest.approx(4.314579 / 2)
    with pytest.raises(ConfigError, match="s.yaml: workload: unknown key 'speed'"):
        build_workload(Section(dict(cfg, speed=2), "s.yaml: workload"), CAPS, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="s.yaml: workload.path: trace file 'nope.csv' not found"):
        build_workload(Section(dict(cfg, path="nope.csv"), "s.yaml: workload"), CAPS, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="'on_bad_rows' must be one of"):
        build_workload(Section(dict(cfg, on_bad_rows="ignore"), "s.yaml: workload"), CAPS, base_dir=tmp_path)
    wl = build_workload(Section(dict(cfg, capability="ocr"), "s.yaml: workload"), CAPS, base_dir=tmp_path)
    with pytest.raises(ConfigError, match="capability 'ocr' has no variant"):
        gen(wl)


# ---------------------------------------------------------------------------- real traces

def _shared(rel: str) -> Path:
    p = SHARED / rel
    if not p.is_file():
        pytest.skip(f"shared trace {rel} not present")
    return p


def test_real_azure_trace():
    wl = TraceWorkload(_shared("azure_llm_2023/AzureLLMInferenceTrace_conv.csv"))
    out = gen(wl)
    assert wl.format == AZURE and len(out.jobs) == 19366 and out.counters["bad_rows_skipped"] == 0
    arr = np.array([j.arrival for j in out.jobs])
    assert arr[0] == 0.0 and np.all(np.diff(arr) >= 0)
    assert 3000 < arr[-1] < 4000  # about one hour, ~5.5 requests/s
    assert all(j.stages[0].size >= 0 and j.stages[0].size2 >= 0 for j in out.jobs)
    short = gen(TraceWorkload(wl.path, trace_window=(0, 600), time_scale=10.0)).jobs
    assert 0 < len(short) < len(out.jobs) and short[-1].arrival <= 60.0


def test_real_philly_trace():
    wl = TraceWorkload(_shared("philly/philly.csv"), max_devices=8, max_jobs=20_000)
    out = gen(wl)
    assert wl.format == PHILLY and len(out.jobs) == 20_000
    assert out.counters["rows_beyond_max_jobs"] == 82247 - 20_000 - out.counters["non_gpu_rows_skipped"]
    assert max(j.stages[0].devices_required for j in out.jobs) <= 8


def test_real_alibaba_trace():
    out = gen(TraceWorkload(_shared("alibaba_openb_2023/openb_pod_list_default.csv")))
    c = out.counters
    assert c["non_gpu_rows_skipped"] == 1088 and c["bad_rows_skipped"] == 0
    assert len(out.jobs) + c["non_gpu_rows_skipped"] + c["unscheduled_skipped"] == 8152
    assert {j.stages[0].devices_required for j in out.jobs} <= {1, 2, 4, 8}


def test_parsed_trace_survives_pickling(tmp_path):
    import pickle

    wl = TraceWorkload(write(tmp_path, "philly.csv", PHILLY_CSV), job_types={"train-lm": 1.0})
    first = gen(wl, 3).jobs  # parses and caches the columns
    clone = pickle.loads(pickle.dumps(wl))
    assert gen(clone, 3).jobs == first
