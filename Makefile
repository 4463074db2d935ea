# The two commands: `make run` (the main job) and `make test`. Each sets itself up on first use:
# first what the system must provide (scripts/ensure-system-deps: memcached, a C compiler,
# Python 3.11+ with venv and headers, installed with apt-get when missing and possible, else
# one line saying what to install), then the virtualenv and the Cython build.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench setup build clean system-deps-run system-deps-test
# Prerequisites in the order written: the system before the virtualenv.
.NOTPARALLEL:

$(STAMP): pyproject.toml setup.py $(wildcard */*.pyx) $(wildcard */__init__.py)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

system-deps-run system-deps-test:
	@PYTHON=$(PYTHON) scripts/ensure-system-deps $(@:system-deps-%=%)

# Rebuild the Cython parts in place (pip -e builds them once; this picks up .pyx edits).
build: $(STAMP)
	$(BIN)/python setup.py build_ext --inplace --quiet

run: system-deps-run $(STAMP) build
	$(BIN)/rtbfleet demo

test: system-deps-test $(STAMP) build
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP) build
	$(BIN)/python -m bench

clean:
	rm -rf build $(VENV) .pytest_cache .mypy_cache .ruff_cache
	find . -name '*.so' -path './fleet/*' -delete
