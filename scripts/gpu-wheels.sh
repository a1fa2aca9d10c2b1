#!/usr/bin/env bash
# Wheels the GPU check needs and an offline CUDA machine may lack, downloaded here into .whl/
# (gitignored; carry it with the working tree, then `bash scripts/gpu-check.sh` there installs it):
#   hydra-core, omegaconf, antlr4-python3-runtime  - peftbench composes every case with Hydra
#   bitsandbytes                                    - QLoRA's 4-bit base (one manylinux wheel with its CUDA
#                                                     kernels, ~43 MB; NO_BNB=1 leaves it out)
# Versions are pinned to this environment's (the ones the tests ran with); Python 3.12, x86_64 Linux.
#   bash scripts/gpu-wheels.sh [DIR]      (default DIR: .whl)
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-.whl}
PY=${PYTHON:-python}
mkdir -p "$DEST"
pin() {  # NAME -> NAME==VERSION installed here, else the fallback
  local v
  v=$("$PY" -c "import importlib.metadata as m; print(m.version('$1'))" 2>/dev/null) || v=$2
  echo "$1==$v"
}
PLAT=(--only-binary=:all: --no-deps --python-version 3.12 --implementation cp
      --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
for spec in "$(pin hydra-core 1.3.2)" "$(pin omegaconf 2.3.0)"; do
  "$PY" -m pip download -q "${PLAT[@]}" -d "$DEST" "$spec"
done
# omegaconf 2.3 pins antlr4-python3-runtime 4.9.*, published only as an sdist: build its pure-Python wheel
ANTLR=$(pin antlr4-python3-runtime 4.9.3)
ls "$DEST"/antlr4_python3_runtime-"${ANTLR#*==}"-*.whl >/dev/null 2>&1 \
  || "$PY" -m pip wheel -q --no-deps -w "$DEST" "$ANTLR"
if [ "${NO_BNB:-0}" != 1 ]; then
  "$PY" -m pip download -q "${PLAT[@]}" -d "$DEST" "$(pin bitsandbytes 0.49.0)"
fi
du -ch "$DEST"/*.whl | tail -1 | sed "s|total|in $DEST (the working tree plus these must stay under 64 MiB)|"
