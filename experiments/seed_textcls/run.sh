#!/usr/bin/env bash
# Seed study 2: text classification as instruction SFT on SmolLM2-135M-Instruct (LoRA), THUCNews
# (10 Chinese news topics) and SST-2; accuracy from generated labels, before (zero-shot) and after.
# Writes reports/seed_textcls/.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PEFTBENCH_DATA_DIR=${PEFTBENCH_DATA_DIR:-../shared/data}
for d in thucnews sst2; do peftbench-train experiment=seed_textcls_$d hydra.run.dir=outputs/seed_textcls/$d; done
peftbench report outputs/seed_textcls --out reports/seed_textcls
