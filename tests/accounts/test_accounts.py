"""Several Klaviyo accounts: rows carry their account, each account's rows reach its own
Klaviyo (here: its own sandbox) with its own key and rate limits, webhooks are verified
with that account's secrets, and a single-account store sees no change."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone
from shop import services
from shop.models import Order

import django_klaviyo
from django_klaviyo import accounts, coupons, health
from django_klaviyo.client import get_client
from django_klaviyo.client.ratelimit import account_scope
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.flush import FlushAborted, flush_outbox
from django_klaviyo.models import (
    Consent,
    KlaviyoCoupon,
    KlaviyoCouponCode,
    KlaviyoProfileLink,
    OutboxEvent,
    WebhookItem,
)
from django_klaviyo.testing.sandbox.catalog_routes import catalog_store
from django_klaviyo.testing.sandbox.server import SandboxServer

# The limiter's windows live in the (LocMem) cache, keyed by each key's digest: each test
# starts with none and leaves none behind.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_rate_limits")]

User = get_user_model()
S = OutboxEvent.Status
US_KEY = "pk_us_store_0123456789abcdef0123456789"
EU_KEY = "pk_eu_store_fedcba9876543210fedcba9876"
DEFAULT_SECRET = "whsec-test-secret-0123456789"
EU_SECRET = "whsec-eu-account-secret-abcdef"
LINES = [{"sku": "TEE", "name": "T-shirt", "quantity": 1, "unit_price": Decimal("10.00")}]


def by_currency(obj: Any = None, *, request: Any = None) -> str | None:
    """The store's resolver: orders paid in euros belong to the EU account."""
    if request is not None:
        return request.headers.get("X-Store") or None
    if isinstance(obj, User):  # customers of the European site
        return "eu" if obj.email.endswith("@example.eu") else None
    return "eu" if getattr(obj, "currency", None) == "EUR" else None


def broken_resolver(obj: Any = None, *, request: Any = None) -> str | None:
    raise RuntimeError("tenant lookup failed")


def mars_resolver(obj: Any = None, *, request: Any = None) -> str:
    return "mars"


RESOLVER = f"{__name__}.by_currency"


def two_accounts(settings: Any, us_url: str = "", eu_url: str = "", **eu: Any) -> None:
    """The default account (top-level keys) and "eu", resolved by the order's currency."""
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "PRIVATE_API_KEY": US_KEY,
        "API_URL": us_url or settings.KLAVIYO["API_URL"],
        "ACCOUNT_RESOLVER": RESOLVER,
        "ACCOUNTS": {
            "eu": {
                "PRIVATE_API_KEY": EU_KEY,
                "WEBHOOK_SECRETS": [EU_SECRET],
                **({"API_URL": eu_url} if eu_url else {}),
                **eu,
            }
        },
    }


@pytest.fixture
def sandboxes():
    """Two Klaviyo stand-ins, each accepting only its own account's key."""
    with SandboxServer(api_key=US_KEY) as us, SandboxServer(api_key=EU_KEY) as eu:
        yield us, eu


def order(currency: str, number: str) -> Order:
    return services.place_order(
        email=f"{number.lower()}@example.com", lines=LINES, currency=currency, number=number
    )


def placed_numbers(sandbox: SandboxServer) -> list[str]:
    return sorted(e["properties"]["OrderId"] for e in sandbox.state.events("Placed Order"))


# --- the test: two accounts, two sandboxes ------------------------------------------


def test_each_accounts_orders_reach_its_own_klaviyo_with_its_own_key(settings, sandboxes):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url)
    for number in ("US-1", "US-2", "US-3"):
        order("USD", number)
    for number in ("EU-1", "EU-2"):
        order("EUR", number)

    report = flush_outbox()

    assert placed_numbers(us) == ["US-1", "US-2", "US-3"]
    assert placed_numbers(eu) == ["EU-1", "EU-2"]
    # Every request each sandbox received carried that account's key, and only it.
    assert us.state.key_counts().keys() == {account_scope(US_KEY)}
    assert eu.state.key_counts().keys() == {account_scope(EU_KEY)}
    assert 401 not in {s for c in us.state.request_counts().values() for s in c}
    assert 401 not in {s for c in eu.state.request_counts().values() for s in c}
    assert report.sent == 5
    assert set(OutboxEvent.objects.values_list("account", "status")) == {
        ("", S.SENT),
        ("eu", S.SENT),
    }


