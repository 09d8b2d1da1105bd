# One-command setup and run. Setup is idempotent: the venv is (re)built only when
# pyproject.toml is newer than the last successful install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench results agent-study clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

test: setup
	$(PY) -m pytest

demo: setup
	$(PY) train.py

# Rebuild the README's generated result sections from the current code (about an hour on 2
# cores): the 200-seed heuristic tables (the batching rules, made for scenarios with dynamic
# batching, only on serving-batched: the batched simulator refuses batching, so that table runs
# 30 seeds on the reference simulator; likewise vllm on llm-continuous, continuous batching),
# the planner's 30-seed table and the demo's table.
# The tuned parameters are an input (baselines/tuned.yml; benchmarks/tune_baselines.py).
results: setup
	$(PY) evaluate.py --scenario serving-small --scenario serving-hetero --scenario llm-serving \
	    --scenario pipelines --scenario faulty-cluster --scenario training-cluster \
	    --policies all --exclude genetic planner clockwork triton infaas-batch vllm --seeds 1000-1199 --backend batched \
	    --out results/heuristics-200 --no-progress
	$(PY) benchmarks/readme_tables.py results/heuristics-200/results.json
	$(PY) evaluate.py --scenario serving-batched --policies all --exclude genetic planner --seeds 1000-1029 \
	    --jobs 2 --out results/batching-30 --no-progress
	$(PY) benchmarks/readme_tables.py results/batching-30/results.json --section batching
	$(PY) evaluate.py --scenario llm-continuous --policies all --exclude genetic planner clockwork triton \
	    infaas-batch --seeds 1000-1029 --jobs 2 --out results/continuous-30 --no-progress
	$(PY) benchmarks/readme_tables.py results/continuous-30/results.json --section continuous
	$(PY) evaluate.py --scenario serving-small --policies planner priced adaptive mct --seeds 1000-1029 \
	    --backend batched --jobs 2 --out results/planner-30 --no-progress
	$(PY) benchmarks/readme_tables.py results/planner-30/results.json --section planner
	rm -rf runs/results-demo
	$(PY) train.py --run-name results-demo --no-progress-bar
	$(PY) benchmarks/readme_tables.py runs/results-demo --section demo

# The learning result (about 2 hours on 2 cores): 3 scenarios x 5 training seeds against the
# strongest baseline chosen on training seeds, held-out seeds 1000-1029; rewrites its README section.
agent-study: setup
	$(PY) benchmarks/agent_study.py --timesteps 32768 -p pretrain.episodes=5 -p pretrain.dagger=0 \
	    --logdir runs/agent-study-bc --out results/agent-study
	$(PY) benchmarks/readme_tables.py results/agent-study/summary.json --section agent-study
	$(PY) benchmarks/agent_study.py --scenario serving-small --timesteps 49152 -p pretrain.episodes=10 \
	    -p pretrain.dagger=1 --logdir runs/agent-study --out results/agent-study-dagger
	$(PY) benchmarks/readme_tables.py results/agent-study-dagger/summary.json --section agent-study-dagger

bench: setup
	$(PY) benchmarks/env_speed.py

clean:
	rm -rf $(VENV) runs/ .pytest_cache build *.egg-info
