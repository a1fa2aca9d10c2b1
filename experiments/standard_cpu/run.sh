#!/usr/bin/env bash
# The standard CPU benchmark (issue 6). Full edition (~60 min on 2 idle cores):
#   experiments/standard_cpu/run.sh
# CI edition (~10 min on 2 idle cores):
#   experiments/standard_cpu/run.sh --quick
# Runs land in outputs/suite/<grid>/ (a relaunch skips finished runs); the report (tables, plots,
# selection.md, manifest.json with the exact command, run ids, git revision, machine, versions)
# is written to reports/standard-cpu/.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
export PEFTBENCH_DATA_DIR=${PEFTBENCH_DATA_DIR:-../shared/data}
python -m peftbench.studies.suite --report reports/standard-cpu "$@"