def test_a_throttled_account_does_not_hold_back_the_other(settings, sandboxes):
    us, eu = sandboxes
    # Klaviyo answers every EU request with 429 and Retry-After: 30 (its limit is spent).
    eu.set_faults(rate_429=1.0, retry_after=30)
    two_accounts(settings, us.url, eu.url)
    for number in ("US-1", "US-2"):
        order("USD", number)
    order("EUR", "EU-1")

    flush_outbox()

    assert placed_numbers(us) == ["US-1", "US-2"]
    assert placed_numbers(eu) == []
    assert eu.state.request_counts()["bulk_create_events"] == {429: 1}
    eu_row = OutboxEvent.objects.get(account="eu", kind=OutboxEvent.Kind.EVENT)
    assert (eu_row.status, eu_row.last_error_status) == (S.RETRYING, 429)
    # The EU key's windows are on hold; the default account's are not.
    assert get_client("eu").rate_limiter.wait_time("bulk_create_events") > 20
    assert get_client().rate_limiter.wait_time("bulk_create_events") == 0


def test_rate_limit_windows_are_kept_per_account_key(settings):
    two_accounts(settings)
    us_limiter, eu_limiter = get_client().rate_limiter, get_client("eu").rate_limiter
    assert us_limiter.scope == account_scope(US_KEY)
    assert eu_limiter.scope == account_scope(EU_KEY)
    for _ in range(10):  # bulk_create_events: 10 a second, all spent by the EU account
        eu_limiter.acquire("bulk_create_events")
    assert eu_limiter.wait_time("bulk_create_events") > 0
    assert us_limiter.wait_time("bulk_create_events") == 0


def test_a_rejected_key_stops_only_its_account_and_the_run_ends_non_zero(settings, sandboxes):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url, PRIVATE_API_KEY="pk_eu_revoked_key_0000000000000000")
    order("USD", "US-1")
    order("EUR", "EU-1")

    with pytest.raises(FlushAborted) as aborted:
        flush_outbox()

    assert aborted.value.reason == "auth"
    assert "KLAVIYO['ACCOUNTS']['eu']['PRIVATE_API_KEY']" in str(aborted.value)
    assert "The other account(s) (default) were sent." in str(aborted.value)
    assert placed_numbers(us) == ["US-1"]
    eu_row = OutboxEvent.objects.get(account="eu", kind=OutboxEvent.Kind.EVENT)
    # Put back uncounted: the key is the problem, not the row.
    assert (eu_row.status, eu_row.attempts) == (S.PENDING, 0)


def test_the_flush_command_exits_1_naming_the_rejected_account(settings, sandboxes):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url, PRIVATE_API_KEY="pk_eu_revoked_key_0000000000000000")
    order("USD", "US-1")
    order("EUR", "EU-1")
    out = StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("klaviyo_flush", stdout=out)
    assert failed.value.returncode == 1
    assert "Account 'eu'" in str(failed.value)
    assert "Sent 1" in out.getvalue()  # the default account's order went out
    assert placed_numbers(us) == ["US-1"]


def test_klaviyo_flush_account_sends_only_that_accounts_rows(settings, sandboxes):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url)
    order("USD", "US-1")
    order("EUR", "EU-1")

    call_command("klaviyo_flush", "--account", "eu", stdout=StringIO())

    assert placed_numbers(eu) == ["EU-1"]
    assert us.state.request_counts() == {}
    assert OutboxEvent.objects.get(account="").status == S.PENDING
    call_command("klaviyo_flush", "--account", "default", stdout=StringIO())
    assert placed_numbers(us) == ["US-1"]


def test_klaviyo_flush_refuses_an_unknown_account(settings):
    two_accounts(settings)
    with pytest.raises(CommandError, match="unknown Klaviyo account 'mars'"):
        call_command("klaviyo_flush", "--account", "mars", stdout=StringIO())


