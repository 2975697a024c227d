"""The segments mirror: sync against the sandbox, in_segment and the QuerySet lookup, the
admin pages, and the errors a store sees (unknown names, segments never mirrored)."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_klaviyo import in_segment, segment_synced_at
from django_klaviyo.checks import check_klaviyo_settings
from django_klaviyo.client import KlaviyoClient, UnlimitedRateLimiter
from django_klaviyo.exceptions import KlaviyoSegmentNotMirrored
from django_klaviyo.insights.segment_sync import sync_segments
from django_klaviyo.models import (
    KlaviyoProfileLink,
    KlaviyoSegment,
    KlaviyoSegmentMembership,
    KlaviyoSegmentSize,
)
from django_klaviyo.testing.sandbox.segment_routes import segment_store
from tests.fakes import FakeClock

pytestmark = pytest.mark.django_db


def sandbox_client(server) -> KlaviyoClient:
    """A client of the sandbox that never waits (the sandbox still enforces its limits)."""
    return KlaviyoClient(
        "pk_segments_test_key_0123456789",
        api_url=server.url,
        rate_limiter=UnlimitedRateLimiter(),
        sleep=lambda seconds: None,
        max_attempts=1,
    )


@pytest.fixture
def shop(klaviyo_sandbox, settings):
    """Three customers in the sandbox: Ann spent 150 (VIP), Bob 20, Cy nothing."""
    client = sandbox_client(klaviyo_sandbox)
    client.create_event(metric="Placed Order", profile={"email": "ann@example.com"}, value=150)
    client.create_event(metric="Placed Order", profile={"email": "bob@example.com"}, value=20)
    client.create_event(metric="Viewed Product", profile={"email": "cy@example.com"})
    settings.KLAVIYO = {**settings.KLAVIYO, "SEGMENTS": ["VIP", "SbxBuy"]}
    return client


def test_sync_mirrors_names_counts_sizes_and_chosen_members(shop, klaviyo_sandbox):
    ann = get_user_model().objects.create_user("ann", email="Ann@Example.com")
    # Saving the user made its link (the profile receivers).
    link = KlaviyoProfileLink.objects.get(user=ann)
    lines: list[str] = []

    result = sync_segments(shop, progress=lines.append, page_size=1)

    assert result.problems == []
    counts = dict(KlaviyoSegment.objects.values_list("name", "profile_count"))
    assert counts == {"VIP": 1, "Customers": 2, "Everyone": 3}
    assert result.members == {"VIP": 1, "Customers": 2}
    # Only the chosen segments' members are mirrored, page by page (page_size=1).
    assert not KlaviyoSegmentMembership.objects.filter(segment__name="Everyone").exists()
    assert "  Customers: page 2, 2 members read" in lines
    member = KlaviyoSegmentMembership.objects.get(segment__name="VIP")
    assert (member.email, member.profile) == ("ann@example.com", link)
    # 30 days of sizes per segment from segment-series-reports; today's is the count.
    today = timezone.localdate()
    vip = KlaviyoSegmentSize.objects.filter(segment__name="VIP").order_by("date")
    assert vip.count() == 30 and vip.last().date == today
    assert [s.profile_count for s in vip][-2:] == [0, 1]  # Ann became a profile today
    assert result.history == 90
    # Every segment request the sandbox received was on spec (it answers 400 otherwise).
    counts = klaviyo_sandbox.state.request_counts()
    segment_ops = {op: n for op, n in counts.items() if "segment" in op}
    assert set(segment_ops) == {
        "get_segments",
        "get_segment",
        "get_profiles_for_segment",
        "query_segment_series",
    }
    assert segment_ops["query_segment_series"] == {200: 1}  # 3 segments: one report
    assert all(set(statuses) == {200} for statuses in segment_ops.values())


def test_in_segment_answers_from_the_mirror_without_a_request(shop, klaviyo_sandbox):
    ann = get_user_model().objects.create_user("ann", email="ann@example.com")
    bob = KlaviyoProfileLink.objects.create(email="bob@example.com")
    sync_segments(shop)
    before = klaviyo_sandbox.state.request_counts()

    assert in_segment(ann, "VIP") is True  # by the user's email: no link needed
    assert in_segment(bob, "VIP") is False
    assert in_segment(bob, "Customers") is True
    assert in_segment(bob, "SbxBuy") is True  # by id, as SEGMENTS names it
    assert in_segment("BOB@example.com", "Customers") is True
    assert in_segment({"email": "nobody@example.com"}, "VIP") is False
    ann_link = KlaviyoProfileLink.objects.get(user=ann)
    assert set(KlaviyoProfileLink.objects.in_segment("Customers")) == {ann_link, bob}
    assert list(KlaviyoProfileLink.objects.in_segment("VIP")) == [ann_link]
    assert segment_synced_at("VIP") == KlaviyoSegment.objects.get(name="VIP").members_synced_at
    assert klaviyo_sandbox.state.request_counts() == before


def test_a_segment_that_is_not_mirrored_raises_instead_of_answering_false(shop):
    sync_segments(shop)
    link = KlaviyoProfileLink.objects.create(email="cy@example.com")
    with pytest.raises(KlaviyoSegmentNotMirrored, match="not in KLAVIYO\\['SEGMENTS'\\]"):
        in_segment(link, "Everyone")
    with pytest.raises(KlaviyoSegmentNotMirrored):
        KlaviyoProfileLink.objects.in_segment("Everyone")
    with pytest.raises(KlaviyoSegmentNotMirrored):
        segment_synced_at("No such segment")


def test_a_chosen_segment_never_listed_in_full_raises(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "SEGMENTS": ["VIP"]}
    KlaviyoSegment.objects.create(klaviyo_id="S1", name="VIP")
    with pytest.raises(KlaviyoSegmentNotMirrored, match="never listed in full"):
        in_segment("ann@example.com", "VIP")


def test_a_name_matching_no_segment_fails_the_sync_and_the_check(shop, monkeypatch, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "SEGMENTS": ["VIP", "Big spenders"]}
    monkeypatch.setattr(
        "django_klaviyo.management.commands.klaviyo_sync.get_client", lambda *a: shop
    )
    out, err = StringIO(), StringIO()
    with pytest.raises(CommandError, match=r"'Big spenders'.*no segment"):
        call_command("klaviyo_sync", "segments", stdout=out, stderr=err)
    assert "Big spenders" in err.getvalue()
    assert "members mirrored (VIP: 1)" in out.getvalue()  # the rest was still synced
    ids = [m.id for m in check_klaviyo_settings()]
    assert "django_klaviyo.E072" in ids


def test_a_name_matching_two_segments_is_reported(shop, klaviyo_sandbox, monkeypatch, settings):
    segment_store(klaviyo_sandbox.state).add("VIP", profile_ids=[])
    monkeypatch.setattr(
        "django_klaviyo.management.commands.klaviyo_sync.get_client", lambda *a: shop
    )
    with pytest.raises(CommandError, match="two segments"):
        call_command("klaviyo_sync", "segments", stdout=StringIO(), stderr=StringIO())
    assert "django_klaviyo.E073" in [m.id for m in check_klaviyo_settings()]
    with pytest.raises(KlaviyoSegmentNotMirrored, match="by its id"):
        in_segment("ann@example.com", "VIP")


@pytest.mark.parametrize(
    "value,error",
    [
        ("VIP", "django_klaviyo.E070"),
        (["VIP", ""], "django_klaviyo.E070"),
        ({"default": "VIP"}, "django_klaviyo.E070"),
        ({"nowhere": ["VIP"]}, "django_klaviyo.E071"),
    ],
)
def test_a_malformed_segments_setting_is_a_check_error(settings, value, error):
    settings.KLAVIYO = {**settings.KLAVIYO, "SEGMENTS": value}
    assert error in [m.id for m in check_klaviyo_settings()]


# The sandbox's rate-limit windows run on this clock: the test moves it a minute on, as a
# real client's limiter would wait for segment-series-reports' 2/m.
CLOCK = FakeClock()


@pytest.mark.klaviyo_sandbox(clock=CLOCK)
def test_segments_gone_from_klaviyo_leave_the_mirror(shop, klaviyo_sandbox):
    sync_segments(shop)
    segment_store(klaviyo_sandbox.state).remove("SbxAll")
    CLOCK.sleep(60)
    result = sync_segments(shop)
    assert result.removed == 1
    assert not KlaviyoSegment.objects.filter(name="Everyone").exists()


def test_admin_lists_segments_and_finds_members_by_email(shop, admin_client):
    sync_segments(shop)
    page = admin_client.get("/admin/django_klaviyo/klaviyosegment/")
    assert page.status_code == 200
    assert b"https://www.klaviyo.com/lists/SbxVIP" in page.content
    found = admin_client.get(
        "/admin/django_klaviyo/klaviyosegmentmembership/", {"q": "Ann@Example.com"}
    )
    assert found.status_code == 200
    assert b"ann@example.com" in found.content
    assert b"bob@example.com" not in found.content
    member = KlaviyoSegmentMembership.objects.filter(segment__name="VIP").get()
    detail = admin_client.get(f"/admin/django_klaviyo/klaviyosegmentmembership/{member.pk}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    sizes = admin_client.get("/admin/django_klaviyo/klaviyosegmentsize/")
    assert sizes.status_code == 200
