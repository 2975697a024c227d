"""Per-address limits key on an address the visitor cannot forge: REMOTE_ADDR, or what a
proxy the project trusts says; per-visitor limits key on the server's session, never on a
cookie the visitor (or an attacker) writes (issue 19, cases 2 and 7)."""

from __future__ import annotations

import base64
import json

import pytest
from django.core import checks
from django.test import RequestFactory
from rest_framework.request import Request

from django_klaviyo.models import OutboxEvent
from django_klaviyo.storefront import throttles
from tests.security.helpers import BACK_IN_STOCK, EVENTS, VIEWED, post_json, product, visitor

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("isolated_rate_limits")]


def test_a_forged_x_forwarded_for_does_not_escape_the_address_limit(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "STOREFRONT_ADDRESS_THROTTLE_RATE": "3/min"}

    statuses = [
        # A new client each time (no session) claiming a new address each time.
        post_json(visitor(), EVENTS, VIEWED, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code
        for n in range(5)
    ]

    assert statuses == [202, 202, 202, 429, 429]
    assert OutboxEvent.objects.count() == 3


def test_back_in_stock_with_forged_x_forwarded_for_is_held_by_the_address(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "BACK_IN_STOCK_THROTTLE_RATE": "3/min"}
    product()

    statuses = [
        post_json(
            visitor(),
            BACK_IN_STOCK,
            {"variant": "MUG-1", "email": f"victim{n}@example.com"},
            HTTP_X_FORWARDED_FOR=f"198.51.100.{n}",
        ).status_code
        for n in range(5)
    ]

    assert statuses == [202, 202, 202, 429, 429]


def address(settings, remote: str, forwarded: str | None = None) -> str:
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return throttles.client_address(Request(RequestFactory().get("/", **meta)))


def test_by_default_no_proxy_is_trusted(settings):
    assert address(settings, "192.0.2.1", "203.0.113.9") == "192.0.2.1"


def test_a_trusted_proxy_names_the_client_and_a_forged_prefix_is_ignored(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "TRUSTED_PROXIES": ["10.0.0.0/8", "192.0.2.1"]}

    # The client forged "1.1.1.1"; the edge proxy (192.0.2.1) appended the client's real
    # address, the inner proxy (10.0.0.5) appended the edge's.
    assert address(settings, "10.0.0.5", "1.1.1.1, 203.0.113.9, 192.0.2.1") == "203.0.113.9"
    # A request that did not come through a trusted proxy: its header counts for nothing.
    assert address(settings, "198.51.100.4", "203.0.113.9") == "198.51.100.4"
    # Through the proxy without a header: the proxy's own address.
    assert address(settings, "10.0.0.5") == "10.0.0.5"
    # Garbage where an address should be: the last address a trusted proxy vouched for.
    assert address(settings, "10.0.0.5", "203.0.113.9, not-an-ip") == "10.0.0.5"


def test_drf_num_proxies_is_honoured_when_set(settings):
    settings.REST_FRAMEWORK = {"NUM_PROXIES": 1}

    assert address(settings, "10.0.0.5", "1.1.1.1, 203.0.113.9") == "203.0.113.9"


def test_through_a_trusted_proxy_each_client_has_its_own_limit(settings):
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "TRUSTED_PROXIES": ["127.0.0.1"],
        "STOREFRONT_ADDRESS_THROTTLE_RATE": "2/min",
    }

    def status(client_ip: str, forged: str) -> int:
        meta = {"HTTP_X_FORWARDED_FOR": f"{forged}, {client_ip}"}
        return post_json(visitor(), EVENTS, VIEWED, **meta).status_code

    assert [status("203.0.113.1", f"1.1.1.{n}") for n in range(3)] == [202, 202, 429]
    assert status("203.0.113.2", "1.1.1.1") == 202


def check_ids() -> set[str]:
    return {message.id for message in checks.run_checks() if message.id}


def test_a_project_behind_a_proxy_that_trusts_none_is_warned(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert "django_klaviyo.W040" in check_ids()

    settings.KLAVIYO = {**settings.KLAVIYO, "TRUSTED_PROXIES": ["10.0.0.1"]}
    assert "django_klaviyo.W040" not in check_ids()


def test_forwarded_requests_seen_with_no_trusted_proxy_are_warned():
    assert "django_klaviyo.W040" not in check_ids()

    post_json(visitor(), EVENTS, VIEWED, HTTP_X_FORWARDED_FOR="203.0.113.9")

    assert "django_klaviyo.W040" in check_ids()


@pytest.mark.parametrize("value", ["10.0.0.300", ["not an address"], "10.0.0.1"])
def test_a_malformed_trusted_proxies_setting_is_an_error(settings, value):
    settings.KLAVIYO = {**settings.KLAVIYO, "TRUSTED_PROXIES": value}
    # A bare string is refused too: it would be read character by character.
    assert "django_klaviyo.E042" in check_ids()


def test_a_visitor_s_klaviyo_id_cannot_be_used_to_lock_her_out(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "STOREFRONT_THROTTLE_RATE": "3/min"}
    victim = visitor()
    cid = "VictimCid123"
    victim.cookies["__kla_id"] = base64.b64encode(json.dumps({"cid": cid}).encode()).decode()
    assert post_json(victim, EVENTS, VIEWED).status_code == 202

    # The attacker read her cid and sends it from another address, in one session.
    attacker = visitor(REMOTE_ADDR="198.51.100.66")
    attacker.cookies["__kla_id"] = victim.cookies["__kla_id"].value
    attempts = [post_json(attacker, EVENTS, VIEWED).status_code for _ in range(6)]
    assert attempts[-1] == 429  # the attacker's own session is held back

    assert post_json(victim, EVENTS, VIEWED).status_code == 202
