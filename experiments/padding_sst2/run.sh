#!/usr/bin/env bash
# Fixed padding to 64 vs dynamic padding vs length grouping (MiniLM-L6 + LoRA, SST-2, 1,000 train
# sentences, 14 updates of 16 (the first 3 untimed), the first 64 validation sentences, one torch
# thread), ROUNDS rounds in one process, each round in a rotated order; then table.md from the records.
# Regenerate the table alone: python experiments/padding_sst2/driver.py table reports/padding-sst2
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PEFTBENCH_DATA_DIR=${PEFTBENCH_DATA_DIR:-../shared/data}
nice python experiments/padding_sst2/driver.py run reports/padding-sst2 "${ROUNDS:-3}" "$@"
