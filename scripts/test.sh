#!/usr/bin/env bash
# Everything CI runs, in order: the default suite (fast, CPU, offline; includes 2-process DDP),
# then the integration suites that need their own set-up (real SLURM on localhost, the property
# test over the config space, kill-and-resume). Expects the venv on PATH (scripts/setup.sh test).
set -uo pipefail
cd "$(dirname "$0")/.."
fail=0
# pytest's exit code 5 means "no test selected" (e.g. no slow test on this machine): not a failure.
run() { echo "== $*"; "$@"; rc=$?; if [ $rc -ne 0 ] && [ $rc -ne 5 ]; then fail=1; fi; }

# Headless Chromium for the HTML-report test (Debian package; the test skips without it).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed"
fi
# No compiler: every package of the quick-start and test sets is a wheel or a pure-Python sdist that
# builds with cc/gcc/c++ shadowed (the install above also ran with them shadowed).
run bash scripts/setup.sh check-no-compiler
run python -m pytest -q -p no:cacheprovider --timeout=900
# Integration: a real one-node SLURM cluster (installs Debian packages; needs root).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  run bash scripts/slurm.sh install
  run bash scripts/slurm.sh start
  run python -m pytest -q -p no:cacheprovider -m slurm --timeout=1200
  bash scripts/slurm.sh stop || true
else
  echo "skipping SLURM integration: needs root and apt-get"
fi
run python -m pytest -q -p no:cacheprovider -m slow --timeout=1800
exit $fail
