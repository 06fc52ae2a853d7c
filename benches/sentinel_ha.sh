#!/usr/bin/env bash
# Redis high availability figures (issue 18): a primary (appendonly yes), two replicas and
# three Sentinels (quorum 2, down-after 1000 ms), three nodes on --redis-sentinel:
#
#   1. the write storm with --redis-min-replicas 0, then 1: PUBLISHERS keep-alive publishers
#      (wrk, POST comments over MATCHES matches, split over the three nodes) for STORM_S s:
#      acknowledged writes/s and ack latency p50/p99 per node;
#   2. RUNS fail-overs with --redis-min-replicas 1: one publisher posts one event after
#      another while the primary is SIGKILLed; time from the kill to the first 201. The dead
#      instance is then started again as a replica of the new primary.
#
# Usage: bash benches/sentinel_ha.sh [OUT_DIR]   (default benches/results/<date>-sentinel)
# BIN=path/to/matchstream (default: the release build, built unless SKIP_BUILD=1). Needs wrk
# and redis-server (installed with apt-get when missing). Bounded in time; loopback only.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/benches/results/$(date -u +%F)-sentinel}
PUBLISHERS=${PUBLISHERS:-64}
MATCHES=${MATCHES:-8}
STORM_S=${STORM_S:-10}
RUNS=${RUNS:-3}
WORKERS=${WORKERS:-1}
TOKEN=bench-token

