#!/usr/bin/env bash
# The quick-start comparison: 4 methods on MiniLM (real weights) over SST-2, then the report.
set -euo pipefail
cd "$(dirname "$0")/../.."
SWEEP="${1:-outputs/quickstart/latest}"
rm -rf "$SWEEP"
peftbench-train -m experiment=quickstart seed=1 hydra.sweep.dir="$SWEEP"
peftbench report "$SWEEP" --out reports/quickstart
