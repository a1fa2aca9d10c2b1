#!/usr/bin/env bash
# The quick-start comparison: 4 methods on MiniLM (real weights) over SST-2, then the report.
#   bash experiments/quickstart/run.sh                         regenerate the committed reports/quickstart/
#   bash experiments/quickstart/run.sh --out outputs/quickstart  a user's own copy (what setup.sh quickstart runs)
# The runs go to <out>/runs when --out is given (re-running skips finished runs), else to a fresh
# outputs/quickstart/latest; the tables and plots to <out> (default reports/quickstart).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=reports/quickstart
SWEEP=outputs/quickstart/latest
if [ "${1:-}" = "--out" ]; then
  OUT="${2:?--out needs a folder}"
  SWEEP="$OUT/runs"
else
  rm -rf "$SWEEP"  # the committed report comes from fresh runs only
fi
peftbench-train -m experiment=quickstart seed=1 hydra.sweep.dir="$SWEEP"
peftbench report "$SWEEP" --out "$OUT"
echo
echo "quick-start: runs in $SWEEP/, the table in $OUT/report.md (also .csv .tex .html), plots in $OUT/plots/"
