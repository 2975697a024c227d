"""Klaviyo's OpenAPI spec (the subset this project uses): lookup and request validation.

Stdlib only, so the sandbox, the client tests and store developers can validate a request
body without pulling in a JSON Schema library. The subset is cut from Klaviyo's official
spec by ``tests/spec/extract_openapi_subset.py`` and ships in ``django_klaviyo/spec``.

The validator implements the OpenAPI 3.0 schema keywords the spec uses (and a few more):
``$ref``, ``type``, ``nullable``, ``properties``, ``required``, ``additionalProperties``,
``minProperties``/``maxProperties``, ``enum``, ``items``, ``minItems``/``maxItems``,
``uniqueItems``, ``minLength``/``maxLength``, ``pattern``, ``minimum``/``maximum`` (with the
3.0 boolean ``exclusiveMinimum``/``exclusiveMaximum``), ``multipleOf``, ``oneOf``, ``anyOf``,
``allOf``, ``not`` and the ``date-time``/``date`` formats. Every message starts with a JSON
pointer into the body, e.g. ``/data/attributes/metric: is required``.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

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
_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


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
    violations: list[SchemaViolation] = []
    _Validator(load_spec()).validate(schema, body, "", violations)
    return violations


def validate_request(operation_id: str, body: Any) -> list[str]:
    """Validate a parsed JSON request body; returns error messages, empty when valid."""
    return [str(v) for v in request_violations(operation_id, body)]


def validate_schema(schema: dict[str, Any], value: Any) -> list[str]:
    """Validate ``value`` against any schema (``$ref`` resolved within the shipped spec)."""
    violations: list[SchemaViolation] = []
    _Validator(load_spec()).validate(schema, value, "", violations)
    return [str(v) for v in violations]


def _pointer_token(key: str | int) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: Any, expected: str) -> bool:
    if expected == "object":
        return isinstance(value, dict)
    if expected == "array":
        return isinstance(value, list)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return True  # unknown type names are not ours to reject


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


def _check_format(fmt: str, value: str) -> str | None:
    if fmt == "date-time":
        if parse_date_time(value) is None:
            return f"{value!r} is not a valid date-time (ISO 8601, e.g. 2026-07-20T12:34:56+00:00)"
    elif fmt == "date":
        match = _DATE.match(value)
        valid = False
        if match:
            try:
                date(*(int(part) for part in match.groups()))
                valid = True
            except ValueError:
                pass
        if not valid:
            return f"{value!r} is not a valid date (YYYY-MM-DD)"
    return None


class _Validator:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#/"):
            raise ValueError(f"Only local $refs are supported, got {ref!r}")
        node: Any = self.spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def is_valid(self, schema: dict[str, Any], value: Any) -> bool:
        probe: list[SchemaViolation] = []
        self.validate(schema, value, "", probe)
        return not probe

    def validate(
        self, schema: dict[str, Any], value: Any, ptr: str, out: list[SchemaViolation]
    ) -> None:
        if schema is True or not schema:
            return
        if schema is False:
            out.append(SchemaViolation(ptr, "no value is allowed here"))
            return
        if "$ref" in schema:
            # Klaviyo puts ``nullable`` next to ``$ref``; honour it, as its API does.
            if value is None and schema.get("nullable"):
                return
            self.validate(self.resolve(schema["$ref"]), value, ptr, out)
            return
        if value is None:
            if schema.get("nullable"):
                return
            if "type" in schema or "enum" in schema:
                out.append(SchemaViolation(ptr, "must not be null"))
                return

        expected = schema.get("type")
        if expected is not None and not _is_type(value, expected):
            out.append(SchemaViolation(ptr, f"must be of type {expected}, not {_type_name(value)}"))
            return

        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(json.dumps(v) for v in schema["enum"])
            out.append(SchemaViolation(ptr, f"{json.dumps(value)} is not one of: {allowed}"))

        if isinstance(value, dict):
            self._object(schema, value, ptr, out)
        elif isinstance(value, list):
            self._array(schema, value, ptr, out)
        elif isinstance(value, str):
            self._string(schema, value, ptr, out)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self._number(schema, value, ptr, out)

        for sub in schema.get("allOf", ()):
            self.validate(sub, value, ptr, out)
        if "anyOf" in schema:
            self._any_of(schema["anyOf"], value, ptr, out)
        if "oneOf" in schema:
            self._one_of(schema["oneOf"], value, ptr, out)
        if "not" in schema and self.is_valid(schema["not"], value):
            out.append(SchemaViolation(ptr, "matches a schema it must not match"))

    def _object(
        self, schema: dict[str, Any], value: dict[str, Any], ptr: str, out: list[SchemaViolation]
    ) -> None:
        properties: dict[str, Any] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value and not properties.get(name, {}).get("readOnly"):
                out.append(SchemaViolation(f"{ptr}/{_pointer_token(name)}", "is required"))
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            out.append(
                SchemaViolation(ptr, f"must have at least {schema['minProperties']} properties")
            )
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            out.append(
                SchemaViolation(ptr, f"must have at most {schema['maxProperties']} properties")
            )
        additional = schema.get("additionalProperties", True)
        for key, item in value.items():
            child = f"{ptr}/{_pointer_token(key)}"
            if key in properties:
                self.validate(properties[key], item, child, out)
            elif additional is False:
                out.append(SchemaViolation(child, f"unexpected property {key!r}"))
            elif isinstance(additional, dict):
                self.validate(additional, item, child, out)

    def _array(
        self, schema: dict[str, Any], value: list[Any], ptr: str, out: list[SchemaViolation]
    ) -> None:
        if "minItems" in schema and len(value) < schema["minItems"]:
            out.append(SchemaViolation(ptr, f"must have at least {schema['minItems']} items"))
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(SchemaViolation(ptr, f"must have at most {schema['maxItems']} items"))
        if schema.get("uniqueItems"):
            seen: set[str] = set()
            for item in value:
                key = json.dumps(item, sort_keys=True)
                if key in seen:
                    out.append(SchemaViolation(ptr, "items must be unique"))
                    break
                seen.add(key)
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(value):
                self.validate(items, item, f"{ptr}/{index}", out)

    def _string(
        self, schema: dict[str, Any], value: str, ptr: str, out: list[SchemaViolation]
    ) -> None:
        if "minLength" in schema and len(value) < schema["minLength"]:
            out.append(
                SchemaViolation(ptr, f"must be at least {schema['minLength']} characters long")
            )
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(
                SchemaViolation(ptr, f"must be at most {schema['maxLength']} characters long")
            )
        if "pattern" in schema and not re.search(schema["pattern"], value):
            out.append(SchemaViolation(ptr, f"does not match the pattern {schema['pattern']!r}"))
        if "format" in schema:
            problem = _check_format(schema["format"], value)
            if problem:
                out.append(SchemaViolation(ptr, problem))

    def _number(
        self, schema: dict[str, Any], value: float, ptr: str, out: list[SchemaViolation]
    ) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            out.append(SchemaViolation(ptr, "must be a finite number"))
            return
        if "minimum" in schema:
            low = schema["minimum"]
            if value < low or (schema.get("exclusiveMinimum") is True and value == low):
                relation = "greater than" if schema.get("exclusiveMinimum") else "at least"
                out.append(SchemaViolation(ptr, f"must be {relation} {low}"))
        if "maximum" in schema:
            high = schema["maximum"]
            if value > high or (schema.get("exclusiveMaximum") is True and value == high):
                relation = "less than" if schema.get("exclusiveMaximum") else "at most"
                out.append(SchemaViolation(ptr, f"must be {relation} {high}"))
        step = schema.get("multipleOf")
        if step and not math.isclose(value / step, round(value / step), abs_tol=1e-9):
            out.append(SchemaViolation(ptr, f"must be a multiple of {step}"))

    def _branch_results(
        self, branches: list[dict[str, Any]], value: Any, ptr: str
    ) -> list[list[SchemaViolation]]:
        results = []
        for branch in branches:
            found: list[SchemaViolation] = []
            self.validate(branch, value, ptr, found)
            results.append(found)
        return results

    def _any_of(
        self, branches: list[dict[str, Any]], value: Any, ptr: str, out: list[SchemaViolation]
    ) -> None:
        results = self._branch_results(branches, value, ptr)
        if all(results):
            self._no_branch_matched(results, ptr, out)

    def _one_of(
        self, branches: list[dict[str, Any]], value: Any, ptr: str, out: list[SchemaViolation]
    ) -> None:
        results = self._branch_results(branches, value, ptr)
        matches = sum(1 for found in results if not found)
        if matches == 0:
            self._no_branch_matched(results, ptr, out)
        elif matches > 1:
            out.append(
                SchemaViolation(ptr, f"matches {matches} of the allowed forms; exactly one must")
            )

    @staticmethod
    def _no_branch_matched(
        results: list[list[SchemaViolation]], ptr: str, out: list[SchemaViolation]
    ) -> None:
        out.append(SchemaViolation(ptr, f"matches none of the {len(results)} allowed forms"))
        # The closest branch's deeper errors say most about what to fix; its errors at this
        # very pointer (usually a type mismatch) only repeat the line above.
        closest = min(results, key=len)
        out.extend(v for v in closest if v.pointer != ptr)
