#!/usr/bin/env bash
# The exact command behind reports/bench-overhead/overhead.md (CPU; set PEFTBENCH_DATA_DIR, HF_HUB_OFFLINE=1).
# The committed report: METHODS=full,lora,qlora,ia3,prefix_tuning,houlsby STEPS=100 ROUNDS=5 (threads 1)
set -euo pipefail
peftbench bench --methods "${METHODS:-lora}" --steps "${STEPS:-10}" --rounds "${ROUNDS:-3}" --threads "${THREADS:-1}" --out reports/bench-overhead
