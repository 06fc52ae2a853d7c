#!/usr/bin/env bash
# The 100K run: one `matchstream serve` process with enough workers for this box's
# 20K-per-process open-files limit (each worker has a private fd table: 6 × ~19,900 ≥ 100K),
# 100,000 verified WebSocket watchers through the whole sample match replayed fast, then the
# idle memory of 100,000 held connections, and the raw io_uring floor (benches/floor.rs) in the
# same run. Writes benches/results/<date>-<host>/{100k.json,100k.svg,idle-100k.json,
# floor-100k.json,100k.md} (names from TAG). Not run by CI (minutes, ~3 GiB of memory, 200K loopback sockets).
#
#   bash benches/run_100k.sh [CLIENTS=100000] [SPEED=20] [WORKERS=6]
#
# Environment: TLS=1 (the server with a throw-away certificate from benches/tls_certs.sh, the
# watchers over TLS: WSS, or TLS SSE / line with LOAD_EXTRA), SERVE_EXTRA (more `serve`
# flags), LOAD_EXTRA (more `load` flags, e.g. `--protocol sse`), TAG (file-name prefix,
# default 100k), SKIP_FLOOR=1, SKIP_IDLE=1, FLOOR_FILE, OUT.
#
# A scaled-down version runs in the tests: tests/harness.rs
# (`the_real_server_delivers_a_replayed_match_to_every_watcher`).
set -euo pipefail
cd "$(dirname "$0")/.."
CLIENTS=${1:-100000}
SPEED=${2:-20}
WORKERS=${3:-6}
FLOOR_ROUNDS=${FLOOR_ROUNDS:-20}
SERVE_EXTRA=${SERVE_EXTRA:-}
TAG=${TAG:-100k}
SKIP_FLOOR=${SKIP_FLOOR:-}
SKIP_IDLE=${SKIP_IDLE:-}
OUT=${OUT:-benches/results/$(date +%F)-$(hostname -s)}
mkdir -p "$OUT"
BIN=target/release/matchstream
cargo build --release --bin matchstream 2>/dev/null
# Build the floor before anything runs (a build during the run would be noise).
cargo bench --bench floor --no-run 2>/dev/null

# shellcheck source=benches/lib.sh
. "$(dirname "$0")/lib.sh"
SCHEME=http
CLIENT_TLS=
if [ -n "${TLS:-}" ]; then
    bash benches/tls_certs.sh "$TMP/pki" >/dev/null
    SERVE_EXTRA="$SERVE_EXTRA --tls-cert $TMP/pki/cert.pem --tls-key $TMP/pki/key.pem"
    SCHEME=https
    CLIENT_TLS="--tls --ca $TMP/pki/ca.pem"
fi
stop_server() {
    kill "$SPID"
    wait "$SPID" 2>/dev/null || true
    SPID=
    sleep 5 # TIME_WAIT and memory settle
}

# 1. Idle memory, on a fresh server (a server that already held 100K connections has its
#    allocator's pages and would show only growth): hold CLIENTS connections, RSS and kernel
#    memory deltas per connection.
IDLE_CMD="(skipped)"
if [ -z "$SKIP_IDLE" ]; then
start_server
IDLE_CMD="$BIN load --server $SCHEME://127.0.0.1:$PORT --idle --clients $CLIENTS --hold 5 --server-pid $SPID --report $OUT/idle-$TAG.json $CLIENT_TLS"
echo "+ $IDLE_CMD"
$IDLE_CMD >/dev/null 2>"$TMP/idle.err" || { echo "idle run failed:"; tail -5 "$TMP/idle.err"; }
grep -E 'rss_bytes_per|slab' "$OUT/idle-$TAG.json" || true
stop_server
fi

