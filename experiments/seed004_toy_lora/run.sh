#!/usr/bin/env bash
# Seed study 004 - Toy LoRA (MLP): three seeds, then the report.
set -euo pipefail
cd "$(dirname "$0")/../.."
peftbench-train -m experiment=seed004_toy_lora seed=1,2,3 hydra.sweep.dir=reports/seed004_toy_lora/runs
peftbench report reports/seed004_toy_lora/runs --out reports/seed004_toy_lora
