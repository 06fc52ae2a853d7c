#!/usr/bin/env bash
# A 3-node cluster on loopback with one redis-server, driven and verified by `matchstream load`
# while it fails: node b is killed (-9) at ~1/3 of the match and Redis is stopped for ~3 s and
# restarted (SIGTERM, same port and append-only file) at ~2/3. The harness must end with every
# watcher having every event exactly once (exit 0).
#   bash benches/cluster_failover.sh [CLIENTS] [SPEED] [OUTDIR]
# Needs redis-server, redis-cli and a release build (cargo build --release --bins).
# Env: OUTAGE=restart (default) | stop (SIGSTOP/SIGCONT: Redis frozen 3 s, not restarted)
#      | none (no failures: a steady run, e.g. with EXTRA="--every-ms 20 --events 300" for
#      300 comments at 50/s; per-node fan-out latency is in the summary);
#      EXTRA: more `matchstream load` flags.
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-3000}
speed=${2:-36}
out=${3:-$(mktemp -d)}
outage=${OUTAGE:-restart}
bin=target/release/matchstream
token=bench
mid=elp-tig-2011-09-10
mkdir -p "$out"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# utime+stime of a pid, clock ticks (0 when gone).
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
now() { date +%s.%N; }
log() { echo "[$(date +%T.%3N)] $*" | tee -a "$out/events.log"; }

redis_port=$(free_port)
start_redis() {
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes \
    --appendfsync always --dir "$work" >>"$work/redis.log" 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return; sleep 0.05; done
  echo "redis-server did not start" >&2; exit 1
}
start_redis

urls=(); node_pids=(); ports=()
for n in a b c; do
  port=$(free_port)
  "$bin" serve --listen "127.0.0.1:$port" --tcp-listen 127.0.0.1:0 --workers 2 \
    --admin-token "$token" --redis "redis://127.0.0.1:$redis_port/0" --node-id "$n" \
    --advertise "ws://127.0.0.1:$port" >"$work/$n.out" 2>"$work/$n.log" &
  node_pids+=($!); pids+=($!); disown $!
  for _ in $(seq 100); do grep -qs '^matchstream listening' "$work/$n.out" && break; sleep 0.1; done
  urls+=("http://127.0.0.1:$port"); ports+=("$port")
done
seq_on() { curl -s --max-time 1 "$1/1/match/$mid" | python3 -c 'import json,sys; print(json.load(sys.stdin)["seq"])' 2>/dev/null || echo -1; }

: >"$out/events.log"
log "machine: $(nproc) cores, $(uname -r), $(redis-server --version | grep -o 'v=[^ ]*'), $("$bin" --version 2>/dev/null | head -1) ($(git rev-parse --short HEAD))"
log "nodes a b c: ${urls[*]} (2 workers each, pids ${node_pids[*]}), redis 127.0.0.1:$redis_port (pid $redis_pid, appendfsync always)"

server_list=$(IFS=,; echo "${urls[*]}")
pid_list=$(IFS=,; echo "${node_pids[*]}")
cmd=("$bin" load --server "$server_list" --reconnect --clients "$clients" --replay sample
  --speed "$speed" --admin-token "$token" --server-pid "$pid_list" --drain 30
  --report "$out/report.json" ${EXTRA:-})
log "command: ${cmd[*]}"
t0=$(now)
declare -A cpu0
for p in "${node_pids[@]}" "$redis_pid"; do cpu0[$p]=$(ticks "$p"); done
"${cmd[@]}" >"$out/summary.txt" 2>"$out/load.log" &
load_pid=$!

# The match lasts 1094 s / SPEED once `start` is posted: node b dies at 1/3 of it, Redis goes
# away at 2/3.
wait_seq() {
  for _ in $(seq 1200); do
    kill -0 "$load_pid" 2>/dev/null || return 1
    [ "$(seq_on "${urls[0]}")" -ge "$1" ] && return 0
    sleep 0.05
  done
  return 1
}
match_s=$(python3 -c "print(1094/$speed)")
wait_seq 1 || true
t_start=$(now)
until_frac() { python3 -c "import time; time.sleep(max(0, $t_start + $match_s*$1 - time.time()))"; }
redis_cpu=0
[ "$outage" = none ] || until_frac 0.333
if [ "$outage" != none ] && kill -0 "$load_pid" 2>/dev/null; then
  b_cpu=$(( $(ticks "${node_pids[1]}") - cpu0[${node_pids[1]}] ))
  kill -9 "${node_pids[1]}"
  log "kill -9 node b (pid ${node_pids[1]}) at seq $(seq_on "${urls[0]}")"
fi
[ "$outage" = none ] || until_frac 0.667
if [ "$outage" != none ] && kill -0 "$load_pid" 2>/dev/null; then
  if [ "$outage" = stop ]; then
    kill -STOP "$redis_pid"
    log "redis SIGSTOP at seq $(seq_on "${urls[0]}")"
    sleep 3
    kill -CONT "$redis_pid"
    log "redis SIGCONT"
  else
    redis_cpu=$(( $(ticks "$redis_pid") - cpu0[$redis_pid] ))
    kill -TERM "$redis_pid"
    log "redis SIGTERM at seq $(seq_on "${urls[0]}")"
    while kill -0 "$redis_pid" 2>/dev/null; do sleep 0.05; done
    sleep 3
    old_redis=$redis_pid
    start_redis
    cpu0[$redis_pid]=$(ticks "$redis_pid")
    log "redis restarted (pid $old_redis -> $redis_pid), same port and AOF"
  fi
fi
set +e
wait "$load_pid"
rc=$?
set -e
t1=$(now)
wall=$(python3 -c "print($t1-$t0)")
hz=$(getconf CLK_TCK)
pct() { python3 -c "print(f'{100*$1/$hz/$wall:.1f} %')"; }
redis_cpu=$(( redis_cpu + $(ticks "$redis_pid") - cpu0[$redis_pid] ))
{
  echo "exit status: $rc"
  echo "wall: $(printf %.1f "$wall") s (load run, connect to last watcher done)"
  echo "cpu: redis $(pct "$redis_cpu"), node a $(pct $(( $(ticks "${node_pids[0]}") - cpu0[${node_pids[0]}] ))), node b $(pct "${b_cpu:-$(( $(ticks "${node_pids[1]}") - cpu0[${node_pids[1]}] ))}")${b_cpu:+ (until killed)}, node c $(pct $(( $(ticks "${node_pids[2]}") - cpu0[${node_pids[2]}] ))) of one core over the run"
  echo "redis data after the run: seq $(redis-cli -p "$redis_port" hget "ms:{$mid}:match" seq), stream length $(redis-cli -p "$redis_port" xlen "ms:{$mid}:events")"
} | tee -a "$out/events.log"
cat "$out/summary.txt"
echo "report: $out/report.json"
exit "$rc"
