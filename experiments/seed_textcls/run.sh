#!/usr/bin/env bash
# Seed study 2: text classification as instruction SFT on SmolLM2-135M-Instruct (LoRA), SST-2 and
# THUCNews (10 Chinese news topics); accuracy from generated labels, before (zero-shot) and after.
# Each finished run's record lands in reports/seed_textcls/runs/ (a rerun skips finished runs);
# the report is generated from those records alone. Three seeds (SEEDS=1 for a single-seed run).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PEFTBENCH_DATA_DIR=${PEFTBENCH_DATA_DIR:-../shared/data}
for d in sst2 thucnews; do
  peftbench-train -m experiment=seed_textcls_$d seed="${SEEDS:-1,2,3}" hydra.sweep.dir=reports/seed_textcls/runs
done
peftbench report reports/seed_textcls/runs --out reports/seed_textcls
