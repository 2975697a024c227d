"""What the sandbox's route modules are written with: the request and response, Klaviyo's
JSON:API error (``ApiError``), the route tables, cursor pagination, ``filter=`` parsing,
and the identifier checks every profile-bearing request shares.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from django_klaviyo.testing.sandbox.state import SandboxState

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ApiError(Exception):
    """An error answer in Klaviyo's JSON:API shape."""

    TITLES = {
        400: "Invalid input.",
        401: "Incorrect authentication credentials.",
        404: "Not found.",
        405: "Method not allowed.",
        409: "Conflict.",
        413: "Request entity too large.",
        429: "Request was throttled.",
        500: "A server error occurred.",
        503: "Service unavailable.",
        504: "Gateway timeout.",
    }

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        pointer: str | None = "/data",
        parameter: str | None = None,
        meta: dict[str, Any] | None = None,
        title: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.pointer = pointer
        self.parameter = parameter
        self.meta = meta or {}
        self.title = title or self.TITLES.get(status, "Error.")

    def error_object(self, error_id: str) -> dict[str, Any]:
        source: dict[str, str] = {}
        if self.pointer is not None:
            source["pointer"] = self.pointer
        if self.parameter is not None:
            source["parameter"] = self.parameter
        return {
            "id": error_id,
            "status": self.status,
            "code": self.code,
            "title": self.title,
            "detail": self.detail,
            "source": source,
            "links": {},
            "meta": self.meta,
        }


def invalid(detail: str, pointer: str = "/data", **kw: Any) -> ApiError:
    return ApiError(400, "invalid", detail, pointer=pointer, **kw)


@dataclass
class Request:
    operation: str
    method: str
    path: str
    path_params: dict[str, str]
    query: dict[str, str]
    body: Any
    base_url: str


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serialisable, or None for an empty body
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return b"" if self.body is None else json.dumps(self.body).encode("utf-8")


Handler = Callable[[SandboxState, Request], Response]


def registrar(table: dict[str, Handler]) -> Callable[[str], Callable[[Handler], Handler]]:
    """``handles = registrar(ROUTES)``: ``@handles("create_event")`` puts the function in
    the route module's own table; the server joins the tables (``handler.HANDLERS``)."""

    def handles(operation_id: str) -> Callable[[Handler], Handler]:
        def register(func: Handler) -> Handler:
            if operation_id in table:
                raise ValueError(f"two handlers for {operation_id}")
            table[operation_id] = func
            return func

        return register

    return handles


# --- identifiers -----------------------------------------------------------------------


def clean_phone(value: Any, pointer: str) -> None:
    if value is not None and not E164.match(value):
        raise invalid(
            f"Invalid phone number format {value!r}: use E.164, e.g. +14155550100.", pointer
        )


def clean_email(value: Any, pointer: str) -> None:
    if value is not None and not EMAIL.match(value):
        raise invalid(f"Invalid email address {value!r}.", pointer)


def check_identifiers(profile: dict[str, Any], pointer: str, *, allowed: tuple[str, ...]):
    """profile = a JSON:API profile resource (``{"type", "id"?, "attributes"}``)."""
    attributes = profile.get("attributes") or {}
    present = [name for name in allowed if attributes.get(name)]
    if not present and not profile.get("id"):
        names = ", ".join(allowed)
        raise invalid(
            f"A profile needs at least one identifier: id, {names}.", f"{pointer}/attributes"
        )
    clean_email(attributes.get("email"), f"{pointer}/attributes/email")
    clean_phone(attributes.get("phone_number"), f"{pointer}/attributes/phone_number")


# --- links and pages ---------------------------------------------------------------------


def rel_links(base: str, kind: str, resource_id: str, relation: str) -> dict[str, str]:
    return {
        "self": f"{base}/api/{kind}/{resource_id}/relationships/{relation}/",
        "related": f"{base}/api/{kind}/{resource_id}/{relation}/",
    }


def page_size(request: Request, default: int, maximum: int) -> int:
    raw = request.query.get("page[size]")
    if raw is None:
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= maximum:
        raise invalid(
            f"page[size] must be an integer between 1 and {maximum}.", None, parameter="page[size]"
        )
    return int(raw)


