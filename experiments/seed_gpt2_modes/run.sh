#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/../.."
python -m peftbench.studies.suite --grid gpt2_modes --report reports/seed_gpt2_modes "$@"
