#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/../.."
peftbench-train experiment=seed_image_text hydra.run.dir=outputs/seed_image_text
peftbench report outputs/seed_image_text --out reports/seed_image_text
