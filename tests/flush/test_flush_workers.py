"""``klaviyo_flush --loop`` as a supervised worker: it stops promptly on SIGTERM, rides out
database outages, and exits non-zero only when told to give up on one (``--max-outage``).

Workers are the example project's ``manage.py klaviyo_flush`` in subprocesses, on the test's
PostgreSQL database (committed data, ``transactional_db``). An outage is made by cutting
a TCP relay between the worker and PostgreSQL, or by terminating the worker's backends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.db import connection

from django_klaviyo.testing.sandbox import SandboxServer
from tests.flush.test_reliability_processes import (
    EXAMPLE_PROJECT,
    database_url,  # noqa: F401  (a fixture)
    outbox_state,
    seed,
)
from tests.processes import read_line

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def start_worker(
    db_url: str, api_url: str, *args: str, timeout: float | None = None
) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    env.update(
        DATABASE_URL=db_url,
        KLAVIYO_API_URL=api_url,
        KLAVIYO_LOG_LEVEL="WARNING",
        DJANGO_SETTINGS_MODULE="tests.projects.worker_settings",
        PYTHONPATH=os.pathsep.join([str(REPO), str(EXAMPLE_PROJECT)]),
        PYTHONUNBUFFERED="1",
        # Rows a worker held when its connection died are reclaimed after this.
        KLAVIYO_LEASE_SECONDS="3",
    )
    if timeout is not None:
        env["KLAVIYO_TEST_TIMEOUT"] = str(timeout)
    return subprocess.Popen(
        [sys.executable, "manage.py", "klaviyo_flush", "--loop", *args],
        cwd=EXAMPLE_PROJECT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def sent(db_url: str) -> int:
    return outbox_state(db_url)["statuses"].get("sent", 0)


@contextlib.contextmanager
def stopped(worker: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.communicate(timeout=30)


class Relay:
    """A TCP relay to PostgreSQL that the test can cut (connections reset, new ones
    closed at once) and restore: the database seen from the worker goes away."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.open = True
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.open = False
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture
def relay() -> Iterator[Relay]:
    s = connection.settings_dict
    relay = Relay((s["HOST"] or "127.0.0.1", int(s["PORT"] or 5432)))
    yield relay
    relay.close()


def through(db_url: str, relay: Relay) -> str:
    parts = urlsplit(db_url)
    netloc = parts.netloc.rsplit("@", 1)[0] + f"@127.0.0.1:{relay.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_sigterm_stops_a_worker_within_one_request_timeout(database_url: str) -> None:  # noqa: F811
    """A batch of 30 slow requests (2 s each) is in hand; SIGTERM ends the worker after the
    request in flight, not after the batch."""
    seed_upserts = (
        "from django_klaviyo import upsert_profile\n"
        "for i in range(30): upsert_profile({'email': f'p{i}@example.com'})\n"
    )
    from tests.flush.test_reliability_processes import manage

    manage(database_url, "shell", "-c", seed_upserts)
    timeout = 3.0
    with SandboxServer(latency=2.0) as sandbox:
        worker = start_worker(database_url, sandbox.url, timeout=timeout)
        with stopped(worker):
            wait_for(
                lambda: "create_or_update_profile" in sandbox.state.request_counts(),
                60,
                "the first profile-import to arrive",
            )
            worker.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            # Exits once the request in flight is answered (or times out), plus shutdown.
            worker.wait(timeout=timeout + 10)
            took = time.monotonic() - signalled
            out, _ = worker.communicate(timeout=10)
    assert worker.returncode == 0
    assert "Stopped on request" in out
    assert took < timeout + 10
    statuses = outbox_state(database_url)["statuses"]
    assert statuses.get("sending", 0) == 0  # what was not sent went back, uncounted
    assert statuses.get("pending", 0) >= 20


def test_a_looping_worker_rides_out_a_database_outage_and_drains_afterwards(
    database_url: str,  # noqa: F811
    relay: Relay,
) -> None:
    expected = seed(database_url, 400, "outage")
    with SandboxServer(latency=0.05) as sandbox:
        worker = start_worker(
            through(database_url, relay), sandbox.url, "--batch-size", "20", "--idle-sleep", "0.2"
        )
        with stopped(worker):
            wait_for(lambda: sent(database_url) > 0, 60, "the worker to send something")
            relay.cut()
            # The worker says so (a log line), and keeps running.
            line = read_line(worker.stderr)
            while "unavailable" not in line and "went away" not in line:
                line = read_line(worker.stderr)
            assert worker.poll() is None
            relay.restore()
            wait_for(lambda: sent(database_url) == len(expected), 120, "the outbox to drain")
            assert worker.poll() is None, "the worker exited"
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
    assert worker.returncode == 0
    assert outbox_state(database_url)["sent"] == sorted(expected)


def test_a_looping_worker_survives_its_connections_being_terminated(
    database_url: str,  # noqa: F811
) -> None:
    """Each time the worker makes progress, its database connections are terminated
    (as a failover or an administrator would): it reconnects and drains the outbox.
    However fast the worker drains (a loaded machine changes how many batches pass between
    two looks), it is given more rows until its connections were cut three times."""
    expected = seed(database_url, 200, "terminated")
    terminations = refills = 0
    with SandboxServer(latency=0.3) as sandbox:
        worker = start_worker(
            database_url, sandbox.url, "--batch-size", "10", "--idle-sleep", "0.2"
        )
        with stopped(worker):
            while terminations < 3 or sent(database_url) < len(expected):
                before = sent(database_url)
                if before == len(expected):  # drained before three cuts: more work
                    refills += 1
                    expected += seed(database_url, 50, f"terminated-more-{refills}")
                wait_for(
                    lambda b=before: sent(database_url) > b or worker.poll() is not None,
                    60,
                    "progress",
                )
                assert worker.poll() is None, "the worker exited"
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                    terminations += cursor.fetchone()[0]
            assert worker.poll() is None, "the worker exited"
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
    assert terminations >= 3
    assert worker.returncode == 0
    assert outbox_state(database_url)["statuses"] == {"sent": len(expected)}


def test_max_outage_makes_the_worker_exit_non_zero(
    database_url: str,  # noqa: F811
    relay: Relay,
) -> None:
    seed(database_url, 10, "short")
    with SandboxServer() as sandbox:
        worker = start_worker(
            through(database_url, relay), sandbox.url, "--max-outage", "2", "--idle-sleep", "0.2"
        )
        with stopped(worker):
            wait_for(lambda: sent(database_url) == 10, 60, "the worker to drain")
            relay.cut()
            worker.wait(timeout=90)
            _, err = worker.communicate(timeout=10)
    assert worker.returncode == 3
    assert "--max-outage" in err