def test_rows_of_an_account_no_longer_configured_are_dead_lettered(settings, sandboxes):
    us, _eu = sandboxes
    two_accounts(settings, us.url)
    order("EUR", "EU-1")
    settings.KLAVIYO = {
        k: v for k, v in settings.KLAVIYO.items() if k not in ("ACCOUNTS", "ACCOUNT_RESOLVER")
    }

    flush_outbox()

    row = OutboxEvent.objects.get(account="eu")
    assert (row.status, row.last_error_code) == (S.DEAD, "unknown_account")
    assert "not configured" in row.last_error_detail
    assert us.state.request_counts() == {}  # never sent with the default key


# --- the write path ---------------------------------------------------------------------


def test_a_single_account_store_writes_rows_as_before():
    order("EUR", "N-1")
    row = OutboxEvent.objects.get(kind=OutboxEvent.Kind.EVENT)
    assert row.account == ""
    assert not row.dedupe_key.startswith("@")
    assert accounts.names() == ["default"]
    assert not accounts.several()


def test_the_resolver_places_orders_users_and_explicit_calls(settings):
    two_accounts(settings)
    eu_order, us_order = order("EUR", "EU-1"), order("USD", "US-1")
    placed = OutboxEvent.objects.filter(metric="Placed Order")
    # The default account's keys are as before; another account's are prefixed.
    assert sorted(placed.values_list("account", "dedupe_key")) == [
        ("", f"event:shop.order:{us_order.pk}:placed"),
        ("eu", f"@eu:event:shop.order:{eu_order.pk}:placed"),
    ]

    # An explicit account wins over the resolver; "default" is the top-level account.
    django_klaviyo.track("Viewed Page", {"email": "a@example.com"}, account="eu")
    django_klaviyo.track("Viewed Page", {"email": "b@example.com"}, account="default")
    assert sorted(
        OutboxEvent.objects.filter(metric="Viewed Page").values_list("profile_key", "account")
    ) == [("email:a@example.com", "eu"), ("email:b@example.com", "")]

    # A user is resolved as the user: their profile upserts and the events given them.
    OutboxEvent.objects.all().delete()
    marie = User.objects.create_user("marie", email="marie@example.eu")
    django_klaviyo.track("Viewed Page", marie)
    assert sorted(OutboxEvent.objects.values_list("kind", "account")) == [
        ("event", "eu"),
        ("profile_upsert", "eu"),
    ]
    with pytest.raises(KlaviyoValidationError) as refused:
        django_klaviyo.track("Viewed Page", {"email": "c@example.com"}, account="mars")
    assert refused.value.field == "account"


def test_one_change_in_two_accounts_is_two_rows(settings):
    two_accounts(settings)
    for account in ("default", "eu", "eu"):
        django_klaviyo.add_to_list(
            "LIST1", {"email": "a@example.com"}, dedupe_key="join:LIST1:a", account=account
        )
    assert sorted(OutboxEvent.objects.values_list("account", "dedupe_key")) == [
        ("", "join:LIST1:a"),
        ("eu", "@eu:join:LIST1:a"),
    ]


def test_a_failing_resolver_keeps_a_dead_row_and_the_order_commits(settings):
    two_accounts(settings)
    settings.KLAVIYO = {**settings.KLAVIYO, "ACCOUNT_RESOLVER": f"{__name__}.broken_resolver"}

    placed = order("EUR", "EU-1")

    assert Order.objects.filter(pk=placed.pk).exists()
    row = OutboxEvent.objects.get(kind=OutboxEvent.Kind.EVENT)
    assert (row.status, row.last_error_code) == (S.DEAD, "invalid_on_save")
    assert "ACCOUNT_RESOLVER failed" in row.last_error_detail
    assert "tenant lookup failed" in row.last_error_detail
    assert row.last_error_detail.endswith("(field account)")


