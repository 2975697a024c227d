"""How the sandbox answers HTTP: a stdlib ThreadingHTTPServer that speaks like Klaviyo.

Per API request: authentication (``Authorization: Klaviyo-API-Key ...``), the ``revision``
header, Klaviyo's fixed-window rate limits, injected faults, JSON parsing, validation
against the shipped OpenAPI subset, then the operation's handler (``routes.py``,
``catalog_routes.py``, ``segment_routes.py``). Paths under ``/__sandbox__/`` go to ``control.py``.

Two details keep benchmark numbers honest: accepted sockets get TCP_NODELAY, and each
response (status line, headers and body) goes out in a single write. Without them,
Nagle's algorithm and the client's delayed ACK add ~40 ms to every keep-alive response.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import sys
import threading
import uuid
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django_klaviyo.testing import openapi
from django_klaviyo.testing.sandbox import (
    catalog_routes,
    control,
    report_routes,
    routes,
    segment_routes,
)
from django_klaviyo.testing.sandbox.core import Sandbox
from django_klaviyo.testing.sandbox.jsonapi import ApiError, Request, Response
from django_klaviyo.testing.sandbox.ratelimit import RateDecision

MAX_BODY_BYTES = 10 * 1024 * 1024  # twice Klaviyo's largest documented payload (5 MB)
REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[A-Za-z0-9]+)?$")
JSON_API = "application/vnd.api+json"
# Every operation the sandbox answers: the route modules' tables, joined here.
HANDLERS = {
    **routes.ROUTES,
    **catalog_routes.ROUTES,
    **report_routes.ROUTES,
    **segment_routes.ROUTES,
}
assert len(HANDLERS) == len(routes.ROUTES) + len(catalog_routes.ROUTES) + len(
    report_routes.ROUTES
) + len(segment_routes.ROUTES), "an operation routed twice"


def _reject_non_json_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity; JSON has no such numbers, so Klaviyo refuses them.
    raise ValueError(f"{name} is not a JSON number")


class HTTPServer(ThreadingHTTPServer):
    """Serves one ``Sandbox``; sockets get TCP_NODELAY and are cut on stop."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self.open_sockets: set[socket.socket] = set()
        self.nodelay_flags: list[bool] = []  # TCP_NODELAY as read back from each socket
        self._sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._sockets_lock:
            self.nodelay_flags.append(bool(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)))
            self.open_sockets.add(conn)
        return conn, address

    def shutdown_request(self, request: Any) -> None:
        with self._sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def close_open_sockets(self) -> None:
        """Cut idle keep-alive connections so a stopped sandbox answers nothing."""
        with self._sockets_lock:
            sockets = list(self.open_sockets)
        for conn in sockets:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


def _missing_scope(sandbox: Sandbox, operation_id: str) -> str | None:
    """The first scope ``operation_id`` needs that the key was made to lack, if any."""
    if not sandbox.denied_scopes:
        return None
    needed = openapi.operation(operation_id).get("x-klaviyo-scopes") or []
    return next((scope for scope in needed if scope in sandbox.denied_scopes), None)


