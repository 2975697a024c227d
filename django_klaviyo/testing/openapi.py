"""Klaviyo's OpenAPI spec (the subset this project uses): lookup and request validation.

A test tool: the sandbox and the test suite import it, nothing on the save or flush path
does (``tests/test_runtime_imports.py`` holds that). Its two JSON Schema libraries come with
the ``sandbox`` extra (``pip install django-klaviyo[sandbox]``): ``fastjsonschema`` decides
whether a body is valid (compiled once per operation, ~15 ms for a 1,000-event bulk body,
where ``jsonschema`` takes ~340 ms: see docs/benchmarks.md), and ``jsonschema`` explains a
rejected body with every error. This module only translates OpenAPI 3.0's dialect
(``nullable``, ``readOnly`` required properties, Klaviyo's lenient ``date-time``) into JSON
Schema, and the errors into JSON pointers naming the field, e.g.
``/data/attributes/metric: is required``.

The subset is cut from Klaviyo's official spec by ``tests/spec/extract_openapi_subset.py``
and ships in ``django_klaviyo/testing/spec``; it is read on first use, never at import.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

try:
    import fastjsonschema
    import jsonschema
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "The Klaviyo sandbox and spec validation need the 'sandbox' extra: "
        "pip install 'django-klaviyo[sandbox]'"
    ) from exc

SPEC_PATH = Path(__file__).resolve().parent / "spec" / "klaviyo-openapi-2026-07-15.subset.json"
REQUEST_MEDIA_TYPE = "application/vnd.api+json"
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_WINDOW_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# RFC 3339 with two leniencies Klaviyo accepts: a space separator and a missing offset
# (Klaviyo then assumes UTC).
_DATE_TIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?$"
)


class UnknownOperationError(KeyError):
    """The operation id is not part of the shipped spec subset."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown operation"


@dataclass(frozen=True)
class SchemaViolation:
    """One validation failure: where in the body (JSON pointer) and what is wrong."""

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


@functools.lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    """The shipped spec subset, parsed once per process."""
    with SPEC_PATH.open(encoding="utf-8") as handle:
        return json.load(handle)


@functools.lru_cache(maxsize=1)
def _operation_index() -> dict[str, tuple[str, str, dict[str, Any]]]:
    index: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for path, item in load_spec()["paths"].items():
        for method in HTTP_METHODS:
            op = item.get(method)
            if op and op.get("operationId"):
                index[op["operationId"]] = (method.upper(), path, op)
    return index


def operation_ids() -> list[str]:
    """Every operation id in the shipped subset, sorted."""
    return sorted(_operation_index())


def operation(operation_id: str) -> dict[str, Any]:
    """The OpenAPI operation object for ``operation_id`` (raises UnknownOperationError)."""
    try:
        return _operation_index()[operation_id][2]
    except KeyError:
        raise UnknownOperationError(
            f"Unknown Klaviyo operation {operation_id!r}; known: {', '.join(operation_ids())}"
        ) from None


def operation_route(operation_id: str) -> tuple[str, str]:
    """``(METHOD, path template)`` of an operation, e.g. ``("POST", "/api/events")``."""
    operation(operation_id)
    method, path, _ = _operation_index()[operation_id]
    return method, path


@functools.lru_cache(maxsize=1)
def _routes() -> dict[str, list[tuple[re.Pattern[str], str]]]:
    routes: dict[str, list[tuple[re.Pattern[str], str, int]]] = {}
    for operation_id, (method, path, _) in _operation_index().items():
        regex = re.sub(
            r"\\\{(\w+)\\\}",
            lambda m: f"(?P<{m.group(1)}>[^/]+)",
            re.escape(path),
        )
        literal_length = len(re.sub(r"\{\w+\}", "", path))
        routes.setdefault(method, []).append(
            (re.compile(f"^{regex}/?$"), operation_id, literal_length)
        )
    # Literal paths beat templated ones (a template segment could swallow a literal word).
    return {
        method: [(rx, op) for rx, op, _ in sorted(entries, key=lambda e: -e[2])]
        for method, entries in routes.items()
    }


