# `make test` and `make demo` set themselves up: they create .venv if it is missing and
# install the package with its dev extras, pinned to the CPU build of torch.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints-cpu.txt
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install lint gpu-check compile-check

install: $(STAMP)

$(STAMP): pyproject.toml setup.py $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The main job on the built-in teacher task (one seed: Stage 1, then continued SFT and REDI
# at the committed learning rates; about 6.5 minutes on 2 CPU cores); rerunning resumes.
# ARGS=--compare adds symmetric REDI, DPO and SimPO; ARGS=--full reruns the learning-rate
# sweep (5 methods x 6 rates) on 3 seeds and rewrites docs/demo/ (about 1.5 hours on 2 cores;
# ARGS="--full --workers 3" runs the 3 seeds at once: its pieces took 56 min that way).
demo: $(STAMP)
	$(PY) -m redi.cli demo $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

# On a machine with a CUDA GPU: GPU tests and the GPU benchmark into bench/results/ (bench/gpu.sh).
gpu-check:
	bash bench/gpu.sh

# Compile every Triton kernel variant for sm_80 and sm_90 (no GPU needed; several minutes).
compile-check: $(STAMP)
	$(PY) -m pytest -q -m triton_compile tests/test_triton_compile.py
