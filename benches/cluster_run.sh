#!/usr/bin/env bash
# A 3-node cluster on loopback with one redis-server, measured by examples/cluster_load.rs.
#   bash benches/cluster_run.sh [WATCHERS_PER_NODE] [EVENTS] [RATE]
# Needs redis-server and a release build (cargo build --release --bins --example cluster_load).
set -euo pipefail
cd "$(dirname "$0")/.."
per_node=${1:-1000}
events=${2:-300}
rate=${3:-50}
bin=target/release/matchstream
load=target/release/examples/cluster_load
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly yes \
  --appendfsync everysec --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
pids+=("$redis_pid")
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

urls=()
node_pids=()
for n in a b c; do
  "$bin" serve --listen 127.0.0.1:0 --tcp-listen 127.0.0.1:0 --workers 2 --admin-token bench \
    --redis "redis://127.0.0.1:$redis_port/0" --node-id "$n" \
    >"$work/$n.out" 2>"$work/$n.log" &
  node_pids+=($!)
  pids+=($!)
  for _ in $(seq 100); do grep -q '^matchstream listening' "$work/$n.out" && break; sleep 0.1; done
  http=$(grep -o 'http=[^ ]*' "$work/$n.out" | cut -d= -f2)
  urls+=("http://$http")
done
echo "machine: $(nproc) cores, $(uname -r), redis $(redis-server --version | grep -o 'v=[^ ]*')"
echo "nodes: ${urls[*]} (2 workers each), redis 127.0.0.1:$redis_port"
echo "pids: redis $redis_pid, nodes ${node_pids[*]}"
"$load" "$(IFS=,; echo "${urls[*]}")" "$per_node" "$events" "$rate" bench \
  "$redis_pid,$(IFS=,; echo "${node_pids[*]}")"
