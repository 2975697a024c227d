"""The sandbox's catalog, back-in-stock subscriptions and coupons.

Catalog writes are bulk jobs, as in Klaviyo: the POST answers 202 with a ``processing``
job, and the job runs when it is first read (``GET .../<job_id>``) once the sandbox's
``job_seconds`` have passed (until then it stays ``processing``), which is when its
per-resource errors appear in ``attributes.errors`` with a pointer to the resource
(``/data/attributes/items/data/3``). Errors: a create of an existing external id
(``duplicate``), an update or delete of an unknown one, a variant of an unknown item,
an item in an unknown category (``not_found``). Back-in-stock subscriptions need a
known variant; coupon codes need a known coupon and are unique per coupon.

Tests read the store with ``catalog_store(sandbox.state)``.
"""

from __future__ import annotations

import copy
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

from django_klaviyo.testing.sandbox.jsonapi import (
    ApiError,
    Handler,
    Request,
    Response,
    check_identifiers,
    invalid,
    registrar,
)
from django_klaviyo.testing.sandbox.records import DuplicateProfile, now_iso
from django_klaviyo.testing.sandbox.state import SandboxState

MAX_CATALOG_JOB = 100
MAX_COUPON_CODES_JOB = 1000
CATALOG_ID_PREFIX = "$custom:::$default:::"

# This module's operations; the server joins them with routes.ROUTES.
ROUTES: dict[str, Handler] = {}
handles = registrar(ROUTES)

_KINDS = {"item": "items", "variant": "variants", "category": "categories"}
_NOUNS = {"catalog-item": "item", "catalog-variant": "variant", "catalog-category": "category"}


