"""``manage.py check`` names every broken TRACKED_MODELS entry, key and path against its
model (E080-E086, W080), never a traceback."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from django_klaviyo.checks import check_klaviyo_settings
from tests.tracking.conftest import SUBSCRIPTIONS

ENTRY = SUBSCRIPTIONS["subshop.Subscription"]


def messages(settings, tracked):
    settings.KLAVIYO = {**settings.KLAVIYO, "TRACKED_MODELS": tracked}
    return [(m.id, m.msg) for m in check_klaviyo_settings() if "TRACKED_MODELS" in m.msg]


def entry(settings, **changes):
    return messages(settings, {"subshop.Subscription": {**ENTRY, **changes}})


def test_the_documented_entry_passes(settings):
    assert entry(settings) == []


def test_not_a_dict(settings):
    assert [i for i, _ in messages(settings, ["subshop.Subscription"])] == ["django_klaviyo.E080"]


def test_an_unknown_key_is_named_with_the_close_one(settings):
    ((check_id, msg),) = entry(settings, propertys={"Plan": "plan.name"})
    assert check_id == "django_klaviyo.E080" and "'propertys'" in msg


def test_a_model_that_is_not_installed(settings):
    ((check_id, msg),) = messages(settings, {"subshop.Subscriptions": ENTRY})
    assert check_id == "django_klaviyo.E081" and "subshop.Subscriptions" in msg


def test_a_status_field_not_on_the_model(settings):
    ((check_id, msg),) = entry(settings, status_field="state")
    assert check_id == "django_klaviyo.E082" and "'state'" in msg


def test_metrics_must_name_metrics(settings):
    assert [i for i, _ in entry(settings, metrics={})] == ["django_klaviyo.E083"]
    assert [i for i, _ in entry(settings, metrics={"active": ""})] == ["django_klaviyo.E083"]


def test_a_status_that_is_not_a_choice_warns(settings):
    ((check_id, msg),) = entry(settings, metrics={"actve": "Subscription Started"})
    assert check_id == "django_klaviyo.W080" and "'actve'" in msg


def test_every_path_is_checked_against_the_model(settings):
    found = entry(
        settings,
        value="monthly_revenue",
        time="changed_at",
        properties={"Plan": "plan.title", "Interval": "interval"},
        profile_properties={"plan": "plann.name"},
        profile={"email": "customer.mail"},
    )
    assert {i for i, _ in found} == {"django_klaviyo.E084"}
    text = " ".join(m for _, m in found)
    for bad in ("monthly_revenue", "changed_at", "plan.title", "plann.name", "customer.mail"):
        assert repr(bad) in text
    assert len(found) == 5


def test_the_profile_needs_an_identifier(settings):
    assert [i for i, _ in entry(settings, profile={})] == ["django_klaviyo.E085"]
    found = entry(settings, profile={"email": "customer.email", "first_name": "customer.name"})
    assert [i for i, _ in found] == ["django_klaviyo.E085"] and "'first_name'" in found[0][1]


def test_a_mapper_that_does_not_import(settings):
    ((check_id, msg),) = entry(settings, mapper="nowhere.mapper")
    assert check_id == "django_klaviyo.E086" and "nowhere.mapper" in msg


def test_manage_py_check_fails_on_them(settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "TRACKED_MODELS": {"subshop.Subscription": {**ENTRY, "status_field": "state"}},
    }
    with pytest.raises(SystemCheckError, match=r"django_klaviyo\.E082"):
        call_command("check")
