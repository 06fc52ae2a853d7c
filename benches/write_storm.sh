#!/usr/bin/env bash
# The durable-write storm alone (step 2 of writes_reads.sh), bounded, against one or more
# builds in the same invocation (before/after in the same run):
#
#   PUBLISHERS keep-alive wrk publishers POST comments round-robin over MATCHES matches for
#   STORM_S seconds, SQLite synchronous=FULL. Per binary it prints acknowledged events/s, the
#   ack latency p50/p99, the WAL syncs/s (fdatasync + fsync system calls of the server,
#   counted by `perf stat` tracepoints: one per group commit) and events per sync, the WAL's
#   size after the storm, and `uptime`. Before and after all runs: the fsync time of a 4 KiB
#   page (overwrite, and append) in the data directory's file system.
#
# Usage: bash benches/write_storm.sh ['NAME=BINARY [serve flags]' ...]
#        (default: new=target/release/matchstream), e.g.
#        bash benches/write_storm.sh base=./old 'inline=./new --wal-sync-thread false' new=./new
# Settings (environment): PUBLISHERS=64 MATCHES=8 STORM_S=15 WORKERS=2 ROUNDS=1 (runs of each
# binary, interleaved), OUT=<dir for raw outputs>, DATA_ROOT=<where the data dirs go,
# default .bench-tmp in the repository: the disk under test>, BASE_PORT=23000,
# PERF_RECORD=1 (`perf record -g` of the server for PROFILE_S seconds in mid-storm, into
# OUT/NAME.perf.data), STRACE=1 (`strace -c -f` for PROFILE_S seconds in mid-storm: slows
# the server, so its storm figures are not comparable; use it for syscalls per event).
# Needs wrk and perf; everything listens on 127.0.0.1 and every step is bounded in time.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PUBLISHERS=${PUBLISHERS:-64}
MATCHES=${MATCHES:-8}
STORM_S=${STORM_S:-15}
WORKERS=${WORKERS:-2}
ROUNDS=${ROUNDS:-1}
PROFILE_S=${PROFILE_S:-5}
BASE=${BASE_PORT:-23000}
OUT=${OUT:-$ROOT/.bench-tmp/storm-$(date -u +%H%M%S)}
DATA_ROOT=${DATA_ROOT:-$ROOT/.bench-tmp}
TOKEN=storm-token
[ $# -gt 0 ] || set -- "new=$ROOT/target/release/matchstream"

mkdir -p "$OUT" "$DATA_ROOT"
TMP=$(mktemp -d -p "$DATA_ROOT")
SPID=
cleanup() {
    [ -n "$SPID" ] && kill -9 "$SPID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

log() { echo "[$(date -u +%T)] $*" | tee -a "$OUT/run.log"; }
val() { awk -v k="$2" '$1 == k {print $2}' "$1"; }
# thread_cpu PID: "name utime+stime" (clock ticks) per thread of the process.
thread_cpu() {
    for t in /proc/"$1"/task/*; do
        awk '{sub(/.*\) /, ""); print $12 + $13}' "$t/stat" | paste -d' ' <(tr ' ' _ <"$t/comm") -
    done 2>/dev/null | sort
}

fsync_probe() { # the disk: 200 fsyncs of an overwritten page, 200 of an appended one
    python3 - "$TMP" <<'EOF'
import os, sys, time
def probe(append):
    p = os.path.join(sys.argv[1], "fsync-probe")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    ts = []
    for i in range(200):
        os.pwrite(fd, b"x" * 4096, i * 4096 if append else 0)
        t = time.perf_counter(); os.fdatasync(fd); ts.append(time.perf_counter() - t)
    os.close(fd); os.unlink(p)
    ts.sort()
    return "p50 %.3f ms p99 %.3f ms" % (ts[100] * 1000, ts[198] * 1000)
print("fdatasync 4 KiB overwrite %s; append %s" % (probe(False), probe(True)))
EOF
}

# The publishers' wrk script (benches/wrk/post_events.lua) reads these.
export STORM_MATCHES=$MATCHES STORM_TOKEN=$TOKEN
cp "$ROOT/benches/wrk/post_events.lua" "$TMP/post.lua"

api() { # PORT METHOD PATH BODY
    curl -sf -m 5 -X "$2" -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        --data "$4" "http://127.0.0.1:$1$3" >/dev/null
}

# storm NAME BINARY ROUND: one server, fresh data directory, one storm.
storm() {
    local name=$1 round=$3 port=$BASE data=$TMP/data-$1-$3 tag=$1-$3 bin extra
    read -r bin extra <<<"$2"
    # shellcheck disable=SC2086 # the extra flags are words
    "$bin" serve $extra --listen 127.0.0.1:"$port" --tcp-listen 127.0.0.1:$((port + 1)) --workers "$WORKERS" \
        --admin-token "$TOKEN" --data-dir "$data" >"$OUT/$tag.serve.log" 2>&1 &
    SPID=$!
    for _ in $(seq 100); do grep -qs "matchstream listening" "$OUT/$tag.serve.log" && break; sleep 0.1; done
    api "$port" PUT /1/team/elp '{"name":"Estudiantes","division":"Primera A"}'
    api "$port" PUT /1/team/tig '{"name":"Tigre","division":"Primera A"}'
    for i in $(seq 1 "$MATCHES"); do
        api "$port" POST /1/matches "{\"home\":\"elp\",\"visit\":\"tig\",\"start_date\":\"2011-10-$(printf %02d "$i")\",\"stadium\":\"S\"}"
    done
    log "$tag: $bin $extra, $PUBLISHERS publishers over $MATCHES matches, ${STORM_S}s; $(uptime | sed 's/.*load/load/')"
    timeout $((STORM_S + 5)) perf stat -x, -o "$OUT/$tag.syncs" \
        -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync -p "$SPID" -- sleep "$STORM_S" &
    local counter=$!
    local prof=
    if [ "${PERF_RECORD:-0}" = 1 ]; then
        (sleep 3; timeout $((PROFILE_S + 5)) perf record -q -g -o "$OUT/$tag.perf.data" -p "$SPID" -- sleep "$PROFILE_S") >/dev/null 2>&1 &
        prof=$!
    elif [ "${STRACE:-0}" = 1 ]; then
        (sleep 3; timeout "$PROFILE_S" strace -c -f -o "$OUT/$tag.strace" -p "$SPID") >/dev/null 2>&1 &
        prof=$!
    fi
    thread_cpu "$SPID" >"$OUT/$tag.cpu0"
    # wrk's own CPU (user + system seconds) is read from its rusage by bash's `times`.
    (
        wrk -t2 -c"$PUBLISHERS" -d"${STORM_S}s" --timeout 10s --latency -s "$TMP/post.lua" \
            "http://127.0.0.1:$port" >"$OUT/$tag.wrk" 2>&1 || true
        times >"$OUT/$tag.wrkcpu"
    )
    thread_cpu "$SPID" >"$OUT/$tag.cpu1"
    wait "$counter" || true
    [ -z "$prof" ] || wait "$prof" || true
    local wal
    wal=$(stat -c %s "$data/matchstream.db-wal" 2>/dev/null || echo 0)
    kill "$SPID"
    wait "$SPID" 2>/dev/null || true
    SPID=
    local acked syncs
    acked=$(val "$OUT/$tag.wrk" ACKED)
    syncs=$(awk -F, '/syscalls/ {n += $1} END {print n + 0}' "$OUT/$tag.syncs")
    local hz threads
    hz=$(getconf CLK_TCK)
    threads=$(join "$OUT/$tag.cpu0" "$OUT/$tag.cpu1" | awk -v hz="$hz" -v s="$STORM_S" \
        '{c[$1] += ($3 - $2) * 100 / hz / s} END {for (n in c) if (c[n] >= 1) printf "%s %.0f%% ", n, c[n]}')
    log "  $tag: $((acked / STORM_S)) events/s acknowledged, ack p50 $(val "$OUT/$tag.wrk" P50_MS) ms p99 $(val "$OUT/$tag.wrk" P99_MS) ms, 503 $(val "$OUT/$tag.wrk" BUSY_503), other $(val "$OUT/$tag.wrk" OTHER); $((syncs / STORM_S)) syncs/s, $(python3 -c "print(round($acked / max($syncs, 1), 1))") events per sync; WAL after: $((wal / 1024)) KiB; CPU per thread: $threads; wrk $(awk -v s="$STORM_S" '{gsub(/[ms]/, " "); if (NR == 2) printf "%.0f%%", ($1 * 60 + $2 + $3 * 60 + $4) * 100 / s}' "$OUT/$tag.wrkcpu"); $(uptime | sed 's/.*load/load/')"
}

log "disk: $(fsync_probe) (in $DATA_ROOT)"
for round in $(seq 1 "$ROUNDS"); do
    for spec in "$@"; do
        storm "${spec%%=*}" "${spec#*=}" "$round"
    done
done
log "disk: $(fsync_probe)"
log "raw outputs in $OUT"
