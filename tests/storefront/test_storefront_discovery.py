"""Viewed Category and Searched Site on the storefront: the tags, and the browse-events
endpoint accepting and refusing them with the rules of the other browse events."""

from __future__ import annotations

import json
import logging
import re

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.cache import cache
from django.core.checks import run_checks
from django.template import Context, Template
from django.test import Client, RequestFactory
from django.urls import reverse

from django_klaviyo.models import OutboxEvent

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.projects.storefront_urls")]

COFFEE = {"category_id": "coffee", "name": "Coffee", "url": "https://shop.example.com/c/coffee/"}


@pytest.fixture(autouse=True)
def fresh_throttle():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def visitor():
    client = Client(enforce_csrf_checks=True)
    client.get(reverse("shop:products"))
    return client


def post(client, body):
    return client.post(
        reverse("klaviyo-storefront-events"),
        json.dumps(body),
        content_type="application/json",
        HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value,
    )


def render(source, request=None, **context):
    return Template("{% load klaviyo %}" + source).render(Context({"request": request, **context}))


def embedded(html, element_id):
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', html)
    assert match, f"no #{element_id} in {html}"
    return json.loads(match.group(1))


@pytest.fixture
def request_():
    request = RequestFactory().get("/store/search/")
    request.user = AnonymousUser()
    request.session = {}
    return request


# --- the endpoint ----------------------------------------------------------------------


def test_viewed_category_is_recorded_for_the_visitor(visitor):
    answer = post(visitor, {"event": "viewed_category", "category": COFFEE})

    assert answer.status_code == 202, answer.content
    row = OutboxEvent.objects.get()
    assert answer.json() == {"event": "viewed_category", "outbox_id": str(row.pk)}
    assert row.metric == "Viewed Category"
    assert row.payload["properties"] == {
        "Viewed Category": "coffee",
        "CategoryID": "coffee",
        "CategoryName": "Coffee",
        "URL": "https://shop.example.com/c/coffee/",
    }
    assert set(row.payload["profile"]) == {"anonymous_id"}


def test_searched_site_is_recorded_and_a_repeat_answers_with_the_first_row(visitor):
    first = post(visitor, {"event": "searched_site", "term": "cold brew", "result_count": 0})
    again = post(visitor, {"event": "searched_site", "term": "Cold  Brew", "result_count": 0})

    assert first.status_code == again.status_code == 202
    row = OutboxEvent.objects.get()
    assert first.json()["outbox_id"] == again.json()["outbox_id"] == str(row.pk)
    assert row.payload["properties"] == {"Search Term": "cold brew", "Search Results Count": 0}


def test_a_logged_in_user_s_search_is_the_user_s(visitor, django_user_model):
    user = django_user_model.objects.create_user("ada", email="ada@example.com", password="pw")
    visitor.force_login(user)
    visitor.get(reverse("shop:products"))

    assert (
        post(visitor, {"event": "searched_site", "term": "tea", "result_count": 2}).status_code
        == 202
    )

    profile = OutboxEvent.objects.get(metric="Searched Site").payload["profile"]
    assert profile["email"] == "ada@example.com"
    assert "anonymous_id" not in profile


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"event": "viewed_category"}, ["category"]),
        ({"event": "viewed_category", "category": {"name": "Coffee"}}, ["category", "category_id"]),
        (
            {"event": "viewed_category", "category": {**COFFEE, "url": "javascript:alert(1)"}},
            ["category", "url"],
        ),
        (
            {"event": "viewed_category", "category": {**COFFEE, "category_id": "x" * 256}},
            ["category", "category_id"],
        ),
        ({"event": "searched_site", "result_count": 1}, ["term"]),
        ({"event": "searched_site", "term": "tea"}, ["result_count"]),
        ({"event": "searched_site", "term": "", "result_count": 1}, ["term"]),
        ({"event": "searched_site", "term": "\x00\x01", "result_count": 1}, ["term"]),
        ({"event": "searched_site", "term": "t" * 101, "result_count": 1}, ["term"]),
        ({"event": "searched_site", "term": "tea", "result_count": -1}, ["result_count"]),
        ({"event": "searched_site", "term": "tea", "result_count": "many"}, ["result_count"]),
        ({"event": "searched_site", "term": ["tea"], "result_count": 1}, ["term"]),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(visitor, body, path):
    answer = post(visitor, body)

    assert answer.status_code == 400, answer.content
    errors = answer.json()
    for key in path:
        assert key in errors, errors
        errors = errors[key]
    assert OutboxEvent.objects.count() == 0


def test_the_visitor_rate_and_the_address_byte_budget_hold_for_searches(visitor, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "STOREFRONT_THROTTLE_RATE": "2/min"}
    statuses = [
        post(visitor, {"event": "searched_site", "term": f"t{i}", "result_count": 1}).status_code
        for i in range(3)
    ]
    assert statuses == [202, 202, 429]

    cache.clear()
    settings.KLAVIYO = {**settings.KLAVIYO, "STOREFRONT_ADDRESS_BYTES_PER_MINUTE": 1000}
    answers = [
        post(visitor, {"event": "viewed_category", "category": {**COFFEE, "category_id": f"c{i}"}})
        for i in range(6)
    ]
    statuses = [answer.status_code for answer in answers]
    assert statuses[0] == 202
    assert 429 in statuses  # a few hundred bytes each: the budget runs out
    assert answers[statuses.index(429)]["Retry-After"]


