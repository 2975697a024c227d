"""Catalog defaults Klaviyo's integrations set: a variant's ``inventory_policy`` (out of
stock, out of recommendation blocks) and prices per currency in ``custom_metadata``,
against the sandbox (which validates every request against Klaviyo's spec)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.core.checks import run_checks
from shop.models import Product

from django_klaviyo.models import OutboxEvent
from django_klaviyo.rules import limits
from django_klaviyo.testing.sandbox.catalog_routes import catalog_store
from tests.klaviyo_fixtures import flush_now

Kind = OutboxEvent.Kind
Status = OutboxEvent.Status
ITEM = "$custom:::$default:::"

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_rate_limits")]


def product(sku: str = "MUG-1", **fields: Any) -> Product:
    values = {
        "name": "Blue mug",
        "sku": sku,
        "price": Decimal("12.50"),
        "url": f"https://shop.example/p/{sku}",
        "categories": [],
        "brand": "Acme",
        "inventory": 0,
    }
    values.update(fields)
    return Product.objects.create(**values)


def with_catalog(settings: Any, **keys: Any) -> None:
    catalog = settings.KLAVIYO["CATALOG"]
    sections = {
        section: {**catalog[section], **keys.get(section, {})} for section in ("ITEMS", "VARIANTS")
    }
    extra = {k: v for k, v in keys.items() if k not in ("ITEMS", "VARIANTS")}
    settings.KLAVIYO = {**settings.KLAVIYO, "CATALOG": sections, **extra}


def euro_and_pound(product: Product) -> dict[str, Decimal]:
    return {"EUR": product.price * Decimal("0.92"), "gbp": Decimal("10.899")}


def test_an_out_of_stock_variant_leaves_recommendations_by_default(klaviyo_sandbox):
    product(inventory=0)

    report = flush_now()

    assert report.dead == 0
    variant = catalog_store(klaviyo_sandbox.state).variants()[f"{ITEM}MUG-1"]
    # 1: "a product will not appear in dynamic product recommendation feeds and blocks if
    # it is out of stock" (Klaviyo's spec); 0 or 2 would show it anyway.
    assert variant["inventory_policy"] == 1
    assert variant["inventory_quantity"] == 0


@pytest.mark.parametrize("policy", [0, 2])
def test_the_inventory_policy_is_configurable(settings, klaviyo_sandbox, policy):
    with_catalog(settings, CATALOG_INVENTORY_POLICY=policy)
    product()

    assert flush_now().dead == 0
    assert catalog_store(klaviyo_sandbox.state).variants()[f"{ITEM}MUG-1"]["inventory_policy"] == (
        policy
    )


def test_none_sends_no_policy_and_a_mapped_one_wins(settings, klaviyo_sandbox):
    with_catalog(settings, CATALOG_INVENTORY_POLICY=None)
    product("NONE-1")
    with_catalog(
        settings,
        CATALOG_INVENTORY_POLICY=None,
        VARIANTS={"inventory_policy": lambda p: 2 if p.brand == "Backorder" else 1},
    )
    product("BACK-1", brand="Backorder")

    assert flush_now().dead == 0
    variants = catalog_store(klaviyo_sandbox.state).variants()
    assert (
        "inventory_policy"
        not in OutboxEvent.objects.get(
            kind=Kind.CATALOG_VARIANT, payload__external_id="NONE-1"
        ).payload["attributes"]
    )
    assert variants[f"{ITEM}BACK-1"]["inventory_policy"] == 2


def test_prices_per_currency_go_into_custom_metadata(settings, klaviyo_sandbox):
    prices = "tests.catalog.test_catalog_defaults.euro_and_pound"
    with_catalog(settings, ITEMS={"prices": prices}, VARIANTS={"prices": prices})
    product()

    assert flush_now().dead == 0
    store = catalog_store(klaviyo_sandbox.state)
    expected = {"brand": "Acme", "price_EUR": 11.5, "price_GBP": 10.9}
    assert store.items()[f"{ITEM}MUG-1"]["custom_metadata"] == expected
    # The variant maps no custom_metadata of its own: the prices alone.
    assert store.variants()[f"{ITEM}MUG-1"]["custom_metadata"] == {
        "price_EUR": 11.5,
        "price_GBP": 10.9,
    }
    assert store.items()[f"{ITEM}MUG-1"]["price"] == 12.5


@pytest.mark.parametrize(
    ("prices", "field"),
    [
        (["EUR", 12], "prices"),
        ({"EURO": 12}, "prices"),
        ({"EUR": "twelve"}, "prices.EUR"),
        ({"EUR": -1}, "prices.EUR"),
    ],
)
def test_bad_prices_leave_a_dead_row_naming_the_field(settings, prices, field):
    with_catalog(settings, ITEMS={"prices": lambda p: prices})
    product()

    assert Product.objects.filter(sku="MUG-1").exists()  # the save went through
    refused = OutboxEvent.objects.get(kind=Kind.CATALOG_ITEM)
    assert refused.status == Status.DEAD
    assert refused.last_error_code == "invalid_on_save"
    assert refused.last_error_detail.endswith(f"(field {field})")
    assert refused.payload == {
        "section": "ITEMS",
        "object": refused.payload["object"],
        "external_id": "MUG-1",
    }
    assert refused.payload["object"].startswith("shop.product:")


def test_custom_metadata_over_klaviyos_size_is_a_dead_row_not_a_request(settings, klaviyo_sandbox):
    big = "x" * (limits.CATALOG_CUSTOM_METADATA_MAX_BYTES + 1)
    with_catalog(settings, ITEMS={"custom_metadata": lambda p: {"notes": big}})
    product()

    refused = OutboxEvent.objects.get(kind=Kind.CATALOG_ITEM)
    assert refused.status == Status.DEAD
    assert "at most 100,000" in refused.last_error_detail
    assert refused.last_error_detail.endswith("(field attributes.custom_metadata)")
    flush_now()
    assert f"{ITEM}MUG-1" not in catalog_store(klaviyo_sandbox.state).items()


def test_nested_custom_metadata_is_refused_naming_the_key(settings):
    with_catalog(settings, ITEMS={"custom_metadata": lambda p: {"dims": {"h": 9}}})
    product()

    refused = OutboxEvent.objects.get(kind=Kind.CATALOG_ITEM)
    assert refused.status == Status.DEAD
    assert refused.last_error_detail.endswith("(field attributes.custom_metadata.dims)")


@pytest.mark.parametrize("policy", [3, "1", True, -1])
def test_a_bad_inventory_policy_is_a_check_error(settings, policy):
    with_catalog(settings, CATALOG_INVENTORY_POLICY=policy)

    ids = [m.id for m in run_checks()]
    assert "django_klaviyo.E046" in ids


@pytest.mark.parametrize("policy", [None, 0, 1, 2])
def test_good_inventory_policies_pass_the_check(settings, policy):
    with_catalog(settings, CATALOG_INVENTORY_POLICY=policy)

    assert "django_klaviyo.E046" not in [m.id for m in run_checks()]
