#!/usr/bin/env bash
# Seed study 4: LoRA vs full fine-tuning of a tiny ViT+GPT-2 captioner on the synthetic shapes set,
# three seeds. Each finished run's record lands in reports/seed_image_text/runs/ (committed; a rerun
# skips finished runs), then the report is generated from those records alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PEFTBENCH_DATA_DIR=${PEFTBENCH_DATA_DIR:-../shared/data}
peftbench-train -m experiment=seed_image_text method=lora,full seed=1,2,3 hydra.sweep.dir=reports/seed_image_text/runs
peftbench report reports/seed_image_text/runs --out reports/seed_image_text
