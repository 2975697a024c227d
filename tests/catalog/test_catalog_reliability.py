"""Catalog sync under Klaviyo's transient faults: 30% of the sandbox's answers fail (429,
500, 503, slow, dropped after the account recorded the request), and the catalog still
ends exactly as the store has it, with every row sent and none dead. Retry waits run on
the reliability tests' fake clock."""

from __future__ import annotations

from decimal import Decimal

import pytest
from shop.models import Product

from django_klaviyo.models import OutboxEvent
from django_klaviyo.testing.sandbox.catalog_routes import catalog_store
from tests.flush.test_reliability import (  # noqa: F401  (sandbox is a fixture)
    THIRTY_PERCENT_FAULTS,
    flush_until_idle,
    make_client,
    sandbox,
)
from tests.klaviyo_fixtures import FakeClock

Status = OutboxEvent.Status
PREFIX = "$custom:::$default:::"


@pytest.mark.django_db
@pytest.mark.klaviyo_sandbox(faults={**THIRTY_PERCENT_FAULTS, "seed": 11})
def test_the_catalog_converges_through_thirty_percent_faults(sandbox, clock: FakeClock):  # noqa: F811
    for i in range(240):
        Product.objects.create(
            name=f"Product {i}",
            sku=f"SKU-{i:03}",
            price=Decimal("10.00") + i,
            url=f"https://shop.example/p/{i}",
            categories=["Kitchen" if i % 2 else "Garden"],
            inventory=i % 7,
        )
    flush_until_idle(make_client(clock), clock)
    # Stock returns for some, and one product goes away.
    for product in Product.objects.filter(inventory=0):
        product.inventory = 5
        product.save()
    Product.objects.get(sku="SKU-001").delete()

    flush_until_idle(make_client(clock), clock)

    store = catalog_store(sandbox.state)
    variants = store.variants()
    assert set(variants) == {f"{PREFIX}{p.sku}" for p in Product.objects.all()}
    assert set(store.items()) == set(variants)
    for product in Product.objects.all():
        assert variants[f"{PREFIX}{product.sku}"]["inventory_quantity"] == product.inventory
    assert set(store.categories()) == {f"{PREFIX}kitchen", f"{PREFIX}garden"}
    assert not OutboxEvent.objects.exclude(status=Status.SENT).exists()
    # The faults did apply to the catalog jobs.
    failed = sum(
        n
        for operation, statuses in sandbox.state.request_counts().items()
        if "catalog" in operation
        for status, n in statuses.items()
        if status >= 400
    )
    assert failed > 0
