"""The sandbox's own endpoints, beside Klaviyo's API: the dashboard page (``GET /``),
``GET /__sandbox__/state``, ``POST /__sandbox__/reset`` and ``GET|POST
/__sandbox__/faults``. They need no API key.
"""

from __future__ import annotations

import json
from typing import Any

from django_klaviyo.testing.sandbox.core import Sandbox
from django_klaviyo.testing.sandbox.dashboard import render_dashboard
from django_klaviyo.testing.sandbox.faults import FaultConfig

JSON = "application/json"


def _json(status: int, payload: Any) -> tuple[int, bytes, str]:
    return status, json.dumps(payload).encode(), JSON


def answer(sandbox: Sandbox, command: str, path: str, raw_body: bytes) -> tuple[int, bytes, str]:
    """``(status, body, content type)`` for one request to ``path`` (no trailing slash)."""
    if command == "GET" and path in ("/", "/__sandbox__"):
        html = render_dashboard(
            sandbox.state.summary(latest=50),
            sandbox.state.profiles(),
            sandbox.faults.config,
            sandbox.time_scale,
        )
        return 200, html.encode("utf-8"), "text/html; charset=utf-8"
    if command == "GET" and path == "/__sandbox__/state":
        return _json(
            200,
            {
                **sandbox.state.summary(),
                "time_scale": sandbox.time_scale,
                "enforce_rate_limits": sandbox.enforce_rate_limits,
                "faults": sandbox.faults.config.as_dict(),
            },
        )
    if command == "POST" and path == "/__sandbox__/reset":
        sandbox.reset()
        return _json(200, {"reset": True})
    if path == "/__sandbox__/faults" and command == "GET":
        return _json(200, sandbox.faults.config.as_dict())
    if path == "/__sandbox__/faults" and command == "POST":
        try:
            config = FaultConfig.from_mapping(json.loads(raw_body or b"{}"))
        except (ValueError, TypeError) as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, sandbox.set_faults(config).as_dict())
    return _json(404, {"error": f"unknown sandbox endpoint {command} {path}"})
