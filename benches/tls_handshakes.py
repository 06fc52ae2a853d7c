#!/usr/bin/env python3
"""Full and resumed TLS handshakes per second against a matchstream TLS port, one run.

    python3 benches/tls_handshakes.py PORT CA_PEM [N=2000]

Each connection does a handshake, one `GET /healthz` (so the session tickets are read) and
closes. "full" connects without a session; "resumed" offers the session of the previous
connection (TLS 1.3 tickets). Prints a markdown table: handshakes, seconds, per second, and
how many were really resumed. The client's own CPU is part of the figure (both modes alike).
"""
import socket
import ssl
import sys
import time

port, ca = int(sys.argv[1]), sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
ctx = ssl.create_default_context(cafile=ca)
ctx.minimum_version = ssl.TLSVersion.TLSv1_3
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


def one(session):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as tls:
            tls.sendall(REQUEST)
            while tls.recv(4096):
                pass
            return tls.session, tls.session_reused


def run(resume):
    session, reused = None, 0
    started = time.monotonic()
    for _ in range(n):
        new, was_reused = one(session if resume else None)
        reused += was_reused
        session = new
    return time.monotonic() - started, reused


print("| handshake | connections | seconds | per second | resumed |\n|---|---|---|---|---|")
for name, resume in (("full", False), ("resumed", True), ("full", False), ("resumed", True)):
    secs, reused = run(resume)
    print(f"| {name} | {n} | {secs:.2f} | {n / secs:.0f} | {reused} |")
