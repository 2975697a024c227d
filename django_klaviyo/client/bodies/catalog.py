"""Catalog bodies: the item, variant and category bulk jobs
(``POST /api/catalog-<kind>-bulk-<op>-jobs``, at most 100 resources a job), from clean
values (``rules.catalog``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import limits
from django_klaviyo.rules.catalog import CATALOG_ID_PREFIX, RESOURCE_TYPES, check_job

# The key of a job's resources in its attributes; also the noun of its operationId.
MEMBERS = {"item": "items", "variant": "variants", "category": "categories"}


def catalog_id(external_id: str) -> str:
    """Klaviyo's id of the store's catalog resource ``external_id``."""
    return f"{CATALOG_ID_PREFIX}{external_id}"


def catalog_resource(
    kind: str,
    op: str,
    external_id: str,
    attributes: Mapping[str, Any] | None = None,
    relationships: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One resource of a bulk job: create sends ``external_id`` in the attributes,
    update and delete address the resource by Klaviyo's id. An unknown kind or operation
    is refused (``rules.catalog.check_job``) rather than built."""
    check_job(kind, op)
    resource: dict[str, Any] = {"type": RESOURCE_TYPES[kind]}
    if op == "delete":
        resource["id"] = catalog_id(external_id)
        return resource
    if op == "create":
        resource["attributes"] = {"external_id": external_id, **dict(attributes or {})}
    else:
        resource["id"] = catalog_id(external_id)
        resource["attributes"] = dict(attributes or {})
    if relationships:
        resource["relationships"] = dict(relationships)
    return resource


def catalog_job_body(kind: str, op: str, resources: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A bulk job of 1 to 100 resources built by ``catalog_resource``."""
    check_job(kind, op)
    if not resources or len(resources) > limits.CATALOG_RESOURCES_PER_JOB:
        raise KlaviyoValidationError(
            f"a catalog job takes 1 to {limits.CATALOG_RESOURCES_PER_JOB} resources "
            f"({len(resources)} given).",
            field=MEMBERS[kind],
        )
    return {
        "data": {
            "type": f"{RESOURCE_TYPES[kind]}-bulk-{op}-job",
            "attributes": {MEMBERS[kind]: {"data": [dict(r) for r in resources]}},
        }
    }


def related(kind: str, external_ids: Iterable[str]) -> dict[str, Any]:
    """A to-many relationship to catalog resources (an item's categories)."""
    return {"data": [{"type": RESOURCE_TYPES[kind], "id": catalog_id(e)} for e in external_ids]}
