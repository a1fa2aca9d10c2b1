#!/usr/bin/env bash
# Fixed padding to 64 vs dynamic padding vs length grouping (MiniLM-L6 + LoRA, SST-2, 1,000 train
# sentences, 40 updates of 16, the first 400 validation sentences), interleaved in one process.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PEFTBENCH_DATA_DIR=${PEFTBENCH_DATA_DIR:-../shared/data}
python experiments/padding_sst2/driver.py reports/padding-sst2 "${ROUNDS:-1}" "$@"
