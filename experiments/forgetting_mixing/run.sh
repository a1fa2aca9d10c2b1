#!/usr/bin/env bash
# Forgetting vs data mixing: full fine-tuning vs LoRA on SmolLM2-135M-Instruct, Alpaca with and
# without 10% C4 replay; then the report (table + task-vs-forgetting plot).
set -euo pipefail
cd "$(dirname "$0")/../.."
SWEEP="${1:-outputs/forgetting_mixing/latest}"
rm -rf "$SWEEP"
peftbench-train -m experiment=forgetting_mixing method=full,lora dataset=alpaca,alpaca_mix_c4 hydra.sweep.dir="$SWEEP"
peftbench report "$SWEEP" --out reports/forgetting-mixing
