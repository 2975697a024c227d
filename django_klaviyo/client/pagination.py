"""JSON:API collection queries: query parameters and cursor pagination over ``links.next``."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from django_klaviyo.client.filters import FIELD_NAME, Filter
from django_klaviyo.exceptions import KlaviyoValidationError

_TYPE_NAME = re.compile(r"^[a-z][a-z0-9\-]*$")

# fetch(path_or_url, params) -> decoded JSON:API document
Fetch = Callable[[str, "Mapping[str, str] | None"], Any]


def _names(values: Iterable[str] | str, what: str) -> str:
    if isinstance(values, str):
        values = [values]
    names = list(values)
    for name in names:
        if not isinstance(name, str) or not FIELD_NAME.match(name):
            raise KlaviyoValidationError(f"{what} {name!r} is not a valid name.", field=what)
    return ",".join(names)


def collection_params(
    *,
    filter: Filter | str | None = None,
    sort: str | None = None,
    fields: Mapping[str, Iterable[str]] | None = None,
    include: Iterable[str] | None = None,
    additional_fields: Mapping[str, Iterable[str]] | None = None,
    page_size: int | None = None,
    max_page_size: int | None = None,
) -> dict[str, str]:
    """Query parameters for a Klaviyo GET: ``filter``, ``sort``, sparse fieldsets
    (``fields[profile]=email,first_name``), ``include``, ``additional-fields[type]`` and
    ``page[size]`` (only where the endpoint has one: pass its ``max_page_size``)."""
    params: dict[str, str] = {}
    if filter is not None:
        text = str(filter)
        if not text:
            raise KlaviyoValidationError("filter is empty.", field="filter")
        params["filter"] = text
    if sort is not None:
        _names([sort.removeprefix("-")] if isinstance(sort, str) else [sort], "sort")
        params["sort"] = sort
    for key, mapping in (("fields", fields), ("additional-fields", additional_fields)):
        for resource_type, names in (mapping or {}).items():
            if not isinstance(resource_type, str) or not _TYPE_NAME.match(resource_type):
                raise KlaviyoValidationError(
                    f"{key} resource type {resource_type!r} is not valid.", field=key
                )
            params[f"{key}[{resource_type}]"] = _names(names, key)
    if include:
        params["include"] = _names(include, "include")
    if page_size is not None:
        if max_page_size is None:
            raise KlaviyoValidationError(
                "This endpoint has no page[size]; it pages by cursor only.", field="page_size"
            )
        if (
            isinstance(page_size, bool)
            or not isinstance(page_size, int)
            or not 1 <= page_size <= max_page_size
        ):
            raise KlaviyoValidationError(
                f"page_size must be an integer from 1 to {max_page_size}, not {page_size!r}.",
                field="page_size",
            )
        params["page[size]"] = str(page_size)
    return params


def iterate(fetch: Fetch, path: str, params: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Yield each resource of a collection, fetching pages lazily by ``links.next``.

    ``links.next`` is a full URL that already carries the query and ``page[cursor]``.
    A next link equal to one already fetched ends the walk rather than loop forever.
    """
    document = fetch(path, params)
    fetched: set[str] = set()
    while True:
        data = document.get("data") if isinstance(document, Mapping) else None
        if isinstance(data, list):
            yield from data
        elif data is not None:
            yield data
        links = document.get("links") if isinstance(document, Mapping) else None
        next_url = links.get("next") if isinstance(links, Mapping) else None
        if not isinstance(next_url, str) or not next_url or next_url in fetched:
            return
        fetched.add(next_url)
        document = fetch(next_url, None)
