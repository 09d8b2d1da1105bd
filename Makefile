# One-command setup and run. Setup is idempotent: the venv is (re)built only when
# pyproject.toml is newer than the last successful install.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench clean

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

bench: setup
	$(PY) benchmarks/env_speed.py

clean:
	rm -rf $(VENV) runs/ .pytest_cache build *.egg-info
