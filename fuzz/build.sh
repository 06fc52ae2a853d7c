#!/usr/bin/env bash
# Builds every fuzz target and replays its committed seeds once (a regression check).
# Stable Rust is enough: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass the nightly-only sanitizer
# flags it needs.
#
#   fuzz/build.sh                       # build all targets, replay the seeds
#   RUSTC_BOOTSTRAP=1 cargo fuzz run ws_session fuzz/seeds/ws_session -- -max_total_time=120
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
cargo fuzz build "$@"
for target in $(cargo fuzz list); do
    cargo fuzz run "$@" "$target" "fuzz/seeds/$target" -- -runs=0 >/dev/null 2>&1 \
        || { echo "fuzz seed replay failed: $target"; exit 1; }
    echo "fuzz: $target seeds ok"
done
