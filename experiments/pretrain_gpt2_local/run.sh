#!/usr/bin/env bash
set -euo pipefail
for s in s m l; do peftbench-train experiment=pretrain_gpt2_local model_size=$s; done
