"""django-klaviyo settings are resolved once per process and kept until Django says a
setting changed: a change through override_settings (or pytest-django's ``settings``) is
seen by the next read, including values derived from settings (mappings, status values,
mapper callables)."""

from __future__ import annotations

from django.conf import settings
from django.test import override_settings

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.orders import fields as mapping


def _custom_mapper(order, previous_status, created):  # pragma: no cover - never called
    return []


def test_a_changed_klaviyo_dict_is_read_at_once_and_restored_after():
    assert klaviyo_settings.LEASE_SECONDS == 300
    with override_settings(KLAVIYO={**settings.KLAVIYO, "LEASE_SECONDS": 17}):
        assert klaviyo_settings.LEASE_SECONDS == 17
    assert klaviyo_settings.LEASE_SECONDS == 300


def test_a_top_level_setting_is_seen_once_set_and_forgotten_once_removed():
    block = {k: v for k, v in settings.KLAVIYO.items() if k != "BATCH_SIZE"}
    with override_settings(KLAVIYO=block):
        assert klaviyo_settings.BATCH_SIZE == 1000  # the default
        with override_settings(KLAVIYO_BATCH_SIZE=25):
            assert klaviyo_settings.BATCH_SIZE == 25
        assert klaviyo_settings.BATCH_SIZE == 1000


def test_values_derived_from_settings_follow_a_change(settings):
    assert mapping.metric("placed_order") == "Placed Order"
    assert mapping.status_values("placed") == ("placed",)
    assert mapping.status_table()[0] == ("placed",)
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "METRIC_NAMES": {"placed_order": "Order Placed"},
        "ORDER_STATUS_PLACED": ["paid", "placed"],
        "ORDER_EVENTS_MAPPER": _custom_mapper,
    }
    assert mapping.metric("placed_order") == "Order Placed"
    assert mapping.status_values("placed") == ("paid", "placed")
    assert mapping.status_table()[0] == ("paid", "placed")
    assert klaviyo_settings.callable("ORDER_EVENTS_MAPPER") is _custom_mapper


def test_a_mapping_handed_out_is_the_callers_own_copy():
    fields = mapping.mapping("ORDER_FIELDS")
    fields["total"] = "something_else"
    assert mapping.mapping("ORDER_FIELDS")["total"] == "total"
