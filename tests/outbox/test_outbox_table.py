"""The outbox table: a time-ordered primary key, and the indexes an INSERT pays for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection

from django_klaviyo.models import OutboxEvent
from django_klaviyo.models import outbox as outbox_model
from django_klaviyo.models.outbox import new_outbox_id


def test_ids_are_uuid_version_7_carrying_the_current_millisecond():
    before = time.time_ns() // 1_000_000
    made = new_outbox_id()
    after = time.time_ns() // 1_000_000
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert before <= made.int >> 80 <= after


def test_ids_made_in_one_process_strictly_increase_even_within_a_millisecond():
    ids = [new_outbox_id() for _ in range(20_000)]  # many share a millisecond
    assert len({i.int >> 80 for i in ids}) < len(ids)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_ids_count_on_into_the_next_millisecond(monkeypatch):
    # The last id used every random bit of its millisecond, far ahead of the clock.
    millis = time.time_ns() // 1_000_000 + 60_000
    monkeypatch.setattr(outbox_model, "_last", millis << 74 | (1 << 74) - 1)
    made = outbox_model.new_outbox_id()
    assert made.int >> 80 == millis + 1
    assert made.int & (0xFFF << 64 | (1 << 62) - 1) == 0  # rand_a and rand_b
    assert made.version == 7 and made.variant == uuid.RFC_4122
    assert outbox_model.new_outbox_id().int == made.int + 1


# Forked in a fresh interpreter: the test process runs threads (sandbox servers), and
# forking a multi-threaded process can deadlock the child (Python 3.12+ warns).
FORK_SCRIPT = """
import os, django
django.setup()
from django_klaviyo.models import outbox
outbox._draws.clear()
outbox.new_outbox_id()
assert outbox._draws  # the parent holds draws for its next ids
read, write = os.pipe()
pid = os.fork()
if pid == 0:  # the child: reports whether it inherited any draw
    os.write(write, b"none" if not outbox._draws else b"some")
    os._exit(0)
os.waitpid(pid, 0)
print(os.read(read, 4).decode())
"""


def test_a_forked_child_draws_its_own_random_parts():
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.projects.settings",
        "PYTHONPATH": os.pathsep.join([str(root), str(root / "example_project")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", FORK_SCRIPT], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"


@pytest.mark.django_db
def test_rows_sort_by_primary_key_in_the_order_they_were_written():
    rows = [
        OutboxEvent.objects.create(
            kind=OutboxEvent.Kind.EVENT,
            metric="Viewed",
            payload={"metric": "Viewed", "profile": {"email": f"c{n}@example.com"}},
            profile_key=f"email:c{n}@example.com",
        )
        for n in range(5)
    ]
    assert list(OutboxEvent.objects.order_by("-pk")) == rows[::-1]


@pytest.mark.django_db
def test_a_new_row_enters_only_the_key_dedupe_profile_and_due_indexes():
    # Every other index is partial on a state a new (pending) row is not in: adding a full
    # index makes every tracked save dearer, so it needs a query (and this test) to change.
    table = OutboxEvent._meta.db_table
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    partial = {
        index.name: index.condition for index in OutboxEvent._meta.indexes if index.condition
    }
    full = {
        tuple(info["columns"])
        for name, info in constraints.items()
        if (info["index"] or info["unique"] or info["primary_key"]) and name not in partial
    }
    assert full == {("id",), ("dedupe_key",), ("profile_key",)}
    assert set(partial) == {
        "klaviyo_outbox_due",
        "klaviyo_outbox_leased",
        "klaviyo_outbox_failing",
        "klaviyo_outbox_sent",
    }
    # Only "due" holds pending rows.
    new_row = OutboxEvent(status=OutboxEvent.Status.PENDING)
    holding = [
        name
        for name, condition in partial.items()
        if new_row.status in dict(condition.children).get("status__in", [])
        or dict(condition.children).get("status") == new_row.status
    ]
    assert holding == ["klaviyo_outbox_due"]