def test_an_unknown_account_name_keeps_a_dead_row_naming_it(settings):
    two_accounts(settings)
    settings.KLAVIYO = {**settings.KLAVIYO, "ACCOUNT_RESOLVER": f"{__name__}.mars_resolver"}

    user = User.objects.create_user("ada", email="ada@example.com")
    order("EUR", "EU-1")

    assert User.objects.filter(pk=user.pk).exists()
    dead = OutboxEvent.objects.filter(status=S.DEAD, last_error_code="invalid_on_save")
    assert sorted(dead.values_list("kind", flat=True)) == ["event", "profile_upsert"]
    assert all("unknown Klaviyo account 'mars'" in d.last_error_detail for d in dead)
    assert not OutboxEvent.objects.exclude(status=S.DEAD).exists()


def test_the_storefront_asks_the_resolver_with_the_request(settings, client):
    two_accounts(settings)
    response = client.post(
        reverse("klaviyo-storefront-events"),
        json.dumps(
            {
                "event": "viewed_product",
                "product": {"product_id": "TEE", "name": "T-shirt", "price": "10.00"},
            }
        ),
        content_type="application/json",
        headers={"X-Store": "eu"},
    )
    assert response.status_code == 202, response.content
    assert OutboxEvent.objects.get().account == "eu"


# --- webhooks ----------------------------------------------------------------------------

WEBHOOK_ID = "01KP4EGG9B0AEF4VJD749M6H9D"
HEADER_TS = "Fri, 04 Sep 2026 18:16:52 GMT"
PROFILE_ID = "01KP4EGHH8QJ3N3AY2Z6V7RMDK"


def unsubscribed_delivery(external_id: str = "73WCCK7JKtE") -> bytes:
    item = {
        "topic": "event:klaviyo.unsubscribed_from_email_marketing",
        "external_id": external_id,
        "payload": {
            "data": {
                "type": "event",
                "id": external_id,
                "attributes": {
                    "datetime": "2026-04-13T22:16:46+00:00",
                    "event_properties": {"email_address": "ann@example.com"},
                },
                "relationships": {
                    "metric": {"data": {"type": "metric", "id": "SHi67A"}},
                    "profile": {"data": {"type": "profile", "id": PROFILE_ID}},
                },
            }
        },
    }
    meta = {"timestamp": timezone.now().isoformat(), "klaviyo_webhook_id": WEBHOOK_ID}
    return json.dumps({"meta": meta, "data": [item]}).encode()


def post_webhook(client: Any, path: str, body: bytes, secret: str) -> Any:
    signature = hmac.new(secret.encode(), body + HEADER_TS.encode(), hashlib.sha256).hexdigest()
    headers = {
        "Klaviyo-Webhook-Id": WEBHOOK_ID,
        "Klaviyo-Timestamp": HEADER_TS,
        "Klaviyo-Signature": signature,
    }
    return client.generic("POST", path, body, content_type="application/json", headers=headers)


def test_an_accounts_webhook_is_verified_with_its_own_secret_only(settings, client):
    two_accounts(settings)
    body = unsubscribed_delivery()

    assert post_webhook(client, "/klaviyo/webhooks/eu/", body, DEFAULT_SECRET).status_code == 403
    assert post_webhook(client, "/klaviyo/webhooks/", body, EU_SECRET).status_code == 403
    assert post_webhook(client, "/klaviyo/webhooks/mars/", body, EU_SECRET).status_code == 404
    assert not WebhookItem.objects.exists()

    assert post_webhook(client, "/klaviyo/webhooks/eu/", body, EU_SECRET).status_code == 200
    assert list(WebhookItem.objects.values_list("account", "delivery__account")) == [("eu", "eu")]


def test_the_same_event_id_in_two_accounts_is_two_items(settings, client):
    two_accounts(settings)
    body = unsubscribed_delivery("SAME-ID")
    assert post_webhook(client, "/klaviyo/webhooks/", body, DEFAULT_SECRET).status_code == 200
    assert post_webhook(client, "/klaviyo/webhooks/eu/", body, EU_SECRET).status_code == 200
    assert post_webhook(client, "/klaviyo/webhooks/eu/", body, EU_SECRET).status_code == 200
    assert sorted(WebhookItem.objects.values_list("account", "external_id")) == [
        ("", "SAME-ID"),
        ("eu", "SAME-ID"),
    ]


