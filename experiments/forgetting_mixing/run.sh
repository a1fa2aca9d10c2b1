#!/usr/bin/env bash
# Forgetting vs data mixing: full fine-tuning vs LoRA on SmolLM2-135M-Instruct, Alpaca with and
# without 10% C4 replay; then the report (table + task-vs-forgetting plot).
# Two chains (one per dataset) run side by side: each job is single-process and CPU-bound.
set -euo pipefail
cd "$(dirname "$0")/../.."
SWEEP="${1:-outputs/forgetting_mixing/latest}"
rm -rf "$SWEEP"
for ds in alpaca alpaca_mix_c4; do
  peftbench-train -m experiment=forgetting_mixing method=full,lora dataset=$ds hydra.sweep.dir="$SWEEP/$ds" &
done
wait
peftbench report "$SWEEP" --out reports/forgetting-mixing
