"""``SandboxServer``: a ``Sandbox`` (``core.py``) served on 127.0.0.1 by a background
thread; ``handler.py`` answers each request. Start and stop it, or use it as a context
manager.
"""

from __future__ import annotations

import threading

from django_klaviyo.testing.sandbox.core import Sandbox
from django_klaviyo.testing.sandbox.handler import HTTPServer


class SandboxServer(Sandbox):
    """A local stand-in for Klaviyo's API on 127.0.0.1.

    ``api_key=None`` accepts any ``Klaviyo-API-Key <x>``; ``time_scale`` shrinks rate-limit
    windows (0.1: a 1 s window lasts 0.1 s). ``Retry-After`` stays an integer number of
    seconds as in Klaviyo (``ceil`` of the scaled wait); the exact scaled wait is sent in
    ``X-Sandbox-Retry-After`` and the scale in ``X-Sandbox-Time-Scale``, so a client
    benchmarked with time_scale < 1 should be told to scale its own waits the same way.
    """

    _httpd: HTTPServer | None = None
    _thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never shows the API key
        return f"<SandboxServer {self.url if self._httpd else 'stopped'}>"

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> SandboxServer:
        if self._httpd is not None:
            raise RuntimeError("the sandbox is already running")
        self._stopping.clear()
        if self.record_path:
            self._record_file = self.record_path.open("a", encoding="utf-8")
        self._httpd = HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"klaviyo-sandbox-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes requests sleeping on latency or slow faults
        httpd.shutdown()
        httpd.close_open_sockets()
        httpd.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        with self._record_lock:
            if self._record_file:
                self._record_file.close()
                self._record_file = None

    def serve_until_stopped(self) -> None:
        """Block the calling thread until stop() (used by the management command)."""
        while self._httpd is not None and not self._stopping.wait(0.5):
            pass

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def nodelay_flags(self) -> list[bool]:
        """TCP_NODELAY read back from every accepted socket (for tests)."""
        return list(self._httpd.nodelay_flags) if self._httpd else []