# 2. The verified run, on a fresh server: every watcher must get the status, every event in
#    order, then `stop`.
start_server
LOAD_CMD="$BIN load --server $SCHEME://127.0.0.1:$PORT --clients $CLIENTS --replay sample --speed $SPEED --admin-token $TOKEN --server-pid $SPID --report $OUT/$TAG.json --svg $OUT/$TAG.svg $CLIENT_TLS ${LOAD_EXTRA:-}"
echo "+ $LOAD_CMD"
set +e
$LOAD_CMD 2>"$TMP/load.err" | tee "$OUT/$TAG.txt"
LOAD_RC=${PIPESTATUS[0]}
set -e
grep '^load:' "$TMP/load.err" | tee "$OUT/$TAG-plan.txt" || true
echo "verified run exit status: $LOAD_RC"
[ "$LOAD_RC" = 0 ] || tr '\r' '\n' <"$TMP/load.err" | tail -20 >"$OUT/$TAG-load-err.txt"
# The plane's own counters: io_uring_enter calls per broadcast per worker.
curl -s ${TLS:+--cacert "$TMP/pki/ca.pem"} "$SCHEME://127.0.0.1:$PORT/metrics" >"$OUT/$TAG-metrics.txt" || true
stop_server

# 3. The floor, same box, same run.
FLOOR_CMD="cargo bench --bench floor -- --pairs $CLIENTS --rounds $FLOOR_ROUNDS --out $OUT/floor-$TAG.json"
if [ -z "$SKIP_FLOOR" ]; then
echo "+ $FLOOR_CMD"
$FLOOR_CMD >/dev/null 2>"$TMP/floor.err" || { echo "floor failed:"; tail -5 "$TMP/floor.err"; }
else
FLOOR_CMD="(skipped; floor file: ${FLOOR_FILE:-none})"
[ -n "${FLOOR_FILE:-}" ] && cp "$FLOOR_FILE" "$OUT/floor-$TAG.json"
fi

# 4. The report.
python3 - "$OUT" "$TAG" "$SERVE_CMD" "$LOAD_CMD" "$IDLE_CMD" "$FLOOR_CMD" "$("$BIN" --version)" \
    "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src Cargo.toml || echo ' (+ uncommitted changes)')" <<'PY'
import json, os, sys, subprocess, datetime, platform
out, tag, serve_cmd, load_cmd, idle_cmd, floor_cmd, version, rev = sys.argv[1:]
def load(name):
    try:
        return json.load(open(f"{out}/{name}"))
    except Exception as e:
        return {"error": str(e)}
r, idle, floor = load(f"{tag}.json"), load(f"idle-{tag}.json"), load(f"floor-{tag}.json")
def metric(name):
    try:
        text = open(f"{out}/{tag}-metrics.txt").read()
    except Exception:
        return None
    vals = [float(l.rsplit(' ', 1)[1]) for l in text.splitlines()
            if not l.startswith('#') and l.split('{')[0].split(' ')[0] == name]
    return sum(vals) if vals else None
