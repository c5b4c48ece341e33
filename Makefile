# Two set-up commands for a fresh machine (see README):
#   make train   creates .venv if there is none, installs, trains rsa_tiny on the generated motion videos
#   make test    creates .venv if there is none, installs, runs the fast test suite
# Extra arguments: make train ARGS="model=tsn_tiny trainer.max_epochs=5"; make test PYTEST_ARGS="-k rsa"
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Installed only when the environment has no torch yet, so a user's own (CUDA) build is kept.
# On the reference machine this is the CPU build that lies on disk.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install train eval test test-all lint format clean-data

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

train: install
	$(PY) train.py $(ARGS)

eval: install
	$(PY) eval.py $(ARGS)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q -m "" $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check rsa_lightning tests benchmarks train.py eval.py
	$(VENV)/bin/ruff format --check rsa_lightning tests benchmarks train.py eval.py

format: install
	$(VENV)/bin/ruff check --fix rsa_lightning tests benchmarks train.py eval.py
	$(VENV)/bin/ruff format rsa_lightning tests benchmarks train.py eval.py

clean-data:
	rm -rf data/synthetic
