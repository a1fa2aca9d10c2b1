#!/usr/bin/env bash
# Seed study 004 (toy LoRA on an MLP), five seeds, through the one pipeline; then the report.
# Each run is two stages (the base on the sphere, then LoRA on the shifted inputs); ~40 s a seed on one core.
set -euo pipefail
cd "$(dirname "$0")/../.."
peftbench-train -m experiment=seed004_toy_lora seed=1,2,3,4,5 hydra.sweep.dir=reports/seed004_toy_lora/runs
peftbench report reports/seed004_toy_lora/runs --out reports/seed004_toy_lora