def paginate(
    request: Request, items: list[Any], *, default: int, maximum: int
) -> tuple[list[Any], dict[str, Any]]:
    """Cursor pagination with full-URL ``links.next`` like Klaviyo's."""
    size = page_size(request, default, maximum)
    cursor = request.query.get("page[cursor]", "")
    offset = 0
    if cursor:
        match = re.fullmatch(r"sbx(\d+)", cursor)
        if not match:
            raise invalid("Invalid page cursor.", None, parameter="page[cursor]")
        offset = int(match.group(1))
    page = items[offset : offset + size]

    def link(to_offset: int | None) -> str | None:
        if to_offset is None:
            return None
        query = {k: v for k, v in request.query.items() if k != "page[cursor]"}
        if to_offset:
            query["page[cursor]"] = f"sbx{to_offset}"
        encoded = urlencode(query, safe="[],()'\"")
        return f"{request.base_url}{request.path}" + (f"?{encoded}" if encoded else "")

    next_offset = offset + size if offset + size < len(items) else None
    prev_offset = max(offset - size, 0) if offset else None
    links = {"self": link(offset), "next": link(next_offset), "prev": link(prev_offset)}
    return page, links


# --- filters -------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:(?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")|(?P<punct>[(),\[\]])|"""
    r"""(?P<word>[^\s(),\[\]'"]+))"""
)


def parse_filter(text: str) -> list[tuple[str, str, Any]]:
    """``equals(email,"a@x.com"),any(id,["1","2"])`` -> [(op, field, value), ...].

    Supports the JSON:API filter syntax Klaviyo documents: operator(field,value), nested
    ``and(...)`` and top-level commas; strings in single or double quotes with backslash
    escapes, lists in brackets, bare numbers, booleans, null and datetimes.
    """
    tokens: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match or match.end() == position:
            if text[position:].strip() == "":
                break
            raise ValueError(f"unexpected character at {position}")
        position = match.end()
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
    conditions: list[tuple[str, str, Any]] = []
    index = 0

    def expect(value: str) -> None:
        nonlocal index
        if index >= len(tokens) or tokens[index][1] != value:
            raise ValueError(f"expected {value!r}")
        index += 1

    def parse_value() -> Any:
        nonlocal index
        if index >= len(tokens):
            raise ValueError("missing value")
        kind, raw = tokens[index]
        index += 1
        if kind == "str":
            return re.sub(r"\\(.)", r"\1", raw[1:-1])
        if raw == "[":
            values = []
            while index < len(tokens) and tokens[index][1] != "]":
                values.append(parse_value())
                if index < len(tokens) and tokens[index][1] == ",":
                    index += 1
            expect("]")
            return values
        if kind == "word":
            lowered = {"true": True, "false": False, "null": None}
            if raw in lowered:
                return lowered[raw]
            try:
                return int(raw) if re.fullmatch(r"-?\d+", raw) else float(raw)
            except ValueError:
                return raw  # datetimes and other bare words
        raise ValueError(f"unexpected {raw!r}")

    def parse_expression() -> None:
        nonlocal index
        if index >= len(tokens) or tokens[index][0] != "word":
            raise ValueError("expected an operator")
        operator = tokens[index][1]
        index += 1
        expect("(")
        if operator in ("and",):
            parse_expression()
            while index < len(tokens) and tokens[index][1] == ",":
                index += 1
                parse_expression()
        else:
            if index >= len(tokens) or tokens[index][0] != "word":
                raise ValueError("expected a field name")
            field_name = tokens[index][1]
            index += 1
            expect(",")
            conditions.append((operator, field_name, parse_value()))
        expect(")")

    parse_expression()
    while index < len(tokens) and tokens[index][1] == ",":
        index += 1
        parse_expression()
    if index != len(tokens):
        raise ValueError("trailing input")
    return conditions


def filters(request: Request, allowed: dict[str, tuple[str, ...]]) -> list[tuple[str, str, Any]]:
    raw = request.query.get("filter")
    if not raw:
        return []
    try:
        conditions = parse_filter(raw)
    except ValueError as exc:
        raise invalid(f"Invalid filter: {exc}.", None, parameter="filter") from None
    for operator, field_name, _ in conditions:
        if operator not in allowed.get(field_name, ()):
            raise invalid(
                f"'{operator}' is not a valid operator for the field '{field_name}'.",
                None,
                parameter="filter",
            )
    return conditions


def matches(item: dict[str, Any], conditions: list[tuple[str, str, Any]]) -> bool:
    for operator, field_name, value in conditions:
        actual = item.get(field_name)
        if operator == "equals" and actual != value:
            return False
        if operator == "any" and actual not in (value if isinstance(value, list) else [value]):
            return False
        if operator == "contains" and (not isinstance(actual, str) or str(value) not in actual):
            return False
    return True
