# Two commands from a clean clone: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,mpi]'
	touch $@

# water-64, q-TIP4P/F physics split on i-PI's built-in MTS (0.5 fs inner, 2 fs outer), NVT, 1 ps
demo: $(STAMP)
	mkdir -p runs/demo && cd runs/demo && $(abspath $(VENV))/bin/ipi-mts run $(CURDIR)/inputs/water-64/mts-nvt-physics-split.xml

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/serving.py

clean:
	rm -rf $(VENV) *.egg-info
