# `make test`: create .venv at the repo root (if missing), install t2i_jax with its
# test extra, run the suite on CPU JAX with 8 host devices (tests/conftest.py).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test bench clean

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed
	$(PY) benchmarks/sample_overhead.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
