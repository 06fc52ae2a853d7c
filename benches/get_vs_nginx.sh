#!/usr/bin/env bash
# Idle GET /1/match/{id} next to nginx serving the same bytes as a static file (issue 19,
# part 5): the same wrk (keep-alive, GET_CONNS connections, 2 threads), the same run, WORKERS
# workers each, nginx with access_log off. With BASELINE=path/to/an/older/matchstream the old
# binary is measured in the same run too (before/after).
#
# Each round runs every server once, in turn (baseline, matchstream, nginx), GET_S seconds
# each; the rounds interleave so that a neighbour's load falls on all of them alike. Printed
# per run: req/s, p99, and CPU per request (user + system time of the server's processes,
# from /proc, over the wrk run, divided by the requests wrk counted): on a shared box the CPU
# per request is steadier than req/s. Then the medians and the ratios to nginx, and `uptime`.
#
# Usage: [BASELINE=bin] [ROUNDS=3] [GET_S=8] bash benches/get_vs_nginx.sh [OUT_DIR]
# Needs wrk and nginx (installed with apt-get when missing) and a release build (built here
# unless SKIP_BUILD=1). Bounded: about ROUNDS x servers x (GET_S + 1) seconds. Loopback only.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:-$ROOT/benches/results/$(date -u +%F)-get-vs-nginx}
GET_S=${GET_S:-8}
GET_CONNS=${GET_CONNS:-32}
WORKERS=${WORKERS:-2}
ROUNDS=${ROUNDS:-3}
BASE=${BASE_PORT:-21000}
BIN=${BIN:-$ROOT/target/release/matchstream}
BASELINE=${BASELINE:-}
TOKEN=bench-token
MID=elp-tig-2011-10-01

need() { command -v "$1" >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null; }; }
need wrk wrk
need nginx nginx-light
[ "${SKIP_BUILD:-0}" = 1 ] || (cd "$ROOT" && cargo build --release --bin matchstream -q)

mkdir -p "$OUT"
TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
log() { echo "$*" | tee -a "$OUT/run.log"; }

# start_matchstream NAME BIN PORT: starts BIN with WORKERS workers, a team pair and one match;
# its pid is left in LAST_PID.
start_matchstream() {
    local name=$1 bin=$2 port=$3
    "$bin" serve --listen 127.0.0.1:"$port" --tcp-listen 127.0.0.1:$((port + 1)) --workers "$WORKERS" \
        --admin-token "$TOKEN" --data-dir "$TMP/data-$name" >"$TMP/$name.out" 2>"$TMP/$name.err" &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
    for _ in $(seq 100); do
        grep -q "matchstream listening" "$TMP/$name.out" 2>/dev/null && break
        sleep 0.1
    done
    grep -q "matchstream listening" "$TMP/$name.out" || { cat "$TMP/$name.err" >&2; exit 1; }
    local api=(curl -sf -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json')
    "${api[@]}" -X PUT --data '{"name":"Estudiantes","division":"Primera A"}' "http://127.0.0.1:$port/1/team/elp" >/dev/null
    "${api[@]}" -X PUT --data '{"name":"Tigre","division":"Primera A"}' "http://127.0.0.1:$port/1/team/tig" >/dev/null
    "${api[@]}" -X POST --data '{"home":"elp","visit":"tig","start_date":"2011-10-01","stadium":"S"}' \
        "http://127.0.0.1:$port/1/matches" >/dev/null
}

NAMES=()
declare -A URL PID_OF
if [ -n "$BASELINE" ]; then
    start_matchstream baseline "$BASELINE" $((BASE + 10))
    NAMES+=(baseline)
    URL[baseline]=http://127.0.0.1:$((BASE + 10))/1/match/$MID
    PID_OF[baseline]=$LAST_PID
fi
start_matchstream matchstream "$BIN" "$BASE"
NAMES+=(matchstream)
URL[matchstream]=http://127.0.0.1:$BASE/1/match/$MID
PID_OF[matchstream]=$LAST_PID

# nginx serves the very bytes matchstream answers, as a static file.
curl -sf "${URL[matchstream]}" >"$TMP/match.json"
mkdir -p "$TMP/www/1/match"
chmod -R a+rX "$TMP" # nginx's workers run as another user (when started as root)
cp "$TMP/match.json" "$TMP/www/1/match/$MID"
cat >"$TMP/nginx.conf" <<EOF
worker_processes $WORKERS;
pid $TMP/nginx.pid;
error_log $TMP/nginx.err;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/json;
    keepalive_requests 1000000;
    server { listen 127.0.0.1:$((BASE + 2)); root $TMP/www; }
}
EOF
nginx -c "$TMP/nginx.conf" -p "$TMP"
for _ in $(seq 50); do [ -s "$TMP/nginx.pid" ] && break; sleep 0.1; done
PID_OF[nginx]=$(cat "$TMP/nginx.pid")
PIDS+=("${PID_OF[nginx]}")
NAMES+=(nginx)
URL[nginx]=http://127.0.0.1:$((BASE + 2))/1/match/$MID
for n in "${NAMES[@]}"; do
    curl -sf "${URL[$n]}" | cmp -s - "$TMP/match.json" || { echo "$n does not serve the same bytes" >&2; exit 1; }
