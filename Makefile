# One command each: `make demo` (set up + run the whole pipeline on built-in synthetic data)
# and `make test` (set up + run the test suite). Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Everything `make test` and `make demo` need: onnxruntime (CPU), export (which includes train: torch,
# torchvision, ninja), crf, dev. GPU users: make EXTRAS=gpu,export,crf,dev (never both cpu and gpu).
# The torch-free labelling install is `pip install 'aesipe[cpu]'` (README, Install).
EXTRAS ?= cpu,export,crf,dev
STAMP := $(VENV)/.installed-$(shell echo "$(EXTRAS)" | tr ',' '-')

.PHONY: setup test test-fast test-integration labelstudio-venv demo bench build-ext gpu-check clean lint

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --no-cache-dir --upgrade pip
	$(BIN)/python -m pip install -q --no-cache-dir -e ".[$(EXTRAS)]"
	touch $@

test: setup lint
	$(BIN)/python -m pytest -q

# ruff (config in pyproject.toml) takes well under a second, so `make test` runs it first.
lint: setup
	$(BIN)/ruff check .

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# Label Studio (server and SDK) in its own environment: its pins (opencv < 4.13, hence an older numpy) clash
# with aesipe's. The tests find it there (or skip): the SDK decodes our brush masks in `make test`, and
# `make test-integration` starts a real server (SQLite) and sends tasks through it.
LS_VENV := .venv-labelstudio
labelstudio-venv: $(LS_VENV)/.installed

$(LS_VENV)/.installed:
	test -x $(LS_VENV)/bin/python || $(PYTHON) -m venv $(LS_VENV)
	$(LS_VENV)/bin/python -m pip install -q --no-cache-dir --upgrade pip
	$(LS_VENV)/bin/python -m pip install -q --no-cache-dir "label-studio>=1.20"
	touch $@

test-integration: setup labelstudio-venv
	$(BIN)/python -m pytest -q -m integration tests/review

demo: setup
	$(BIN)/aesipe-train demo

bench: setup
	$(BIN)/python benchmarks/run_all.py

# Ahead-of-time build of the fused PAMR library (CPU, plus CUDA when a CUDA torch and nvcc exist).
build-ext: setup
	$(BIN)/python -m aesipe.ops build

# The CUDA half in one call on a GPU machine (build, CUDA tests, PAMR/labelling/AMP benchmarks; tables in OUT).
# Without a GPU it runs every step's CPU form at toy size (a check of the script, no figures).
gpu-check:
	OUT=$${OUT:-build/gpu-check-out} VENV=$(VENV) benchmarks/gpu_check.sh

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
