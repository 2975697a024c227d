"""The outbox's hand-written INSERT (django_klaviyo.outbox.insert): it sends what the ORM
would, for one row or many, in chunks, and the bulk_create fallback writes the same rows."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.test import override_settings
from django.utils import timezone

from django_klaviyo import outbox
from django_klaviyo.models import OutboxEvent
from django_klaviyo.outbox import insert
from django_klaviyo.signals import outbox_ready

PROFILE = {"email": "ada@example.com"}
FIELDS = OutboxEvent._meta.concrete_fields


def event_row(n: int, *, dedupe_key: str | None = None) -> outbox.OutboxRow:
    return outbox.build_event(
        metric="Viewed Page",
        profile=PROFILE,
        properties={"Page": f"/p/{n}", "Price": 9.5},
        unique_id=f"u-{n}",
        dedupe_key=dedupe_key,
    )


class Inserts:
    """The outbox INSERTs a block runs: their SQL and parameters."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list]] = []

    def __call__(self, execute, sql, params, many, context):
        if "INSERT" in sql and OutboxEvent._meta.db_table in sql:
            self.calls.append((sql, list(params)))
        return execute(sql, params, many, context)

    def rows(self) -> list[list]:
        """Every inserted row's parameters, in column order."""
        width = len(FIELDS)
        params = [p for _, call in self.calls for p in call]
        return [params[i : i + width] for i in range(0, len(params), width)]


def column(name: str) -> int:
    return FIELDS.index(OutboxEvent._meta.get_field(name))


def orm_parameters(obj: OutboxEvent) -> list:
    """What the ORM sends for ``obj``: each field's get_db_prep_save, the payload as the
    writer's JSON text."""
    return [
        outbox._encode(obj.payload)
        if f.attname == "payload"
        else f.get_db_prep_save(getattr(obj, f.attname), connection)
        for f in FIELDS
    ]


@pytest.mark.django_db
def test_the_insert_sends_each_fields_prepared_value():
    inserts = Inserts()
    rows = [event_row(1, dedupe_key="k-1"), event_row(2)]
    with connection.execute_wrapper(inserts):
        written = outbox.enqueue_many(rows, account="eu")
    assert len(inserts.calls) == 1
    assert inserts.rows() == [orm_parameters(obj) for obj in written]
    # The id as UUIDField sends a UUID (hex digits on SQLite), the timestamps as
    # DateTimeField sends the call's time, the kind as the builder gave it.
    sent = inserts.rows()[0]
    id_field = OutboxEvent._meta.pk
    assert sent[0] == id_field.get_db_prep_save(written[0].pk, connection)
    assert type(sent[0]) is type(id_field.get_db_prep_save(uuid.uuid4(), connection))
    assert sent[column("kind")] is rows[0].kind


@pytest.mark.django_db
def test_rows_written_without_instances_send_what_their_stored_rows_hold():
    inserts = Inserts()
    with connection.execute_wrapper(inserts):
        assert outbox.enqueue_rows([event_row(1, dedupe_key="k-1"), event_row(2)]) == 2
    stored = {obj.unique_id: obj for obj in OutboxEvent.objects.all()}
    sent = {row[column("unique_id")]: row for row in inserts.rows()}
    expected = {key: orm_parameters(obj) for key, obj in stored.items()}
    for row in (*sent.values(), *expected.values()):
        # PostgreSQL gives jsonb back in its own key order.
        row[column("payload")] = json.loads(row[column("payload")])
    assert sent == expected
    assert stored["u-1"].created_at == stored["u-1"].updated_at == stored["u-1"].next_attempt_at


