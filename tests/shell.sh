#!/usr/bin/env bash
# Shell-script checks: shellcheck on tuning/* and tests/*.sh, then the tuning tests.
#   bash tests/shell.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v shellcheck >/dev/null 2>&1 || bash tests/install.sh
shellcheck -x tuning/check tuning/apply tuning/revert tuning/lib.sh tests/*.sh
echo "shellcheck: clean"
bash tests/tuning.sh