def test_another_accounts_consent_event_leaves_the_default_mirror_alone(settings, client):
    two_accounts(settings)
    link = KlaviyoProfileLink.objects.create(email="ann@example.com", klaviyo_id=PROFILE_ID)

    post_webhook(client, "/klaviyo/webhooks/eu/", unsubscribed_delivery("E1"), EU_SECRET)
    link.refresh_from_db()
    assert link.email_consent == Consent.UNKNOWN

    post_webhook(client, "/klaviyo/webhooks/", unsubscribed_delivery("D1"), DEFAULT_SECRET)
    link.refresh_from_db()
    assert link.email_consent == Consent.UNSUBSCRIBED


# --- admin, status, checks ---------------------------------------------------------------


@pytest.fixture
def staff(client, settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "TRACK_USERS": False}
    user = User.objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(user)
    return client


def event_row(account: str, email: str) -> OutboxEvent:
    return OutboxEvent.objects.create(
        kind=OutboxEvent.Kind.EVENT,
        metric="Placed Order",
        payload={"metric": "Placed Order", "profile": {"email": email}},
        profile_key=f"email:{email}",
        account=account,
    )


def test_the_admin_filters_the_outbox_by_account(settings, staff):
    changelist = reverse("admin:django_klaviyo_outboxevent_changelist")
    event_row("", "us@example.com")
    event_row("eu", "eu@example.com")

    single = staff.get(changelist)
    assert "column-account_name" not in single.content.decode()

    two_accounts(settings)
    settings.KLAVIYO = {**settings.KLAVIYO, "TRACK_USERS": False}
    everything = staff.get(changelist).content.decode()
    assert "column-account_name" in everything
    assert "us@example.com" in everything and "eu@example.com" in everything
    eu_only = staff.get(changelist, {"account": "eu"}).content.decode()
    assert "eu@example.com" in eu_only and "us@example.com" not in eu_only
    default_only = staff.get(changelist, {"account": "default"}).content.decode()
    assert "us@example.com" in default_only and "eu@example.com" not in default_only


def test_status_counts_due_rows_by_kind_and_account(settings):
    two_accounts(settings)
    event_row("", "a@example.com")
    event_row("eu", "b@example.com")
    event_row("eu", "c@example.com")

    result = health.check(now=timezone.now() + dt.timedelta(seconds=1))
    assert result.due_by_account == {"default": {"event": 1}, "eu": {"event": 2}}
    assert result.as_dict()["due_by_account"] == {"default": {"event": 1}, "eu": {"event": 2}}
    out = StringIO()
    with pytest.raises(SystemExit):
        call_command("klaviyo_status", "--max-age", "off", "--max-due", "0", stdout=out)
    assert "due rows by account:\n  default: event 1\n  eu: event 2" in out.getvalue()


def account_check_ids(settings: Any, **klaviyo: Any) -> list[str]:
    settings.KLAVIYO = {**settings.KLAVIYO, **klaviyo}
    return sorted(m.id for m in run_checks() if m.id.startswith("django_klaviyo.E06"))


def test_checks_report_account_configuration_errors(settings):
    assert account_check_ids(settings) == []
    ok = {"eu": {"PRIVATE_API_KEY": EU_KEY}}
    assert account_check_ids(settings, ACCOUNTS=ok, ACCOUNT_RESOLVER=RESOLVER) == []
    assert account_check_ids(settings, ACCOUNTS={"eu": "pk_x"}) == ["django_klaviyo.E060"]
    assert account_check_ids(settings, ACCOUNTS={"default": {"PRIVATE_API_KEY": EU_KEY}}) == [
        "django_klaviyo.E060"
    ]
    assert account_check_ids(
        settings, ACCOUNTS={"e u": {"PRIVATE_API_KEY": EU_KEY, "SECRET": 1}}
    ) == ["django_klaviyo.E060", "django_klaviyo.E060"]
    assert account_check_ids(settings, ACCOUNTS={"eu": {}}) == ["django_klaviyo.E061"]
    assert account_check_ids(settings, ACCOUNTS={"eu": {}}, SANDBOX=True) == []
    shared = settings.KLAVIYO["PRIVATE_API_KEY"]
    assert account_check_ids(settings, ACCOUNTS={"eu": {"PRIVATE_API_KEY": shared}}) == [
        "django_klaviyo.E062"
    ]
    texts = " ".join(m.msg + (m.hint or "") for m in run_checks())
    assert shared not in texts  # a key is never echoed
    assert account_check_ids(settings, ACCOUNTS={}, ACCOUNT_RESOLVER="nowhere.resolve") == [
        "django_klaviyo.E063"
    ]


