# The README's commands.  Each creates .venv and installs what it needs, so they work on a fresh
# machine with only Python 3.11 and a C compiler.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
SOURCES := setup.py pyproject.toml heliosdb/_version.py $(wildcard kernels/*.pyx)

.PHONY: demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Editable installs build the Cython kernels in place (kernels/ is the package heliosdb.kernels).
# The demo needs the engine alone; the tests add the [test] extra (Kafka, RocksDB, S3, the
# engines the benchmarks compare with), which also covers the demo.
$(DEMO_STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(BIN)/python $(SOURCES)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@ $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/heliosdb demo

# ci/wheel_check.sh installs the project as users do (the wheel, in a fresh virtualenv, used from
# outside the checkout).  ci/services.sh installs the services the tests talk to (Prometheus,
# Kafka, an S3 server), starts them on free 127.0.0.1 ports before pytest and stops them after it,
# even when tests fail.  ci/browser.sh installs headless Chromium, in which tests/notebooks/
# open the executed notebooks to check that their charts render.
test: $(TEST_STAMP)
	ci/wheel_check.sh $(PYTHON)
	ci/browser.sh install
	ci/services.sh run -- $(BIN)/python -m pytest -q -p no:cacheprovider --benchmark-disable

# The layering contracts of pyproject.toml, checked on the package as a wheel installs it.
lint: $(TEST_STAMP)
	ci/lint.sh

bench: $(TEST_STAMP)
	$(BIN)/python -m benchmarks.w1

clean:
	rm -rf $(VENV) build dist *.egg-info kernels/*.so kernels/_hashagg.c kernels/_accum.c
