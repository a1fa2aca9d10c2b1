#!/usr/bin/env bash
# Seed study 3: pretraining vs full FT vs LoRA vs QLoRA on gpt2_local s/m/l. The grid is
# conf/benchmark/gpt2_modes.yaml (the standard benchmark's protocol: 3-point lr grids, 3 seeds, the
# same ladder and wiki_lm budget); add --dry-run to list every run, --jobs 2 to use two cores,
# --commit to commit each record as it lands in reports/seed_gpt2_modes/runs/.
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m peftbench.cli.suite --grid gpt2_modes --report reports/seed_gpt2_modes "$@"
