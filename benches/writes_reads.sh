#!/usr/bin/env bash
# Durable writes and snapshot reads, side by side in one run (issue 11's figures):
#
#   1. GET /1/match/{id}, idle server, wrk keep-alive — next to nginx serving the same bytes
#      as a static file (same wrk flags, same box): benches/get_vs_nginx.sh, GET_ROUNDS rounds;
#   2. the storm: PUBLISHERS keep-alive publishers (wrk, POST comments) over MATCHES matches,
#      SQLite synchronous=FULL: acknowledged events/s and ack latency; during it, the same
#      GET as in 1;
#   3. a lone publisher's ack latency, next to the disk's fsync time (same directory);
#   4. kill -9 during the storm: every acknowledged event is there after the restart;
#   5. cluster (skipped with CLUSTER=0): 3 nodes on one redis-server, the storm spread over
#      them; then GET on one node while Redis is frozen (SIGSTOP) for FREEZE_S seconds.
#
# Usage: bash benches/writes_reads.sh [OUT_DIR]   (defaults: benches/results/<date>-writes-reads)
# Needs wrk, nginx and redis-server (installed with apt-get when missing) and a release
# build. Every run is bounded in time; everything listens on 127.0.0.1 only.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/benches/results/$(date -u +%F)-writes-reads}
PUBLISHERS=${PUBLISHERS:-64}
MATCHES=${MATCHES:-8}
STORM_S=${STORM_S:-15}
GET_S=${GET_S:-10}
GET_CONNS=${GET_CONNS:-32}
GET_ROUNDS=${GET_ROUNDS:-3}
WORKERS=${WORKERS:-2}
CLUSTER=${CLUSTER:-1}
FREEZE_S=${FREEZE_S:-4}
TOKEN=bench-token
BASE=${BASE_PORT:-18080}