bc, be = metric("matchstream_plane_broadcasts_total"), metric("matchstream_plane_broadcast_enters_total")
sh = lambda c: subprocess.getoutput(c).strip()
model = sh("lscpu | sed -n 's/^Model name: *//p'")
mem = sh("free -g | awk '/^Mem:/{print $2}'")
fl = floor.get("floor_cpu_us_per_delivery")
per = r.get("server_cpu_us_per_delivery")
lat = r.get("latency_us", {})
hs = r.get("harness_to_server_cpu") or (r["harness_cpu_us_per_delivery"] / per if per and r.get("harness_cpu_us_per_delivery") else None)
last = r.get("last_delivery_summary_us", {})
srv = r.get("server", {})
f = lambda v, fmt: "-" if v is None else fmt.format(v)
ms = lambda us: "-" if us is None else f"{us/1000:,.1f} ms"
plan = r.get("plan", {})
rows = [
    ("watchers connected / asked", f"{r.get('connected')} / {r.get('clients')} ({f(r.get('connect_per_s'), '{:,.0f}')} connects/s, plan: {plan.get('threads')} load threads, {plan.get('sources')} source addresses)"),
    ("verified", f"{'PASS' if r.get('passed') else 'FAIL'}: {r.get('events')} events, {r.get('deliveries'):,} of {r.get('expected_deliveries'):,} deliveries; lost {r.get('lost')}, duplicated {r.get('duplicated')}, reordered {r.get('reordered')}" if 'deliveries' in r else str(r.get('error'))),
    ("fan-out latency (publish → each watcher)", f"p50 {ms(lat.get('p50'))} · p99 {ms(lat.get('p99'))} · p999 {ms(lat.get('p999'))} · max {ms(lat.get('max'))}"),
    ("last watcher per event", f"p50 {ms(last.get('p50'))} · p99 {ms(last.get('p99'))} · max {ms(last.get('max'))}"),
    ("delivered frames/s", f"{f(r.get('peak_event_frames_per_s'), '{:,.0f}')} within one event's fan-out (best event); {f(r.get('frames_per_s'), '{:,.0f}')} averaged over the whole replay"),
    # The user/system split is left out: the kernel's per-process split (utime/stime) is a
    # 250 Hz tick sample scaled to the whole life of the process and kept monotonic
    # (cputime_adjust), so the difference of two readings is not the delivery phase's split
    # and often clamps to 0 (see benches/results/2026-12-02-harness-dev.md). The totals are exact.
    ("server CPU during delivery", f"{f((srv.get('cpu_during_delivery_us') or 0)/1e6, '{:.2f}')} s; harness {f((srv.get('harness_cpu_during_delivery_us') or 0)/1e6, '{:.2f}')} s (user/system split: not measurable per phase on a tick-accounting kernel)"),
    ("harness CPU per delivery ÷ server CPU per delivery (same run)", f"{f(hs, '{:.2f}×')} (goal ≤ 0.5×)"),
    ("server CPU per delivery", f"{f(per, '{:.3f}')} µs"),
    ("floor (raw io_uring Send, same N)", f"{f(fl, '{:.3f}')} µs per delivery ({floor.get('pairs')} pairs × {floor.get('rounds')} rounds of a {floor.get('frame_bytes')}-byte frame; one round's fan-out p50 {ms((floor.get('round_fanout_us') or {}).get('p50'))})"),
    ("**server CPU per delivery ÷ floor**", f"**{per/fl:.2f}×** (goal ≤ 1.10×)" if per and fl else "-"),
    ("**last watcher per event ÷ floor's one-round fan-out**", f"**{last['p50']/(floor.get('round_fanout_us') or {})['p50']:.2f}×** (p50 ÷ p50; goal ≤ 1.20×)" if last.get('p50') and (floor.get('round_fanout_us') or {}).get('p50') else "-"),
    ("io_uring_enter per broadcast per worker (plane ring, /metrics)", f"{be/bc:.2f} ({be:.0f} enters for {bc:.0f} worker-broadcasts)" if bc else "- (no plane broadcasts: task engine)"),
    ("server user memory per idle watcher", f"{f(idle.get('server_rss_bytes_per_connection'), '{:,.0f}')} B (RSS delta ÷ {idle.get('connected')} held connections; goal ≤ 200 B)"),
    ("kernel memory per idle connection, both ends", f"{f(idle.get('kernel_slab_bytes_per_connection_both_ends'), '{:,.0f}')} B slab + {f(idle.get('kernel_tcp_bytes_per_connection_both_ends'), '{:,.0f}')} B TCP buffers"),
    ("server user memory per watching connection", f"{f(r.get('server_rss_bytes_per_connection'), '{:,.0f}')} B (RSS delta at ready, verified run)"),
]
lines = [
    f"# {r.get('clients')} verified watchers on one box ({tag}) — {datetime.date.today()}",
    "",
    f"Machine: `{platform.node()}`, {model}, {sh('nproc')} cores, {mem} GiB RAM; kernel {platform.release()}; "
    f"open files {sh('ulimit -Hn')} per process (hard). {version}, git {rev}. "
    "Server, harness and floor share the 2 cores: the harness's receivers take CPU from the server (their cost ÷ the server's is a row below), so the latency rows measure the server *and* the harness on one box.",
    "",
    "| what | measured |",
    "|---|---|",
] + [f"| {a} | {b} |" for a, b in rows] + [
    "",
    f"Commands (one script: `bash benches/run_100k.sh`, TAG={tag}):",
    "",
    "```",
    serve_cmd, load_cmd, idle_cmd, floor_cmd,
    "```",
    "",
    f"Files: `{tag}.json` (the harness report: per-event last-delivery times, timeline, plan), `{tag}.svg`,",
    f"`{tag}.txt` (summary), `{tag}-metrics.txt` (/metrics after the run), `idle-{tag}.json`, `floor-{tag}.json`.",
    "",
]
open(f"{out}/{tag}.md", "w").write("\n".join(lines))
print("\n".join(lines))
PY
exit "$LOAD_RC"
