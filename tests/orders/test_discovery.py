"""Viewed Category and Searched Site from the server (``django_klaviyo.viewed_category``,
``django_klaviyo.searched_site``): properties, the search term as stored, repeats, and
what reaches the sandbox (every request validated against Klaviyo's spec)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

import django_klaviyo
from django_klaviyo.client.bodies.events import assemble_bulk_events
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent
from django_klaviyo.rules.event_requests import clean_event_entries
from django_klaviyo.testing.openapi import validate_request

pytestmark = pytest.mark.django_db

SHOPPER = {"email": "grace@example.com"}
COFFEE = {
    "category_id": "coffee",
    "name": "Coffee",
    "url": "https://shop.example.com/c/coffee/",
}


def test_viewed_category_carries_the_names_of_klaviyo_s_sfcc_integration():
    row = django_klaviyo.viewed_category(SHOPPER, COFFEE)

    assert row.metric == "Viewed Category"
    assert row.payload["properties"] == {
        "Viewed Category": "coffee",
        "CategoryID": "coffee",
        "CategoryName": "Coffee",
        "URL": "https://shop.example.com/c/coffee/",
    }
    assert row.payload["profile"] == {"email": "grace@example.com"}
    assert row.payload.get("value") is None  # a view is not revenue


def test_searched_site_carries_the_term_and_the_result_count():
    row = django_klaviyo.searched_site(SHOPPER, "  cold\tbrew \n beans ", 3)

    assert row.metric == "Searched Site"
    assert row.payload["properties"] == {
        "Search Term": "cold brew beans",
        "Search Results Count": 3,
    }


def test_a_search_without_results_is_still_a_search():
    row = django_klaviyo.searched_site(SHOPPER, "unicorn", 0)
    assert row.payload["properties"]["Search Results Count"] == 0


def test_a_long_or_odd_search_term_is_cut_and_cleaned_not_refused():
    row = django_klaviyo.searched_site(SHOPPER, "a\x00b " + "x" * 500, 1)
    term = row.payload["properties"]["Search Term"]
    assert term.startswith("a b xxx")
    assert len(term) == 100
    assert "\x00" not in term


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: django_klaviyo.searched_site(SHOPPER, "", 1), "term"),
        (lambda: django_klaviyo.searched_site(SHOPPER, " \x07 ", 1), "term"),
        (lambda: django_klaviyo.searched_site(SHOPPER, None, 1), "term"),
        (lambda: django_klaviyo.searched_site(SHOPPER, "tea", -1), "result_count"),
        (lambda: django_klaviyo.searched_site(SHOPPER, "tea", "3"), "result_count"),
        (lambda: django_klaviyo.searched_site(SHOPPER, "tea", True), "result_count"),
        (lambda: django_klaviyo.viewed_category(SHOPPER, "coffee"), "category"),
        (
            lambda: django_klaviyo.viewed_category(SHOPPER, {"name": "Coffee"}),
            "category.category_id",
        ),
        (
            lambda: django_klaviyo.viewed_category(SHOPPER, {**COFFEE, "colour": "brown"}),
            "category.colour",
        ),
        (
            lambda: django_klaviyo.viewed_category(SHOPPER, {**COFFEE, "name": "x" * 501}),
            "category.name",
        ),
        (lambda: django_klaviyo.viewed_category({}, COFFEE), "profile"),
    ],
)
def test_bad_input_is_refused_naming_the_field_and_stores_nothing(call, field):
    with pytest.raises(KlaviyoValidationError) as refused:
        call()
    assert refused.value.field == field
    assert not OutboxEvent.objects.exists()


def test_a_numeric_category_id_is_sent_as_text():
    row = django_klaviyo.viewed_category(SHOPPER, {"category_id": 42})
    assert row.payload["properties"] == {"Viewed Category": "42", "CategoryID": "42"}


def test_the_same_search_again_soon_is_one_event_and_another_profile_s_is_its_own():
    first = django_klaviyo.searched_site(SHOPPER, "Cold Brew", 4)
    # A reload, the next page of results, the same words in other case and spacing.
    again = django_klaviyo.searched_site(SHOPPER, "cold  brew", 4)
    someone_else = django_klaviyo.searched_site({"email": "ada@example.com"}, "cold brew", 4)
    another_term = django_klaviyo.searched_site(SHOPPER, "espresso", 2)

    assert again.pk == first.pk
    assert someone_else.pk != first.pk
    assert another_term.pk != first.pk
    assert OutboxEvent.objects.filter(metric="Searched Site").count() == 3


def test_the_same_category_again_soon_is_one_event():
    first = django_klaviyo.viewed_category(SHOPPER, COFFEE)
    again = django_klaviyo.viewed_category(SHOPPER, {**COFFEE, "name": "Coffee (page 2)"})
    tea = django_klaviyo.viewed_category(SHOPPER, {"category_id": "tea"})

    assert again.pk == first.pk
    assert tea.pk != first.pk


def test_after_the_window_a_view_counts_again(settings):
    first = django_klaviyo.viewed_category(SHOPPER, COFFEE)
    OutboxEvent.objects.filter(pk=first.pk).update(
        created_at=timezone.now() - dt.timedelta(seconds=601)
    )

    later = django_klaviyo.viewed_category(SHOPPER, COFFEE)

    assert later.pk != first.pk
    assert OutboxEvent.objects.filter(metric="Viewed Category").count() == 2


def test_a_window_of_zero_sends_every_view(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "BROWSE_REPEAT_AFTER": 0}
    first = django_klaviyo.searched_site(SHOPPER, "tea", 1)
    again = django_klaviyo.searched_site(SHOPPER, "tea", 1)
    assert again.pk != first.pk


def test_an_import_with_explicit_times_repeats_only_at_the_same_second():
    at = dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.timezone.utc)
    first = django_klaviyo.searched_site(SHOPPER, "tea", 1, time=at, backfill=True)
    same = django_klaviyo.searched_site(SHOPPER, "tea", 1, time=at, backfill=True)
    later = django_klaviyo.searched_site(
        SHOPPER, "tea", 1, time=at + dt.timedelta(seconds=5), backfill=True
    )
    other = django_klaviyo.searched_site({"email": "ada@example.com"}, "tea", 1, time=at)

    assert same.pk == first.pk
    assert later.pk != first.pk
    assert other.pk != first.pk
    assert first.payload["backfill"] is True
    assert first.unique_id.endswith(f"-{int(at.timestamp())}")


def test_a_given_unique_id_is_kept():
    row = django_klaviyo.viewed_category(SHOPPER, COFFEE, unique_id="view-1")
    assert row.unique_id == "view-1"


def test_metric_names_can_be_renamed(settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "METRIC_NAMES": {"searched_site": "Submitted Search"},
    }
    assert django_klaviyo.searched_site(SHOPPER, "tea", 1).metric == "Submitted Search"


def test_disabled_klaviyo_writes_nothing(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "ENABLED": False}
    assert django_klaviyo.viewed_category(SHOPPER, COFFEE) is None
    assert django_klaviyo.searched_site(SHOPPER, "tea", 1) is None
    assert not OutboxEvent.objects.exists()


def test_the_rows_make_requests_on_klaviyo_s_spec():
    rows = [
        django_klaviyo.viewed_category(SHOPPER, COFFEE),
        django_klaviyo.searched_site({"anonymous_id": "visitor-1"}, "cold <b>brew</b>", 0),
    ]
    entries = [
        {
            "profile": row.payload["profile"],
            "events": [{k: v for k, v in row.payload.items() if k != "profile"}],
        }
        for row in rows
    ]
    body = assemble_bulk_events(clean_event_entries(entries))
    assert validate_request("bulk_create_events", body) == []


def test_both_reach_the_sandbox_with_their_properties(klaviyo_sandbox):
    django_klaviyo.viewed_category(SHOPPER, COFFEE)
    django_klaviyo.searched_site(SHOPPER, "cold brew", 4)

    flush_outbox()

    assert set(OutboxEvent.objects.values_list("status", flat=True)) == {"sent"}
    events = {e["metric"]: e for e in klaviyo_sandbox.state.events()}
    assert events["Viewed Category"]["properties"]["CategoryName"] == "Coffee"
    assert events["Searched Site"]["properties"] == {
        "Search Term": "cold brew",
        "Search Results Count": 4,
    }
    assert events["Viewed Category"]["profile_id"] == events["Searched Site"]["profile_id"]
    statuses = klaviyo_sandbox.state.request_counts()["bulk_create_events"]
    assert set(statuses) == {202}
