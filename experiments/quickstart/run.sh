#!/usr/bin/env bash
# The quick-start comparison: 4 methods on MiniLM (real weights) over SST-2, then the report.
#   bash experiments/quickstart/run.sh                         regenerate the committed reports/quickstart/
#   bash experiments/quickstart/run.sh --out outputs/quickstart  a user's own copy (what setup.sh quickstart runs)
# The runs go to <out>/runs (re-running skips finished runs; reports/quickstart/runs holds the committed
# records the committed report is generated from); the tables and plots to <out> (default reports/quickstart).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=reports/quickstart
if [ "${1:-}" = "--out" ]; then
  OUT="${2:?--out needs a folder}"
fi
SWEEP="$OUT/runs"
peftbench-train -m experiment=quickstart seed=1 hydra.sweep.dir="$SWEEP"
peftbench report "$SWEEP" --out "$OUT"
echo
echo "quick-start: runs in $SWEEP/, the table in $OUT/report.md (also .csv .tex .html), plots in $OUT/plots/"
