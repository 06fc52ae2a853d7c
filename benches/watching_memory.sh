#!/usr/bin/env bash
# Server user memory per watching connection: a fresh `matchstream serve` per run, CLIENTS
# harness watchers of one match, a short match (3 events) so the figure is the watchers' own
# cost, not the match's. The harness reports `server_rss_bytes_per_connection`: the server's
# RSS with every watcher subscribed minus its RSS before the first connect, over the watchers.
# With OLD=path/to/another/matchstream the runs alternate between that binary's server and
# this one's, for a before/after in one session.
#
#   bash benches/watching_memory.sh [CLIENTS=100000] [WORKERS=6] [ROUNDS=2]
#
# Environment: OLD (a second server binary), OUT (folder for the JSON reports; default a
# temporary one). 100,000 watchers need tuning/apply (ephemeral ports, backlogs) or a
# `ulimit -n` above 100,000 per worker's share. Bounded: each run has a 600 s timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-100000}
WORKERS=${2:-6}
ROUNDS=${3:-2}
NEW=target/release/matchstream
cargo build --release --bin matchstream 2>/dev/null

# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
OUT=${OUT:-$TMP/reports}
mkdir -p "$OUT"
# Pings would only add noise: no watcher is idle long enough to get one.
SERVE_EXTRA="${SERVE_EXTRA:-} --ws-ping-after-ms 900000"
uptime
SERVERS=("$NEW")
[ -n "${OLD:-}" ] && SERVERS=("$OLD" "$NEW")
printf '%-40s %6s %14s %14s %s\n' server round "B/connection" "RSS before" verified
for round in $(seq "$ROUNDS"); do
    for BIN in "${SERVERS[@]}"; do
        start_server >/dev/null
        tag=new
        [ "$BIN" = "$NEW" ] || tag=old
        report="$OUT/$tag-$round.json"
        timeout 600 "$NEW" load --server "http://127.0.0.1:$PORT" --clients "$CLIENTS" \
            --every-ms 300 --events 3 --admin-server "http://127.0.0.1:$APORT" \
            --admin-token "$TOKEN" --server-pid "$SPID" --report "$report" --quiet \
            >/dev/null 2>&1 || true
        kill "$SPID" 2>/dev/null || true
        wait "$SPID" 2>/dev/null || true
        SPID=
        python3 - "$BIN" "$round" "$report" <<'PY'
import json, sys
name, rnd, path = sys.argv[1:]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{name:<40} {rnd:>6} no report ({e})")
    sys.exit()
per = r.get("server_rss_bytes_per_connection")
before = r.get("server", {}).get("rss_before")
ok = "PASS" if r.get("passed") else "FAIL"
fmt = lambda v, d=1: "-" if v is None else f"{v / d:,.0f}"
print(f"{name:<40} {rnd:>6} {fmt(per):>14} {fmt(before, 1024):>11} KiB {ok} {r.get('deliveries')} deliveries")
PY
        sleep 5
    done
done
echo "reports: $OUT"
