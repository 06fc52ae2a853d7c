#!/usr/bin/env bash
# Installs the packages the test suite needs; idempotent, quick when everything is there.
set -euo pipefail
need_apt=()
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
