"""Reliability across processes: flushers killed with SIGKILL, and four flushers at once.

Each flusher is the example project's ``manage.py klaviyo_flush``, run with the current
interpreter against a database on disk that the test also reads: a SQLite file made for
the test, or (on PostgreSQL) pytest-django's test database with committed data
(``transactional_db``). The sandbox runs in the test process; the flushers reach it over
HTTP through ``KLAVIYO_API_URL``.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection

from django_klaviyo.testing.sandbox import SandboxServer

EXAMPLE_PROJECT = Path(__file__).resolve().parents[2] / "example_project"
# Short, so the kill test's orphaned rows are reclaimed quickly.
LEASE_SECONDS = 1
# Longer than any batch on a loaded machine: where a test is about row locks, not about
# reclaiming, an expired lease would let a second worker re-send a slow worker's rows.
LONG_LEASE_SECONDS = 600
SUMMARY = re.compile(r"Sent (\d+), retrying (\d+), dead (\d+)")

# Run inside ``manage.py shell -c``: the subprocess reads and writes the same database.
SEED_SCRIPT = """
from django.db import transaction
from django_klaviyo.outbox import build_event, enqueue_many
count, prefix = {count}, {prefix!r}
rows = [
    build_event(
        metric="Placed Order",
        profile={{"email": f"customer{{i % 500}}@example.com"}},
        properties={{"OrderId": f"{{prefix}}-{{i}}"}},
        value=10.0,
        value_currency="USD",
        unique_id=f"{{prefix}}-{{i}}",
    )
    for i in range(count)
]
with transaction.atomic():
    for start in range(0, count, 2000):
        enqueue_many(rows[start : start + 2000])
"""

STATE_SCRIPT = """
import json
from collections import Counter
from django_klaviyo.models import OutboxEvent
rows = OutboxEvent.objects.values_list("unique_id", "status")
print(json.dumps({"statuses": dict(Counter(s for _, s in rows)),
                  "sent": sorted(u for u, s in rows if s == "sent")}))
"""


def manage(
    database_url: str, *args: str, api_url: str = "http://127.0.0.1:9", check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE_PROJECT,
        env=flusher_env(database_url, api_url),
        capture_output=True,
        text=True,
        timeout=120,
        check=check,
    )


def flusher_env(
    database_url: str, api_url: str, lease_seconds: int = LEASE_SECONDS
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAVIYO_")}
    env.update(
        DATABASE_URL=database_url,
        KLAVIYO_API_URL=api_url,
        KLAVIYO_LEASE_SECONDS=str(lease_seconds),
        KLAVIYO_LOG_LEVEL="ERROR",
        DJANGO_SETTINGS_MODULE="shop_site.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_flusher(
    database_url: str, api_url: str, *args: str, lease_seconds: int = LEASE_SECONDS
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "klaviyo_flush", *args],
        cwd=EXAMPLE_PROJECT,
        env=flusher_env(database_url, api_url, lease_seconds),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A DATABASE_URL that subprocesses share with this test (marked
    ``django_db(transaction=True)``, so that on PostgreSQL their commits are seen and
    cleaned up)."""
    if connection.vendor == "postgresql":
        s = connection.settings_dict
        user = quote(s["USER"] or "", safe="")
        password = quote(s["PASSWORD"] or "", safe="")
        return f"postgres://{user}:{password}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
    url = f"sqlite:///{tmp_path / 'outbox.sqlite3'}"
    manage(url, "migrate", "--no-input", "-v", "0")
    return url


@pytest.fixture
def sandbox() -> Iterator[SandboxServer]:
    # Short rate windows; a little latency so that a flush lasts long enough to be killed.
    with SandboxServer(time_scale=0.05, latency=0.02) as server:
        yield server


def seed(database_url: str, count: int, prefix: str) -> list[str]:
    manage(database_url, "shell", "-c", SEED_SCRIPT.format(count=count, prefix=prefix))
    return [f"{prefix}-{i}" for i in range(count)]


def outbox_state(database_url: str) -> dict[str, Any]:
    # The last line: Django 5.2's shell may first report its automatic imports.
    return json.loads(manage(database_url, "shell", "-c", STATE_SCRIPT).stdout.splitlines()[-1])


def bulk_requests_seen(sandbox: SandboxServer) -> int:
    return sum(sandbox.state.request_counts().get("bulk_create_events", {}).values())


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_flushers_killed_at_random_moments_lose_nothing_and_repeat_only_by_unique_id(
    database_url: str, sandbox: SandboxServer
) -> None:
    expected = seed(database_url, 6_000, "kill")
    rng = random.Random(9)
    left_sending = []

    for _ in range(5):
        before = bulk_requests_seen(sandbox)
        flusher = start_flusher(database_url, sandbox.url, "--batch-size", "200")
        deadline = time.monotonic() + 30
        # Kill only once it is flushing (a request reached the sandbox), at a random moment.
        while bulk_requests_seen(sandbox) == before and flusher.poll() is None:
            assert time.monotonic() < deadline, "the flusher never sent anything"
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        flusher.send_signal(signal.SIGKILL)
        flusher.communicate(timeout=30)
        killed_at = time.monotonic()
        left_sending.append(outbox_state(database_url)["statuses"].get("sending", 0))

    assert any(left_sending), "no kill landed while rows were claimed"
    # The last victim's rows are reclaimed only once its lease is over.
    time.sleep(max(0.0, LEASE_SECONDS + 0.2 - (time.monotonic() - killed_at)))
    done = manage(database_url, "klaviyo_flush", api_url=sandbox.url)
    assert "dead 0" in done.stdout, done.stdout + done.stderr

    state = outbox_state(database_url)
    assert state["statuses"] == {"sent": len(expected)}
    assert state["sent"] == sorted(expected)
    accepted = Counter(e["unique_id"] for e in sandbox.state.events())
    assert set(accepted) == set(expected)  # nothing lost
    assert max(accepted.values()) == 1  # every repeat was recognised by its unique_id


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_four_concurrent_flushers_never_claim_a_row_twice(
    database_url: str, sandbox: SandboxServer
) -> None:
    expected = seed(database_url, 20_000, "four")

    flushers = [
        start_flusher(
            database_url, sandbox.url, "--batch-size", "500", lease_seconds=LONG_LEASE_SECONDS
        )
        for _ in range(4)
    ]
    outputs = [flusher.communicate(timeout=300) for flusher in flushers]

    sent_by_flusher = []
    for flusher, (stdout, stderr) in zip(flushers, outputs):
        assert flusher.returncode == 0, stderr
        match = SUMMARY.search(stdout)
        assert match, stdout + stderr
        sent, retrying, dead = map(int, match.groups())
        assert (retrying, dead) == (0, 0), stdout
        sent_by_flusher.append(sent)
    assert sum(sent_by_flusher) == len(expected)
    assert sum(1 for n in sent_by_flusher if n) >= 2, "the flushers did not run side by side"
    state = outbox_state(database_url)
    assert state["statuses"] == {"sent": len(expected)}
    accepted = Counter(e["unique_id"] for e in sandbox.state.events())
    assert set(accepted) == set(expected)
    # A row claimed twice would have been sent twice: the sandbox would count a repeat.
    assert sandbox.state.duplicate_events == 0
    assert set(sandbox.state.request_counts()["bulk_create_events"]) == {202}
