"""The account's segments and their members (revision 2026-07-15), mixed into
``KlaviyoClient``. Members are read one page at a time, so a caller can store each page
and the cursor of the next before asking for it (``klaviyo_sync segments`` resumes there).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from django_klaviyo.client.bodies.segments import build_segment_series
from django_klaviyo.client.pagination import collection_params
from django_klaviyo.client.resources import path_segment
from django_klaviyo.exceptions import KlaviyoValidationError

if TYPE_CHECKING:
    from django_klaviyo.client.transport import Transport

# The rate-limiter key of GET /api/segments/{id}?additional-fields[segment]=profile_count:
# the spec documents 1/s and 15/m for it, below get_segment's own 75/s, 750/m.
SEGMENT_PROFILE_COUNT = "get_segment:profile_count"
MEMBER_FIELDS = ("email", "external_id")
# Klaviyo: "Max of 100 messages per ANY filter"; a daily series spans at most 60 days.
MAX_SERIES_SEGMENTS = 100
SERIES_TIMEFRAMES = ("last_7_days", "last_30_days")


@dataclass(frozen=True)
class MembersPage:
    """One page of a segment's members: the profiles and the cursor of the next page
    (``None``: this was the last)."""

    profiles: list[dict[str, Any]]
    next_cursor: str | None


def next_cursor(document: Any) -> str | None:
    """``page[cursor]`` of a JSON:API document's ``links.next``, or None."""
    links = document.get("links") if isinstance(document, Mapping) else None
    url = links.get("next") if isinstance(links, Mapping) else None
    if not isinstance(url, str) or not url:
        return None
    values = parse_qs(urlsplit(url).query).get("page[cursor]")
    return values[0] if values else None


class SegmentMethods:
    """Mixed into ``KlaviyoClient``, which provides the plumbing declared here."""

    _transport: Transport

    if TYPE_CHECKING:

        def _collection(
            self, operation: str, path: str, params: Mapping[str, str] | None
        ) -> Iterator[dict[str, Any]]: ...

        def _data(self, document: Any) -> dict[str, Any]: ...

        def _send(self, operation: str, method: str, path: str, **kwargs: Any) -> Any: ...

    def get_segments(self) -> Iterator[dict[str, Any]]:
        """``GET /api/segments``, all pages (10 segments a page, Klaviyo's maximum)."""
        params = collection_params(page_size=10, max_page_size=10)
        return self._collection("get_segments", "/api/segments", params)

    def get_segment_profile_count(self, segment_id: str) -> int | None:
        """``GET /api/segments/{id}?additional-fields[segment]=profile_count`` (1/s, 15/m):
        the segment's member count as Klaviyo last computed it, or None if it gave none."""
        path = f"/api/segments/{path_segment(segment_id, 'segment_id')}"
        params = {
            "additional-fields[segment]": "profile_count",
            "fields[segment]": "name,profile_count",
        }
        document = self._transport.request(
            SEGMENT_PROFILE_COUNT, "GET", path, params=params, idempotent=True
        )
        count = (self._data(document).get("attributes") or {}).get("profile_count")
        return count if isinstance(count, int) and not isinstance(count, bool) else None

    def get_segment_members_page(
        self, segment_id: str, cursor: str | None = None, *, page_size: int = 100
    ) -> MembersPage:
        """One page of ``GET /api/segments/{id}/profiles`` (id, email and external_id of
        up to 100 profiles), from ``cursor`` (a previous page's ``next_cursor``)."""
        path = f"/api/segments/{path_segment(segment_id, 'segment_id')}/profiles"
        params = collection_params(
            fields={"profile": MEMBER_FIELDS}, page_size=page_size, max_page_size=100
        )
        if cursor:
            params["page[cursor]"] = cursor
        document = self._transport.request(
            "get_profiles_for_segment", "GET", path, params=params, idempotent=True
        )
        data = document.get("data") if isinstance(document, Mapping) else None
        profiles = [p for p in data if isinstance(p, dict)] if isinstance(data, list) else []
        return MembersPage(profiles, next_cursor(document))

    def query_segment_series(
        self, segment_ids: Sequence[str], *, timeframe: str = "last_30_days"
    ) -> dict[str, Any]:
        """``POST /api/segment-series-reports`` (1/s, 2/m, 225/d): daily ``total_members``
        of up to 100 segments; returns the report's attributes (``date_times`` and
        ``results``, one per segment). Idempotent (a read)."""
        ids = [str(i) for i in segment_ids if isinstance(i, str) and i.strip()]
        if not ids or len(ids) != len(segment_ids) or len(ids) > MAX_SERIES_SEGMENTS:
            raise KlaviyoValidationError(
                f"segment_ids must be 1 to {MAX_SERIES_SEGMENTS} non-empty ids.",
                field="segment_ids",
            )
        if timeframe not in SERIES_TIMEFRAMES:
            raise KlaviyoValidationError(
                f"timeframe must be one of {', '.join(SERIES_TIMEFRAMES)}.", field="timeframe"
            )
        body = build_segment_series(ids, timeframe=timeframe)
        document = self._send(
            "query_segment_series",
            "POST",
            "/api/segment-series-reports",
            body=body,
            idempotent=True,
        )
        return self._data(document).get("attributes") or {}