def test_an_accounts_settings_fall_back_for_revision_but_never_for_secrets(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "REVISION": "2026-01-15", "ACCOUNTS": {"eu": {}}}
    eu = accounts.get_account("eu")
    assert eu.revision == "2026-01-15"
    assert eu.api_url == settings.KLAVIYO["API_URL"]
    assert (eu.private_api_key, eu.public_api_key, eu.webhook_secrets) == (None, None, ())
    assert settings.KLAVIYO["PRIVATE_API_KEY"] not in repr(eu)


def test_forget_profile_asks_the_account_it_names(settings):
    two_accounts(settings)
    django_klaviyo.forget_profile(email="ann@example.com", account="eu")
    django_klaviyo.forget_profile(email="ann@example.com")
    deletions = OutboxEvent.objects.filter(kind=OutboxEvent.Kind.PROFILE_DELETION)
    assert sorted(deletions.values_list("account", flat=True)) == ["", "eu"]


def test_klaviyo_forget_account_asks_the_account_it_names(settings):
    two_accounts(settings)
    out = StringIO()
    call_command("klaviyo_forget", "--email", "ann@example.com", "--account", "eu", stdout=out)
    call_command("klaviyo_forget", "--email", "ann@example.com", stdout=StringIO())

    deletions = OutboxEvent.objects.filter(kind=OutboxEvent.Kind.PROFILE_DELETION)
    assert sorted(deletions.values_list("account", flat=True)) == ["", "eu"]
    assert "Deletion request queued for account 'eu'" in out.getvalue()


def test_klaviyo_forget_refuses_an_unknown_account_and_erases_nothing(settings):
    two_accounts(settings)
    KlaviyoProfileLink.objects.create(email="ann@example.com")
    with pytest.raises(
        CommandError, match=r"unknown Klaviyo account 'mars'; configured: default, eu"
    ):
        call_command("klaviyo_forget", "--email", "ann@example.com", "--account", "mars")

    assert not OutboxEvent.objects.filter(kind=OutboxEvent.Kind.PROFILE_DELETION).exists()
    assert KlaviyoProfileLink.objects.filter(email="ann@example.com").exists()


def test_a_client_handed_to_the_flusher_sends_only_the_default_accounts_rows(settings, sandboxes):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url)
    order("USD", "US-1")
    order("EUR", "EU-1")

    flush_outbox(client=get_client())  # as klaviyo_catalog sync --flush does

    assert placed_numbers(us) == ["US-1"]
    assert placed_numbers(eu) == ["EU-1"]
    assert eu.state.key_counts().keys() == {account_scope(EU_KEY)}


def test_unreadable_accounts_settings_never_break_the_stores_save(settings):
    two_accounts(settings)
    settings.KLAVIYO = {**settings.KLAVIYO, "ACCOUNTS": {"eu": {"TIMEOUT": "soon"}}}

    placed = order("EUR", "EU-1")

    assert Order.objects.filter(pk=placed.pk).exists()
    row = OutboxEvent.objects.get(kind=OutboxEvent.Kind.EVENT)
    assert (row.status, row.last_error_code) == (S.DEAD, "invalid_on_save")
    assert "KLAVIYO['ACCOUNTS'] cannot be read" in row.last_error_detail


def test_checks_report_an_ill_formed_account_key_without_echoing_it(settings):
    bad = "sk_live_this_is_not_a_private_key"
    assert account_check_ids(settings, ACCOUNTS={"eu": {"PRIVATE_API_KEY": bad}}) == [
        "django_klaviyo.E061"
    ]
    assert bad not in " ".join(m.msg + (m.hint or "") for m in run_checks())


