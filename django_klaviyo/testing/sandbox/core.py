"""The sandbox apart from its HTTP server: the in-memory account (``state``), the rate-limit
windows, the faults, the API key and scopes it accepts, latency, the request log, and the
controls tests call (``set_faults``, ``deny_scopes``, ``reset``). ``SandboxServer``
(``server.py``) serves one over HTTP; ``handler.py`` answers its requests.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django_klaviyo.testing.sandbox.faults import FaultConfig, FaultInjector
from django_klaviyo.testing.sandbox.ratelimit import FixedWindowLimiter
from django_klaviyo.testing.sandbox.state import SandboxState


class Sandbox:
    """A stand-in for one Klaviyo account and its API's rules, without the HTTP server.

    ``job_seconds``: how long each bulk job stays ``processing`` (real seconds; 0: it
    runs when first polled). ``api_key=None`` accepts any ``Klaviyo-API-Key <x>``;
    ``time_scale`` shrinks rate-limit windows (0.1: a 1 s window lasts 0.1 s).
    ``Retry-After`` stays an integer number of seconds as in Klaviyo (``ceil`` of the
    scaled wait); the exact scaled wait is sent in ``X-Sandbox-Retry-After`` and the
    scale in ``X-Sandbox-Time-Scale``, so a client benchmarked with time_scale < 1
    should be told to scale its own waits the same way.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        time_scale: float = 1.0,
        enforce_rate_limits: bool = True,
        latency: float = 0.0,
        faults: FaultConfig | dict[str, Any] | None = None,
        record_path: str | Path | None = None,
        seed: int | None = None,
        verbose: bool = False,
        clock: Callable[[], float] | None = None,
        job_seconds: float = 0.0,
    ) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0 seconds")
        if not job_seconds >= 0:
            raise ValueError("job_seconds must be >= 0")
        self.host = host
        self.port = port
        self._api_key = api_key
        self.time_scale = time_scale
        self.enforce_rate_limits = enforce_rate_limits
        self.latency = latency
        self.record_path = Path(record_path) if record_path else None
        self.verbose = verbose
        self.state = SandboxState(seed)
        # How long a bulk job (profile import, catalog, coupon codes) stays "processing".
        self.state.job_seconds = float(job_seconds)
        # ``clock`` (monotonic seconds) drives the rate-limit windows; tests inject one.
        self.limiter = FixedWindowLimiter(time_scale=time_scale, clock=clock)
        if isinstance(faults, dict):
            faults = FaultConfig.from_mapping(faults)
        self.faults = FaultInjector(faults or FaultConfig(seed=seed))
        self._stopping = threading.Event()
        # Scopes the API key lacks (deny_scopes): their endpoints answer 403.
        self.denied_scopes: set[str] = set()
        self._record_lock = threading.Lock()
        self._record_file: Any = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # --- runtime controls ------------------------------------------------------------

    def set_faults(self, config: FaultConfig | None = None, **changes: Any) -> FaultConfig:
        """Replace the fault config, or change some fields: ``set_faults(rate_503=0.2)``."""
        new = config if config is not None else self.faults.config.updated(**changes)
        self.faults.configure(new)
        return new

    def set_api_key(self, api_key: str | None) -> None:
        """Accept only ``api_key`` from now on (None: any key): a key revoked, then
        restored, as an account owner may do in Klaviyo's settings."""
        self._api_key = api_key

    def deny_scopes(self, *scopes: str) -> None:
        """Act as a key without these scopes (e.g. ``"subscriptions:write"``): every
        endpoint needing one answers 403 as Klaviyo does; no argument grants them all."""
        self.denied_scopes = set(scopes)

    def reset(self) -> None:
        """Forget all data and rate-limit counters (faults stay as they are)."""
        self.state.reset()
        self.limiter.reset()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    # --- pieces used by the handler (handler.py) --------------------------------------

    def authenticate(self, header: str | None) -> bool:
        if not header or not header.startswith("Klaviyo-API-Key "):
            return False
        given = header[len("Klaviyo-API-Key ") :].strip()
        if not given:
            return False
        self.state.count_key(given)
        if self._api_key is None:
            return True
        return hmac.compare_digest(given.encode(), self._api_key.encode())

    def record(self, operation: str, status: int, body: Any) -> None:
        if self._record_file is None:
            return
        line = json.dumps(
            {"operation": operation, "time": time.time(), "status": status, "body": body}
        )
        with self._record_lock:
            if self._record_file:
                self._record_file.write(line + "\n")
                self._record_file.flush()
