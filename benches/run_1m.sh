#!/usr/bin/env bash
# The 1M attempt: one `matchstream serve` process with WORKERS workers (each a private fd
# table of ~20K descriptors: 54 × 19,936 = 1,076,544, a margin for the kernel's uneven
# spread of accepted connections over the workers' listeners), then
#   1. the idle hold of CLIENTS WebSocket connections (user memory per watcher: RSS delta ÷
#      held connections; kernel memory per connection), on a fresh server;
#   2. a verified fan-out of the sample match to FANOUT watchers (every event, in order, then
#      `stop`), on a fresh server.
# The harness spreads its sockets over as many load threads (private fd tables) and source
# addresses (127.0.0.2…) as needed. Not run by CI (many minutes, ~10 GiB, 2M sockets at 1M).
#
#   bash benches/run_1m.sh [CLIENTS=1000000] [WORKERS=54] [FANOUT=300000] [SPEED=10]
#
# Environment: OUT (results folder), RING (plane ring entries per worker, default 8192: a
# broadcast to FANOUT/WORKERS watchers per worker stays one io_uring_enter), HOLD (seconds),
# PING_MS (keepalive ping interval for both servers, default 900000: the default 30 s would
# ping ~33,000 watchers a second on 2 cores while the rest connect), SKIP_FANOUT=1, SKIP_IDLE=1,
# LOAD_EXTRA (more `load` flags for the fan-out, e.g. `--connect-timeout 600 --drain 120`).
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-1000000}
WORKERS=${2:-54}
FANOUT=${3:-300000}
SPEED=${4:-10}
RING=${RING:-8192}
HOLD=${HOLD:-10}
OUT=${OUT:-benches/results/$(date +%F)-1m}
mkdir -p "$OUT"
BIN=target/release/matchstream
cargo build --release --bin matchstream 2>/dev/null

SERVE_EXTRA="--plane-ring-entries $RING ${SERVE_EXTRA:-}"
# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
stop_server() {
    curl -s "http://127.0.0.1:$APORT/metrics" >"$OUT/$1-metrics.txt" || true
    kill "$SPID"
    wait "$SPID" 2>/dev/null || true
    SPID=
    sleep 10 # TIME_WAIT and memory settle
}
snapshot() { # the box's memory and sockets, for the record
    { date -u; free -m; cat /proc/net/sockstat; } >"$OUT/$1-box.txt" 2>&1 || true
}

# 1. The idle hold (SKIP_IDLE=1: only the verified fan-out).
PLAIN_EXTRA=$SERVE_EXTRA
IDLE_CMD="(skipped)"
IDLE_RC=0
IDLE_SERVE_CMD="(skipped)"
if [ -z "${SKIP_IDLE:-}" ]; then
SERVE_EXTRA="$PLAIN_EXTRA --ws-ping-after-ms ${PING_MS:-900000}"
start_server
SERVE_EXTRA=$PLAIN_EXTRA
IDLE_SERVE_CMD=$SERVE_CMD
IDLE_CMD="$BIN load --server http://127.0.0.1:$PORT --idle --clients $CLIENTS --hold $HOLD --server-pid $SPID --report $OUT/idle-1m.json"
echo "+ $IDLE_CMD"
set +e
(sleep 30; while kill -0 "$SPID" 2>/dev/null; do snapshot idle; sleep 30; done) &
SNAP=$!
$IDLE_CMD >"$OUT/idle-1m.txt" 2>"$TMP/idle.err"
IDLE_RC=$?
kill "$SNAP" 2>/dev/null
set -e
tail -3 "$TMP/idle.err" | tee -a "$OUT/idle-1m.txt"
echo "idle run exit status: $IDLE_RC"
stop_server idle
fi

# 2. The verified fan-out.
LOAD_CMD="(skipped)"
LOAD_RC=0
FANOUT_SERVE_CMD="(skipped)"
if [ -z "${SKIP_FANOUT:-}" ]; then
# The same long ping interval as the idle hold: at the default 30 s, ~33,000 pings a second
# compete with the connects and the fan-out on 2 cores (a first 1M fan-out attempt had sent
# 6.6M pings and seen 15,669 connects fail by 930K connected).
SERVE_EXTRA="$PLAIN_EXTRA --ws-ping-after-ms ${PING_MS:-900000}"
start_server
SERVE_EXTRA=$PLAIN_EXTRA
FANOUT_SERVE_CMD=$SERVE_CMD
LOAD_CMD="$BIN load --server http://127.0.0.1:$PORT --clients $FANOUT --replay sample --speed $SPEED --admin-server http://127.0.0.1:$APORT --admin-token $TOKEN --server-pid $SPID --report $OUT/fanout.json --svg $OUT/fanout.svg ${LOAD_EXTRA:-}"
echo "+ $LOAD_CMD"
set +e
$LOAD_CMD 2>"$TMP/load.err" | tee "$OUT/fanout.txt"
LOAD_RC=${PIPESTATUS[0]}
set -e
grep '^load:' "$TMP/load.err" | tee "$OUT/fanout-plan.txt" || true
cp "$TMP/load.err" "$OUT/fanout-progress.txt" # the harness's 5 s progress lines
echo "verified run exit status: $LOAD_RC"
snapshot fanout
stop_server fanout
fi
{
    echo "serve (idle): $IDLE_SERVE_CMD"
    echo "serve (fan-out): $FANOUT_SERVE_CMD"
    echo "idle:  $IDLE_CMD  (exit $IDLE_RC)"
    echo "load:  $LOAD_CMD  (exit $LOAD_RC)"
    echo "version: $("$BIN" --version), git $(git rev-parse --short HEAD)"
} >"$OUT/commands${SKIP_FANOUT:+-idle}.txt"
exit "$LOAD_RC"