@pytest.mark.django_db
@pytest.mark.parametrize(
    "now",
    [
        timezone.now(),
        timezone.now().replace(microsecond=0),  # str() leaves the fraction out
        dt.datetime(2026, 7, 20, 14, 0, 5, 12, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    ],
)
def test_the_prepared_timestamp_is_the_fields(now):
    field = OutboxEvent._meta.get_field("created_at")
    assert insert.prepared_timestamp(now, connection) == field.get_db_prep_save(now, connection)


@pytest.mark.django_db
def test_the_prepared_timestamp_is_the_fields_without_time_zones():
    field = OutboxEvent._meta.get_field("created_at")
    with override_settings(USE_TZ=False):
        now = timezone.now()
        assert now.tzinfo is None
        prepared = insert.prepared_timestamp(now, connection)
        assert prepared == field.get_db_prep_save(now, connection)


@pytest.mark.django_db
def test_the_prepared_timestamp_is_the_fields_in_a_database_time_zone():
    # DATABASES[...]["TIME_ZONE"]: the SQLite adapter converts into it.
    field = OutboxEvent._meta.get_field("created_at")
    now = timezone.now()
    wrapper = connections[DEFAULT_DB_ALIAS]
    saved = wrapper.settings_dict["TIME_ZONE"]
    wrapper.settings_dict["TIME_ZONE"] = "Asia/Kolkata"
    wrapper.__dict__.pop("timezone", None)  # a cached_property
    try:
        assert str(wrapper.timezone) == "Asia/Kolkata"
        prepared = insert.prepared_timestamp(now, wrapper)
        assert prepared == field.get_db_prep_save(now, wrapper)
    finally:
        wrapper.settings_dict["TIME_ZONE"] = saved
        wrapper.__dict__.pop("timezone", None)


@pytest.fixture
def two_rows_per_insert(monkeypatch):
    monkeypatch.setattr(insert, "MAX_ROWS_PER_INSERT", 2)


@pytest.mark.django_db
def test_many_rows_go_in_chunks_of_one_insert_each(two_rows_per_insert):
    outbox.enqueue_many([event_row(0, dedupe_key="k-0")])  # already stored: not inserted
    inserts = Inserts()
    rows = [event_row(n, dedupe_key=f"k-{n}") for n in range(5)] + [event_row(5)]
    with connection.execute_wrapper(inserts):
        written = outbox.enqueue_many(rows)
    assert [len(params) // len(FIELDS) for _, params in inserts.calls] == [2, 2, 2]
    assert all("ON CONFLICT" in sql for sql, _ in inserts.calls)
    sent = inserts.rows()
    assert sent[1:] == [orm_parameters(obj) for obj in written[1:]]
    # The row already holding k-0 is handed back in place of the one not inserted.
    assert sent[0][column("dedupe_key")] == "k-0"
    assert (
        written[0].unique_id == "u-0"
        and written[0].pk == OutboxEvent.objects.get(dedupe_key="k-0").pk
    )
    assert [obj.unique_id for obj in written] == [f"u-{n}" for n in range(6)]
    assert OutboxEvent.objects.count() == 6
    ids = [obj.pk for obj in written[1:]]
    assert ids == sorted(ids)  # rows of one call keep their order


@pytest.mark.django_db(transaction=True)
def test_chunks_outside_a_transaction_go_in_one_and_hint_once(two_rows_per_insert):
    hints: list[dict] = []

    def receiver(sender, **kwargs):
        hints.append(kwargs)

    outbox_ready.connect(receiver, dispatch_uid="test_insert_chunks")
    try:
        assert outbox.enqueue_rows([event_row(n, dedupe_key=f"k-{n}") for n in range(5)]) == 5
    finally:
        outbox_ready.disconnect(dispatch_uid="test_insert_chunks")
    assert OutboxEvent.objects.count() == 5
    assert [(h["count"], h["kinds"]) for h in hints] == [(5, frozenset({"event"}))]


@pytest.mark.django_db
def test_the_bulk_create_fallback_writes_the_same_rows(monkeypatch):
    # SQLite before 3.24 has no ON CONFLICT: the writer falls back to bulk_create.
    columns = ("kind", "payload", "metric", "unique_id", "dedupe_key", "profile_key")
    columns += ("rules_version", "account", "status", "attempts", "outcome_note")
    rows = [event_row(1, dedupe_key="k-1"), event_row(2)]
    outbox.enqueue_many(rows, account="eu")
    fast = list(OutboxEvent.objects.order_by("pk").values(*columns))
    OutboxEvent.objects.all().delete()
    monkeypatch.setattr(outbox, "supports_fast_insert", lambda connection: False)
    written = outbox.enqueue_many([*rows, event_row(3, dedupe_key="k-1")], account="eu")
    assert [obj.unique_id for obj in written] == ["u-1", "u-2"]
    assert list(OutboxEvent.objects.order_by("pk").values(*columns)) == fast
    assert outbox.enqueue_rows([event_row(4, dedupe_key="k-1")], account="eu") == 1
    assert OutboxEvent.objects.count() == 2


@pytest.fixture
def callable_outcome_note(monkeypatch):
    """outcome_note as a column added later with a default made per row."""
    field = OutboxEvent._meta.get_field("outcome_note")
    notes = (f"note {n}" for n in range(100))
    monkeypatch.setattr(field, "default", lambda: next(notes))
    monkeypatch.setattr(insert, "_LAYOUT", None)
    field.__dict__.pop("_get_default", None)  # Field caches how it makes its default
    yield
    field.__dict__.pop("_get_default", None)
    insert._LAYOUT = None


@pytest.mark.django_db
def test_a_column_the_writer_does_not_set_takes_its_default_per_row(callable_outcome_note):
    assert insert.layout().made_per_row == (OutboxEvent._meta.get_field("outcome_note"),)
    outbox.enqueue_rows([event_row(1), event_row(2)])
    assert sorted(OutboxEvent.objects.values_list("outcome_note", flat=True)) == [
        "note 0",
        "note 1",
    ]
    # With instances, the instance and its row hold the same default.
    written = outbox.enqueue_many([event_row(3)])
    assert OutboxEvent.objects.get(pk=written[0].pk).outcome_note == written[0].outcome_note
    assert written[0].outcome_note == "note 2"
