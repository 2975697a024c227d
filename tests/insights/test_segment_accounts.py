"""Every account: klaviyo_sync serves each configured account (--account for one), the
mirrors carry it, and the consent handlers look lists up within the row's account."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from django_klaviyo import in_segment
from django_klaviyo.client import KlaviyoClient, UnlimitedRateLimiter, account_client
from django_klaviyo.models import KlaviyoList, KlaviyoSegment, KlaviyoSegmentMembership
from django_klaviyo.profiles.consent import mirrored_list
from django_klaviyo.testing.sandbox import SandboxServer
from django_klaviyo.webhooks.handlers import named_list

pytestmark = pytest.mark.django_db


@pytest.fixture
def eu_sandbox():
    server = SandboxServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def two_accounts(klaviyo_sandbox, eu_sandbox, settings, monkeypatch):
    """The default account on one sandbox, "eu" on another; one list of the same name in
    each, and a VIP customer in each."""
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "ACCOUNTS": {"eu": {"API_URL": eu_sandbox.url}},
        "SEGMENTS": {"default": ["VIP"], "eu": ["VIP"]},
    }
    klaviyo_sandbox.state.create_list("Newsletter")
    eu_sandbox.state.create_list("Newsletter")

    def client(account=None):
        options = {"rate_limiter": UnlimitedRateLimiter(), "sleep": lambda s: None}
        if account is None:
            return KlaviyoClient(api_url=klaviyo_sandbox.url, max_attempts=1, **options)
        return account_client(account, max_attempts=1, **options)

    client().create_event(metric="Placed Order", profile={"email": "us@example.com"}, value=500)
    client("eu").create_event(metric="Placed Order", profile={"email": "eu@example.com"}, value=500)
    monkeypatch.setattr("django_klaviyo.management.commands.klaviyo_sync.get_client", client)
    return client


def sync(*args: str) -> str:
    out = StringIO()
    call_command("klaviyo_sync", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_sync_serves_every_account_and_keeps_them_apart(two_accounts):
    out = sync("lists", "segments")
    assert "[default] lists: 1 created" in out and "[eu] lists: 1 created" in out
    assert sorted(KlaviyoList.objects.values_list("account", "name")) == [
        ("", "Newsletter"),
        ("eu", "Newsletter"),
    ]
    assert KlaviyoSegment.objects.filter(name="VIP").count() == 2
    members = KlaviyoSegmentMembership.objects.values_list("segment__account", "email")
    assert sorted(members) == [("", "us@example.com"), ("eu", "eu@example.com")]
    assert in_segment("us@example.com", "VIP") is True
    assert in_segment("eu@example.com", "VIP") is False
    assert in_segment("eu@example.com", "VIP", account="eu") is True


def test_account_option_syncs_that_account_only(two_accounts):
    out = sync("lists", "--account", "eu")
    assert "[eu] lists: 1 created" in out and "[default]" not in out
    assert list(KlaviyoList.objects.values_list("account", flat=True)) == ["eu"]


def test_consent_handlers_look_lists_up_within_the_account():
    KlaviyoList.objects.create(account="", klaviyo_id="L-us", name="Newsletter")
    KlaviyoList.objects.create(account="eu", klaviyo_id="L-eu", name="Newsletter")
    payload = {"data": {"attributes": {"event_properties": {"List": "Newsletter"}}}}
    assert named_list(payload) == "L-us"
    assert named_list(payload, "eu") == "L-eu"
    assert named_list(payload, "other") is None
    # The same Klaviyo id in two accounts is two lists.
    assert mirrored_list("L-us").account == ""
    created = mirrored_list("L-us", account="eu")
    assert (created.account, created.name) == ("eu", "L-us")
    assert KlaviyoList.objects.filter(klaviyo_id="L-us").count() == 2


def test_admin_shows_and_filters_the_mirrors_account(admin_client, settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "ACCOUNTS": {"eu": {"PRIVATE_API_KEY": "pk_" + "e" * 30}},
    }
    KlaviyoList.objects.create(account="", klaviyo_id="L-us", name="News US")
    KlaviyoList.objects.create(account="eu", klaviyo_id="L-eu", name="News EU")
    KlaviyoSegment.objects.create(account="eu", klaviyo_id="S-eu", name="VIP EU")
    page = admin_client.get("/admin/django_klaviyo/klaviyolist/", {"account": "eu"})
    assert page.status_code == 200
    assert b"News EU" in page.content and b"News US" not in page.content
    assert b"column-account_name" in page.content
    for model in ("klaviyocampaign", "klaviyoflow", "klaviyosegment"):
        assert (
            admin_client.get(f"/admin/django_klaviyo/{model}/", {"account": "eu"}).status_code
            == 200
        )
