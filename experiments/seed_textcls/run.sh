#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/../.."
for d in thucnews sst2; do peftbench-train experiment=seed_textcls_$d hydra.run.dir=outputs/seed_textcls/$d; done
peftbench report outputs/seed_textcls --out reports/seed_textcls
