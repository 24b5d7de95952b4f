# Everything the project needs is installed by this file: `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast demo lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Re-install only when the project's metadata changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Two pytest-xdist workers, a test file each at a time (module fixtures such as a local Ray or an S3 server are
# set up once): most tests wait on a subprocess, a Ray start or a server as much as they compute.
XDIST := -n 2 --dist loadfile

test: $(STAMP)
	$(BIN)/python -m pytest $(XDIST)

# The developer loop: everything but the tests that start Ray, a cluster or a benchmark (about 2 min on 2 cores).
test-fast: $(STAMP)
	$(BIN)/python -m pytest $(XDIST) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check ostr_ray searchspaces launch tests benchmarks
	$(BIN)/ruff format --check ostr_ray searchspaces launch tests benchmarks

demo: $(STAMP)
	$(BIN)/ostr-ray launch --preset demo --seeds 5

clean:
	rm -rf $(VENV) ostr_runs
