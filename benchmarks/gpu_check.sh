#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): one command, one JSON line on stdout.
#   bash benchmarks/gpu_check.sh                # 1B-shaped Llama student, bf16, GPU 0
#   bash benchmarks/gpu_check.sh --cpu --tiny   # the same code on a toy on CPU (run by the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec "$PY" benchmarks/gpu_check.py "$@"
