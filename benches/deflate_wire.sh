#!/usr/bin/env bash
# permessage-deflate on the wire: the sample match replayed to CLIENTS verified WebSocket
# watchers, once plain and once with every watcher offering permessage-deflate (as browsers
# do), against the same server process, back to back. Reports per run: bytes per delivered
# frame and bytes on the wire per event for one watcher (from /metrics
# matchstream_bytes_sent_total / matchstream_frames_sent_total deltas), and the harness's
# server CPU per delivery. Writes $OUT/{plain,deflate}.json and prints a table.
#
#   bash benches/deflate_wire.sh [CLIENTS=2000] [SPEED=50] [WORKERS=2] [ROUNDS=2]
#
# Not run by CI. The two modes alternate ROUNDS times so that noise from other processes on a
# shared box hits both.
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-2000}
SPEED=${2:-50}
WORKERS=${3:-2}
ROUNDS=${4:-2}
OUT=${OUT:-benches/results/$(date +%F)-deflate}
mkdir -p "$OUT"
BIN=${MATCHSTREAM_BIN:-target/release/matchstream}
[ -x "$BIN" ] || cargo build --release --bin matchstream

# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v n="$1" '$1 ~ "^"n"({|$)" {s+=$2} END {printf "%d", s}'; }

start_server

printf '| run | mode | events | deliveries | bytes/frame | bytes on the wire per event (one watcher) | server CPU µs/delivery | lost |\n|---|---|---|---|---|---|---|---|\n' >"$TMP/table"
n=0
for round in $(seq "$ROUNDS"); do
    for mode in plain deflate; do
        n=$((n + 1))
        flag=
        [ "$mode" = deflate ] && flag=--deflate
        frames0=$(metric matchstream_frames_sent_total)
        bytes0=$(metric matchstream_bytes_sent_total)
        CMD="$BIN load --server http://127.0.0.1:$PORT --clients $CLIENTS --replay sample --speed $SPEED --admin-token $TOKEN --server-pid $SPID $flag --report $OUT/$mode-$round.json --quiet"
        echo "+ $CMD"
        $CMD >/dev/null 2>"$TMP/load.err" || { echo "load failed:"; tail -5 "$TMP/load.err"; exit 1; }
        frames=$(( $(metric matchstream_frames_sent_total) - frames0 ))
        bytes=$(( $(metric matchstream_bytes_sent_total) - bytes0 ))
        python3 - "$OUT/$mode-$round.json" "$frames" "$bytes" "$round" "$mode" >>"$TMP/table" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
frames, sent, rnd, mode = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
events, deliveries = report["events"], report["deliveries"]
per_frame = sent / frames if frames else 0
clients = report["clients"]
print(f"| {rnd} | {mode} | {events} | {deliveries} | {per_frame:.1f} | {sent / clients / max(events, 1):.1f} | "
      f"{report.get('server_cpu_us_per_delivery') or 0:.2f} | {report['lost']} |")
PY
    done
done
cat "$TMP/table" | tee "$OUT/table.md"