def find_operation(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """Match a request to an operation: ``("get_list", {"id": "Y6nRLr"})`` or None.

    ``path`` may be a full URL or carry a query string; a trailing slash is accepted.
    """
    path = urlsplit(path).path or "/"
    for regex, operation_id in _routes().get(method.upper(), ()):
        match = regex.match(path)
        if match:
            return operation_id, {k: unquote(v) for k, v in match.groupdict().items()}
    return None


def rate_limits(operation_id: str) -> dict[str, tuple[int, int]]:
    """``{"burst": (350, 1), "steady": (3500, 60)[, "daily": (150, 86400)]}``.

    Values are (requests, window seconds), parsed from ``x-klaviyo-ratelimit``.
    """
    raw = operation(operation_id).get("x-klaviyo-ratelimit") or {}
    limits: dict[str, tuple[int, int]] = {}
    for name, text in raw.items():
        match = re.fullmatch(r"\s*(\d+)\s*/\s*([smhd])\s*", str(text))
        if not match:
            raise ValueError(f"{operation_id}: unparsable rate limit {name}={text!r}")
        limits[name] = (int(match.group(1)), _WINDOW_SECONDS[match.group(2)])
    return limits


def request_schema(operation_id: str) -> dict[str, Any] | None:
    """The operation's requestBody schema for ``application/vnd.api+json`` (None if no body)."""
    body = operation(operation_id).get("requestBody")
    if not body:
        return None
    content = body.get("content", {})
    media = content.get(REQUEST_MEDIA_TYPE) or next(iter(content.values()), {})
    return media.get("schema")


def request_violations(operation_id: str, body: Any) -> list[SchemaViolation]:
    """Like :func:`validate_request`, as structured (pointer, message) pairs."""
    op = operation(operation_id)
    schema = request_schema(operation_id)
    if schema is None:
        if body is None:
            return []
        return [SchemaViolation("", "this operation takes no request body")]
    if body is None:
        if op.get("requestBody", {}).get("required"):
            return [SchemaViolation("", "a request body is required")]
        return []
    try:
        _request_verdict(operation_id)(body)
    except fastjsonschema.JsonSchemaValueException as rejected:
        # Should the libraries ever disagree, the body is still refused, with the fast one's
        # reason (its path starts at the body, named "data").
        return _violations(_request_validator(operation_id), body) or [
            SchemaViolation(_pointer(rejected.path[1:]), rejected.message)
        ]
    return []


def validate_request(operation_id: str, body: Any) -> list[str]:
    """Validate a parsed JSON request body; returns error messages, empty when valid."""
    return [str(v) for v in request_violations(operation_id, body)]


def validate_schema(schema: dict[str, Any], value: Any) -> list[str]:
    """Validate ``value`` against any OpenAPI schema (``$ref`` resolved within the spec)."""
    return [str(v) for v in _violations(_validator(schema), value)]


# --- OpenAPI 3.0 -> JSON Schema ----------------------------------------------------------


def to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema (draft 7).

    ``nullable`` becomes an explicit null alternative (also next to a ``$ref``, as Klaviyo
    writes it), a ``readOnly`` property is never required in a request, and 3.0's boolean
    ``exclusiveMinimum``/``exclusiveMaximum`` become draft 7's numbers.
    """
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {k: to_json_schema(v) for k, v in node.items() if k != "nullable"}
    properties = node.get("properties")
    if isinstance(properties, dict) and isinstance(node.get("required"), list):
        converted["required"] = [
            name
            for name in node["required"]
            if not (isinstance(properties.get(name), dict) and properties[name].get("readOnly"))
        ]
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(node.get(flag), bool):
            del converted[flag]
            if node[flag] and bound in node:
                converted[flag] = converted.pop(bound)
    _refuse_unknown_attributes(node, converted)
    if node.get("nullable") is not True:
        return converted
    if "$ref" in converted or "oneOf" in converted or "anyOf" in converted:
        return {"anyOf": [{"type": "null"}, converted]}
    if isinstance(converted.get("type"), str):
        converted["type"] = [converted["type"], "null"]
    if "enum" in converted:
        converted["enum"] = [*converted["enum"], None]
    return converted


def _refuse_unknown_attributes(node: dict[str, Any], converted: dict[str, Any]) -> None:
    """A JSON:API resource object (``type`` and ``attributes``) takes only the attributes
    its schema names, as Klaviyo answers: 400 "'x' is not a valid field for the resource
    'profile'". The spec leaves ``additionalProperties`` unset; free-form values
    (``properties``) stay open, being one attribute."""
    properties = node.get("properties")
    if not isinstance(properties, dict) or not {"type", "attributes"} <= properties.keys():
        return
    attributes = converted["properties"]["attributes"]
    if not isinstance(attributes, dict) or "properties" not in attributes:
        return
    if "additionalProperties" in attributes:
        return
    kind = properties["type"]
    if isinstance(kind, dict) and "$ref" in kind:
        kind = load_spec()["components"]["schemas"].get(kind["$ref"].rsplit("/", 1)[-1], {})
    names = kind.get("enum") if isinstance(kind, dict) else None
    attributes["additionalProperties"] = False
    if names:
        attributes["x-resource"] = str(names[0])


@functools.lru_cache(maxsize=1)
def _components() -> dict[str, Any]:
    return to_json_schema(load_spec()["components"])


def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or parse_date_time(value) is not None


def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


_FORMATS = {"date-time": _is_date_time, "date": _is_date}


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker([])
    for name, check in _FORMATS.items():
        checker.checks(name)(check)
    return checker


def _validator(schema: dict[str, Any]) -> jsonschema.protocols.Validator:
    # Local $refs ("#/components/...") resolve against the root, so the components sit
    # next to the schema being checked.
    root = {**to_json_schema(schema), "components": _components()}
    return jsonschema.Draft7Validator(root, format_checker=_format_checker())


@functools.cache
def _request_verdict(operation_id: str) -> Any:
    """A compiled validator that only says yes (returns) or no (raises), fast."""
    schema = request_schema(operation_id)
    assert schema is not None
    root = {**to_json_schema(schema), "components": _components()}
    return fastjsonschema.compile(root, formats=_FORMATS)


@functools.cache
def _request_validator(operation_id: str) -> jsonschema.protocols.Validator:
    schema = request_schema(operation_id)
    assert schema is not None
    return _validator(schema)


# --- jsonschema's errors -> pointers naming the field -----------------------------------


def _pointer(path: Iterator[Any] | Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _violations(validator: jsonschema.protocols.Validator, value: Any) -> list[SchemaViolation]:
    found: list[SchemaViolation] = []
    for error in sorted(validator.iter_errors(value), key=_error_order):
        found.extend(_translate(error))
    return list(dict.fromkeys(found))  # one line per (pointer, message)


_TYPE_NAMES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"))


def _type_name(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)), "unknown")


def _error_order(error: jsonschema.ValidationError) -> tuple[int, str]:
    return (len(error.absolute_path), _pointer(error.absolute_path))


def _translate(error: jsonschema.ValidationError) -> list[SchemaViolation]:
    """One jsonschema error as violations whose pointer names the offending field."""
    where = _pointer(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        # jsonschema reports a missing key at its parent; Klaviyo points at the key.
        return [
            SchemaViolation(f"{where}{_pointer([name])}", "is required")
            for name in error.validator_value
            if name not in instance
        ]
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = error.schema.get("properties", {})
        resource = error.schema.get("x-resource")
        if resource:  # Klaviyo's words for an unknown attribute
            return [
                SchemaViolation(
                    f"{where}{_pointer([key])}",
                    f"'{key}' is not a valid field for the resource '{resource}'.",
                )
                for key in instance
                if key not in known
            ]
        return [
            SchemaViolation(f"{where}{_pointer([key])}", f"unexpected property {key!r}")
            for key in instance
            if key not in known
        ]
    if error.validator == "type":
        if instance is None:
            return [SchemaViolation(where, "must not be null")]
        allowed = error.validator_value
        allowed = [allowed] if isinstance(allowed, str) else [t for t in allowed if t != "null"]
        return [
            SchemaViolation(
                where, f"must be of type {' or '.join(allowed)}, not {_type_name(instance)}"
            )
        ]
    if error.validator == "anyOf" and {"type": "null"} in error.validator_value:
        # A nullable schema given a non-null value: only the other branch speaks.
        null_branch = error.validator_value.index({"type": "null"})
        inner = [e for e in error.context if e.schema_path[0] != null_branch]
        return [v for e in sorted(inner, key=_error_order) for v in _translate(e)]
    if error.validator in ("oneOf", "anyOf") and error.context:
        # The closest branch's deeper errors say most about what to fix.
        line = SchemaViolation(
            where, f"matches none of the {len(error.validator_value)} allowed forms"
        )
        best = jsonschema.exceptions.best_match(error.context)
        deeper = [v for v in _translate(best) if v.pointer != where] if best else []
        return [line, *deeper]
    return [SchemaViolation(where, error.message)]


def parse_date_time(text: str) -> datetime | None:
    """Parse the date-time forms Klaviyo accepts; None when ``text`` is not one."""
    match = _DATE_TIME.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    tz = None
    if zulu:
        tz = timezone.utc
    elif sign:
        if int(off_h) > 23 or int(off_m) > 59:
            return None
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        tz = timezone(-offset if sign == "-" else offset)
    try:
        return datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            # A leap second (":60") is valid RFC 3339; datetime cannot hold it.
            min(int(second or 0), 59),
            int((fraction or "0")[:6].ljust(6, "0")),
            tzinfo=tz,
        )
    except ValueError:
        return None
