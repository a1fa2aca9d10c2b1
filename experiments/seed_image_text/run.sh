#!/usr/bin/env bash
# Seed study 4: LoRA vs full fine-tuning of a tiny ViT+GPT-2 captioner on the synthetic shapes set;
# writes reports/seed_image_text/ (tables, BLEU).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} PEFTBENCH_DATA_DIR=${PEFTBENCH_DATA_DIR:-../shared/data}
rm -rf outputs/seed_image_text
peftbench-train -m experiment=seed_image_text method=lora,full seed=1,2 hydra.sweep.dir=outputs/seed_image_text
peftbench report outputs/seed_image_text --out reports/seed_image_text
