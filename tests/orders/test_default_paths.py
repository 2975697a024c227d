"""``manage.py check`` reports every path the default mapper will read: a default the
store did not set that is not on its model is a Warning saying what is sent instead
(W033); what the store wrote stays an Error (E031); a configuration that places orders
before their lines exist is told what happens (W034)."""

from __future__ import annotations

import re

import pytest

from tests.orders.conftest import DIRECTSHOP
from tests.orders.test_mapping import problems

pytestmark = pytest.mark.django_db


def reported(warning: str) -> set[str]:
    return set(re.findall(r"(\w+): no field", warning))


MINIMAL = {**DIRECTSHOP, "ORDER_FIELDS": {"total": "order_total", "lines": "order_items"}}


def test_a_minimal_mapping_names_each_default_that_is_not_on_the_model():
    found = problems(**MINIMAL)
    warning = found["django_klaviyo.W033"]
    assert "placed_at: no field `placed_at`; events will be dated at save time" in warning
    assert "number: no field `number`; OrderId and the unique_id will be the primary key" in (
        warning
    )
    assert "customer_id: no field `customer_id`; profiles will have no external_id" in warning
    assert "categories: no field `categories`; Categories will be empty" in warning
    assert not reported(warning) & {"currency", "email", "total"}  # on the model
    assert "django_klaviyo.E031" not in found


def test_a_default_set_to_none_is_not_reported():
    unset = dict.fromkeys(
        ["number", "customer_email", "customer_id", "phone", "billing_address"], None
    )
    found = problems(**{**MINIMAL, "ORDER_FIELDS": {**MINIMAL["ORDER_FIELDS"], **unset}})
    warning = found["django_klaviyo.W033"]
    assert not reported(warning) & {"number", "customer_id", "billing_address"}
    assert "placed_at" in reported(warning)


def test_the_example_shop_s_default_names_pass_and_its_event_times_fall_back_to_updated_at():
    # shop.Order has no fulfilled_at: its updated_at dates the event, as documented.
    found = problems(ORDER_MODEL="shop.Order")
    assert "django_klaviyo.W033" not in found


def test_a_path_the_store_wrote_stays_an_error():
    mapped = {**MINIMAL["ORDER_FIELDS"], "placed_at": "paid_on"}
    found = problems(**{**MINIMAL, "ORDER_FIELDS": mapped})
    assert "'placed_at'] = 'paid_on'" in found["django_klaviyo.E031"]


def test_orders_placed_at_creation_by_the_status_default_are_told_what_happens():
    found = problems(**{**DIRECTSHOP, "ORDER_STATUS_PLACED": "NEW"})
    warning = found["django_klaviyo.W034"]
    assert "defaults to the placed status 'NEW'" in warning
    assert "directshop.OrderItem" in warning and "bulk_create" in warning
    assert "django_klaviyo.W034" not in problems(**DIRECTSHOP)


def test_lines_no_save_can_be_traced_to_are_told_what_happens():
    fields = {**DIRECTSHOP["ORDER_FIELDS"], "lines": "order_items.all"}
    found = problems(**{**DIRECTSHOP, "ORDER_FIELDS": fields})
    assert "not a reverse foreign key" in found["django_klaviyo.W034"]
    assert "order_placed(order)" in found["django_klaviyo.W034"]
    with_signal = problems(
        **{
            **DIRECTSHOP,
            "ORDER_FIELDS": fields,
            "ORDER_PLACED_SIGNAL": "tests.projects.directshop.signals.order_done",
        }
    )
    assert "django_klaviyo.W034" not in with_signal