class CatalogStore:
    """Catalog resources by Klaviyo id, subscriptions, coupons, codes and jobs."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.resources: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in _KINDS}
        self.subscriptions: list[dict[str, Any]] = []
        self.coupons: dict[str, dict[str, Any]] = {}
        self.codes: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}

    def summary(self) -> dict[str, int]:
        with self.lock:
            return {
                "items": len(self.resources["item"]),
                "variants": len(self.resources["variant"]),
                "categories": len(self.resources["category"]),
                "back_in_stock_subscriptions": len(self.subscriptions),
                "coupons": len(self.coupons),
                "coupon_codes": len(self.codes),
            }

    def items(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.resources["item"])

    def variants(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.resources["variant"])

    def categories(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.resources["category"])

    def back_in_stock_subscriptions(self) -> list[dict[str, Any]]:
        with self.lock:
            return copy.deepcopy(self.subscriptions)

    def coupon_codes(self, coupon_id: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            return [
                copy.deepcopy(c)
                for c in self.codes.values()
                if coupon_id is None or c["coupon_id"] == coupon_id
            ]


def catalog_store(state: SandboxState) -> CatalogStore:
    store = state.extensions.get("catalog")
    if store is None:
        store = state.extensions.setdefault("catalog", CatalogStore())
    return store  # type: ignore[no-any-return]


# --- catalog bulk jobs ------------------------------------------------------------------


def _job_resource(job: dict[str, Any], base: str) -> dict[str, Any]:
    attributes = {
        "status": job["status"],
        "created_at": job["created_at"],
        "total_count": job["total_count"],
        "completed_count": job["completed_count"],
        "failed_count": job["failed_count"],
        "completed_at": job["completed_at"],
        "errors": job["errors"],
        "expires_at": job["expires_at"],
    }
    return {
        "type": job["type"],
        "id": job["id"],
        "attributes": attributes,
        "links": {"self": f"{base}{job['path']}/{job['id']}/"},
    }


def _error(state: SandboxState, code: str, title: str, detail: str, pointer: str) -> dict:
    return {
        "id": state.new_id(),
        "code": code,
        "title": title,
        "detail": detail,
        "source": {"pointer": pointer},
    }


def _new_job(state: SandboxState, request: Request, kind: str, op: str) -> dict[str, Any]:
    resources = request.body["data"]["attributes"][_KINDS[kind]]["data"]
    if len(resources) > MAX_CATALOG_JOB:
        raise invalid(
            f"At most {MAX_CATALOG_JOB} resources per job ({len(resources)} given).",
            f"/data/attributes/{_KINDS[kind]}/data",
        )
    return {
        "id": state.new_id(),
        "type": request.body["data"]["type"],
        "path": request.path.rstrip("/"),
        "kind": kind,
        "op": op,
        "resources": resources,
        "status": "processing",
        "started": state.job_started(),
        "created_at": now_iso(),
        "total_count": len(resources),
        "completed_count": 0,
        "failed_count": 0,
        "completed_at": None,
        "errors": [],
        "expires_at": None,
    }


def _apply(state: SandboxState, store: CatalogStore, job: dict[str, Any]) -> None:
    """Run a job: each resource succeeds or adds one error pointing at it."""
    kind, op = job["kind"], job["op"]
    table = store.resources[kind]
    for i, resource in enumerate(job["resources"]):
        pointer = f"/data/attributes/{_KINDS[kind]}/data/{i}"
        problem = _problem(store, kind, op, resource)
        if problem:
            code, detail = problem
            title = "Conflict." if code == "duplicate" else "Not found."
            job["errors"].append(_error(state, code, title, detail, pointer))
            continue
        attributes = dict(resource.get("attributes") or {})
        relationships = resource.get("relationships") or {}
        if op == "create":
            klaviyo_id = CATALOG_ID_PREFIX + attributes["external_id"]
            table[klaviyo_id] = {"id": klaviyo_id, **attributes, **_links(relationships)}
        elif op == "update":
            table[resource["id"]].update(attributes, **_links(relationships))
        else:
            del table[resource["id"]]
            if kind == "item":  # an item's variants go with it
                for vid, variant in list(store.resources["variant"].items()):
                    if variant.get("item") == resource["id"]:
                        del store.resources["variant"][vid]
    job.update(
        status="complete",
        completed_count=job["total_count"] - len(job["errors"]),
        failed_count=len(job["errors"]),
        completed_at=now_iso(),
        expires_at=(datetime.now(timezone.utc) + timedelta(days=7)).isoformat(timespec="seconds"),
    )


def _links(relationships: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "categories" in relationships:
        out["categories"] = [r["id"] for r in relationships["categories"].get("data") or []]
    if "item" in relationships:
        out["item"] = relationships["item"]["data"]["id"]
    return out


def _problem(
    store: CatalogStore, kind: str, op: str, resource: dict[str, Any]
) -> tuple[str, str] | None:
    table = store.resources[kind]
    noun = f"catalog {kind}"
    if op == "create":
        klaviyo_id = CATALOG_ID_PREFIX + resource["attributes"]["external_id"]
        if klaviyo_id in table:
            return "duplicate", f"A {noun} with id {klaviyo_id} already exists."
    elif resource["id"] not in table:
        return "not_found", f"A {noun} with id {resource['id']} does not exist."
    relationships = resource.get("relationships") or {}
    item = (relationships.get("item") or {}).get("data")
    if item and item["id"] not in store.resources["item"]:
        return "not_found", f"The catalog item {item['id']} of this variant does not exist."
    for category in (relationships.get("categories") or {}).get("data") or []:
        if category["id"] not in store.resources["category"]:
            return "not_found", f"The catalog category {category['id']} does not exist."
    return None


def _register_catalog(kind: str, op: str, operation: str, get_operation: str) -> None:
    def start(state: SandboxState, request: Request) -> Response:
        store = catalog_store(state)
        job = _new_job(state, request, kind, op)
        with store.lock:
            store.jobs[job["id"]] = job
            body = {"data": _job_resource(job, request.base_url)}
        return Response(202, body)

    def get(state: SandboxState, request: Request) -> Response:
        store = catalog_store(state)
        with store.lock:
            job = store.jobs.get(request.path_params["job_id"])
            if job is None or (job["kind"], job["op"]) != (kind, op):
                raise ApiError(404, "not_found", "Not found.", pointer=None, parameter="job_id")
            if job["status"] == "processing" and state.job_due(job["started"]):
                _apply(state, store, job)
            body = {"data": _job_resource(job, request.base_url)}
        return Response(200, body)

    handles(operation)(start)
    handles(get_operation)(get)


for _op in ("create", "update", "delete"):
    _register_catalog("item", _op, f"bulk_{_op}_catalog_items", f"get_bulk_{_op}_catalog_items_job")
    _register_catalog(
        "variant", _op, f"bulk_{_op}_catalog_variants", f"get_bulk_{_op}_variants_job"
    )
    _register_catalog(
        "category", _op, f"bulk_{_op}_catalog_categories", f"get_bulk_{_op}_categories_job"
    )


# --- back in stock ----------------------------------------------------------------------


@handles("create_back_in_stock_subscription")
def create_back_in_stock_subscription(state: SandboxState, request: Request) -> Response:
    data = request.body["data"]
    attributes = data["attributes"]
    profile = (attributes.get("profile") or {}).get("data")
    if not profile:
        raise invalid("A profile is required.", "/data/attributes/profile")
    pointer = "/data/attributes/profile/data"
    check_identifiers(profile, pointer, allowed=("email", "phone_number", "external_id"))
    identifiers = {k: v for k, v in (profile.get("attributes") or {}).items() if v}
    channels = attributes["channels"]
    if not channels:
        raise invalid("Give at least one channel.", "/data/attributes/channels")
    if "EMAIL" in channels and not identifiers.get("email"):
        raise invalid("The EMAIL channel needs an email.", f"{pointer}/attributes/email")
    if "SMS" in channels and not identifiers.get("phone_number"):
        raise invalid("The SMS channel needs a phone_number.", f"{pointer}/attributes/phone_number")
    variant_id = data["relationships"]["variant"]["data"]["id"]
    store = catalog_store(state)
    with store.lock:
        if variant_id not in store.resources["variant"]:
            raise ApiError(
                404,
                "not_found",
                f"A catalog variant with id {variant_id} does not exist.",
                pointer="/data/relationships/variant/data/id",
            )
    try:
        found, _ = state.upsert_profile(identifiers, profile.get("id"), strict=False)
    except DuplicateProfile as exc:
        raise ApiError(409, "duplicate_profile", str(exc), pointer=pointer) from None
    with store.lock:
        key = (found["id"], variant_id)
        for subscription in store.subscriptions:
            if (subscription["profile_id"], subscription["variant_id"]) == key:
                subscription["channels"] = sorted(set(subscription["channels"]) | set(channels))
                break
        else:
            store.subscriptions.append(
                {
                    "profile_id": found["id"],
                    "profile": identifiers,
                    "variant_id": variant_id,
                    "channels": sorted(set(channels)),
                    "received_at": now_iso(),
                }
            )
    return Response(202)


# --- coupons ----------------------------------------------------------------------------


def _coupon_resource(coupon: dict[str, Any], base: str) -> dict[str, Any]:
    return {
        "type": "coupon",
        "id": coupon["id"],
        "attributes": {
            "external_id": coupon["external_id"],
            "description": coupon.get("description"),
            "monitor_configuration": coupon.get("monitor_configuration"),
        },
        "links": {"self": f"{base}/api/coupons/{coupon['id']}/"},
    }


@handles("create_coupon")
def create_coupon(state: SandboxState, request: Request) -> Response:
    attributes = request.body["data"]["attributes"]
    external_id = attributes["external_id"]
    if not external_id.strip():
        raise invalid("external_id must not be blank.", "/data/attributes/external_id")
    store = catalog_store(state)
    with store.lock:
        if external_id in store.coupons:
            raise ApiError(
                409,
                "duplicate",
                f"A coupon with external id {external_id} already exists.",
                pointer="/data/attributes/external_id",
            )
        # Klaviyo's coupon id is its external id.
        coupon = {
            "id": external_id,
            "external_id": external_id,
            "description": attributes.get("description"),
            "monitor_configuration": attributes.get("monitor_configuration"),
        }
        store.coupons[external_id] = coupon
    resource = _coupon_resource(coupon, request.base_url)
    return Response(201, {"data": resource, "links": resource["links"]})


@handles("bulk_create_coupon_codes")
def bulk_create_coupon_codes(state: SandboxState, request: Request) -> Response:
    codes = request.body["data"]["attributes"]["coupon-codes"]["data"]
    if len(codes) > MAX_COUPON_CODES_JOB:
        raise invalid(
            f"At most {MAX_COUPON_CODES_JOB} coupon codes per job ({len(codes)} given).",
            "/data/attributes/coupon-codes/data",
        )
    store = catalog_store(state)
    job = {
        "id": state.new_id(),
        "type": "coupon-code-bulk-create-job",
        "started": state.job_started(),
        "path": "/api/coupon-code-bulk-create-jobs",
        "kind": "coupon-code",
        "op": "create",
        "resources": codes,
        "status": "processing",
        "created_at": now_iso(),
        "total_count": len(codes),
        "completed_count": 0,
        "failed_count": 0,
        "completed_at": None,
        "errors": [],
        "expires_at": None,
        "code_ids": [],
    }
    with store.lock:
        store.jobs[job["id"]] = job
        body = {"data": _job_resource(job, request.base_url)}
    return Response(202, body)


def _run_code_job(state: SandboxState, store: CatalogStore, job: dict[str, Any]) -> None:
    for i, item in enumerate(job["resources"]):
        pointer = f"/data/attributes/coupon-codes/data/{i}"
        code = item["attributes"]["unique_code"]
        coupon_id = item["relationships"]["coupon"]["data"]["id"]
        code_id = f"{coupon_id}-{code}"
        if coupon_id not in store.coupons:
            detail = f"The coupon {coupon_id} does not exist."
            job["errors"].append(_error(state, "not_found", "Not found.", detail, pointer))
        elif code_id in store.codes:
            detail = f"The coupon code {code} already exists for coupon {coupon_id}."
            job["errors"].append(_error(state, "duplicate", "Conflict.", detail, pointer))
        else:
            store.codes[code_id] = {
                "id": code_id,
                "coupon_id": coupon_id,
                "unique_code": code,
                "expires_at": item["attributes"].get("expires_at"),
                "status": "UNASSIGNED",
            }
            job["code_ids"].append(code_id)
    job.update(
        status="complete",
        completed_count=len(job["code_ids"]),
        failed_count=len(job["errors"]),
        completed_at=now_iso(),
        expires_at=(datetime.now(timezone.utc) + timedelta(days=7)).isoformat(timespec="seconds"),
    )


def _code_resource(code: dict[str, Any], base: str) -> dict[str, Any]:
    return {
        "type": "coupon-code",
        "id": code["id"],
        "attributes": {
            "unique_code": code["unique_code"],
            "expires_at": code["expires_at"],
            "status": code["status"],
        },
        "links": {"self": f"{base}/api/coupon-codes/{code['id']}/"},
    }


@handles("get_bulk_create_coupon_codes_job")
def get_bulk_create_coupon_codes_job(state: SandboxState, request: Request) -> Response:
    store = catalog_store(state)
    with store.lock:
        job = store.jobs.get(request.path_params["job_id"])
        if job is None or job["kind"] != "coupon-code":
            raise ApiError(404, "not_found", "Not found.", pointer=None, parameter="job_id")
        if job["status"] == "processing" and state.job_due(job["started"]):
            _run_code_job(state, store, job)
        resource = _job_resource(job, request.base_url)
        body: dict[str, Any] = {"data": resource}
        if "coupon-codes" in (request.query.get("include") or "").split(","):
            codes = [store.codes[i] for i in job["code_ids"] if i in store.codes]
            resource["relationships"] = {
                "coupon-codes": {
                    "data": [{"type": "coupon-code", "id": c["id"]} for c in codes],
                }
            }
            body["included"] = [_code_resource(c, request.base_url) for c in codes]
    return Response(200, body)
