"""Task-queue mode: outbox_ready enqueues a debounced flush task on the project's task
backend, and a real worker (django-tasks-db's ``db_worker``) drains the outbox."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import caches
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from django_klaviyo import api
from django_klaviyo.models import OutboxEvent
from django_klaviyo.outbox import task_queue, tasks
from django_klaviyo.outbox.tasks import flush_outbox_task
from django_klaviyo.testing.sandbox import SandboxServer
from tests.flush.test_reliability_processes import EXAMPLE_PROJECT, flusher_env

ROOT = Path(__file__).resolve().parents[2]


def klaviyo(**overrides: object) -> override_settings:
    return override_settings(KLAVIYO={**settings.KLAVIYO, **overrides})


@pytest.fixture
def dummy_backend() -> Iterator[object]:
    backend = flush_outbox_task.using(backend="default").get_backend()
    backend.clear()
    caches["default"].delete(task_queue.DEBOUNCE_KEY)
    yield backend
    backend.clear()
    caches["default"].delete(task_queue.DEBOUNCE_KEY)


def write_row(email: str) -> None:
    with transaction.atomic():
        api.track("Viewed Product", {"email": email})


@pytest.mark.django_db(transaction=True)
def test_without_the_setting_writing_rows_enqueues_no_task(dummy_backend):
    write_row("a@example.com")
    assert dummy_backend.results == []


@pytest.mark.django_db(transaction=True)
def test_a_committed_write_enqueues_one_deferred_flush_task_per_debounce_window(dummy_backend):
    with klaviyo(FLUSH_TASK_BACKEND="default", FLUSH_TASK_DEBOUNCE_SECONDS=60):
        write_row("a@example.com")
        write_row("b@example.com")  # same window: no second task
        (result,) = dummy_backend.results
        assert result.task.func is flush_outbox_task.func
        assert result.task.run_after is not None  # runs when the window closes
        caches["default"].delete(task_queue.DEBOUNCE_KEY)  # the window ends
        write_row("c@example.com")
    assert len(dummy_backend.results) == 2


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_write_enqueues_nothing(dummy_backend):
    def failed_order() -> None:
        with transaction.atomic():
            api.track("Viewed Product", {"email": "a@example.com"})
            raise RuntimeError("the order failed")

    with klaviyo(FLUSH_TASK_BACKEND="default"), pytest.raises(RuntimeError):
        failed_order()
    assert dummy_backend.results == []


@pytest.mark.django_db(transaction=True)
def test_a_broken_task_backend_never_breaks_the_stores_save(dummy_backend, caplog):
    with klaviyo(FLUSH_TASK_BACKEND="no-such-backend"):
        write_row("a@example.com")
    assert "could not enqueue the flush task" in caplog.text
    assert OutboxEvent.objects.count() == 1  # the row is there for the periodic flush


# --- recovery after a worker killed mid-task ------------------------------------------------


@pytest.fixture
def no_pending_recovery() -> Iterator[None]:
    caches["default"].delete(tasks.RECOVERY_KEY)
    yield
    caches["default"].delete(tasks.RECOVERY_KEY)


def recoveries(backend: Any) -> list[Any]:
    return [r for r in backend.results if r.kwargs.get("recovery")]


@pytest.mark.django_db(transaction=True)
def test_a_flush_task_schedules_its_own_recovery_for_when_its_lease_would_end(
    dummy_backend, no_pending_recovery
):
    """Killed while it holds rows, a task leaves them leased for LEASE_SECONDS: a recovery
    flush is already waiting for that moment, and one is enough for many tasks."""
    with klaviyo(FLUSH_TASK_BACKEND="default", LEASE_SECONDS=300):
        before = timezone.now()
        flush_outbox_task.call()
        flush_outbox_task.call()  # a second task of the same window adds none
        (recovery,) = recoveries(dummy_backend)
        assert recovery.task.func is flush_outbox_task.func
        lease = dt.timedelta(seconds=300)
        assert (
            before + lease
            < recovery.task.run_after
            <= timezone.now() + lease + dt.timedelta(seconds=tasks.RECOVERY_MARGIN_SECONDS)
        )
        # The recovery run itself schedules nothing when no row is leased: an idle shop
        # runs no task.
        flush_outbox_task.call(**recovery.kwargs)
    assert len(recoveries(dummy_backend)) == 1


@pytest.mark.django_db(transaction=True)
def test_rows_a_killed_task_left_leased_are_flushed_when_the_lease_expires(
    dummy_backend, no_pending_recovery, klaviyo_sandbox
):
    """A worker killed mid-task leaves its rows ``sending`` (and its task RUNNING): the
    next flush sees them and schedules a recovery for the minute their lease ends, which
    reclaims and sends them, as a second ``klaviyo_flush --loop`` would."""
    write_row("left@example.com")
    taken = timezone.now() - dt.timedelta(seconds=100)
    OutboxEvent.objects.update(
        status=OutboxEvent.Status.SENDING, locked_at=taken, locked_by="killed-worker/1"
    )
    with klaviyo(FLUSH_TASK_BACKEND="default", LEASE_SECONDS=300):
        flush_outbox_task.call()  # another task: the row is still leased
        assert OutboxEvent.objects.get().status == OutboxEvent.Status.SENDING
        expiry = taken + dt.timedelta(seconds=300 + tasks.RECOVERY_MARGIN_SECONDS)
        (recovery,) = [r for r in recoveries(dummy_backend) if r.task.run_after == expiry]

        # The recovery runs when the lease has expired.
        OutboxEvent.objects.update(locked_at=taken - dt.timedelta(seconds=200))
        flush_outbox_task.call(**recovery.kwargs)
    assert OutboxEvent.objects.get().status == OutboxEvent.Status.SENT
    assert len(klaviyo_sandbox.state.events("Viewed Product")) == 1


# --- end to end: a real worker process ------------------------------------------------------

PLACE_ORDERS = """
from decimal import Decimal
from shop import services
for i in range({count}):
    services.place_order(email=f"buyer{{i}}@example.com",
                         lines=[{{"sku": "TEE", "name": "Tee", "unit_price": Decimal("5")}}])
