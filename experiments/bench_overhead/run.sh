#!/usr/bin/env bash
# The exact command behind reports/bench-overhead/overhead.md (CPU; set PEFTBENCH_DATA_DIR, HF_HUB_OFFLINE=1).
# A full run: --methods full,lora,qlora,ia3,prefix_tuning,houlsby --steps 20 --rounds 3
set -euo pipefail
peftbench bench --methods "${METHODS:-lora}" --steps "${STEPS:-10}" --rounds "${ROUNDS:-3}" --out reports/bench-overhead