def test_catalog_saves_go_to_the_products_account(settings):
    from shop.models import Product

    two_accounts(settings)
    settings.KLAVIYO = {**settings.KLAVIYO, "ACCOUNT_RESOLVER": f"{__name__}.by_sku"}
    Product.objects.create(sku="EU-TEE", name="T-shirt", price=Decimal("10.00"), url=URL)
    Product.objects.create(sku="US-MUG", name="Mug", price=Decimal("5.00"), url=URL)
    catalog = OutboxEvent.objects.filter(kind__startswith="catalog_")
    assert set(catalog.filter(account="eu").values_list("payload__external_id", flat=True)) == {
        "EU-TEE"
    }
    assert set(catalog.filter(account="").values_list("payload__external_id", flat=True)) == {
        "US-MUG"
    }
    # The whole-catalog sync places each product the same way.
    OutboxEvent.objects.all().delete()
    call_command("klaviyo_catalog", "sync", stdout=StringIO())
    assert set(catalog.values_list("account", "payload__external_id")) == {
        ("eu", "EU-TEE"),
        ("", "US-MUG"),
    }


URL = "https://shop.example.com/p"


def by_sku(obj: Any = None, *, request: Any = None) -> str | None:
    return "eu" if str(getattr(obj, "sku", "")).startswith("EU-") else None


def test_another_account_never_uses_or_changes_the_default_accounts_profile_ids(
    settings, sandboxes
):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url)
    # The mirror knows Ann's profile id in the default account's Klaviyo.
    link = KlaviyoProfileLink.objects.create(email="ann@example.com", klaviyo_id="US-PROFILE-ID")
    vip = eu.state.create_list("VIP")["id"]

    django_klaviyo.add_to_list(vip, {"email": "ann@example.com"}, account="eu")
    flush_outbox()

    eu_profile = eu.state.find_profile_id("email", "ann@example.com")
    assert eu_profile is not None and eu_profile != "US-PROFILE-ID"
    assert eu.state.members(vip) == [eu_profile]  # learnt from the EU account itself
    link.refresh_from_db()
    assert link.klaviyo_id == "US-PROFILE-ID"  # and not written into the mirror


# --- coupons per account ---------------------------------------------------------------------


def coupon_command(*args: str) -> str:
    out = StringIO()
    call_command("klaviyo_coupons", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_a_coupon_of_another_account_reaches_only_that_accounts_klaviyo(settings, sandboxes):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url)
    coupon_command("create", "WELCOME", "--account", "eu")
    coupon_command("generate", "WELCOME", "--count", "3", "--account", "eu")

    flush_outbox()

    eu_codes = {c["unique_code"] for c in catalog_store(eu.state).coupon_codes("WELCOME")}
    coupon = KlaviyoCoupon.objects.get()
    assert (coupon.account, coupon.klaviyo_id) == ("eu", "WELCOME")
    assert eu_codes == set(coupon.codes.values_list("code", flat=True))
    assert set(coupon.codes.values_list("status", flat=True)) == {"UNASSIGNED"}
    assert catalog_store(us.state).coupons == {}
    assert catalog_store(us.state).coupon_codes() == []
    assert eu.state.key_counts().keys() == {account_scope(EU_KEY)}
    assert set(OutboxEvent.objects.values_list("account", "status")) == {("eu", S.SENT)}


def test_one_coupon_id_in_two_accounts_is_two_coupons_each_with_its_own_codes(settings, sandboxes):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url)
    coupon_command("generate", "SPRING", "--count", "2")
    coupon_command("generate", "SPRING", "--count", "1", "--account", "eu", "--flush")

    # --flush sends only the coupon's account: the default account's rows still wait.
    assert catalog_store(us.state).coupons == {}
    assert len(catalog_store(eu.state).coupon_codes("SPRING")) == 1
    flush_outbox(account="default")

    assert len(catalog_store(us.state).coupon_codes("SPRING")) == 2
    assert sorted(KlaviyoCoupon.objects.values_list("account", "klaviyo_id")) == [
        ("", "SPRING"),
        ("eu", "SPRING"),
    ]
    assert not KlaviyoCouponCode.objects.exclude(status="UNASSIGNED").exists()
    assert "UNASSIGNED: 1" in coupon_command("status", "SPRING", "--account", "eu")
    assert "UNASSIGNED: 2" in coupon_command("status", "SPRING")


