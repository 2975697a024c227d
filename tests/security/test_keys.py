"""Issue 19, case 1: a private key never reaches a page, however it is written.

Every key setting is normalised once (``conf.normalize_key``: surrounding whitespace
stripped) before any check or use; E037 names a private key in any account's
PUBLIC_API_KEY; ``{% klaviyo_js %}`` renders only a key that passed the check.
"""

from __future__ import annotations

import pytest
from django.template import Context, Template
from django.test import RequestFactory, override_settings

from django_klaviyo.checks import check_klaviyo_settings
from django_klaviyo.conf import klaviyo_settings

PRIVATE = "pk_0123456789abcdef0123456789abcdef99"
GOOD = {
    "PRIVATE_API_KEY": "pk_test_0123456789abcdef0123456789abcdef01",
    "WEBHOOK_SECRETS": ["whsec-test-secret-0123456789"],
    "FLOW_WEBHOOK_TOKEN": "flow-token-0123456789abcdef",
    "ORDER_MODEL": "shop.Order",
}
# A private key as a careless .env or copy-paste leaves it.
DISGUISED = [
    f" {PRIVATE}",
    f"{PRIVATE}\n",
    f"\t{PRIVATE} ",
    f'"{PRIVATE}"',
    f"'{PRIVATE}'",
    PRIVATE.upper(),
    f" {PRIVATE.upper()}",
]


def errors() -> list[str]:
    return [m.id for m in check_klaviyo_settings() if m.is_serious()]


def render(settings_block: dict) -> str:
    with override_settings(KLAVIYO=settings_block):
        request = RequestFactory().get("/")
        return Template("{% load klaviyo %}{% klaviyo_js %}").render(Context({"request": request}))


@pytest.mark.parametrize("written", DISGUISED)
def test_a_private_key_in_the_public_slot_fails_check_however_written(written):
    with override_settings(KLAVIYO={**GOOD, "PUBLIC_API_KEY": written}):
        messages = check_klaviyo_settings()
    assert "django_klaviyo.E037" in [m.id for m in messages]
    for message in messages:
        assert PRIVATE not in message.msg and PRIVATE not in (message.hint or "")


@pytest.mark.parametrize("written", DISGUISED)
def test_the_tag_never_renders_a_private_key_however_written(written):
    html = render({**GOOD, "PUBLIC_API_KEY": written})
    assert PRIVATE.lower() not in html.lower()
    assert "company_id" not in html


@pytest.mark.parametrize("written", DISGUISED)
def test_a_private_key_in_an_account_s_public_slot_fails_check(written):
    accounts = {"eu": {"PRIVATE_API_KEY": "pk_eu_0123456789abcdef0123", "PUBLIC_API_KEY": written}}
    with override_settings(KLAVIYO={**GOOD, "ACCOUNTS": accounts}):
        messages = check_klaviyo_settings()
    assert "django_klaviyo.E037" in [m.id for m in messages]


def test_a_public_key_with_stray_space_is_used_stripped():
    html = render({**GOOD, "PUBLIC_API_KEY": "  AbC123\n"})
    assert "company_id=AbC123" in html
    with override_settings(KLAVIYO={**GOOD, "PUBLIC_API_KEY": "  AbC123\n"}):
        assert errors() == []


def test_a_malformed_public_key_is_reported_and_not_rendered():
    with override_settings(KLAVIYO={**GOOD, "PUBLIC_API_KEY": "AbC123<script>"}):
        assert "django_klaviyo.E039" in [m.id for m in check_klaviyo_settings()]
    assert "company_id" not in render({**GOOD, "PUBLIC_API_KEY": "AbC123<script>"})


@pytest.mark.parametrize(
    "key", ["PRIVATE_API_KEY", "PUBLIC_API_KEY", "FLOW_WEBHOOK_TOKEN", "HEALTH_TOKEN"]
)
def test_every_key_setting_is_read_stripped(key):
    with override_settings(KLAVIYO={**GOOD, key: "  value-0123456789abcdef \n"}):
        assert klaviyo_settings.get(key) == "value-0123456789abcdef"


def test_webhook_secrets_are_read_stripped():
    with override_settings(
        KLAVIYO={**GOOD, "WEBHOOK_SECRETS": [" s3cret-0123456789abcdef\n", " "]}
    ):
        assert klaviyo_settings.webhook_secrets() == ["s3cret-0123456789abcdef"]
        from django_klaviyo import accounts

        assert accounts.get_account().webhook_secrets == ("s3cret-0123456789abcdef",)


def test_a_stray_space_around_the_private_key_is_not_a_malformed_key():
    with override_settings(KLAVIYO={**GOOD, "PRIVATE_API_KEY": f" {GOOD['PRIVATE_API_KEY']}\n"}):
        assert errors() == []
        assert GOOD["PRIVATE_API_KEY"] == klaviyo_settings.PRIVATE_API_KEY
