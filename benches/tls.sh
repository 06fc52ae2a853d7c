#!/usr/bin/env bash
# TLS figures, each compared with its baselines measured in the same run:
#  1. idle memory: IDLE idle WebSocket clients held against a plain server and a TLS server
#     (both watcher-plane records; a TLS one keeps its session beside its record): server
#     RSS delta / connections (the harness's server_rss_bytes_per_connection), taken while
#     WARM connections are already held — the slope of RSS over connections, without what
#     the first connections of a fresh process cost once (allocator arenas, the ring's and
#     the handshake's working memory: 2-25 MB that varies from start to start);
#  2. CPU per delivery: the sample match replayed to CLIENTS verified WebSocket watchers on
#     the plain server, the same with --deflate, over TLS, and over TLS with --deflate;
#     ROUNDS rounds, modes alternating so that noise on a shared box hits all of them;
#  3. TLS handshakes per second, full and resumed (session tickets), one after the other
#     against the same TLS server (benches/tls_handshakes.py).
# Writes $OUT/*.json and $OUT/table.md.
#
#   bash benches/tls.sh [IDLE=10000] [CLIENTS=2000] [SPEED=50] [WORKERS=2] [ROUNDS=2]
#   (WARM=2000 in the environment: the connections held before the idle measurement)
#
# Not run by CI.
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${1:-10000}
CLIENTS=${2:-2000}
SPEED=${3:-50}
WORKERS=${4:-2}
ROUNDS=${5:-2}
WARM=${WARM:-2000}
OUT=${OUT:-benches/results/$(date +%F)-tls}
mkdir -p "$OUT"
BIN=${MATCHSTREAM_BIN:-target/release/matchstream}
[ -x "$BIN" ] || cargo build --release --bin matchstream

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bash benches/tls_certs.sh "$TMP/pki" >/dev/null
TOKEN=bench-$RANDOM

# start NAME EXTRA...: a server; sets URL_<NAME>, PID_<NAME>.
start() {
    local name=$1
    shift
    local port tport
    port=$(free_port)
    tport=$(free_port)
    local cmd="$BIN serve --workers $WORKERS --listen 127.0.0.1:$port --tcp-listen 127.0.0.1:$tport --data-dir $TMP/data-$name --admin-token $TOKEN --max-connections-per-ip 1000000 $*"
    echo "+ $cmd"
    $cmd >"$TMP/$name.log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do grep -q 'listening' "$TMP/$name.log" && break; sleep 0.1; done
    grep 'listening' "$TMP/$name.log" >/dev/null || { cat "$TMP/$name.log"; exit 1; }
    local scheme=http
    case "$*" in *--tls-cert*) scheme=https ;; esac
    printf -v "URL_$name" '%s://localhost:%s' "$scheme" "$port"
    printf -v "PID_$name" '%s' "$pid"
}

start plain
start tls --tls-cert "$TMP/pki/cert.pem" --tls-key "$TMP/pki/key.pem"
TLSARGS="--tls --ca $TMP/pki/ca.pem"

extra_for() { case $1 in tls) echo "$TLSARGS" ;; *) echo "" ;; esac; }

printf '## Idle WebSocket connections (%s each, after %s already held)\n\n| server | connected | server RSS delta | per connection |\n|---|---|---|---|\n' "$IDLE" "$WARM" >"$TMP/idle"
for name in plain tls; do
    url=URL_$name pid=PID_$name
    warm_pid=
    if [ "$WARM" -gt 0 ]; then
        $BIN load --server ${!url} --idle --clients "$WARM" --hold 120 $(extra_for $name) --quiet >/dev/null 2>&1 &
        warm_pid=$!
        PIDS+=("$warm_pid")
        sleep $((WARM / 400 + 4))
    fi
    CMD="$BIN load --server ${!url} --idle --clients $IDLE --hold 5 --server-pid ${!pid} $(extra_for $name) --report $OUT/idle-$name.json --quiet"
    echo "+ $CMD"
    $CMD >/dev/null 2>"$TMP/load.err" || { echo "idle load failed:"; tail -5 "$TMP/load.err"; exit 1; }
    python3 - "$OUT/idle-$name.json" "$name" >>"$TMP/idle" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
delta = r["server_rss_after_bytes"] - r["server_rss_before_bytes"]
print(f"| {sys.argv[2]} | {r['connected']} | {delta / 1e6:.1f} MB | {r['server_rss_bytes_per_connection']:.0f} B |")
PY
    [ -n "$warm_pid" ] && kill "$warm_pid" 2>/dev/null
    sleep 6 # the clients close; let the server settle before the next
done

printf '\n## CPU per delivery, the sample match to %s watchers at speed %s\n\n| round | mode | events | deliveries | server CPU µs/delivery | fan-out p50 / p99 ms | lost |\n|---|---|---|---|---|---|---|\n' "$CLIENTS" "$SPEED" >"$TMP/cpu"
for round in $(seq "$ROUNDS"); do
    for mode in plain deflate tls tls-deflate; do
        server=$mode flag=
        [ "$mode" = deflate ] && server=plain flag=--deflate
        [ "$mode" = tls-deflate ] && server=tls flag=--deflate
        url=URL_$server pid=PID_$server
        CMD="$BIN load --server ${!url} --clients $CLIENTS --replay sample --speed $SPEED --admin-token $TOKEN --server-pid ${!pid} $flag $(extra_for $server) --report $OUT/$mode-$round.json --quiet"
        echo "+ $CMD"
        $CMD >/dev/null 2>"$TMP/load.err" || { echo "load failed:"; tail -5 "$TMP/load.err"; exit 1; }
        python3 - "$OUT/$mode-$round.json" "$round" "$mode" >>"$TMP/cpu" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lat = r["latency_us"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {r['events']} | {r['deliveries']} | "
      f"{r.get('server_cpu_us_per_delivery') or 0:.2f} | {lat['p50'] / 1000:.1f} / {lat['p99'] / 1000:.1f} | {r['lost']} |")
PY
    done
done
printf '\n## TLS handshakes per second (one client process, sequential)\n\n' >"$TMP/hs"
python3 benches/tls_handshakes.py "${URL_tls#https://localhost:}" "$TMP/pki/ca.pem" "${HANDSHAKES:-2000}" >>"$TMP/hs"
cat "$TMP/idle" "$TMP/cpu" "$TMP/hs" | tee "$OUT/table.md"
