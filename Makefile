# The two commands: `make study` and `make test`. Both build (or refresh) .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
KERNEL := kgl-utils
PARAMS ?= params/default.yaml
STUDY_ARGS ?=

.PHONY: setup study test lint bench

# Reinstalls whenever pyproject.toml is newer than the last install.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (kgl_utils)"
	touch $(STAMP)

setup: $(STAMP)

study: $(STAMP)
	$(PY) -m kgl_utils.study run $(PARAMS) $(STUDY_ARGS)

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check kgl_utils tests

bench: $(STAMP)
	$(PY) -m kgl_utils.bench
