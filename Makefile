# Two entry points for a newcomer: `make train` and `make test`. Both create .venv as needed.
# `make test-fast` is for local work: the tests marked slow (over 20 s each) are left out; CI runs them all.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup train test test-fast lint

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: this picks the local CPU wheel instead of a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	# dev: every extra (optuna, mlflow, wandb, export, eval, plot, tensorboard, triton) so no test skips.
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

train: $(STAMP)
	$(BIN)/python train.py $(ARGS)

test: $(STAMP)
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q $(ARGS)

test-fast: $(STAMP)
	TRITON_INTERPRET=1 $(BIN)/python -m pytest -q -m "not slow" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check apt hydra_plugins tests scripts examples train.py
