#!/usr/bin/env bash
# The exact command behind reports/bench-overhead/overhead.md (CPU; set PEFTBENCH_DATA_DIR, HF_HUB_OFFLINE=1).
# The committed report: METHODS=full,lora,qlora,ia3,prefix_tuning,houlsby STEPS=30 ROUNDS=10 MEMORY_ROUNDS=2
# (threads 1, allocator keep); ALLOCATOR=default shows what glibc's page faults cost each path instead.
set -euo pipefail
peftbench bench --methods "${METHODS:-lora}" --steps "${STEPS:-10}" --rounds "${ROUNDS:-4}" \
  --memory-rounds "${MEMORY_ROUNDS:-1}" --threads "${THREADS:-1}" \
  --allocator "${ALLOCATOR:-keep}" --out reports/bench-overhead
