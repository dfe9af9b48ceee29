# mia: one Makefile for a fresh machine. Every target creates .venv if it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: test test-loaded demo bench chaos venv clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,bench,export,report,study,s3]'
	touch $(STAMP)

# numba's cache, warm: every kernel compiled once here (~20 s) instead of by the first
# `mia record` or `mia replay`; again whenever a kernel module changes. The cache is
# $NUMBA_CACHE_DIR, else __pycache__ beside the modules (the install is editable): see warmup.py.
WARM    := $(VENV)/.kernels-warm
KERNELS := $(shell grep -l --include='*.py' -r '@njit' analytics engine data 2>/dev/null)
$(WARM): $(STAMP) $(KERNELS)
	$(BIN)/mia warmup
	touch $(WARM)

venv: $(WARM)

test: $(WARM)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -m "not slow" tests

# make test on a loaded machine: the same tests beside LOAD_HOGS CPU-bound processes (one per
# core of a 2-core machine), killed when the tests end; everything bounded by LOAD_TIMEOUT s.
LOAD_HOGS    ?= 2
LOAD_TIMEOUT ?= 1200
test-loaded: $(WARM)
	@hogs=""; for i in $$(seq $(LOAD_HOGS)); do \
	    timeout $(LOAD_TIMEOUT) $(BIN)/python -c 'while True: pass' & hogs="$$hogs $$!"; \
	done; \
	trap 'kill $$hogs 2>/dev/null' EXIT INT TERM; \
	echo "test-loaded: $(LOAD_HOGS) CPU hogs (pids$$hogs) beside the tests, at most $(LOAD_TIMEOUT) s"; \
	timeout $(LOAD_TIMEOUT) $(BIN)/python -m pytest -q -m "not slow" tests --durations=20

demo: $(WARM)
	$(BIN)/mia demo

bench: $(WARM)
	$(BIN)/python -m bench.run --out BENCHMARKS.md

chaos: $(WARM)
	$(BIN)/python -m pytest -q -m slow tests

clean:
	rm -rf $(VENV) build *.egg-info mia-data .pytest_cache