def _rate_limit_headers(decision: RateDecision) -> dict[str, str]:
    """IETF-draft style headers as Klaviyo sends them, e.g. ``75, 75;w=1, 750;w=60``.

    The first value, Remaining and Reset describe the window closest to exhaustion (the
    burst window in Klaviyo's recorded responses).
    """
    tightest = decision.tightest()
    if tightest is None:
        return {}
    policies = ", ".join(
        f"{w.limit};w={w.window_seconds}" for w in decision.windows if w.window_seconds <= 60
    )
    return {
        "RateLimit-Limit": f"{tightest.limit}, {policies}",
        "RateLimit-Remaining": str(tightest.remaining),
        "RateLimit-Reset": str(int(tightest.reset_after)),
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "KlaviyoSandbox/1.0"
    timeout = 120  # idle keep-alive connections are closed after this
    server: HTTPServer

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def log_message(self, format: str, *args: Any) -> None:
        # Only the request line and status are logged, never headers (the API key).
        if self.server.sandbox.verbose:
            sys.stderr.write(f"[sandbox] {self.address_string()} {format % args}\n")

    # --- writing ---------------------------------------------------------------------

    def _write(self, status: int, body: bytes, headers: dict[str, str], ctype: str) -> None:
        # Counted before the answer leaves, so a client that got it sees the count.
        if self._operation:
            self.server.sandbox.state.count_request(self._operation, status)
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Server: {self.server_version}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Length: {len(body)}",
        ]
        if body:
            lines.append(f"Content-Type: {ctype}")
        if self.close_connection:
            lines.append("Connection: close")
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + body)  # one write: see the module docstring
        self.log_request(status)

    def _send_api(self, response: Response) -> None:
        self._write(response.status, response.encoded(), response.headers, JSON_API)

    def _send_error(self, error: ApiError, headers: dict[str, str] | None = None) -> None:
        body = {"errors": [error.error_object(str(uuid.uuid4()))]}
        self._send_api(Response(error.status, body, headers or {}))

    def _drop(self) -> None:
        """Close the connection without answering (the client sees a reset)."""
        if self._operation:
            self.server.sandbox.state.count_request(self._operation, 0)
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # --- reading ---------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise ApiError(
                411,
                "invalid",
                "Send a Content-Length; chunked bodies are not supported by the sandbox.",
                pointer=None,
            )
        raw_length = self.headers.get("Content-Length") or "0"
        if not raw_length.isdigit():
            self.close_connection = True
            raise ApiError(400, "invalid", "Invalid Content-Length.", pointer=None)
        length = int(raw_length)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the unread body would corrupt the next request
            raise ApiError(
                413, "invalid", f"Request body over {MAX_BODY_BYTES} bytes.", pointer=None
            )
        return self.rfile.read(length) if length else b""

    # --- dispatch --------------------------------------------------------------------

    def _dispatch(self) -> None:
        sandbox = self.server.sandbox
        self._operation: str | None = None
        split = urlsplit(self.path)
        try:
            raw_body = self._read_body()
        except ApiError as error:
            self._send_error(error)
            return
        if split.path.rstrip("/").startswith("/__sandbox__") or split.path == "/":
            status, body, ctype = control.answer(
                self.server.sandbox, self.command, split.path.rstrip("/") or "/", raw_body
            )
            self._write(status, body, {}, ctype)
            return
        found = openapi.find_operation(self.command, split.path)
        if found is None:
            self._send_error(
                ApiError(
                    404,
                    "not_found",
                    f"No operation for {self.command} {split.path} in the sandbox.",
                    pointer=None,
                )
            )
            return
        operation_id, path_params = found
        self._operation = operation_id
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        self._api(sandbox, operation_id, path_params, query, split.path, raw_body)

    def _api(
        self,
        sandbox: Sandbox,
        operation_id: str,
        path_params: dict[str, str],
        query: dict[str, str],
        path: str,
        raw_body: bytes,
    ) -> int:
        """Answer one API request; returns the status sent (0 for a dropped connection)."""
        extra = {"X-Sandbox-Time-Scale": f"{sandbox.time_scale:g}"}
        sandbox.sleep(sandbox.latency + sandbox.faults.config.latency)

        if not sandbox.authenticate(self.headers.get("Authorization")):
            self._send_error(
                ApiError(
                    401,
                    "authentication_failed",
                    "Incorrect authentication credentials.",
                    pointer="/data/",
                ),
                extra,
            )
            return 401
        missing = _missing_scope(sandbox, operation_id)
        if missing:
            self._send_error(
                ApiError(
                    403,
                    "permission_denied",
                    "You do not have permission to perform this action.",
                    pointer=None,
                ),
                extra,
            )
            return 403
        revision = self.headers.get("revision")
        if not revision or not REVISION.match(revision):
            self._send_error(
                ApiError(
                    400,
                    "invalid",
                    "The revision header is required (format YYYY-MM-DD[.suffix]).",
                    pointer=None,
                    parameter="revision",
                ),
                extra,
            )
            return 400

        if sandbox.enforce_rate_limits:
            decision = sandbox.limiter.hit(operation_id, openapi.rate_limits(operation_id))
            if not decision.allowed:
                wait = decision.retry_after
                seconds = max(1, math.ceil(wait))
                self._send_error(
                    ApiError(
                        429,
                        "throttled",
                        f"Request was throttled. Expected available in "
                        f"{seconds} second{'s' if seconds != 1 else ''}.",
                    ),
                    {**extra, "Retry-After": str(seconds), "X-Sandbox-Retry-After": f"{wait:.3f}"},
                )
                return 429
            extra.update(_rate_limit_headers(decision))

        fault = sandbox.faults.decide()
        if fault.outcome in ("429", "500", "503"):
            injected = {
                "429": ApiError(
                    429, "throttled", "Request was throttled (injected by the sandbox)."
                ),
                "500": ApiError(500, "error", "A server error occurred (injected).", pointer=None),
                "503": ApiError(
                    503, "service_unavailable", "Service unavailable (injected).", pointer=None
                ),
            }[fault.outcome]
            headers = {k: v for k, v in extra.items() if not k.startswith("RateLimit")}
            if fault.outcome == "429":
                headers["Retry-After"] = str(sandbox.faults.config.retry_after)
            self._send_error(injected, headers)
            return injected.status

        response = (
            self._process(sandbox, operation_id, path_params, query, path, raw_body)
            if fault.process
            else None
        )
        if fault.outcome == "drop":
            self._drop()
            return 0
        if fault.outcome == "slow":
            sandbox.sleep(sandbox.faults.config.slow_seconds)
            if response is None:
                response = Response(
                    504,
                    {
                        "errors": [
                            ApiError(
                                504,
                                "gateway_timeout",
                                "The request timed out (injected).",
                                pointer=None,
                            ).error_object(str(uuid.uuid4()))
                        ]
                    },
                )
        assert response is not None
        response.headers = {**extra, **response.headers}
        self._send_api(response)
        return response.status

    def _process(
        self,
        sandbox: Sandbox,
        operation_id: str,
        path_params: dict[str, str],
        query: dict[str, str],
        path: str,
        raw_body: bytes,
    ) -> Response:
        try:
            body = self._parse_json(operation_id, raw_body)
            violations = openapi.request_violations(operation_id, body)
            if violations:
                errors = [
                    ApiError(400, "invalid", v.message, pointer=v.pointer or "/").error_object(
                        str(uuid.uuid4())
                    )
                    for v in violations[:20]
                ]
                return Response(400, {"errors": errors})
            request = Request(
                operation_id, self.command, path, path_params, query, body, sandbox.url
            )
            response = HANDLERS[operation_id](sandbox.state, request)
        except ApiError as error:
            return Response(error.status, {"errors": [error.error_object(str(uuid.uuid4()))]})
        except Exception as exc:  # a sandbox bug must answer 500, not hang the client
            return Response(
                500,
                {
                    "errors": [
                        ApiError(
                            500,
                            "error",
                            f"Sandbox error: {type(exc).__name__}: {exc}",
                            pointer=None,
                        ).error_object(str(uuid.uuid4()))
                    ]
                },
            )
        if 200 <= response.status < 300:
            sandbox.record(operation_id, response.status, body)
        return response

    @staticmethod
    def _parse_json(operation_id: str, raw_body: bytes) -> Any:
        if not raw_body.strip():
            return None
        try:
            return json.loads(raw_body, parse_constant=_reject_non_json_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(
                400, "parse_error", f"Malformed JSON body: {exc}.", pointer="/"
            ) from None