need() { command -v "$1" >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need redis-server redis-server
if [ -z "${BIN:-}" ]; then
    [ "${SKIP_BUILD:-0}" = 1 ] || (cd "$ROOT" && cargo build --release --bin matchstream -q)
    BIN=$ROOT/target/release/matchstream
fi

mkdir -p "$OUT"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
log() { echo "[$(date -u +%T)] $*" | tee -a "$OUT/run.log"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
rcli() { redis-cli -p "$1" "${@:2}"; }

# ------------------------------------------------------------------ Redis: 3 data + 3 sentinels
declare -A DATA_PID
DATA_PORTS=()
start_data() { # PORT [replicaof PORT]
    local port=$1 dir=$TMP/data-$1
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save '' --appendonly yes \
        ${2:+--replicaof 127.0.0.1 "$2"} >"$dir/log" 2>&1 &
    DATA_PID[$port]=$!
    PIDS+=("$!")
    for _ in $(seq 100); do rcli "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
    echo "redis $port did not start" >&2; exit 1
}
for i in 0 1 2; do DATA_PORTS+=("$(free_port)"); done
start_data "${DATA_PORTS[0]}"
start_data "${DATA_PORTS[1]}" "${DATA_PORTS[0]}"
start_data "${DATA_PORTS[2]}" "${DATA_PORTS[0]}"
SENTINELS=()
for i in 0 1 2; do
    port=$(free_port)
    mkdir -p "$TMP/s$i"
    printf 'port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor ms 127.0.0.1 %s 2\nsentinel down-after-milliseconds ms 1000\nsentinel failover-timeout ms 4000\n' \
        "$port" "$TMP/s$i" "${DATA_PORTS[0]}" >"$TMP/s$i/sentinel.conf"
    redis-server "$TMP/s$i/sentinel.conf" --sentinel >"$TMP/s$i/log" 2>&1 &
    PIDS+=("$!")
    SENTINELS+=("127.0.0.1:$port")
done
SPORT=${SENTINELS[0]#*:}
primary_port() { rcli "$SPORT" sentinel get-master-addr-by-name ms 2>/dev/null | sed -n 2p; }
for _ in $(seq 300); do
    ok=1
    for s in "${SENTINELS[@]}"; do
        info=$(rcli "${s#*:}" sentinel master ms 2>/dev/null | paste - - | tr '\t' ' ')
        grep -q '^num-slaves 2$' <<<"$info" && grep -q '^num-other-sentinels 2$' <<<"$info" || ok=0
    done
    [ $ok = 1 ] && break
    sleep 0.1
done
[ $ok = 1 ] || { echo "sentinels did not settle" >&2; exit 1; }
SENTINEL_LIST=$(IFS=,; echo "${SENTINELS[*]}")
log "redis: primary ${DATA_PORTS[0]}, replicas ${DATA_PORTS[1]} ${DATA_PORTS[2]}, sentinels $SENTINEL_LIST"

# ------------------------------------------------------------------ nodes
NODE_PIDS=()
NODE_PORTS=()
start_nodes() { # MIN_REPLICAS
    for p in "${NODE_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
    NODE_PIDS=()
    NODE_PORTS=()
    for name in a b c; do
        local http tcp
        http=$(free_port)
        tcp=$(free_port)
        "$BIN" serve --listen 127.0.0.1:"$http" --tcp-listen 127.0.0.1:"$tcp" --workers "$WORKERS" \
            --admin-token "$TOKEN" --redis-sentinel "$SENTINEL_LIST" --redis-master-name ms \
            --redis-min-replicas "$1" --node-id "$name" >"$TMP/$name.out" 2>"$TMP/$name.err" &
        NODE_PIDS+=("$!")
        PIDS+=("$!")
        NODE_PORTS+=("$http")
        for _ in $(seq 100); do grep -q "matchstream listening" "$TMP/$name.out" 2>/dev/null && break; sleep 0.1; done
    done
}
api() { # METHOD PORT PATH [BODY]
    curl -s -o /dev/null -w '%{http_code}' -X "$1" -H "Authorization: Bearer $TOKEN" \
        -H 'Content-Type: application/json' ${4:+--data "$4"} "http://127.0.0.1:$2$3"
}

cat >"$TMP/post.lua" <<EOF
local matches = $MATCHES
local counter = 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
    created = 0; other = 0
    wrk.method = "POST"
    wrk.headers["Authorization"] = "Bearer $TOKEN"
    wrk.headers["Content-Type"] = "application/json"
    wrk.body = '{"kind":"comment","data":{"text":"storm"}}'
end
function request()
    counter = counter + 1
    return wrk.format(nil, string.format("/1/match/elp-tig-2011-10-%02d/events", (counter % matches) + 1))
end
function response(status, headers, body)
    if status == 201 then created = created + 1 else other = other + 1 end
end
function done(summary, latency, requests)
    local c, o = 0, 0
    for _, t in ipairs(threads) do c = c + t:get("created"); o = o + t:get("other") end
    io.write(string.format("ACKED %d\nOTHER %d\nP50_MS %.3f\nP99_MS %.3f\n", c, o,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
EOF
val() { awk -v k="$2" '$1 == k {print $2}' "$1"; }

# ------------------------------------------------------------------ 1. storms
log "bin: $BIN ($("$BIN" --version 2>/dev/null || echo unknown)); $(nproc) cores; kernel $(uname -r)"
{
    echo "| --redis-min-replicas | acknowledged writes/s (3 nodes) | non-201 | ack p50 / p99 per node (ms) |"
    echo "|---|---|---|---|"
} >"$OUT/storm.md"
first=1
for n in 0 1; do
    start_nodes "$n"
    if [ $first = 1 ]; then
        api PUT "${NODE_PORTS[0]}" /1/team/elp '{"name":"Estudiantes","division":"A"}' >/dev/null
        api PUT "${NODE_PORTS[0]}" /1/team/tig '{"name":"Tigre","division":"A"}' >/dev/null
        for i in $(seq 1 "$MATCHES"); do
            api POST "${NODE_PORTS[0]}" /1/matches "{\"home\":\"elp\",\"visit\":\"tig\",\"start_date\":\"2011-10-$(printf %02d "$i")\",\"stadium\":\"S\"}" >/dev/null
            api POST "${NODE_PORTS[0]}" "/1/match/elp-tig-2011-10-$(printf %02d "$i")/events" '{"kind":"start","data":{}}' >/dev/null
        done
        first=0
    fi
    per=$((PUBLISHERS / 3))
    wpids=()
    for k in 0 1 2; do
        c=$per
        [ $k = 0 ] && c=$((PUBLISHERS - 2 * per))
        wrk -t 1 -c "$c" -d "${STORM_S}s" -s "$TMP/post.lua" "http://127.0.0.1:${NODE_PORTS[$k]}" >"$OUT/storm-n$n-node$k.txt" 2>&1 &
        wpids+=("$!")
    done
    wait "${wpids[@]}"
    acked=0; other=0; lat=""
    for k in 0 1 2; do
        f=$OUT/storm-n$n-node$k.txt
        acked=$((acked + $(val "$f" ACKED))); other=$((other + $(val "$f" OTHER)))
        lat="$lat $(val "$f" P50_MS) / $(val "$f" P99_MS);"
    done
    echo "| $n | $((acked / STORM_S)) | $other |$lat |" >>"$OUT/storm.md"
    log "storm N=$n: $((acked / STORM_S)) writes/s acknowledged, $other other;$lat"
done

# ------------------------------------------------------------------ 2. fail-overs (N = 1)
echo "| run | killed primary | first 201 after the kill (ms) | non-201 meanwhile |" >"$OUT/failover.md"
echo "|---|---|---|---|" >>"$OUT/failover.md"
MID=elp-tig-2011-10-01
for run in $(seq 1 "$RUNS"); do
    old=$(primary_port)
    : >"$TMP/posts"
    (
        while [ ! -e "$TMP/stop" ]; do
            code=$(api POST "${NODE_PORTS[$((RANDOM % 3))]}" "/1/match/$MID/events" '{"kind":"comment","data":{"text":"f"}}')
            echo "$(now_ms) $code" >>"$TMP/posts"
        done
    ) &
    poster=$!
    sleep 1
    kill -9 "${DATA_PID[$old]}"
    killed=$(now_ms)
    for _ in $(seq 300); do
        [ "$(awk -v t="$killed" '$1 > t && $2 == 201' "$TMP/posts" | head -1)" ] && break
        sleep 0.1
    done
    touch "$TMP/stop"
    wait "$poster" || true
    rm -f "$TMP/stop"
    back=$(awk -v t="$killed" '$1 > t && $2 == 201 {print $1 - t; exit}' "$TMP/posts")
    refused=$(awk -v t="$killed" '$1 > t && $2 != 201' "$TMP/posts" | wc -l)
    echo "| $run | $old | ${back:-none in 30 s} | $refused |" >>"$OUT/failover.md"
    log "fail-over $run: primary $old killed; first 201 after ${back:-none} ms; $refused non-201"
    new=$(primary_port)
    start_data "$old" "$new"   # the dead instance comes back as a replica of the new primary
    sleep 3
done
cat "$OUT/storm.md" "$OUT/failover.md" | tee -a "$OUT/run.log"