"""


DB_WORKER = [sys.executable, "manage.py", "db_worker", "--interval", "0.2", "--no-startup-delay"]


def task_env(database_url: str, api_url: str) -> dict[str, str]:
    env = flusher_env(database_url, api_url)
    env["DJANGO_SETTINGS_MODULE"] = "tests.projects.task_settings"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(EXAMPLE_PROJECT)])
    return env


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=EXAMPLE_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    if connection.vendor == "postgresql":
        s = connection.settings_dict
        return f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}"
    return f"sqlite:///{tmp_path / 'shop.sqlite3'}"


@pytest.mark.django_db(transaction=True)
def test_a_db_worker_drains_the_outbox_into_the_sandbox(database_url):
    with SandboxServer(time_scale=0.05) as sandbox:
        env = task_env(database_url, sandbox.url)
        if database_url.startswith("sqlite"):
            manage(env, "migrate", "--no-input", "-v", "0")
        worker = subprocess.Popen(
            # --no-reload: under DEBUG the autoreloader would run the worker in a child
            # process that outlives the one the test stops.
            [*DB_WORKER, "--no-reload"],
            cwd=EXAMPLE_PROJECT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # A separate process is the store: its commits enqueue the flush tasks.
            manage(env, "shell", "-c", PLACE_ORDERS.format(count=5))
            deadline = time.monotonic() + 120
            while len(sandbox.state.events("Placed Order")) < 5:
                assert worker.poll() is None, worker.stderr.read()
                assert time.monotonic() < deadline, "the worker did not drain the outbox"
                time.sleep(0.2)
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait(timeout=30)
        placed = sandbox.state.events("Placed Order")
        assert len({e["profile_id"] for e in placed}) == 5
        assert sandbox.state.duplicate_events == 0
        state = manage(env, "klaviyo_status", "--json", "--max-dead", "0")
        assert '"due": 0' in state.stdout and '"dead": 0' in state.stdout


# One transaction: one outbox_ready, so one flush task, the one the test kills.
PLACE_ORDERS_AT_ONCE = "from django.db import transaction\nwith transaction.atomic():\n" + "".join(
    f"    {line}\n" for line in PLACE_ORDERS.strip().splitlines()
)

COUNT_SENDING = (
    "from django_klaviyo.models import OutboxEvent; "
    "print(OutboxEvent.objects.filter(status='sending').count())"
)


def count(env: dict[str, str], code: str) -> int:
    """A number the example shop's shell prints (its last line)."""
    return int(manage(env, "shell", "-c", code).stdout.strip().splitlines()[-1])


COUNT_UNSENT = (
    "from django_klaviyo.models import OutboxEvent; "
    "print(OutboxEvent.objects.exclude(status='sent').count())"
)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_db_worker_killed_mid_task_is_recovered_from_by_another(database_url):
    """SIGKILL while the flush task waits on Klaviyo: its task stays RUNNING and its rows
    ``sending``; a second worker, with no new row written, sends them once the lease ends
    (1 s here), as a second ``klaviyo_flush --loop`` would."""
    with SandboxServer(time_scale=0.05, latency=60.0) as sandbox:
        env = task_env(database_url, sandbox.url)
        if database_url.startswith("sqlite"):
            manage(env, "migrate", "--no-input", "-v", "0")
        command = [*DB_WORKER, "--no-reload"]  # the worker itself, not an autoreloader
        first = subprocess.Popen(command, cwd=EXAMPLE_PROJECT, env=env, stderr=subprocess.PIPE)
        second = None
        try:
            manage(env, "shell", "-c", PLACE_ORDERS_AT_ONCE.format(count=3))
            deadline = time.monotonic() + 60
            while count(env, COUNT_SENDING) == 0:
                assert first.poll() is None, first.stderr.read() if first.stderr else ""
                assert time.monotonic() < deadline, "the first worker never claimed the rows"
                time.sleep(0.2)
            first.kill()  # mid-request: Klaviyo is slow to answer
            first.wait(timeout=30)
            sandbox.latency = 0.0
            second = subprocess.Popen(
                command, cwd=EXAMPLE_PROJECT, env=env, stderr=subprocess.PIPE, text=True
            )
            deadline = time.monotonic() + 90
            while count(env, COUNT_UNSENT):
                assert second.poll() is None, second.stderr.read() if second.stderr else ""
                assert time.monotonic() < deadline, "nothing recovered the killed task's rows"
                time.sleep(0.2)
        finally:
            for worker in (first, second):
                if worker is not None and worker.poll() is None:
                    worker.terminate()
                    try:
                        worker.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        worker.kill()
                        worker.wait(timeout=30)
        state = manage(env, "klaviyo_status", "--json", "--max-dead", "0")
        assert '"due": 0' in state.stdout and '"dead": 0' in state.stdout
