"""Catalog sync: the shop's products reach Klaviyo's catalog (the sandbox) through the
catalog bulk jobs, on save and delete and by ``manage.py klaviyo_catalog sync``.

The test settings map ``shop.Product`` as a catalog item and its one variant (the same
mapping as the example shop). The sandbox checks every request body against Klaviyo's
OpenAPI spec and runs each job when it is polled.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
import responses
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone
from shop.models import Product

from django_klaviyo.flush import flush_outbox
from django_klaviyo.models import OutboxEvent
from django_klaviyo.testing.sandbox.catalog_routes import catalog_store
from tests.klaviyo_fixtures import fast_client, flush_now

Kind = OutboxEvent.Kind
Status = OutboxEvent.Status
ITEM = "$custom:::$default:::"

# Rate-limit windows live in the cache: every test starts with none.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_rate_limits")]


def product(sku: str = "MUG-1", **fields: Any) -> Product:
    values = {
        "name": "Blue mug",
        "sku": sku,
        "price": Decimal("12.50"),
        "url": f"https://shop.example/p/{sku}",
        "image_url": f"https://shop.example/img/{sku}.jpg",
        "categories": ["Kitchen"],
        "brand": "Acme",
        "inventory": 5,
    }
    values.update(fields)
    return Product.objects.create(**values)


def rows(kind: str) -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(kind=kind).order_by("created_at"))


def test_a_new_product_becomes_a_catalog_item_variant_and_category(klaviyo_sandbox):
    product()

    report = flush_now()

    store = catalog_store(klaviyo_sandbox.state)
    item = store.items()[f"{ITEM}MUG-1"]
    assert item["title"] == "Blue mug"
    assert item["price"] == 12.5
    assert item["url"] == "https://shop.example/p/MUG-1"
    assert item["image_full_url"] == "https://shop.example/img/MUG-1.jpg"
    assert item["custom_metadata"] == {"brand": "Acme"}
    assert item["categories"] == [f"{ITEM}kitchen"]
    assert store.categories()[f"{ITEM}kitchen"]["name"] == "Kitchen"
    variant = store.variants()[f"{ITEM}MUG-1"]
    assert variant["inventory_quantity"] == 5
    assert variant["sku"] == "MUG-1"
    assert variant["item"] == f"{ITEM}MUG-1"
    assert OutboxEvent.objects.exclude(status=Status.SENT).count() == 0
    # One create job per kind, each polled once.
    counts = klaviyo_sandbox.state.request_counts()
    assert counts["bulk_create_catalog_items"] == {202: 1}
    assert counts["get_bulk_create_catalog_items_job"] == {200: 1}
    assert report.counts(Kind.CATALOG_VARIANT).sent == 1


def test_price_and_inventory_changes_update_the_item_and_variant(klaviyo_sandbox):
    mug = product()
    flush_now()

    mug.price = Decimal("9.99")
    mug.inventory = 0
    mug.save()
    flush_now()
    mug.inventory = 12  # back in stock: Klaviyo's back-in-stock flow watches this number
    mug.save()
    flush_now()

    store = catalog_store(klaviyo_sandbox.state)
    assert store.items()[f"{ITEM}MUG-1"]["price"] == 9.99
    assert store.variants()[f"{ITEM}MUG-1"]["inventory_quantity"] == 12
    counts = klaviyo_sandbox.state.request_counts()
    assert counts["bulk_update_catalog_variants"] == {202: 2}
    assert OutboxEvent.objects.exclude(status=Status.SENT).count() == 0


def test_saves_before_a_flush_coalesce_into_the_latest_state(klaviyo_sandbox):
    mug = product()
    for stock in (4, 3, 2):
        mug.inventory = stock
        mug.save()

    flush_now()

    assert (
        catalog_store(klaviyo_sandbox.state).variants()[f"{ITEM}MUG-1"]["inventory_quantity"] == 2
    )
    # Four variant rows, one create job: the create carried the latest stock.
    assert len(rows(Kind.CATALOG_VARIANT)) == 4
    assert klaviyo_sandbox.state.request_counts()["bulk_create_catalog_variants"] == {202: 1}
    assert "bulk_update_catalog_variants" not in klaviyo_sandbox.state.request_counts()


def test_deleting_a_product_deletes_its_item_and_variant(klaviyo_sandbox):
    mug = product()
    product("CUP-2", name="Cup")
    flush_now()

    mug.delete()
    flush_now()

    store = catalog_store(klaviyo_sandbox.state)
    assert set(store.items()) == {f"{ITEM}CUP-2"}
    assert set(store.variants()) == {f"{ITEM}CUP-2"}
    assert OutboxEvent.objects.exclude(status=Status.SENT).count() == 0


def test_an_existing_item_is_updated_when_the_create_job_says_it_exists(klaviyo_sandbox):
    product(inventory=1)
    flush_now()
    # The store lost track (e.g. a restored database): the same sku is created again.
    Product.objects.filter(sku="MUG-1").delete()
    OutboxEvent.objects.all().delete()
    klaviyo_sandbox_items = catalog_store(klaviyo_sandbox.state).items()
    assert f"{ITEM}MUG-1" in klaviyo_sandbox_items  # deletes were not flushed

    product(name="Blue mug v2", inventory=7)
    flush_now()

    store = catalog_store(klaviyo_sandbox.state)
    assert store.items()[f"{ITEM}MUG-1"]["title"] == "Blue mug v2"
    assert store.variants()[f"{ITEM}MUG-1"]["inventory_quantity"] == 7
    assert OutboxEvent.objects.exclude(status=Status.SENT).count() == 0
    assert klaviyo_sandbox.state.request_counts()["bulk_update_catalog_items"] == {202: 1}


def test_an_item_klaviyo_refuses_is_dead_with_klaviyos_reason_and_the_rest_is_sent(
    klaviyo_sandbox,
):
    product("OK-1")
    product("OK-2")
    flush_now()
    # The variant of an item Klaviyo does not have: the job fails that one variant.
    with transaction.atomic():
        from django_klaviyo.outbox import OutboxRow, enqueue_many

        enqueue_many(
            [
                OutboxRow(
                    kind=Kind.CATALOG_VARIANT,
                    payload={
                        "op": "upsert",
                        "external_id": "GHOST-V",
                        "create": True,
                        "item": "GHOST",
                        "attributes": {
                            "title": "Ghost",
                            "sku": "GHOST-V",
                            "url": "https://shop.example/p/ghost",
                            "price": 1,
                            "inventory_quantity": 1,
                        },
                    },
                )
            ]
        )
    mug = Product.objects.get(sku="OK-1")
    mug.inventory = 99
    mug.save()

    flush_now()

    dead = OutboxEvent.objects.get(status=Status.DEAD)
    assert dead.payload["external_id"] == "GHOST-V"
    assert dead.last_error_code == "not_found"
    assert f"{ITEM}GHOST" in dead.last_error_detail
    assert "/data/attributes/variants/data/" in dead.last_error_detail
    assert (
        catalog_store(klaviyo_sandbox.state).variants()[f"{ITEM}OK-1"]["inventory_quantity"] == 99
    )


def test_a_product_without_a_url_is_not_sent_and_the_save_still_succeeds(klaviyo_sandbox, caplog):
    product("NOURL", url="")

    assert Product.objects.filter(sku="NOURL").exists()
    # Klaviyo requires a url: the item and variant were refused when written, each kept
    # as a dead row naming the field, and nothing is sent.
    refused = OutboxEvent.objects.exclude(kind=Kind.CATALOG_CATEGORY)
    assert sorted(refused.values_list("kind", flat=True)) == [
        Kind.CATALOG_ITEM,
        Kind.CATALOG_VARIANT,
    ]
    for row in refused:
        assert row.status == OutboxEvent.Status.DEAD
        assert row.last_error_code == "invalid_on_save"
        assert "attributes.url" in row.last_error_detail
        assert "shop.product" in row.outcome_note
    assert "attributes.url" in caplog.text
    flush_now()
    assert catalog_store(klaviyo_sandbox.state).items() == {}


def test_a_cancelled_job_is_retried_not_lost():
    product()
    OutboxEvent.objects.exclude(kind=Kind.CATALOG_CATEGORY).delete()
    job = {
        "type": "catalog-category-bulk-create-job",
        "id": "job-1",
        "attributes": {
            "status": "cancelled",
            "created_at": "2026-11-29T00:00:00+00:00",
            "total_count": 1,
        },
        "links": {"self": "https://a.klaviyo.com/api/catalog-category-bulk-create-jobs/job-1/"},
    }
    with responses.RequestsMock() as mock:
        mock.post(
            "https://a.klaviyo.com/api/catalog-category-bulk-create-jobs",
            json={"data": job},
            status=202,
        )

        flush_now()

    row = OutboxEvent.objects.get()
    assert row.status == Status.RETRYING
    assert "cancelled" in row.last_error_detail


def test_a_refused_job_request_pointing_at_one_resource_kills_only_its_row():
    for i, name in enumerate(["Kitchen", "Garden", "Office"]):
        product(f"P-{i}", categories=[name])
    OutboxEvent.objects.exclude(kind=Kind.CATALOG_CATEGORY).delete()
    url = "https://a.klaviyo.com/api/catalog-category-bulk-create-jobs"
    refused = {
        "errors": [
            {
                "id": "e",
                "status": 400,
                "code": "invalid",
                "title": "Invalid input.",
                "detail": "Category name is not allowed.",
                "source": {"pointer": "/data/attributes/categories/data/1/attributes/name"},
            }
        ]
    }
    done = {
        "type": "catalog-category-bulk-create-job",
        "id": "job-4",
        "attributes": {
            "status": "complete",
            "created_at": "2026-11-29T00:00:00+00:00",
            "total_count": 2,
            "completed_count": 2,
        },
        "links": {"self": f"{url}/job-4/"},
    }
    with responses.RequestsMock() as mock:
        first = mock.post(url, json=refused, status=400)
        mock.post(url, json={"data": done}, status=202)

        flush_now()

        resent = json.loads(mock.calls[1].request.body)["data"]["attributes"]["categories"]
    assert first.call_count == 1
    names = [c["attributes"]["name"] for c in resent["data"]]
    dead = OutboxEvent.objects.get(status=Status.DEAD)
    assert dead.payload["attributes"]["name"] not in names
    assert len(names) == 2
    assert "Category name is not allowed." in dead.last_error_detail
    assert OutboxEvent.objects.filter(status=Status.SENT).count() == 2


def test_when_the_update_after_already_exists_is_refused_the_row_is_dead_with_the_reason():
    product("P-1", categories=["Kitchen"])
    OutboxEvent.objects.exclude(kind=Kind.CATALOG_CATEGORY).delete()
    url = "https://a.klaviyo.com/api/catalog-category-bulk-{}-jobs"
    exists = {
        "type": "catalog-category-bulk-create-job",
        "id": "job-5",
        "attributes": {
            "status": "complete",
            "created_at": "2026-11-29T00:00:00+00:00",
            "total_count": 1,
            "failed_count": 1,
            "errors": [
                {
                    "id": "e",
                    "code": "duplicate",
                    "title": "Conflict.",
                    "detail": "A catalog category with id $custom:::$default:::kitchen "
                    "already exists.",
                    "source": {"pointer": "/data/attributes/categories/data/0"},
                }
            ],
        },
        "links": {"self": url.format("create") + "/job-5/"},
    }
    refused = {
        "errors": [
            {
                "id": "e2",
                "status": 400,
                "code": "invalid",
                "title": "Invalid input.",
                "detail": "Too many catalog jobs in progress.",
            }
        ]
    }
    with responses.RequestsMock() as mock:
        mock.post(url.format("create"), json={"data": exists}, status=202)
        mock.post(url.format("update"), json=refused, status=400)

        flush_now()

    row = OutboxEvent.objects.get()
    assert row.status == Status.DEAD
    assert row.last_error_status == 400
    assert "Too many catalog jobs in progress." in row.last_error_detail


def test_a_variant_waits_uncounted_while_its_item_is_not_in_klaviyo_yet():
    product(categories=[])
    throttled = {
        "errors": [
            {
                "id": "e",
                "status": 429,
                "code": "throttled",
                "title": "Request was throttled.",
                "detail": "Request was throttled. Expected available in 1 second.",
            }
        ]
    }
    with responses.RequestsMock() as mock:
        # No variant request is registered: sending one would fail the test.
        mock.post(
            "https://a.klaviyo.com/api/catalog-item-bulk-create-jobs",
            json=throttled,
            status=429,
            headers={"Retry-After": "1"},
        )

        flush_now()

    item, variant = rows(Kind.CATALOG_ITEM)[0], rows(Kind.CATALOG_VARIANT)[0]
    assert item.status == Status.RETRYING
    assert variant.status == Status.PENDING
    assert variant.attempts == 0


def test_a_job_still_running_when_its_lifetime_ends_is_retried_later(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "CATALOG_JOB_TIMEOUT": 10.0}
    product()
    OutboxEvent.objects.exclude(kind=Kind.CATALOG_CATEGORY).delete()
    job = {
        "type": "catalog-category-bulk-create-job",
        "id": "job-3",
        "attributes": {
            "status": "processing",
            "created_at": "2026-11-29T00:00:00+00:00",
            "total_count": 1,
        },
        "links": {"self": "https://a.klaviyo.com/api/catalog-category-bulk-create-jobs/job-3/"},
    }
    now = [timezone.now()]

    def sleep(seconds: float) -> None:
        now[0] += timedelta(seconds=seconds)

    with responses.RequestsMock() as mock:
        mock.post(
            "https://a.klaviyo.com/api/catalog-category-bulk-create-jobs",
            json={"data": job},
            status=202,
        )
        polls = mock.get(
            "https://a.klaviyo.com/api/catalog-category-bulk-create-jobs/job-3",
            json={"data": job},
        )

        flush_outbox(client=fast_client(), clock=lambda: now[0], sleep=sleep)

    row = OutboxEvent.objects.get()
    assert row.status == Status.RETRYING
    assert "still 'processing' after 10s" in row.last_error_detail
    # Looked at at once, then after 0.25, 0.5, 1 and 2 s pauses (CATALOG_JOB_POLL_SECONDS
    # caps them) until the job's 10 s lifetime had passed.
    assert polls.call_count == 9


def test_a_job_error_without_a_pointer_fails_the_rows_it_leaves_unknown():
    product()
    OutboxEvent.objects.exclude(kind=Kind.CATALOG_CATEGORY).delete()
    job = {
        "type": "catalog-category-bulk-create-job",
        "id": "job-2",
        "attributes": {
            "status": "complete",
            "created_at": "2026-11-29T00:00:00+00:00",
            "total_count": 1,
            "failed_count": 1,
            "errors": [
                {
                    "id": "e1",
                    "code": "invalid",
                    "title": "Invalid input.",
                    "detail": "Category name is reserved.",
                    "source": {"pointer": "/data"},
                }
            ],
        },
        "links": {"self": "https://a.klaviyo.com/api/catalog-category-bulk-create-jobs/job-2/"},
    }
    with responses.RequestsMock() as mock:
        mock.post(
            "https://a.klaviyo.com/api/catalog-category-bulk-create-jobs",
            json={"data": job},
            status=202,
        )

        flush_now()

    row = OutboxEvent.objects.get()
    assert row.status == Status.DEAD
    assert row.last_error_code == "invalid"
    assert "Category name is reserved." in row.last_error_detail


# --- manage.py klaviyo_catalog sync ---------------------------------------------------------


def test_full_sync_streams_every_product_in_pk_order_with_progress(klaviyo_sandbox, monkeypatch):
    from django_klaviyo.management.commands import klaviyo_catalog

    for i in range(250):
        product(f"SKU-{i:03}", categories=["Kitchen", "Gifts"] if i % 2 else ["Kitchen"])
    OutboxEvent.objects.all().delete()  # as if the products existed before the mapping
    monkeypatch.setattr(klaviyo_catalog, "get_client", fast_client)
    out, err = StringIO(), StringIO()

    call_command(
        "klaviyo_catalog", "sync", "--chunk-size", "100", "--flush", stdout=out, stderr=err
    )

    store = catalog_store(klaviyo_sandbox.state)
    assert len(store.items()) == 250
    assert len(store.variants()) == 250
    assert set(store.categories()) == {f"{ITEM}kitchen", f"{ITEM}gifts"}
    assert "ITEMS: 100/250" in out.getvalue()
    assert "ITEMS: 250/250" in out.getvalue()
    assert "VARIANTS: 250/250" in out.getvalue()
    # 100 resources a job, in primary-key order: three create jobs each for items and
    # variants.
    item_jobs = [j for j in store.jobs.values() if (j["kind"], j["op"]) == ("item", "create")]
    first = [r["attributes"]["external_id"] for r in item_jobs[0]["resources"]]
    assert first == [f"SKU-{i:03}" for i in range(100)]
    counts = klaviyo_sandbox.state.request_counts()
    assert counts["bulk_create_catalog_items"] == {202: 3}
    assert counts["bulk_create_catalog_variants"] == {202: 3}
    assert OutboxEvent.objects.exclude(status=Status.SENT).count() == 0
    assert err.getvalue() == ""


def test_full_sync_names_the_products_it_could_not_map_and_fails(klaviyo_sandbox):
    product("GOOD")
    product("BAD", url="")
    out, err = StringIO(), StringIO()

    with pytest.raises(CommandError, match="2 object"):
        call_command("klaviyo_catalog", "sync", stdout=out, stderr=err)

    assert "BAD" in err.getvalue()
    assert "attributes.url" in err.getvalue()
    assert "ITEMS: 2/2" in out.getvalue()


# --- the mapping's system checks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("catalog", "check_id"),
    [
        ({"PRODUCTS": {"model": "shop.Product", "external_id": "sku"}}, "django_klaviyo.E050"),
        (
            {"ITEMS": {"model": "shop.Product", "external_id": "sku", "colour": "x"}},
            "django_klaviyo.E050",
        ),
        ({"ITEMS": {"model": "shop.Nothing", "external_id": "sku"}}, "django_klaviyo.E051"),
        ({"ITEMS": {"model": "shop.Product", "external_id": "skew"}}, "django_klaviyo.E051"),
        ({"VARIANTS": {"model": "shop.Product", "external_id": "sku"}}, "django_klaviyo.E052"),
    ],
)
def test_a_broken_catalog_mapping_is_reported_by_manage_py_check(settings, catalog, check_id):
    from django_klaviyo.catalog.checks import check_catalog_mapping

    settings.KLAVIYO = {**settings.KLAVIYO, "CATALOG": catalog}

    assert [m.id for m in check_catalog_mapping()] == [check_id]


def test_the_shipped_mapping_passes_the_checks():
    from django_klaviyo.catalog.checks import check_catalog_mapping

    assert check_catalog_mapping() == []


def test_a_dry_run_counts_the_catalog_jobs_without_sending():
    product("A-1")
    product("A-2", categories=["Kitchen"])

    report = flush_outbox(dry_run=True)

    assert report.planned == {
        Kind.CATALOG_CATEGORY: 1,
        Kind.CATALOG_ITEM: 2,
        Kind.CATALOG_VARIANT: 2,
    }
    assert report.planned_requests == 3  # one create job per kind
    assert OutboxEvent.objects.filter(status=Status.PENDING).count() == 5


def test_catalog_rows_show_in_the_outbox_admin(admin_client):
    product()
    row = rows(Kind.CATALOG_VARIANT)[0]

    listing = admin_client.get("/admin/django_klaviyo/outboxevent/?kind=catalog_variant")
    detail = admin_client.get(f"/admin/django_klaviyo/outboxevent/{row.pk}/change/")

    assert listing.status_code == 200
    assert "Catalog variant" in listing.content.decode()
    assert detail.status_code == 200
    assert "inventory_quantity" in detail.content.decode()


def test_a_variant_whose_item_id_maps_to_nothing_is_refused_naming_item(settings, caplog):
    catalog = settings.KLAVIYO["CATALOG"]
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "CATALOG": {**catalog, "VARIANTS": {**catalog["VARIANTS"], "item": "brand"}},
    }

    product(brand="", categories=[])

    assert OutboxEvent.objects.get(kind=Kind.CATALOG_ITEM).status == OutboxEvent.Status.PENDING
    refused = OutboxEvent.objects.get(kind=Kind.CATALOG_VARIANT)
    assert refused.status == OutboxEvent.Status.DEAD
    assert refused.last_error_detail.endswith("(field item)")
    assert "field item" in caplog.text
