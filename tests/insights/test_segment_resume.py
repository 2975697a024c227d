"""A segments sync stopped mid-way (a 429 beyond the retries) resumes from its stored
cursor, and removes members only after a complete pass (Klaviyo mocked with responses)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import responses

from django_klaviyo import in_segment
from django_klaviyo.client import KlaviyoClient
from django_klaviyo.exceptions import KlaviyoRateLimitError, KlaviyoSegmentNotMirrored
from django_klaviyo.insights.segment_sync import sync_segments
from django_klaviyo.models import KlaviyoSegment, KlaviyoSegmentMembership
from tests.fakes import FakeClock
from tests.klaviyo_fixtures import fast_client

API = "https://a.klaviyo.com/api"
pytestmark = pytest.mark.django_db

MEMBERS = f"{API}/segments/S1/profiles"
LONG_AGO = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def profile(n: int) -> dict:
    return {"type": "profile", "id": f"P{n}", "attributes": {"email": f"p{n}@example.com"}}


def members_page(cursor: str | None):
    """Three pages: P1 P2 | P3 P4 | P5; the cursors are "c2" and "c3"."""
    pages = {None: ([1, 2], "c2"), "c2": ([3, 4], "c3"), "c3": ([5], None)}
    numbers, following = pages[cursor]
    next_url = f"{MEMBERS}?page%5Bcursor%5D={following}" if following else None
    return {"data": [profile(n) for n in numbers], "links": {"self": "x", "next": next_url}}


@pytest.fixture
def klaviyo(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "SEGMENTS": ["VIP"]}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(
            f"{API}/segments",
            json={"data": [{"type": "segment", "id": "S1", "attributes": {"name": "VIP"}}]},
        )
        mock.get(
            f"{API}/segments/S1",
            json={"data": {"type": "segment", "id": "S1", "attributes": {"profile_count": 5}}},
        )
        mock.post(
            f"{API}/segment-series-reports",
            json={
                "data": {
                    "type": "segment-series-report",
                    "attributes": {
                        "date_times": ["2026-11-01T00:00:00+00:00"],
                        "results": [
                            {
                                "groupings": {"segment_id": "S1"},
                                "statistics": {"total_members": [4]},
                            }
                        ],
                    },
                }
            },
        )
        yield mock


def cursors(mock) -> list[str | None]:
    return [
        c.request.params.get("page[cursor]") for c in mock.calls if "/profiles" in c.request.url
    ]


def test_a_run_stopped_by_a_429_resumes_from_its_cursor_and_prunes_after_a_full_pass(klaviyo):
    segment = KlaviyoSegment.objects.create(klaviyo_id="S1", name="VIP")
    # A member from an earlier complete pass, no longer in the segment.
    KlaviyoSegmentMembership.objects.create(
        segment=segment, klaviyo_profile_id="P0", email="gone@example.com", synced_at=LONG_AGO
    )
    throttled = {"c3": True}

    def answer(request):
        cursor = request.params.get("page[cursor]")
        if throttled.pop(cursor, False):
            return (
                429,
                {"Retry-After": "30"},
                '{"errors": [{"status": 429, "code": "throttled"}]}',
            )
        return (200, {}, json.dumps(members_page(cursor)))

    klaviyo.add_callback(responses.GET, MEMBERS, callback=answer)

    with pytest.raises(KlaviyoRateLimitError):
        sync_segments(fast_client(), page_size=2)
    segment.refresh_from_db()
    assert segment.members_cursor == "c3" and segment.members_synced_at is None
    stored = set(KlaviyoSegmentMembership.objects.values_list("klaviyo_profile_id", flat=True))
    assert stored == {"P0", "P1", "P2", "P3", "P4"}  # nothing pruned by a partial pass
    with pytest.raises(KlaviyoSegmentNotMirrored, match="never listed in full"):
        in_segment("p1@example.com", "VIP")

    result = sync_segments(fast_client(), page_size=2)

    assert cursors(klaviyo) == [None, "c2", "c3", "c3"]  # the second run began at c3
    assert result.members == {"VIP": 5}
    stored = set(KlaviyoSegmentMembership.objects.values_list("klaviyo_profile_id", flat=True))
    assert stored == {"P1", "P2", "P3", "P4", "P5"}  # P0 pruned after the complete pass
    segment.refresh_from_db()
    assert segment.members_cursor == "" and segment.members_synced_at is not None
    assert in_segment("P5@example.com", "VIP") is True


def test_an_expired_cursor_starts_the_pass_again(klaviyo):
    KlaviyoSegment.objects.create(
        klaviyo_id="S1", name="VIP", members_cursor="old", members_pass_started_at=LONG_AGO
    )

    def answer(request):
        cursor = request.params.get("page[cursor]")
        if cursor == "old":
            return (400, {}, '{"errors": [{"status": 400, "code": "invalid", "detail": "cursor"}]}')
        return (200, {}, json.dumps(members_page(cursor)))

    klaviyo.add_callback(responses.GET, MEMBERS, callback=answer)
    result = sync_segments(fast_client(), page_size=2)
    assert cursors(klaviyo) == ["old", None, "c2", "c3"]
    assert result.members == {"VIP": 5}


@pytest.mark.usefixtures("isolated_rate_limits")
def test_segment_series_reports_keep_to_two_a_minute_across_processes():
    """Two clients of one account (two workers) share the report's windows through the
    cache: the third report of a minute waits for the window instead of a 429."""
    clock = FakeClock()
    starts: list[float] = []
    clients = [
        KlaviyoClient("pk_series_test_key_0123456789", clock=clock, sleep=clock.sleep)
        for _ in range(2)
    ]
    with responses.RequestsMock() as mock:
        mock.add_callback(
            responses.POST,
            f"{API}/segment-series-reports",
            callback=lambda request: (
                starts.append(clock())
                or (200, {}, json.dumps({"data": {"type": "segment-series-report"}}))
            ),
        )
        for client in (*clients, clients[0], clients[1]):
            client.query_segment_series(["S1"])
    assert len(starts) == 4
    assert starts[2] - starts[0] >= 60 and starts[3] - starts[1] >= 60


def test_the_count_request_asks_for_profile_count_in_the_sparse_fieldset(klaviyo):
    assert fast_client().get_segment_profile_count("S1") == 5
    sent = klaviyo.calls[-1].request
    assert sent.params == {
        "additional-fields[segment]": "profile_count",
        "fields[segment]": "name,profile_count",
    }
