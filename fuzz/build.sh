#!/usr/bin/env bash
# Builds every fuzz target. Stable Rust is enough: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass
# the nightly-only sanitizer flags it needs.
#
#   fuzz/build.sh                       # build all targets
#   RUSTC_BOOTSTRAP=1 cargo fuzz run ws_session fuzz/seeds/ws_session -- -max_total_time=120
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
RUSTC_BOOTSTRAP=1 cargo fuzz build "$@"