def test_klaviyo_coupons_refuses_an_unknown_account(settings):
    two_accounts(settings)
    with pytest.raises(CommandError, match=r"unknown Klaviyo account 'mars'.*field account"):
        coupon_command("create", "WELCOME", "--account", "mars")
    with pytest.raises(CommandError, match="No coupon 'WELCOME' in account 'eu'"):
        coupon_command("status", "WELCOME", "--account", "eu")
    assert not KlaviyoCoupon.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_the_coupon_admin_shows_the_account(settings, staff):
    two_accounts(settings)
    coupons.get_or_create_coupon("WELCOME", account="eu")

    page = staff.get(reverse("admin:django_klaviyo_klaviyocoupon_changelist"))

    assert page.status_code == 200
    assert "column-account_name" in page.content.decode()
    assert page.context["cl"].result_list[0].account == "eu"


def test_an_accounts_codes_never_wait_for_another_accounts_coupon_row(settings, sandboxes):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url)
    coupon_command("create", "SPRING", "--account", "eu", "--flush")
    coupon_command("generate", "SPRING", "--count", "2")  # the default account's, unsent
    coupon_command("generate", "SPRING", "--count", "2", "--account", "eu")

    flush_outbox(account="eu")

    assert len(catalog_store(eu.state).coupon_codes("SPRING")) == 2
    eu_codes = KlaviyoCouponCode.objects.filter(coupon__account="eu")
    assert set(eu_codes.values_list("status", flat=True)) == {"UNASSIGNED"}
    assert OutboxEvent.objects.filter(account="", status=S.PENDING).count() == 3


# --- klaviyo_webhooks per account ------------------------------------------------------------


def test_klaviyo_webhooks_manages_another_accounts_webhooks_with_its_key_and_secret(
    settings, sandboxes
):
    us, eu = sandboxes
    two_accounts(settings, us.url, eu.url)
    out, err = StringIO(), StringIO()
    call_command(
        "klaviyo_webhooks",
        "create",
        "--account",
        "eu",
        "--name",
        "eu-shop",
        "--url",
        "https://shop.example.eu/klaviyo/webhooks/eu/",
        "--topic",
        "event:klaviyo.unsubscribed_from_email_marketing",
        stdout=out,
        stderr=err,
    )

    (webhook_id,) = eu.state.webhooks()
    assert eu.state.webhook_secret(webhook_id) == EU_SECRET  # the account's own secret
    assert us.state.webhooks() == {}
    assert eu.state.key_counts().keys() == {account_scope(EU_KEY)}
    assert EU_SECRET not in out.getvalue() + err.getvalue()
    assert err.getvalue() == ""  # the secret is eu's, so the receiver accepts it

    listed = StringIO()
    call_command("klaviyo_webhooks", "list", "--account", "eu", stdout=listed)
    assert f"{webhook_id}  eu-shop  enabled" in listed.getvalue()
    call_command("klaviyo_webhooks", "delete", webhook_id, "--account", "eu", stdout=StringIO())
    assert eu.state.webhooks() == {}


def test_klaviyo_webhooks_refuses_an_unknown_account_or_one_without_a_secret(settings):
    two_accounts(settings, WEBHOOK_SECRETS=[])
    with pytest.raises(CommandError, match="unknown Klaviyo account 'mars'; configured"):
        call_command("klaviyo_webhooks", "list", "--account", "mars", stdout=StringIO())
    with pytest.raises(
        CommandError, match=re.escape("set KLAVIYO['ACCOUNTS']['eu']['WEBHOOK_SECRETS']")
    ):
        call_command(
            "klaviyo_webhooks",
            "create",
            "--account",
            "eu",
            "--name",
            "eu-shop",
            "--url",
            "https://shop.example.eu/klaviyo/webhooks/eu/",
            "--topic",
            "event:klaviyo.bounced_email",
            stdout=StringIO(),
        )