need() { command -v "$1" >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx-light
need redis-server redis-server
[ "${SKIP_BUILD:-0}" = 1 ] || (cd "$ROOT" && cargo build --release --bin matchstream -q)
BIN=$ROOT/target/release/matchstream

mkdir -p "$OUT"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

log() { echo "[$(date -u +%T)] $*" | tee -a "$OUT/run.log"; }

# start_node NAME HTTP_PORT TCP_PORT [flags…]: starts a server, waits for its ready line;
# its pid is left in LAST_PID.
start_node() {
    local name=$1 http=$2 tcp=$3
    shift 3
    "$BIN" serve --listen 127.0.0.1:"$http" --tcp-listen 127.0.0.1:"$tcp" --workers "$WORKERS" \
        --admin-token "$TOKEN" "$@" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    for _ in $(seq 100); do
        grep -q "matchstream listening" "$TMP/$name.out" 2>/dev/null && return
        sleep 0.1
    done
    echo "node $name did not start" >&2
    cat "$TMP/$name.err" >&2
    exit 1
}

api() { # METHOD PORT PATH [BODY]
    curl -sf -X "$1" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        ${4:+--data "$4"} "http://127.0.0.1:$2$3"
}

# setup PORT: the sample's two teams and MATCHES matches.
setup() {
    api PUT "$1" /1/team/elp '{"name":"Estudiantes","division":"Primera A"}' >/dev/null
    api PUT "$1" /1/team/tig '{"name":"Tigre","division":"Primera A"}' >/dev/null
    for i in $(seq 1 "$MATCHES"); do
        api POST "$1" /1/matches "{\"home\":\"elp\",\"visit\":\"tig\",\"start_date\":\"2011-10-$(printf %02d "$i")\",\"stadium\":\"S\"}" >/dev/null
    done
}
mid_of() { echo "elp-tig-2011-10-$(printf %02d "$1")"; }

# The publishers: POST comments round-robin over the matches; counts answers by status.
# The publishers' wrk script (benches/wrk/post_events.lua) reads these.
export STORM_MATCHES=$MATCHES STORM_TOKEN=$TOKEN
cp "$ROOT/benches/wrk/post_events.lua" "$TMP/post.lua"
cp "$ROOT/benches/wrk/get_latency.lua" "$TMP/get.lua"

rate() { awk '/^Requests\/sec/ {print $2}' "$1"; }
val() { awk -v k="$2" '$1 == k {print $2}' "$1"; }

# ------------------------------------------------------------------ 1. idle GET vs nginx
# benches/get_vs_nginx.sh: its own matchstream and nginx (same bytes, same wrk flags), before
# anything else runs.
log "idle GET: matchstream ($WORKERS workers) vs nginx static ($WORKERS workers), $GET_CONNS connections, ${GET_S}s each, $GET_ROUNDS rounds (benches/get_vs_nginx.sh)"
SKIP_BUILD=1 BIN=$BIN GET_S=$GET_S GET_CONNS=$GET_CONNS WORKERS=$WORKERS ROUNDS=$GET_ROUNDS \
    BASE_PORT=$((BASE + 40)) bash "$ROOT/benches/get_vs_nginx.sh" "$OUT/get" >/dev/null
grep '^median' "$OUT/get/run.log" | sed 's/^/  /' | tee -a "$OUT/run.log"

DATA=$TMP/data
start_node single "$BASE" $((BASE + 1)) --data-dir "$DATA"
P1=$LAST_PID
setup "$BASE"
MID=$(mid_of 1)

# ------------------------------------------------------------------ 2. the storm (+ GET during it)
log "storm: $PUBLISHERS publishers over $MATCHES matches for ${STORM_S}s, SQLite synchronous=FULL; GET from the 3rd second"
wrk -t2 -c"$PUBLISHERS" -d"${STORM_S}s" --latency -s "$TMP/post.lua" "http://127.0.0.1:$BASE" >"$OUT/storm.txt" &
STORM=$!
sleep 3
wrk -t1 -c"$GET_CONNS" -d"$((STORM_S - 5))s" --latency -s "$TMP/get.lua" "http://127.0.0.1:$BASE/1/match/$MID" >"$OUT/get_storm.txt"
wait "$STORM"
ACKED=$(val "$OUT/storm.txt" ACKED)
log "  acknowledged $ACKED events in ${STORM_S}s = $((ACKED / STORM_S))/s, ack p50 $(val "$OUT/storm.txt" P50_MS) ms p99 $(val "$OUT/storm.txt" P99_MS) ms, 503 $(val "$OUT/storm.txt" BUSY_503), other $(val "$OUT/storm.txt" OTHER)"
log "  GET during the storm: $(rate "$OUT/get_storm.txt") req/s p50 $(val "$OUT/get_storm.txt" P50_MS) ms p99 $(val "$OUT/get_storm.txt" P99_MS) ms"

# ------------------------------------------------------------------ 3. a lone publisher
log "lone publisher: one connection, one POST at a time, 5s; fsync of 4 KiB in the same directory"
wrk -t1 -c1 -d5s --latency -s "$TMP/post.lua" "http://127.0.0.1:$BASE" >"$OUT/lone.txt"
python3 - "$DATA" >"$OUT/fsync.txt" <<'EOF'
import os, sys, time
p = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o600)
ts = []
for _ in range(200):
    os.pwrite(fd, b"x" * 4096, 0)
    t = time.perf_counter(); os.fsync(fd); ts.append(time.perf_counter() - t)
