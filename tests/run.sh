#!/usr/bin/env bash
# The one test command: installs what the tests need on a fresh machine, then runs every test.
#   bash tests/run.sh            # everything
#   SKIP_INSTALL=1 bash tests/run.sh   # skip package installs (already done)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n== %s ==\n' "$*"; }

if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  step "install system packages"
  bash tests/install.sh
fi

step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

step "build"
cargo build --release --locked --bins

step "unit, property and integration tests"
export MATCHSTREAM_BIN="$root/target/release/matchstream"
if command -v cargo-nextest >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked
fi

step "shell scripts"
if [ -x tests/shell.sh ]; then bash tests/shell.sh; fi

step "Autobahn conformance"
bash tests/autobahn.sh

step "the web page in headless Chromium"
bash tests/browser.sh

step "fuzz targets build"
bash fuzz/build.sh
