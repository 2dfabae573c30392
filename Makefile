# `make demo`: create .venv at the repo root (if missing), install t2i_jax, train the embedded
#   default (captioned shapes) in runs/demo, sample a grid for the config's prompts, print
#   where the grid, metrics and checkpoint are, and end with the oracle evaluation table
#   (runs/demo/metrics.json). Uses a GPU when nvidia-smi finds one.
# `make test`: the same .venv with the test extra; the suite on CPU JAX with 8 host devices.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo
DEMO_CONFIG ?= configs/shapes_default.py
# CUDA wheels of jax when this machine has an NVIDIA GPU (TPU VMs: `pip install "jax[tpu]"` by hand).
JAX_ACCEL := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo '"jax[cuda12]>=0.10.2,<0.11"')

.PHONY: demo test bench clean

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]" $(JAX_ACCEL)
	touch $@

demo: $(VENV)/.installed
	$(PY) -m t2i_jax.main --config=$(DEMO_CONFIG) --workdir=$(DEMO_DIR)
	$(PY) -m t2i_jax.main --config=$(DEMO_CONFIG) --workdir=$(DEMO_DIR) --mode=sample
	$(PY) -m t2i_jax.main --config=$(DEMO_CONFIG) --workdir=$(DEMO_DIR) --mode=eval

test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder tests

bench: $(VENV)/.installed
	$(PY) benchmarks/sample_overhead.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
