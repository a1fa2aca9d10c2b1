#!/usr/bin/env bash
# Seed study 3: pretraining vs full FT vs LoRA vs QLoRA on gpt2_local s/m/l. The grid is
# conf/benchmark/gpt2_modes.yaml (its full/lora cells are standard_cpu's runs: only qlora is new);
# add --dry-run to list every run without running it.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m peftbench.cli.suite --grid gpt2_modes --report reports/seed_gpt2_modes "$@"
