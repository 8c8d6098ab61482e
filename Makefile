# Two entry points: `make demo` (the main job on the embedded default) and `make test` (lint + the whole suite).
# Both create .venv when it is missing and install the project into it first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned: on CPU machines this resolves to the local CPU wheel instead of gigabytes of CUDA
# packages. On a GPU machine set TORCH_SPEC to the build you want, e.g. make demo TORCH_SPEC="torch==2.13.0".
TORCH_SPEC ?= torch==2.13.0
# every other package at the exact version in the lock file (refresh it with `make lock`)
LOCK := requirements.lock
DEMO_OUT ?= runs/demo
# one stamp per torch spec: changing TORCH_SPEC reinstalls torch into an existing .venv
STAMP := $(VENV)/.installed-$(shell printf '%s' '$(TORCH_SPEC)' | cksum | cut -d' ' -f1)

.PHONY: install demo test lint bench lock clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@rm -f $(VENV)/.installed*
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e ".[dev]"
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

# a fresh environment resolves the newest versions pyproject.toml allows; run the suite before committing the result
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet "$(TORCH_SPEC)"
	.lock-venv/bin/python -m pip install --quiet ".[dev]"
	{ sed -n '1,2p' $(LOCK); .lock-venv/bin/python -m pip freeze --exclude-editable \
		| grep -v -i -E '^(torch|nvidia-|triton|nearid)([=-]|$$)'; } > $(LOCK).new && mv $(LOCK).new $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .lock-venv runs .pytest_cache .ruff_cache