def test_search_terms_are_not_logged(visitor, caplog):
    caplog.set_level(logging.DEBUG)
    post(
        visitor,
        {"event": "searched_site", "term": "secret-term-ada@example.com", "result_count": 1},
    )
    post(visitor, {"event": "searched_site", "term": "secret-term-" * 20, "result_count": 1})
    assert "secret-term" not in caplog.text


# --- the tags --------------------------------------------------------------------------


def test_viewed_category_tag_embeds_the_event_safely():
    category = {**COFFEE, "name": "</script><script>alert(1)</script>"}
    html = render("{% klaviyo_viewed_category category %}", category=category)

    assert "</script><script>" not in html
    data = embedded(html, "klaviyo-viewed-category")
    assert data["event"] == "viewed_category"
    assert data["metric"] == "Viewed Category"
    assert data["body"] == {"event": "viewed_category", "category": category}
    assert data["properties"]["CategoryName"] == category["name"]
    assert "$event_id" not in data["properties"]  # server mode: the endpoint decides


def test_searched_site_tag_embeds_the_cleaned_term_which_the_endpoint_accepts(visitor):
    term = "<img src=x onerror=alert(1)> " + "long " * 40
    html = render("{% klaviyo_searched_site term 3 %}", term=term)

    assert "<img" not in html
    data = embedded(html, "klaviyo-searched-site")
    assert data["metric"] == "Searched Site"
    assert len(data["body"]["term"]) == 100
    assert data["body"] == {
        "event": "searched_site",
        "term": data["body"]["term"],
        "result_count": 3,
    }
    assert data["properties"] == {"Search Term": data["body"]["term"], "Search Results Count": 3}
    # What the tag embeds is what storefront.js posts: the endpoint takes it as it is.
    assert post(visitor, data["body"]).status_code == 202


@pytest.mark.parametrize("term", ["", "   ", None])
def test_no_search_term_renders_no_event(term):
    assert render("{% klaviyo_searched_site term 0 %}", term=term) == ""


def test_browser_mode_gives_both_the_server_s_unique_id_and_keeps_it_for_repeats(
    request_, settings
):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "BROWSE_EVENTS_VIA": "browser",
        "METRIC_NAMES": {"searched_site": "Submitted Search"},
    }

    def event_id(term):
        html = render("{% klaviyo_searched_site term 2 %}", request_, term=term)
        data = embedded(html, "klaviyo-searched-site")
        assert data["metric"] == "Submitted Search"
        return data["properties"]["$event_id"]

    first = event_id("Cold Brew")
    subject, unix = first.rsplit("-", 1)
    assert unix.isdigit()
    assert event_id("cold  brew") == first  # a reload, other case and spacing: one event
    slot = request_.session["klaviyo_searched_site_start"]
    slot["at"] -= 601  # now past BROWSE_REPEAT_AFTER
    stale = slot["at"]
    assert (
        event_id("cold brew")
        == f"{subject}-{request_.session['klaviyo_searched_site_start']['at']}"
    )
    assert request_.session["klaviyo_searched_site_start"]["at"] > stale  # a new search
    assert event_id("espresso").rsplit("-", 1)[0] != subject

    html = render("{% klaviyo_viewed_category category %}", request_, category=COFFEE)
    assert embedded(html, "klaviyo-viewed-category")["properties"]["$event_id"].count("-") == 1


def test_the_server_and_browser_modes_name_a_search_alike(request_, settings):
    import django_klaviyo

    settings.KLAVIYO = {**settings.KLAVIYO, "BROWSE_EVENTS_VIA": "browser"}
    html = render("{% klaviyo_searched_site 'cold brew' 2 %}", request_)
    browser_id = embedded(html, "klaviyo-searched-site")["properties"]["$event_id"]
    row = django_klaviyo.searched_site({"email": "ada@example.com"}, "Cold Brew", 2)
    assert row.unique_id.rsplit("-", 1)[0] == browser_id.rsplit("-", 1)[0]


# --- the check -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [-1, "600", None, True])
def test_a_bad_repeat_window_fails_the_checks(settings, value):
    settings.KLAVIYO = {**settings.KLAVIYO, "BROWSE_REPEAT_AFTER": value}
    messages = [m for m in run_checks() if m.id == "django_klaviyo.E064"]
    assert len(messages) == 1
    assert "BROWSE_REPEAT_AFTER" in messages[0].msg


@pytest.mark.parametrize("value", [0, 600, 2.5])
def test_a_good_repeat_window_passes(settings, value):
    settings.KLAVIYO = {**settings.KLAVIYO, "BROWSE_REPEAT_AFTER": value}
    assert not [m for m in run_checks() if m.id == "django_klaviyo.E064"]
