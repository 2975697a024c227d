"""The outbox writer: one INSERT in the caller's transaction, dedupe, validation, hint."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.transaction import TransactionManagementError
from django.test import override_settings

from django_klaviyo import outbox
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.signals import outbox_ready

PROFILE = {"email": "ada@example.com"}


def klaviyo(**overrides: object) -> override_settings:
    return override_settings(KLAVIYO={**settings.KLAVIYO, **overrides})


def event_payload(**extra: object) -> dict:
    return {"metric": "Viewed Page", "profile": PROFILE, "properties": {}, **extra}


@pytest.fixture
def ready_calls():
    calls: list[dict] = []

    def receiver(sender, **kwargs):
        calls.append(kwargs)

    outbox_ready.connect(receiver, dispatch_uid="test_outbox_ready")
    yield calls
    outbox_ready.disconnect(dispatch_uid="test_outbox_ready")


@pytest.mark.django_db
def test_enqueue_writes_a_row_with_profile_key_and_metric():
    row = outbox.enqueue("event", event_payload(), unique_id="u-1", metric="Viewed Page")

    stored = OutboxEvent.objects.get()
    assert stored.pk == row.pk
    assert stored.kind == "event"
    assert stored.metric == "Viewed Page"
    assert stored.unique_id == "u-1"
    assert stored.profile_key == "email:ada@example.com"
    assert stored.status == OutboxEvent.Status.PENDING
    assert stored.dedupe_key is None


@pytest.mark.django_db
def test_enqueue_many_writes_every_row_in_one_insert(django_assert_num_queries):
    rows = [
        outbox.OutboxRow(kind="event", payload=event_payload(), unique_id=f"u-{i}", dedupe_key=k)
        for i, k in enumerate(["a", "b", None])
    ]
    with django_assert_num_queries(1):
        written = outbox.enqueue_many(rows)
    assert len(written) == 3
    assert OutboxEvent.objects.count() == 3


@pytest.mark.django_db
def test_repeated_dedupe_key_keeps_the_first_row_within_and_across_calls():
    first = outbox.OutboxRow(kind="event", payload=event_payload(), unique_id="1", dedupe_key="k")
    again = outbox.OutboxRow(kind="event", payload=event_payload(), unique_id="2", dedupe_key="k")
    outbox.enqueue_many([first, again])
    outbox.enqueue_many([again])
    outbox.enqueue("event", event_payload(), unique_id="3", dedupe_key="k")

    assert list(OutboxEvent.objects.values_list("unique_id", flat=True)) == ["1"]


@pytest.mark.django_db
def test_payload_is_stored_as_plain_json():
    when = dt.datetime(2026, 7, 20, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    token = uuid.UUID("12345678-1234-5678-1234-567812345678")
    outbox.enqueue(
        "event",
        event_payload(
            properties={"Price": Decimal("9.99"), "At": when, "Ref": token, "Tags": ("a", "b")}
        ),
    )
    assert OutboxEvent.objects.get().payload["properties"] == {
        "Price": 9.99,
        "At": "2026-07-20T12:00:00+00:00",
        "Ref": "12345678-1234-5678-1234-567812345678",
        "Tags": ["a", "b"],
    }


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (event_payload(properties={"Tags": {"a"}}), "properties.Tags"),
        (event_payload(properties={"Obj": object()}), "properties.Obj"),
        (event_payload(properties={"Bad": float("nan")}), "properties.Bad"),
        (event_payload(properties={1: "x"}), "properties"),
        ({"metric": "X", "profile": {}}, "profile"),
        ({"metric": "X"}, "profile"),
        ("not a dict", "payload"),
    ],
)
def test_bad_payloads_are_rejected_naming_the_field(payload, field):
    with pytest.raises(KlaviyoValidationError) as info:
        outbox.enqueue("event", payload)
    assert info.value.field == field
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_unknown_kind_and_oversized_keys_are_rejected():
    with pytest.raises(KlaviyoValidationError) as info:
        outbox.enqueue("telepathy", event_payload())
    assert info.value.field == "kind"
    with pytest.raises(KlaviyoValidationError) as info:
        outbox.enqueue("event", event_payload(), dedupe_key="k" * 256)
    assert info.value.field == "dedupe_key"
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_disabled_writes_nothing():
    with klaviyo(ENABLED=False):
        assert outbox.enqueue("event", event_payload()) is None
        assert outbox.enqueue_many([outbox.OutboxRow("event", event_payload())]) == []
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_rolled_back_transaction_leaves_no_row_and_sends_no_hint(ready_calls):
    with pytest.raises(RuntimeError), transaction.atomic():
        outbox.enqueue("event", event_payload())
        raise RuntimeError("checkout failed")
    assert not OutboxEvent.objects.exists()
    assert ready_calls == []


@pytest.mark.django_db(transaction=True)
def test_committed_transaction_keeps_the_row_and_hints_after_commit(ready_calls):
    with transaction.atomic():
        outbox.enqueue_many(
            [
                outbox.OutboxRow("event", event_payload()),
                outbox.OutboxRow("profile_upsert", {"profile": PROFILE}),
            ]
        )
        # The hint waits for the commit: a worker woken now could not see the rows.
        assert ready_calls == []
    assert OutboxEvent.objects.count() == 2
    assert ready_calls == [
        {"signal": outbox_ready, "count": 2, "kinds": {"event", "profile_upsert"}}
    ]


def test_to_json_limits_nesting_depth():
    deep: dict = {}
    node = deep
    for _ in range(12):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(KlaviyoValidationError, match="nested"):
        outbox.to_json(deep, "properties")


@pytest.mark.parametrize("leaf", [[], [1], {}])
def test_to_json_limits_nesting_depth_down_to_an_empty_list(leaf):
    # The walk passes an empty list without a call of its own: the depth still counts.
    node = deep = {}
    for _ in range(10):
        node["x"] = {}
        node = node["x"]
    node["x"] = leaf
    with pytest.raises(KlaviyoValidationError, match="nested"):
        outbox.to_json(deep, "properties")
    assert outbox.to_json({"a": {"b": []}}, "properties") == {"a": {"b": []}}


def test_expand_events_are_cleaned_like_the_row_itself():
    row = outbox.build_event(
        metric="Placed Order",
        profile=PROFILE,
        unique_id="o-1",
        expand=[
            {"metric": " Ordered Product ", "unique_id": "o-1-l-1", "properties": None},
            {
                "metric": "Ordered Product",
                "unique_id": "o-1-l-2",
                "properties": {"Price": Decimal("2.50")},
                "value": Decimal("2.50"),
            },
        ],
    )
    assert row.payload["expand"] == [
        {"metric": "Ordered Product", "unique_id": "o-1-l-1", "properties": {}, "value": None},
        {
            "metric": "Ordered Product",
            "unique_id": "o-1-l-2",
            "properties": {"Price": 2.5},
            "value": 2.5,
        },
    ]
    assert "expand" not in outbox.build_event(metric="X", profile=PROFILE, expand=[]).payload


PRODUCT = {"metric": "Ordered Product", "unique_id": "l-1"}


@pytest.mark.parametrize(
    ("expand", "field"),
    [
        ({"metric": "Ordered Product"}, "expand"),
        ("Ordered Product", "expand"),
        (["not a dict"], "expand[0]"),
        ([{**PRODUCT, "profile": {"email": "b@example.com"}}], "expand[0].profile"),
        ([{**PRODUCT, "metric": ""}], "expand[0].metric"),
        ([{**PRODUCT, "unique_id": None}], "expand[0].unique_id"),
        ([{**PRODUCT, "value": "12"}], "expand[0].value"),
        ([{**PRODUCT, "properties": {"Bad": float("inf")}}], "expand[0].properties.Bad"),
        ([PRODUCT, PRODUCT], "expand[1].unique_id"),
        ([{**PRODUCT, "metric": "Placed Order", "unique_id": "o-1"}], "expand[0].unique_id"),
    ],
)
def test_bad_expand_events_are_rejected_naming_the_field(expand, field):
    with pytest.raises(KlaviyoValidationError) as info:
        outbox.build_event(metric="Placed Order", profile=PROFILE, unique_id="o-1", expand=expand)
    assert info.value.field == field


@pytest.mark.django_db
def test_an_expanded_row_is_stored_and_read_back_as_one_row():
    row = outbox.build_event(
        metric="Placed Order", profile=PROFILE, unique_id="o-2", expand=[{**PRODUCT}]
    )
    outbox.enqueue_many([row])
    stored = OutboxEvent.objects.get()
    assert stored.payload["expand"] == [
        {"metric": "Ordered Product", "unique_id": "l-1", "properties": {}, "value": None}
    ]


@pytest.fixture
def failing_inserts(transactional_db):
    """A real database error on every outbox INSERT (a trigger)."""
    from django.db import connection

    table = OutboxEvent._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION klaviyo_test_fail_insert() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f'CREATE TRIGGER klaviyo_test_fail_insert BEFORE INSERT ON "{table}" '
                "FOR EACH ROW EXECUTE FUNCTION klaviyo_test_fail_insert()"
            )
        else:
            cursor.execute(
                f'CREATE TRIGGER klaviyo_test_fail_insert BEFORE INSERT ON "{table}" '
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
    yield
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f'DROP TRIGGER klaviyo_test_fail_insert ON "{table}"')
            cursor.execute("DROP FUNCTION klaviyo_test_fail_insert()")
        else:
            cursor.execute("DROP TRIGGER klaviyo_test_fail_insert")


def test_a_failed_insert_marks_the_callers_transaction_for_rollback(failing_inserts):
    # The caller's block must not commit what it did before a lost outbox row.
    with pytest.raises(TransactionManagementError), transaction.atomic():
        with pytest.raises(DatabaseError, match="disk full"):
            outbox.enqueue("event", event_payload(), unique_id="u-1")
        assert transaction.get_connection().needs_rollback
        OutboxEvent.objects.count()
    assert not OutboxEvent.objects.exists()
