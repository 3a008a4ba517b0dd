# The README's commands.  Each creates .venv and installs what it needs, so they work on a fresh
# machine with only Python 3.11 and a C compiler.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SOURCES := setup.py pyproject.toml $(wildcard kernels/*.pyx)

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Editable install: builds the Cython kernels in place (kernels/ is the package heliosdb.kernels).
$(STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/heliosdb demo

# ci/services.sh installs the services the tests talk to (Prometheus: apt-get on Debian), starts
# them on free 127.0.0.1 ports before pytest and stops them after it, even when tests fail.
test: $(STAMP)
	ci/services.sh run -- $(BIN)/python -m pytest -q -p no:cacheprovider --benchmark-disable

bench: $(STAMP)
	$(BIN)/python -m benchmarks.w1

clean:
	rm -rf $(VENV) build *.egg-info kernels/*.so kernels/_hashagg.c
