# Two entry points: `make demo` (the main job on the embedded default) and `make test` (lint + the whole suite).
# Both create .venv when it is missing and install the project into it first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned: on CPU machines this resolves to the local CPU wheel instead of gigabytes of CUDA
# packages. On a GPU machine set TORCH_SPEC to the build you want, e.g. make demo TORCH_SPEC="torch==2.13.0".
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= runs/demo

.PHONY: install demo test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $@

demo: install
	$(BIN)/nearid demo --out $(DEMO_OUT)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python benchmarks/storage.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