os.close(fd); os.unlink(p)
ts.sort()
print("FSYNC_P50_MS %.3f" % (ts[len(ts) // 2] * 1000))
print("FSYNC_P99_MS %.3f" % (ts[int(len(ts) * 0.99)] * 1000))
EOF
log "  ack p50 $(val "$OUT/lone.txt" P50_MS) ms p99 $(val "$OUT/lone.txt" P99_MS) ms; fsync p50 $(val "$OUT/fsync.txt" FSYNC_P50_MS) ms p99 $(val "$OUT/fsync.txt" FSYNC_P99_MS) ms"

# ------------------------------------------------------------------ 4. kill -9 during the storm
count_events() { # PORT: events stored over the matches
    local n=0 i len
    for i in $(seq 1 "$MATCHES"); do
        len=$(curl -sf "http://127.0.0.1:$1/1/match/$(mid_of "$i")" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])')
        n=$((n + len))
    done
    echo "$n"
}
BEFORE=$(count_events "$BASE")
log "kill -9 during the storm: $BEFORE events stored before; storm for 8s, SIGKILL at 4s"
wrk -t2 -c"$PUBLISHERS" -d8s -s "$TMP/post.lua" "http://127.0.0.1:$BASE" >"$OUT/kill9.txt" 2>&1 &
STORM=$!
sleep 4
kill -9 "$P1"
wait "$STORM" || true
KILLED_ACKED=$(val "$OUT/kill9.txt" ACKED)
start_node single-again "$BASE" $((BASE + 1)) --data-dir "$DATA"
P1=$LAST_PID
AFTER=$(count_events "$BASE")
STORED=$((AFTER - BEFORE))
VERDICT=$([ "$STORED" -ge "$KILLED_ACKED" ] && echo "every acknowledged event is there" || echo "LOST $((KILLED_ACKED - STORED))")
log "  acknowledged $KILLED_ACKED, stored after restart $STORED: $VERDICT"
kill "$P1"

# ------------------------------------------------------------------ 5. cluster
if [ "$CLUSTER" = 1 ]; then
    RPORT=$((BASE + 30))
    redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$TMP" >"$TMP/redis.log" 2>&1 &
    REDIS=$!
    PIDS+=("$REDIS")
    sleep 0.5
    URL=redis://127.0.0.1:$RPORT/0
    for n in 0 1 2; do
        start_node "node$n" $((BASE + 10 + 2 * n)) $((BASE + 11 + 2 * n)) --redis "$URL" --node-id "n$n"
    done
    setup $((BASE + 10))
    sleep 1
    log "cluster: 3 nodes on one redis-server, $PUBLISHERS publishers spread over them, ${STORM_S}s"
    per=$((PUBLISHERS / 3))
    WRKS=()
    for n in 0 1 2; do
        wrk -t1 -c"$per" -d"${STORM_S}s" --latency -s "$TMP/post.lua" "http://127.0.0.1:$((BASE + 10 + 2 * n))" >"$OUT/cluster_storm_$n.txt" &
        WRKS+=($!)
    done
    wait "${WRKS[@]}"
    TOTAL=0
    for n in 0 1 2; do TOTAL=$((TOTAL + $(val "$OUT/cluster_storm_$n.txt" ACKED))); done
    log "  acknowledged $TOTAL events in ${STORM_S}s = $((TOTAL / STORM_S))/s (p99 per node: $(for n in 0 1 2; do printf '%s ' "$(val "$OUT/cluster_storm_$n.txt" P99_MS)"; done)ms)"
    log "GET on node 1 while Redis is frozen (SIGSTOP) for ${FREEZE_S}s"
    wrk -t1 -c"$GET_CONNS" -d"$((FREEZE_S + 2))s" --latency -s "$TMP/get.lua" "http://127.0.0.1:$((BASE + 12))/1/match/$MID" >"$OUT/get_frozen.txt" &
    GETS=$!
    sleep 1
    kill -STOP "$REDIS"
    sleep "$FREEZE_S"
    kill -CONT "$REDIS"
    wait "$GETS"
    log "  GET during the freeze: $(rate "$OUT/get_frozen.txt") req/s p50 $(val "$OUT/get_frozen.txt" P50_MS) ms p99 $(val "$OUT/get_frozen.txt" P99_MS) ms errors $(val "$OUT/get_frozen.txt" ERRORS)"
fi
log "done; raw wrk outputs in $OUT"
