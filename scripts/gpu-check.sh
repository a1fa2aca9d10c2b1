#!/usr/bin/env bash
# The GPU check in one command, on any CUDA machine (≤ 8 min on one H100/H200):
#   bash scripts/gpu-check.sh                # → reports/gpu-<device>/gpu.md + gpu.json
#   bash scripts/gpu-check.sh --dry-run      # every path on CPU, tiny model, seconds (no GPU figure)
#   bash scripts/gpu-check.sh --groups methods,ablations --budget-min 5
# Wheels in .whl/ (scripts/gpu-wheels.sh; for a machine without network) are installed into a
# temporary site dir first and put on PYTHONPATH (GPU_CHECK_NO_WHEELS=1 skips that); peftbench itself
# runs from src/ (no install needed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "${GPU_CHECK_NO_WHEELS:-0}" != 1 ] && compgen -G ".whl/*.whl" >/dev/null; then
  SITE=$(mktemp -d "${TMPDIR:-/tmp}/pb-gpu-site.XXXXXX")
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "$PY" -m peftbench.cli.gpu_check "$@"
