# `make test` and `make demo` set themselves up: they create .venv if it is missing and install
# the tested environment, requirements/lock-cpu.txt (every package at an exact version, the CPU
# build of torch), then this package in editable mode without touching those pins.
PYTHON ?= python3
VENV ?= .venv
LOCK ?= requirements/lock-cpu.txt
CONSTRAINTS := requirements/constraints-cpu.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test test-fast test-latest demo install lock lint gpu-check compile-check

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

# The suite without the tests marked slow (multi-process, end-to-end, benchmark smoke runs).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" --durations=15 $(PYTEST_ARGS)

# The suite against the newest releases of everything but torch and triton (a throwaway
# .venv-latest), to see an upstream break before the lock moves. Not part of CI. A failure is
# an upstream break: the failing tests are listed, and the lock is not changed.
test-latest:
	rm -rf .venv-latest && $(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install --quiet --upgrade pip
	.venv-latest/bin/python -m pip install --quiet --upgrade -c $(CONSTRAINTS) -e ".[dev]"
	.venv-latest/bin/python -m pip list --format=freeze > .venv-latest/resolved.txt
	.venv-latest/bin/python -m pytest -q -rf $(PYTEST_ARGS) || { \
	  echo "make test-latest: the FAILED tests above break against the newest releases" \
	       "(versions in .venv-latest/resolved.txt); $(LOCK) is unchanged"; exit 1; }

# Regenerate the lock: a fresh resolve of ".[dev]" against the CPU pins in a new virtual
# environment, frozen with every package (pip and setuptools included). Run `make test` after.
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -c $(CONSTRAINTS) ".[dev]"
	grep '^#' $(LOCK) > .venv-lock/lock.txt
	.venv-lock/bin/python -m pip freeze --all --exclude redi >> .venv-lock/lock.txt
	mv .venv-lock/lock.txt $(LOCK) && rm -rf .venv-lock

# The main job on the built-in two-style teacher task "styles" (one seed: Stage 1, then more
# SFT on the pairs' correct traces, continued SFT and REDI at the committed learning rates,
# into runs/demo); rerunning resumes, and refuses pieces made with other settings.
# ARGS=--compare adds symmetric REDI, DPO, SimPO and REDI with a floor; ARGS=--full reruns
# the learning-rate sweep (7 methods x 5 rates, chosen on validation sampled pass@1) on 3
# seeds into runs/demo-full and rewrites docs/demo/ (ARGS="--full --workers 3" runs the 3
# seeds at once); ARGS=--quick checks the pipeline in seconds (runs/demo-quick).
demo: $(STAMP)
	$(PY) -m redi.cli demo $(ARGS)

# ruff on everything; mypy on the public library layer ([tool.mypy] in pyproject.toml).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

# On a machine with a CUDA GPU: GPU tests and the GPU benchmark into bench/results/ (bench/gpu.sh).
gpu-check:
	bash bench/gpu.sh

# Compile every Triton kernel variant for sm_80 and sm_90 (no GPU needed; several minutes).
compile-check: $(STAMP)
	$(PY) -m pytest -q -m triton_compile tests/kernels/test_triton_compile.py
