"""Cut Klaviyo's full OpenAPI spec down to the operations django-klaviyo uses.

The full spec is 3 MB; the subset keeps, for each operation below, its path item
entry (with path-level parameters), every ``$ref`` it reaches (schemas, responses,
parameters), the servers, the security schemes and each operation's
``x-klaviyo-ratelimit``. The output ships in the package (``django_klaviyo/testing/spec``)
because the sandbox validates requests against it.

Usage (from the repository root)::

    python tests/spec/extract_openapi_subset.py [SOURCE_JSON] [OUTPUT_JSON]

Defaults: ``../shared/klaviyo-openapi/klaviyo-openapi-2026-07-15.json`` and
``django_klaviyo/testing/spec/klaviyo-openapi-2026-07-15.subset.json``. The output is
deterministic, so re-running it on the same source produces no diff.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "klaviyo-openapi" / "klaviyo-openapi-2026-07-15.json"
DEFAULT_OUTPUT = (
    REPO_ROOT / "django_klaviyo" / "testing" / "spec" / "klaviyo-openapi-2026-07-15.subset.json"
)

OPERATION_IDS: tuple[str, ...] = (
    "create_event",
    "bulk_create_events",
    "create_or_update_profile",
    "get_profiles",
    "get_profile",
    "update_profile",
    "bulk_import_profiles",
    "get_bulk_import_profiles_job",
    "get_errors_for_bulk_import_profiles_job",
    "bulk_subscribe_profiles",
    "bulk_unsubscribe_profiles",
    "create_list",
    "get_lists",
    "get_list",
    "add_profiles_to_list",
    "remove_profiles_from_list",
    "get_profiles_for_list",
    "get_campaigns",
    "get_flows",
    "create_webhook",
    "get_webhooks",
    "get_webhook",
    "delete_webhook",
    "get_webhook_topics",
    "request_profile_deletion",
    # Catalog sync (bulk jobs and their status), back in stock, coupons.
    "bulk_create_catalog_items",
    "get_bulk_create_catalog_items_job",
    "bulk_update_catalog_items",
    "get_bulk_update_catalog_items_job",
    "bulk_delete_catalog_items",
    "get_bulk_delete_catalog_items_job",
    "bulk_create_catalog_variants",
    "get_bulk_create_variants_job",
    "bulk_update_catalog_variants",
    "get_bulk_update_variants_job",
    "bulk_delete_catalog_variants",
    "get_bulk_delete_variants_job",
    "bulk_create_catalog_categories",
    "get_bulk_create_categories_job",
    "bulk_update_catalog_categories",
    "get_bulk_update_categories_job",
    "bulk_delete_catalog_categories",
    "get_bulk_delete_categories_job",
    "create_back_in_stock_subscription",
    "create_coupon",
    "bulk_create_coupon_codes",
    "get_bulk_create_coupon_codes_job",
    # Insights: the Placed Order metric's id, campaign and flow reports, revenue by day.
    "get_metrics",
    "query_campaign_values",
    "query_flow_values",
    "query_flow_series",
    "query_metric_aggregates",
    # Segments mirror (klaviyo_sync segments).
    "get_segments",
    "get_segment",
    "get_profiles_for_segment",
    "query_segment_series",
)

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _collect_refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            found.add(ref)
        for value in node.values():
            _collect_refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _collect_refs(value, found)


def _resolve_pointer(spec: dict[str, Any], ref: str) -> Any:
    if not ref.startswith("#/"):
        raise ValueError(f"Only local $refs are supported, got {ref!r}")
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def extract_subset(spec: dict[str, Any], operation_ids: tuple[str, ...] = OPERATION_IDS) -> dict:
    wanted = set(operation_ids)
    paths: dict[str, Any] = {}
    for path, item in spec["paths"].items():
        kept = {
            method: op
            for method, op in item.items()
            if method in HTTP_METHODS and op.get("operationId") in wanted
        }
        if not kept:
            continue
        # Path-level fields (parameters, summary) apply to every operation under the path.
        shared = {k: v for k, v in item.items() if k not in HTTP_METHODS}
        paths[path] = {**shared, **kept}
    present = {
        op["operationId"]
        for item in paths.values()
        for method, op in item.items()
        if method in HTTP_METHODS
    }
    missing = wanted - present
    if missing:
        raise SystemExit(f"Operations not in the source spec: {sorted(missing)}")
    for item in paths.values():
        for method in HTTP_METHODS:
            if method in item and "x-klaviyo-ratelimit" not in item[method]:
                raise SystemExit(f"{item[method]['operationId']} has no x-klaviyo-ratelimit")

    # Transitive closure of $refs reachable from the kept paths.
    pending: set[str] = set()
    _collect_refs(paths, pending)
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        if ref in seen:
            continue
        seen.add(ref)
        _collect_refs(_resolve_pointer(spec, ref), pending)

    components: dict[str, dict[str, Any]] = {}
    for ref in sorted(seen):
        _, section, kind, name = ref.split("/", 3)
        if section != "components":
            raise SystemExit(f"Unexpected $ref outside components: {ref}")
        components.setdefault(kind, {})[name] = _resolve_pointer(spec, ref)
    if "securitySchemes" in spec.get("components", {}):
        components["securitySchemes"] = spec["components"]["securitySchemes"]

    subset: dict[str, Any] = {
        "openapi": spec["openapi"],
        "info": {
            **spec["info"],
            "x-django-klaviyo-subset": {
                "source": "https://github.com/klaviyo/openapi/blob/"
                "f0a30ba41254904dc410d84ca497df68f8872276/openapi/stable.json",
                "license": "MIT",
                "operations": sorted(wanted),
            },
        },
        "servers": spec["servers"],
        "security": spec.get("security", []),
        "paths": paths,
        "components": {kind: components[kind] for kind in sorted(components)},
    }
    return subset


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else DEFAULT_SOURCE
    output = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUTPUT
    spec = json.loads(source.read_text(encoding="utf-8"))
    subset = extract_subset(spec)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(subset, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    operations = sum(1 for item in subset["paths"].values() for m in item if m in HTTP_METHODS)
    schemas = len(subset["components"].get("schemas", {}))
    print(
        f"Wrote {output} ({output.stat().st_size:,} bytes, {operations} operations, "
        f"{schemas} schemas)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