done

cp "$ROOT/benches/wrk/get_latency.lua" "$TMP/get.lua"

HZ=$(getconf CLK_TCK)
# cpu_ticks PID: user + system ticks of PID and its child processes (nginx's workers).
cpu_ticks() {
    local total=0 p f
    for p in "$1" $(ps -o pid= --ppid "$1"); do
        # Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
        f=$(sed 's/.*) //' "/proc/$p/stat")
        total=$((total + $(echo "$f" | awk '{print $12 + $13}')))
    done
    echo "$total"
}
val() { awk -v k="$2" '$1 == k {print $2}' "$1"; }

log "# get_vs_nginx $(date -u +%FT%TZ): $WORKERS workers each, wrk -t2 -c$GET_CONNS -d${GET_S}s, $ROUNDS rounds"
log "# $(uname -srm); $(nproc) CPUs; body $(wc -c <"$TMP/match.json") B"
log "# before: $(uptime)"
printf '%-12s %5s %10s %8s %10s\n' server round req/s p99_ms cpu_us/req | tee -a "$OUT/run.log"
for r in $(seq "$ROUNDS"); do
    for n in "${NAMES[@]}"; do
        f="$OUT/$n-$r.txt"
        before=$(cpu_ticks "${PID_OF[$n]}")
        wrk -t2 -c"$GET_CONNS" -d"${GET_S}s" --latency -s "$TMP/get.lua" "${URL[$n]}" >"$f"
        after=$(cpu_ticks "${PID_OF[$n]}")
        requests=$(awk '/requests in/ {print $1}' "$f")
        rate=$(awk '/^Requests\/sec/ {print $2}' "$f")
        cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="$requests" 'BEGIN {printf "%.2f", t / hz * 1e6 / n}')
        [ "$(val "$f" ERRORS)" = 0 ] || log "# $n round $r: $(val "$f" ERRORS) errors"
        printf '%-12s %5s %10s %8s %10s\n' "$n" "$r" "$rate" "$(val "$f" P99_MS)" "$cpu" | tee -a "$OUT/run.log"
        echo "$n $rate $cpu" >>"$TMP/rows"
    done
done
log "# after: $(uptime)"
# Medians over the rounds, and each matchstream's ratios to nginx (req/s: higher is better;
# CPU per request: lower is better).
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
NGINX_RATE=$(awk '$1 == "nginx" {print $2}' "$TMP/rows" | median)
NGINX_CPU=$(awk '$1 == "nginx" {print $3}' "$TMP/rows" | median)
for n in "${NAMES[@]}"; do
    rate=$(awk -v n="$n" '$1 == n {print $2}' "$TMP/rows" | median)
    cpu=$(awk -v n="$n" '$1 == n {print $3}' "$TMP/rows" | median)
    log "$(awk -v n="$n" -v r="$rate" -v c="$cpu" -v nr="$NGINX_RATE" -v nc="$NGINX_CPU" \
        'BEGIN {printf "median %-12s %9.0f req/s  %6.2f us/req  req/s vs nginx %.2fx  cpu/req vs nginx %.2fx", n, r, c, r / nr, c / nc}')"
done
