#!/usr/bin/env bash
# Shared by the benchmark scripts (sourced): a temp folder removed on exit, a free loopback
# port, and one server started from "$BIN" with "$WORKERS" workers plus "$SERVE_EXTRA".
# After start_server: PORT, TPORT, APORT (`--admin-listen`: /metrics and the publisher's
# posts are never refused for capacity), TOKEN, SPID, SERVE_CMD and "$TMP/serve.log".
TMP=$(mktemp -d)
SPID=
cleanup() {
    [ -n "$SPID" ] && kill "$SPID" 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

TOKEN=bench-$RANDOM
start_server() {
    PORT=$(free_port)
    TPORT=$(free_port)
    APORT=$(free_port)
    # The load generator is one client host spread over many loopback source addresses
    # (each address holds up to a port range's worth of sockets): no per-address limit.
    SERVE_CMD="$BIN serve --workers $WORKERS --listen 127.0.0.1:$PORT --tcp-listen 127.0.0.1:$TPORT --data-dir $TMP/data-$PORT --admin-listen 127.0.0.1:$APORT --admin-token $TOKEN --max-connections-per-ip 0 ${SERVE_EXTRA:-}"
    echo "+ $SERVE_CMD"
    $SERVE_CMD >"$TMP/serve.log" 2>&1 &
    SPID=$!
    for _ in $(seq 100); do grep -q 'listening' "$TMP/serve.log" && break; sleep 0.1; done
    grep 'listening' "$TMP/serve.log"
}
