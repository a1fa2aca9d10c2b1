#!/usr/bin/env bash
# One entry point for a fresh machine:
#   bash scripts/setup.sh quickstart   install, then run the quick-start comparison + report
#   bash scripts/setup.sh test         install, then run everything CI runs
#   bash scripts/setup.sh install      install only
# Installs into .venv (PEFTBENCH_VENV overrides). Where no NVIDIA GPU is present, torch is pinned
# to the CPU wheel (a plain `torch` would pull a multi-GB CUDA build); pyproject keeps a range.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VENV="${PEFTBENCH_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

install() {
  if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
  local pip="$VENV/bin/pip"
  "$pip" install -q --upgrade pip >/dev/null 2>&1 || true
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "GPU found: installing torch from the project's range"
  else
    "$pip" install -q "torch==${PEFTBENCH_CPU_TORCH:-2.13.0}" 2>&1 | grep -v "is ignored" || true
  fi
  "$pip" install -q -e ".[dev]" 2>&1 | grep -v "is ignored" || true
  # the example plugin, so the registry-parametrized conformance suite checks a plugin too
  "$pip" install -q --no-deps --no-build-isolation -e examples/peftbench-scaled-bias 2>&1 | grep -v "is ignored" || true
  "$VENV/bin/python" -c "import peftbench, torch, lightning, peft, transformers; print('peftbench', peftbench.__version__, '| torch', torch.__version__)"
}

data_env() {
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" HF_DATASETS_OFFLINE="${HF_DATASETS_OFFLINE:-1}" WANDB_MODE="${WANDB_MODE:-offline}"
  if [ -z "${PEFTBENCH_DATA_DIR:-}" ] && [ -d "$ROOT/../shared/data" ]; then
    export PEFTBENCH_DATA_DIR="$(cd "$ROOT/../shared/data" && pwd)"
  fi
  export PATH="$VENV/bin:$PATH"
}

case "${1:-}" in
  install) install ;;
  quickstart) install; data_env; bash experiments/quickstart/run.sh ;;
  test) install; data_env; bash scripts/test.sh ;;
  *) echo "usage: bash scripts/setup.sh {quickstart|test|install}" >&2; exit 2 ;;
esac
