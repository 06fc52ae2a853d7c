#!/usr/bin/env bash
# The watcher's page in a real browser: headless Debian chromium driven by playwright-core.
#   bash tests/browser.sh                 # installs chromium and the node packages if missing
#   MATCHSTREAM_BIN=path bash tests/browser.sh
# Needs the release binary (built here when missing and MATCHSTREAM_BIN is unset).
# Screenshots: target/browser-artifacts/*.png
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (apt-get) =="
  sudo_=""
  if [ "$(id -u)" != 0 ]; then sudo_="sudo"; fi
  $sudo_ apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "browser test: node and npm are required (apt-get install nodejs npm)" >&2
  exit 1
fi

echo "== npm ci (tests/browser) =="
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

if [ -z "${MATCHSTREAM_BIN:-}" ]; then
  export MATCHSTREAM_BIN="$root/target/release/matchstream"
  if [ ! -x "$MATCHSTREAM_BIN" ]; then
    echo "== cargo build --release (no binary at $MATCHSTREAM_BIN) =="
    cargo build --release --locked --bins
  fi
fi

mkdir -p target/browser-artifacts
echo "== browser test ($(/usr/bin/chromium --version 2>/dev/null), node $(node --version)) =="
node --test --test-reporter=spec tests/browser/
