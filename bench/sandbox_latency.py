"""Sandbox answer time on a keep-alive connection (moved here from tests/testing/test_sandbox.py,
which keeps only the behaviour: TCP_NODELAY on accepted sockets, one connection reused).

Ours: ``GET /api/lists`` on the sandbox (auth, revision, route lookup, rate limiter off).
Baseline: the same ``requests`` session against a bare stdlib ``http.server`` that answers
the same JSON body with TCP_NODELAY, in the same process layout (a thread of this one).
Without TCP_NODELAY a keep-alive answer with a body stalls ~40 ms (Nagle + delayed ACK,
shared/notes/benchmarking.md); the figure to watch is the median staying far below that.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from bench.common import median, parse_bench_args, print_header, print_result, sized

REQUESTS = 500
KEY = "pk_sandbox_bench_key_0123456789"
HEADERS = {
    "Authorization": f"Klaviyo-API-Key {KEY}",
    "revision": "2026-07-15",
    "Accept": "application/vnd.api+json",
}
STALL_SECONDS = 0.02  # half the Nagle stall: above it, TCP_NODELAY is not working


class _Bare(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = json.dumps({"data": [], "links": {"self": "x", "next": None}}).encode()

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.api+json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: object) -> None:
        pass


def _median_seconds(session, url: str) -> float:
    for _ in range(sized(20, 2)):  # warm the connection
        session.get(url, headers=HEADERS, timeout=10)
    timings = []
    for _ in range(sized(REQUESTS, 5)):
        start = time.perf_counter()
        response = session.get(url, headers=HEADERS, timeout=10)
        timings.append(time.perf_counter() - start)
        assert response.status_code == 200, response.text
    return median(timings)


def main() -> None:
    import argparse

    import requests

    from django_klaviyo.testing.sandbox import SandboxServer

    parse_bench_args(argparse.ArgumentParser(description=__doc__))
    print_header("sandbox latency (keep-alive)")
    bare = ThreadingHTTPServer(("127.0.0.1", 0), _Bare)
    threading.Thread(target=bare.serve_forever, daemon=True).start()
    try:
        with (
            SandboxServer(api_key=KEY, enforce_rate_limits=False) as sandbox,
            requests.Session() as session,
        ):
            base = _median_seconds(session, f"http://127.0.0.1:{bare.server_port}/api/lists")
            ours = _median_seconds(session, f"{sandbox.url}/api/lists")
    finally:
        bare.shutdown()
    print_result(
        "sandbox_latency",
        bare_http_server_ms=base * 1000,
        sandbox_ms=ours * 1000,
        RATIO=ours / base,
        stall_threshold_ms=STALL_SECONDS * 1000,
        met=ours < STALL_SECONDS,
    )


if __name__ == "__main__":
    main()
