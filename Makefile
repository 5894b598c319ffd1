# Set-up and everyday commands. A fresh machine needs only Python 3.10+ and access to PyPI.
#   make demo   - create .venv, install, enhance a real sample brain, write outputs + a PNG figure
#   make test   - create .venv, install, run the test suite
#   make bench  - print the speed / memory benchmark table

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mrisuperres demo --output-dir demo_output --overwrite

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_enhance.py

clean:
	rm -rf $(VENV) demo_output .pytest_cache *.egg-info MRISuperRes/*.egg-info
