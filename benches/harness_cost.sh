#!/usr/bin/env bash
# What the harness costs next to the server it measures: one `matchstream serve`, then
# `matchstream load` runs against it, each reporting (same run, same delivery phase) the
# server's and its own CPU per verified delivery and their ratio (`harness_to_server_cpu`,
# goal ≤ 0.5). With OLD=path/to/another/matchstream the runs alternate between that binary's
# harness and this one's, against the same server, for a before/after in one session.
#
#   bash benches/harness_cost.sh [CLIENTS=3000] [ROUNDS=3] [WORKERS=2]
#
# Environment: OLD (a second harness binary), LOAD_DRIVE (how the match is driven, default
# `--replay sample --speed 20`; e.g. `--every-ms 20 --events 150`), OUT (folder for the JSON
# reports; default a temporary one). Bounded: each run has a 300 s timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-3000}
ROUNDS=${2:-3}
WORKERS=${3:-2}
LOAD_DRIVE=${LOAD_DRIVE:---replay sample --speed 20}
BIN=target/release/matchstream
cargo build --release --bin matchstream 2>/dev/null

# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
OUT=${OUT:-$TMP/reports}
mkdir -p "$OUT"
start_server
uptime
HARNESSES=("$BIN")
[ -n "${OLD:-}" ] && HARNESSES=("$OLD" "$BIN")
printf '%-40s %12s %12s %8s %s\n' harness "server µs/d" "harness µs/d" ratio verified
for round in $(seq "$ROUNDS"); do
    for h in "${HARNESSES[@]}"; do
        report="$OUT/$(basename "$h")-$round.json"
        # shellcheck disable=SC2086
        timeout 300 "$h" load --server "http://127.0.0.1:$PORT" --clients "$CLIENTS" $LOAD_DRIVE \
            --admin-token "$TOKEN" --server-pid "$SPID" --report "$report" --quiet >/dev/null 2>&1 || true
        python3 - "$h" "$report" <<'PY'
import json, sys
name, path = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{name:<40} no report ({e})")
    sys.exit()
s, h = r.get("server_cpu_us_per_delivery"), r.get("harness_cpu_us_per_delivery")
ratio = h / s if s and h else None
fmt = lambda v: "-" if v is None else f"{v:.2f}"
ok = "PASS" if r.get("passed") else "FAIL"
print(f"{name:<40} {fmt(s):>12} {fmt(h):>12} {fmt(ratio):>8} {ok} {r.get('deliveries')} deliveries")
PY
    done
done
echo "reports: $OUT"
