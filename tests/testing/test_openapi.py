"""django_klaviyo.testing.openapi: the shipped spec subset, operation lookup, and request validation
through jsonschema with pointers that name the field."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

from django_klaviyo.testing import openapi
from django_klaviyo.testing.openapi import (
    find_operation,
    load_spec,
    operation,
    rate_limits,
    validate_request,
    validate_schema,
)

REPO = Path(__file__).resolve().parents[2]
FULL_SPEC = REPO.parent / "shared" / "klaviyo-openapi" / "klaviyo-openapi-2026-07-15.json"

# Bodies copied from the examples in shared/notes/klaviyo-api.md.
EVENT = {
    "data": {
        "type": "event",
        "attributes": {
            "properties": {"OrderId": "1234", "Items": ["A", "B"]},
            "time": "2026-07-20T12:34:56+00:00",
            "value": 49.99,
            "value_currency": "USD",
            "unique_id": "order-1234-placed",
            "backfill": False,
            "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
            "profile": {
                "data": {
                    "type": "profile",
                    "attributes": {"email": "a@example.com", "external_id": "user-42"},
                }
            },
        },
    }
}
BULK_EVENTS = {
    "data": {
        "type": "event-bulk-create-job",
        "attributes": {
            "events-bulk-create": {
                "data": [
                    {
                        "type": "event-bulk-create",
                        "attributes": {
                            "profile": {
                                "data": {
                                    "type": "profile",
                                    "attributes": {
                                        "email": "a@example.com",
                                        "external_id": "user-42",
                                    },
                                }
                            },
                            "events": {
                                "data": [
                                    {
                                        "type": "event",
                                        "attributes": {
                                            "properties": {"OrderId": "1234"},
                                            "metric": {
                                                "data": {
                                                    "type": "metric",
                                                    "attributes": {"name": "Placed Order"},
                                                }
                                            },
                                            "time": "2026-07-20T12:34:56+00:00",
                                            "value": 49.99,
                                            "value_currency": "USD",
                                            "unique_id": "order-1234-placed",
                                        },
                                    }
                                ]
                            },
                        },
                    }
                ]
            }
        },
    }
}
PROFILE_IMPORT = {
    "data": {
        "type": "profile",
        "attributes": {
            "email": "a@example.com",
            "phone_number": "+15005550006",
            "external_id": "user-42",
            "first_name": "Ada",
            "last_name": "L",
            "locale": "en-US",
            "location": {"city": "Boston", "country": "US", "zip": "02110", "latitude": 42.36},
            "properties": {"plan": "pro"},
        },
        "meta": {"patch_properties": {"append": {"tags": "vip"}, "unset": "old_field"}},
    }
}
BULK_IMPORT = {
    "data": {
        "type": "profile-bulk-import-job",
        "attributes": {
            "profiles": {
                "data": [
                    {
                        "type": "profile",
                        "attributes": {
                            "email": "a@example.com",
                            "external_id": "user-42",
                            "properties": {"plan": "pro"},
                        },
                    }
                ]
            }
        },
        "relationships": {"lists": {"data": [{"type": "list", "id": "Y6nRLr"}]}},
    }
}
SUBSCRIBE = {
    "data": {
        "type": "profile-subscription-bulk-create-job",
        "attributes": {
            "custom_source": "django signup form",
            "historical_import": False,
            "profiles": {
                "data": [
                    {
                        "type": "profile",
                        "id": None,
                        "attributes": {
                            "email": "a@example.com",
                            "phone_number": "+15005550006",
                            "subscriptions": {
                                "email": {"marketing": {"consent": "SUBSCRIBED"}},
                                "sms": {
                                    "marketing": {"consent": "SUBSCRIBED"},
                                    "transactional": {"consent": "SUBSCRIBED"},
                                },
                            },
                        },
                    }
                ]
            },
        },
        "relationships": {"list": {"data": {"type": "list", "id": "Y6nRLr"}}},
    }
}
UNSUBSCRIBE = {
    "data": {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": {
            "profiles": {
                "data": [
                    {
                        "type": "profile",
                        "attributes": {
                            "email": "a@example.com",
                            "phone_number": "+15005550006",
                            "subscriptions": {
                                "email": {"marketing": {"consent": "UNSUBSCRIBED"}},
                                "sms": {"marketing": {"consent": "UNSUBSCRIBED"}},
                            },
                        },
                    }
                ]
            }
        },
        "relationships": {"list": {"data": {"type": "list", "id": "Y6nRLr"}}},
    }
}
CREATE_LIST = {"data": {"type": "list", "attributes": {"name": "Newsletter"}}}
LIST_MEMBERS = {"data": [{"type": "profile", "id": "01H0000000000000000000000A"}]}
UPDATE_PROFILE = {
    "data": {"type": "profile", "id": "01H0000000000000000000000A", "attributes": {"title": "Dr"}}
}
CREATE_WEBHOOK = {
    "data": {
        "type": "webhook",
        "attributes": {
            "name": "django_klaviyo",
            "description": "optional",
            "endpoint_url": "https://example.com/klaviyo/webhook",
            "secret_key": "0123456789abcdef0123",
        },
        "relationships": {
            "webhook-topics": {
                "data": [
                    {
                        "type": "webhook-topic",
                        "id": "event:klaviyo.unsubscribed_from_email_marketing",
                    }
                ]
            }
        },
    }
}
DELETION = {
    "data": {
        "type": "data-privacy-deletion-job",
        "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {"email": "x@example.com"}}}
        },
    }
}

VALID_BODIES: dict[str, dict[str, Any]] = {
    "create_event": EVENT,
    "bulk_create_events": BULK_EVENTS,
    "create_or_update_profile": PROFILE_IMPORT,
    "update_profile": UPDATE_PROFILE,
    "bulk_import_profiles": BULK_IMPORT,
    "bulk_subscribe_profiles": SUBSCRIBE,
    "bulk_unsubscribe_profiles": UNSUBSCRIBE,
    "create_list": CREATE_LIST,
    "add_profiles_to_list": LIST_MEMBERS,
    "remove_profiles_from_list": LIST_MEMBERS,
    "create_webhook": CREATE_WEBHOOK,
    "request_profile_deletion": DELETION,
}


def _event(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(EVENT)
    body["data"]["attributes"].update(changes)
    return body


# --- the subset -----------------------------------------------------------------------


def test_subset_holds_every_operation_the_project_uses_with_rate_limits_and_servers() -> None:
    spec = load_spec()
    assert spec["servers"][0]["url"] == "https://a.klaviyo.com"
    assert spec["info"]["version"] == "2026-07-15"
    listed = spec["info"]["x-django-klaviyo-subset"]["operations"]
    assert sorted(openapi.operation_ids()) == sorted(listed)
    assert len(listed) == 56
    for operation_id in listed:
        limits = rate_limits(operation_id)
        assert limits["burst"][1] == 1 and limits["steady"][1] == 60


def test_every_ref_in_the_subset_resolves() -> None:
    spec = load_spec()
    refs = set(_refs(spec))
    assert len(refs) > 100
    for ref in refs:
        node: Any = spec
        for part in ref[2:].split("/"):
            node = node[part]
        assert isinstance(node, dict), ref


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            found.append(node["$ref"])
        for value in node.values():
            found.extend(_refs(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_refs(value))
    return found


def test_extract_keeps_only_the_named_operations_and_the_refs_they_reach() -> None:
    from tests.spec.extract_openapi_subset import extract_subset

    source = {
        "openapi": "3.0.2",
        "info": {"version": "x"},
        "servers": [{"url": "https://a.klaviyo.com"}],
        "paths": {
            "/api/a/{id}": {
                "parameters": [{"$ref": "#/components/parameters/Id"}],
                "get": {"operationId": "get_a", "x-klaviyo-ratelimit": {"burst": "1/s"}},
                "post": {
                    "operationId": "create_a",
                    "x-klaviyo-ratelimit": {"burst": "1/s"},
                    "requestBody": {"$ref": "#/components/requestBodies/A"},
                },
            },
            "/api/b": {"get": {"operationId": "get_b", "x-klaviyo-ratelimit": {}}},
        },
        "components": {
            "parameters": {"Id": {"name": "id", "schema": {"$ref": "#/components/schemas/S"}}},
            "requestBodies": {"A": {"content": {}}},
            "schemas": {
                "S": {"properties": {"t": {"$ref": "#/components/schemas/T"}}},
                "T": {"type": "string"},
                "Unused": {"type": "string"},
            },
            "securitySchemes": {"k": {"type": "apiKey"}},
        },
    }
    subset = extract_subset(source, ("get_a",))
    assert list(subset["paths"]) == ["/api/a/{id}"]
    assert set(subset["paths"]["/api/a/{id}"]) == {"parameters", "get"}
    assert subset["components"] == {
        "parameters": source["components"]["parameters"],
        "schemas": {"S": source["components"]["schemas"]["S"], "T": {"type": "string"}},
        "securitySchemes": {"k": {"type": "apiKey"}},
    }
    with pytest.raises(SystemExit, match="missing_op"):
        extract_subset(source, ("get_a", "missing_op"))


# The full spec lives outside the repository (../shared); a fresh clone does not have it,
# so this check is only defined where it can run.
if FULL_SPEC.exists():

    def test_extract_script_reproduces_the_shipped_subset(tmp_path: Path) -> None:
        out = tmp_path / "subset.json"
        subprocess.run(
            [sys.executable, str(REPO / "tests/spec/extract_openapi_subset.py"), FULL_SPEC, out],
            check=True,
            capture_output=True,
            timeout=120,
        )
        assert out.read_text(encoding="utf-8") == openapi.SPEC_PATH.read_text(encoding="utf-8")


def test_wheel_build_config_ships_the_subset() -> None:
    # hatch includes every file under the listed package unless excluded.
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    assert 'packages = ["django_klaviyo"]' in pyproject
    assert openapi.SPEC_PATH.is_relative_to(REPO / "django_klaviyo")


# --- lookup ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/api/events", ("create_event", {})),
        ("post", "/api/events/", ("create_event", {})),
        ("GET", "/api/lists/Y6nRLr", ("get_list", {"id": "Y6nRLr"})),
        ("GET", "/api/lists", ("get_lists", {})),
        (
            "POST",
            "/api/lists/Y6nRLr/relationships/profiles/",
            ("add_profiles_to_list", {"id": "Y6nRLr"}),
        ),
        (
            "DELETE",
            "/api/lists/Y6nRLr/relationships/profiles",
            ("remove_profiles_from_list", {"id": "Y6nRLr"}),
        ),
        (
            "GET",
            "/api/lists/Y6nRLr/profiles?page[size]=5",
            ("get_profiles_for_list", {"id": "Y6nRLr"}),
        ),
        ("PATCH", "/api/profiles/01H%20X", ("update_profile", {"id": "01H X"})),
        (
            "GET",
            "https://a.klaviyo.com/api/profile-bulk-import-jobs/J1/import-errors",
            ("get_errors_for_bulk_import_profiles_job", {"id": "J1"}),
        ),
        ("DELETE", "/api/webhooks/W1", ("delete_webhook", {"id": "W1"})),
        ("PUT", "/api/events", None),
        ("GET", "/api/lists/a/b", None),
        ("GET", "/api/unknown", None),
    ],
)
def test_find_operation(method: str, path: str, expected: Any) -> None:
    assert find_operation(method, path) == expected


def test_unknown_operation_raises_a_clear_error() -> None:
    with pytest.raises(openapi.UnknownOperationError, match="create_evnt"):
        operation("create_evnt")
    with pytest.raises(KeyError):
        validate_request("create_evnt", {})


def test_rate_limits_parse_burst_steady_and_daily() -> None:
    assert rate_limits("create_event") == {"burst": (350, 1), "steady": (3500, 60)}
    assert rate_limits("bulk_create_events") == {"burst": (10, 1), "steady": (150, 60)}
    assert rate_limits("create_list") == {
        "burst": (10, 1),
        "steady": (150, 60),
        "daily": (150, 86400),
    }
    assert rate_limits("get_webhooks") == {"burst": (1, 1), "steady": (15, 60)}


# --- validation: real bodies pass -------------------------------------------------------


@pytest.mark.parametrize("operation_id", sorted(VALID_BODIES))
def test_documented_bodies_validate(operation_id: str) -> None:
    assert validate_request(operation_id, VALID_BODIES[operation_id]) == []


def test_bodiless_operations() -> None:
    assert validate_request("get_lists", None) == []
    assert validate_request("get_lists", {"data": 1}) == ["/: this operation takes no request body"]
    assert validate_request("create_event", None) == ["/: a request body is required"]


# --- validation: broken bodies fail with the right pointer ------------------------------


def test_missing_metric() -> None:
    body = _event()
    del body["data"]["attributes"]["metric"]
    assert validate_request("create_event", body) == ["/data/attributes/metric: is required"]


def test_missing_metric_name_deep_pointer() -> None:
    body = _event(metric={"data": {"type": "metric", "attributes": {}}})
    assert validate_request("create_event", body) == [
        "/data/attributes/metric/data/attributes/name: is required"
    ]


def test_wrong_type() -> None:
    assert validate_request("create_event", _event(value="49.99")) == [
        "/data/attributes/value: must be of type number, not string"
    ]
    assert validate_request("create_event", _event(properties=[])) == [
        "/data/attributes/properties: must be of type object, not array"
    ]
    # bool is not a number even though Python says True == 1.
    assert validate_request("create_event", _event(value=True)) == [
        "/data/attributes/value: must be of type number, not boolean"
    ]


def test_enum_violation() -> None:
    body = _event()
    body["data"]["type"] = "events"
    assert validate_request("create_event", body) == [
        "/data/type: 'events' is not one of ['event']"
    ]
    sub = copy.deepcopy(SUBSCRIBE)
    sub["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]["email"][
        "marketing"
    ]["consent"] = "UNSUBSCRIBED"
    assert validate_request("bulk_subscribe_profiles", sub) == [
        "/data/attributes/profiles/data/0/attributes/subscriptions/email/marketing/consent: "
        "'UNSUBSCRIBED' is not one of ['SUBSCRIBED']"
    ]


def test_null_where_not_nullable_and_null_where_nullable() -> None:
    assert validate_request("create_event", _event(properties=None)) == [
        "/data/attributes/properties: must not be null"
    ]
    assert validate_request("create_event", _event(value=None, time=None, unique_id=None)) == []
    body = copy.deepcopy(PROFILE_IMPORT)
    body["data"]["attributes"]["location"] = None  # nullable next to a $ref
    assert validate_request("create_or_update_profile", body) == []


def test_date_time_format_is_parsed() -> None:
    for good in ("2026-07-20T12:34:56Z", "2026-07-20T12:34:56.123456+02:00", "2026-07-20T12:34"):
        assert validate_request("create_event", _event(time=good)) == [], good
    for bad in ("2026-02-30T00:00:00Z", "20/07/2026", "2026-07-20T25:00:00Z", "2026-07-20"):
        errors = validate_request("create_event", _event(time=bad))
        assert len(errors) == 1 and errors[0].startswith("/data/attributes/time: "), bad


def test_one_of_reports_the_closest_branch() -> None:
    # location is a nullable $ref: the error is about latitude, not about null.
    body = copy.deepcopy(PROFILE_IMPORT)
    body["data"]["attributes"]["location"]["latitude"] = [42]
    assert validate_request("create_or_update_profile", body) == [
        "/data/attributes/location/latitude: matches none of the 2 allowed forms"
    ]
    body["data"]["attributes"]["location"]["latitude"] = "42.36"
    assert validate_request("create_or_update_profile", body) == []


def test_bulk_event_item_pointer_includes_the_index() -> None:
    body = copy.deepcopy(BULK_EVENTS)
    entry = body["data"]["attributes"]["events-bulk-create"]["data"][0]
    entry["attributes"]["events"]["data"].append({"type": "event", "attributes": {}})
    assert validate_request("bulk_create_events", body) == [
        "/data/attributes/events-bulk-create/data/0/attributes/events/data/1/attributes/properties:"
        " is required",
        "/data/attributes/events-bulk-create/data/0/attributes/events/data/1/attributes/metric:"
        " is required",
    ]


def test_non_object_bodies_never_crash() -> None:
    for junk in ([], "x", 3, True, {"data": None}, {"data": []}, {"data": {"attributes": 1}}):
        assert validate_request("create_event", junk), junk


# --- keywords the Klaviyo subset does not exercise, on hand-written schemas --------------

STRICT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "minProperties": 1,
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
        "ratio": {"type": "number", "minimum": 0, "exclusiveMaximum": True, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2},
        "day": {"type": "string", "format": "date"},
        "any": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "both": {"allOf": [{"type": "object", "required": ["a"]}, {"required": ["b"]}]},
    },
}


def test_additional_properties_false_rejects_extra_keys() -> None:
    assert validate_schema(STRICT, {"name": "abc", "extra": 1}) == [
        "/extra: unexpected property 'extra'"
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"name": "abc"}, []),
        ({"name": "a"}, ["/name: 'a' is too short"]),
        ({"name": "abcdef"}, ["/name: 'abcdef' is too long"]),
        ({"name": "AB"}, ["/name: 'AB' does not match '^[a-z]+$'"]),
        ({"name": "ab", "count": 0}, ["/count: 0 is less than the minimum of 1"]),
        ({"name": "ab", "count": 11}, ["/count: 11 is greater than the maximum of 10"]),
        ({"name": "ab", "count": 2.5}, ["/count: must be of type integer, not number"]),
        ({"name": "ab", "count": 2.0}, []),
        # OpenAPI 3.0's boolean exclusiveMaximum, translated to draft 7's number.
        ({"name": "ab", "ratio": 1}, ["/ratio: 1 is greater than or equal to the maximum of 1"]),
        ({"name": "ab", "ratio": 0.99}, []),
        ({"name": "ab", "tags": []}, ["/tags: [] should be non-empty"]),
        ({"name": "ab", "tags": ["a", "b", "c"]}, ["/tags: ['a', 'b', 'c'] is too long"]),
        ({"name": "ab", "tags": ["a", 1]}, ["/tags/1: must be of type string, not integer"]),
        (
            {"name": "ab", "day": "2026-02-29"},
            ["/day: '2026-02-29' is not a 'date'"],
        ),
        ({"name": "ab", "day": "2028-02-29"}, []),
        ({"name": "ab", "any": 1.5}, ["/any: matches none of the 2 allowed forms"]),
        ({"name": "ab", "any": "x"}, []),
        ({"name": "ab", "both": {"a": 1}}, ["/both/b: is required"]),
        ({}, ["/name: is required", "/: {} should be non-empty"]),
    ],
)
def test_keywords(value: Any, expected: list[str]) -> None:
    assert validate_schema(STRICT, value) == expected


def test_pointer_escapes_slash_and_tilde_in_keys() -> None:
    schema = {"type": "object", "additionalProperties": {"type": "integer"}}
    assert validate_schema(schema, {"a/b~c": "x"}) == [
        "/a~1b~0c: must be of type integer, not string"
    ]


# --- pointers: every rejected mutation of a documented body names the field -----------


def _mutations(body: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """Every (path, replacement) pair: each node deleted (_DELETE marker) or retyped."""
    found: list[tuple[tuple, Any]] = []
    if isinstance(body, dict):
        for key, value in body.items():
            found.append(((*path, key), _DELETE))
            found.extend(_mutations(value, (*path, key)))
    elif isinstance(body, list):
        for index, value in enumerate(body):
            found.extend(_mutations(value, (*path, index)))
    for replacement in (None, 7, "text", [], {}):
        if path:
            found.append((path, replacement))
    return found


_DELETE = object()


def _apply(body: Any, path: tuple, replacement: Any) -> Any:
    mutated = copy.deepcopy(body)
    node = mutated
    for key in path[:-1]:
        node = node[key]
    if replacement is _DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = replacement
    return mutated


@pytest.mark.parametrize(
    "operation_id",
    ["create_event", "create_or_update_profile", "bulk_subscribe_profiles", "create_webhook"],
)
def test_every_rejected_mutation_points_at_the_field_or_its_parent(operation_id: str) -> None:
    body = VALID_BODIES[operation_id]
    rejected = 0
    for path, replacement in _mutations(body):
        errors = validate_request(operation_id, _apply(body, path, replacement))
        if not errors:
            continue
        rejected += 1
        mutated = "/" + "/".join(str(p) for p in path)
        pointers = [e.split(": ", 1)[0].rstrip("/") for e in errors]
        # The mutated field, a field inside it (emptied), or an ancestor (inside a oneOf).
        assert any(
            mutated == p or mutated.startswith(p + "/") or p.startswith(mutated + "/")
            for p in pointers
        ), (
            path,
            replacement,
            errors,
        )
    assert rejected > 50


@pytest.mark.parametrize("operation_id", sorted(VALID_BODIES))
def test_fast_verdict_and_full_explanation_agree_on_every_mutation(operation_id: str) -> None:
    # fastjsonschema decides, jsonschema explains: they must see the same bodies as invalid.
    verdict = openapi._request_verdict(operation_id)
    explain = openapi._request_validator(operation_id)
    for path, replacement in _mutations(VALID_BODIES[operation_id]):
        mutated = _apply(VALID_BODIES[operation_id], path, replacement)
        try:
            verdict(mutated)
            fast_ok = True
        except fastjsonschema.JsonSchemaValueException:
            fast_ok = False
        assert fast_ok == explain.is_valid(mutated), (path, replacement)


def test_openapi_dialect_is_translated_to_json_schema() -> None:
    converted = openapi.to_json_schema(
        {
            "type": "object",
            "required": ["id", "name"],
            "properties": {
                "id": {"type": "string", "readOnly": True},
                "name": {"type": "string", "nullable": True},
                "kind": {"type": "string", "enum": ["a"], "nullable": True},
                "ref": {"$ref": "#/components/schemas/X", "nullable": True},
                "low": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
            },
        }
    )
    assert converted["required"] == ["name"]  # a readOnly property is never sent
    assert converted["properties"]["name"]["type"] == ["string", "null"]
    assert converted["properties"]["kind"]["enum"] == ["a", None]
    assert converted["properties"]["ref"] == {
        "anyOf": [{"type": "null"}, {"$ref": "#/components/schemas/X"}]
    }
    assert converted["properties"]["low"] == {"type": "number", "exclusiveMinimum": 0}
