"""System checks turn every bad django-klaviyo setting into a named message, never a traceback."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.checks import Error, Warning
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from django_klaviyo.checks import check_klaviyo_settings
from django_klaviyo.conf import klaviyo_settings

GOOD = {
    "PRIVATE_API_KEY": "pk_0123456789abcdef0123456789abcdef01",
    "WEBHOOK_SECRETS": ["whsec-test-secret-0123456789"],
    "FLOW_WEBHOOK_TOKEN": "flow-token-0123456789abcdef",
    "ORDER_MODEL": "shop.Order",
}
# The checks only read CACHES: none of these is ever connected to.
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache"},
    "redis": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://"},
    "locmem": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "dummy": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"},
}


@pytest.fixture(autouse=True)
def _shared_default_cache(settings):
    settings.CACHES = CACHES


def ids(**overrides: object) -> list[str]:
    with override_settings(KLAVIYO={**GOOD, **overrides}):
        return [m.id for m in check_klaviyo_settings()]


def test_good_settings_pass_cleanly():
    assert ids() == []


def test_missing_private_key():
    with override_settings(KLAVIYO={k: v for k, v in GOOD.items() if k != "PRIVATE_API_KEY"}):
        messages = check_klaviyo_settings()
    assert [m.id for m in messages] == ["django_klaviyo.E001"]
    assert "KLAVIYO_PRIVATE_API_KEY" in messages[0].msg
    assert messages[0].hint


def test_missing_key_is_fine_when_disabled():
    disabled = {k: v for k, v in GOOD.items() if k != "PRIVATE_API_KEY"}
    with override_settings(KLAVIYO={**disabled, "ENABLED": False}):
        assert [m.id for m in check_klaviyo_settings()] == []


@pytest.mark.parametrize(
    "key", ["AbC123", "pk_short", "pk_with space 0123456789abcdef", "sk_x" * 9]
)
def test_ill_formed_private_key(key):
    with override_settings(KLAVIYO={**GOOD, "PRIVATE_API_KEY": key}):
        messages = check_klaviyo_settings()
    assert [m.id for m in messages] == ["django_klaviyo.E002"]
    # The key itself is a secret: never echoed in the message or hint.
    assert key not in messages[0].msg and key not in messages[0].hint


def test_public_key_in_private_slot_gets_a_specific_hint():
    with override_settings(KLAVIYO={**GOOD, "PRIVATE_API_KEY": "AbC123"}):
        (message,) = check_klaviyo_settings()
    assert "PUBLIC_API_KEY" in message.hint


@pytest.mark.parametrize("revision", ["2026/07/15", "latest", "2026-13-01", "", 20260715])
def test_malformed_revision(revision):
    assert ids(REVISION=revision) == ["django_klaviyo.E003"]


def test_revision_with_suffix_is_accepted():
    today = dt.date.today()
    assert ids(REVISION=f"{today:%Y-%m-%d}.pre") == []


def test_retired_and_deprecated_revisions_are_warnings_that_stop_nothing():
    """An Error would stop migrate and klaviyo_flush on the day the default revision
    turns two: an unchanged deployment must keep flushing."""
    today = dt.date.today()
    retired = (today - dt.timedelta(days=800)).isoformat()
    deprecated = (today - dt.timedelta(days=400)).isoformat()
    with override_settings(KLAVIYO={**GOOD, "REVISION": retired}):
        (message,) = check_klaviyo_settings()
    assert isinstance(message, Warning) and message.id == "django_klaviyo.W004"
    assert not message.is_serious()
    with override_settings(KLAVIYO={**GOOD, "REVISION": deprecated}):
        (message,) = check_klaviyo_settings()
    assert isinstance(message, Warning) and message.id == "django_klaviyo.W001"


@pytest.mark.parametrize("url", ["ftp://a.klaviyo.com", "a.klaviyo.com", "", None, "https://"])
def test_api_url_must_be_http(url):
    assert ids(API_URL=url) == ["django_klaviyo.E005"]


def test_webhook_url_mounted_without_secret():
    # tests.projects.urls includes django_klaviyo.urls
    assert ids(WEBHOOK_SECRETS=[]) == ["django_klaviyo.E007"]


def test_webhook_secrets_must_be_strings():
    assert ids(WEBHOOK_SECRETS=[123]) == ["django_klaviyo.E006"]


def test_short_webhook_secret_warns_without_echoing_it():
    # In development (sandbox, DEBUG on) a warning; deployed, an error (E041,
    # tests/security/test_deploy_check.py).
    sandbox = {k: v for k, v in GOOD.items() if k != "PRIVATE_API_KEY"} | {"SANDBOX": True}
    with override_settings(KLAVIYO={**sandbox, "WEBHOOK_SECRETS": ["tiny"]}, DEBUG=True):
        (message,) = check_klaviyo_settings()
    assert message.id == "django_klaviyo.W002" and "tiny" not in message.msg


@pytest.mark.parametrize("path", ["no.such.module.func", "django_klaviyo.conf.nothing_here"])
def test_dotted_path_that_does_not_import(path):
    assert ids(ORDER_EVENTS_MAPPER=path) == ["django_klaviyo.E008"]


def test_dotted_path_to_something_not_callable():
    assert ids(USER_PROFILE_MAPPER="django_klaviyo.conf.DEFAULTS") == ["django_klaviyo.E008"]


def test_order_model_that_is_not_installed():
    assert ids(ORDER_MODEL="shop.Nope") == ["django_klaviyo.E009"]
    assert ids(ORDER_MODEL="not-a-model-path") == ["django_klaviyo.E009"]


def test_klaviyo_setting_must_be_a_dict():
    with override_settings(KLAVIYO=["PRIVATE_API_KEY"]):
        assert [m.id for m in check_klaviyo_settings()] == ["django_klaviyo.E010"]


@pytest.mark.parametrize(
    "key,value",
    [
        ("MAX_ATTEMPTS", 0),
        ("BATCH_SIZE", "100"),
        ("RETRY_BASE_SECONDS", -1),
        ("LEASE_SECONDS", True),
    ],
)
def test_numbers_must_be_positive(key, value):
    assert ids(**{key: value}) == ["django_klaviyo.E011"]


@pytest.mark.parametrize("timeout", [None, 0, (5,), ("5", 30), (5, -1)])
def test_timeout_shape(timeout):
    assert ids(TIMEOUT=timeout) == ["django_klaviyo.E012"]


@pytest.mark.parametrize("value", [-1, "100", True, 1.5])
def test_webhook_inline_items_is_a_count(value):
    assert ids(WEBHOOK_INLINE_ITEMS=value) == ["django_klaviyo.E011"]
    assert ids(WEBHOOK_INLINE_ITEMS=0) == []


def test_rate_limit_cache_alias_must_exist():
    assert ids(RATE_LIMIT_CACHE="memcached") == ["django_klaviyo.E013"]


def test_naive_datetimes_are_named_at_startup():
    assert ids() == []
    with override_settings(USE_TZ=False):
        assert ids() == ["django_klaviyo.E014"]


@pytest.mark.parametrize("alias", ["default", "redis"])
def test_a_shared_rate_limit_cache_passes(alias):
    assert ids(RATE_LIMIT_CACHE=alias) == []


def test_a_per_process_rate_limit_cache_is_a_warning_outside_debug():
    with override_settings(DEBUG=False):
        assert ids(RATE_LIMIT_CACHE="locmem") == ["django_klaviyo.W005"]
    with override_settings(DEBUG=True):
        assert ids(RATE_LIMIT_CACHE="locmem") == []  # one runserver, one worker: fine
    with override_settings(KLAVIYO={**GOOD, "RATE_LIMIT_CACHE": "locmem"}, DEBUG=False):
        (warning,) = check_klaviyo_settings()
    assert isinstance(warning, Warning)
    assert "'locmem' is a LocMemCache" in warning.msg
    assert "RedisCache" in warning.hint and "DatabaseCache" in warning.hint
    assert "SILENCED_SYSTEM_CHECKS" in warning.hint


def test_the_default_settings_warn_about_the_default_locmem_cache():
    # No CACHES setting at all: Django's default is a LocMemCache.
    with override_settings(KLAVIYO=GOOD, DEBUG=False):
        from django.conf import settings

        del settings.CACHES
        assert [m.id for m in check_klaviyo_settings()] == ["django_klaviyo.W005"]


def test_a_dummy_rate_limit_cache_is_always_a_warning():
    with override_settings(DEBUG=True):
        assert ids(RATE_LIMIT_CACHE="dummy") == ["django_klaviyo.W006"]


@pytest.mark.django_db
def test_the_per_process_warning_can_be_silenced(capsys):
    from django.core.management import call_command

    with override_settings(KLAVIYO={**GOOD, "RATE_LIMIT_CACHE": "locmem"}, DEBUG=False):
        call_command("check")
        assert "django_klaviyo.W005" in capsys.readouterr().err
        with override_settings(SILENCED_SYSTEM_CHECKS=["django_klaviyo.W005"]):
            call_command("check")
        assert "django_klaviyo.W005" not in capsys.readouterr().err


def test_every_message_has_a_hint():
    with override_settings(
        KLAVIYO={"PRIVATE_API_KEY": "x", "REVISION": "x", "API_URL": "x", "ORDER_MODEL": "x.Y"}
    ):
        messages = check_klaviyo_settings()
    assert {m.id for m in messages} >= {
        "django_klaviyo.E002",
        "django_klaviyo.E003",
        "django_klaviyo.E005",
        "django_klaviyo.E009",
    }
    assert all(isinstance(m, Error | Warning) and m.hint for m in messages)


@pytest.mark.django_db  # Django 6.1's check command also runs database checks
def test_manage_py_check_reports_instead_of_crashing(capsys):
    from django.core.management import call_command
    from django.core.management.base import SystemCheckError

    with (
        override_settings(KLAVIYO={**GOOD, "API_URL": "nope"}),
        pytest.raises(SystemCheckError) as exc,
    ):
        call_command("check")
    assert "django_klaviyo.E005" in str(exc.value)


def test_settings_accept_both_spellings_and_name_both_when_missing():
    with override_settings(KLAVIYO={}, KLAVIYO_REVISION="2026-07-15.pre"):
        assert klaviyo_settings.REVISION == "2026-07-15.pre"
    with override_settings(KLAVIYO={"REVISION": "a"}, KLAVIYO_REVISION="b"):
        assert klaviyo_settings.REVISION == "a"
    with override_settings(KLAVIYO={}), pytest.raises(ImproperlyConfigured) as exc:
        klaviyo_settings.PRIVATE_API_KEY
    assert "KLAVIYO = {'PRIVATE_API_KEY'" in str(exc.value)
    assert "KLAVIYO_PRIVATE_API_KEY" in str(exc.value)


def test_dotted_path_settings_resolve_to_callables():
    with override_settings(KLAVIYO={**GOOD, "ORDER_EVENTS_MAPPER": "json.dumps"}):
        import json

        assert klaviyo_settings.callable("ORDER_EVENTS_MAPPER") is json.dumps
    with (
        override_settings(KLAVIYO={**GOOD, "ORDER_EVENTS_MAPPER": "nope.nothing"}),
        pytest.raises(ImproperlyConfigured, match="does not import"),
    ):
        klaviyo_settings.callable("ORDER_EVENTS_MAPPER")


# --- keys, sandbox mode ---------------------------------------------------------------


def test_a_private_key_in_the_public_slot_is_named_without_echoing_it():
    key = "pk_0123456789abcdef0123456789abcdef99"
    with override_settings(KLAVIYO={**GOOD, "PUBLIC_API_KEY": key}):
        (message,) = check_klaviyo_settings()
    assert message.id == "django_klaviyo.E037"
    assert key not in message.msg and key not in message.hint


def test_a_non_dict_klaviyo_is_reported_not_raised_at_startup():
    from django_klaviyo.orders import receivers

    with override_settings(KLAVIYO=["PRIVATE_API_KEY", "pk_..."]):
        receivers.connect()  # AppConfig.ready: no traceback
        assert [m.id for m in check_klaviyo_settings()] == ["django_klaviyo.E010"]
        with pytest.raises(ImproperlyConfigured, match="E010"):
            klaviyo_settings.ENABLED


def test_sandbox_mode_needs_no_private_key():
    keyless = {k: v for k, v in GOOD.items() if k != "PRIVATE_API_KEY"}
    with override_settings(KLAVIYO={**keyless, "SANDBOX": True}, DEBUG=True):
        assert [m.id for m in check_klaviyo_settings()] == []
        assert klaviyo_settings.API_URL == "http://127.0.0.1:8765"
        assert klaviyo_settings.PRIVATE_API_KEY.startswith("pk_sandbox_")
    # A real deployment (no SANDBOX) without a key still fails `check`.
    with override_settings(KLAVIYO=keyless):
        assert [m.id for m in check_klaviyo_settings()] == ["django_klaviyo.E001"]


def test_sandbox_mode_must_not_point_at_klaviyo_and_warns_outside_debug():
    sandbox = {**GOOD, "SANDBOX": True}
    with override_settings(KLAVIYO={**sandbox, "API_URL": "https://a.klaviyo.com"}, DEBUG=True):
        assert [m.id for m in check_klaviyo_settings()] == ["django_klaviyo.E038"]
    with override_settings(KLAVIYO=sandbox, DEBUG=False):
        assert [m.id for m in check_klaviyo_settings()] == ["django_klaviyo.W031"]


def test_an_unknown_top_level_setting_is_a_warning_with_a_suggestion():
    with override_settings(KLAVIYO=GOOD, KLAVIYO_PRIVATE_API_KY="x"):
        (message,) = check_klaviyo_settings()
    assert message.id == "django_klaviyo.W032"
    assert "Did you mean 'PRIVATE_API_KEY'?" in message.hint


def test_a_lease_shorter_than_twice_a_request_and_a_job_poll_warns():
    """The lease is renewed only between requests and before each job poll: a request of
    up to 5 s (rate-limit wait) + 5 s (connect) + 30 s (read), then up to 5 s before the
    next poll of a profile import job, needs a lease of at least 90 s."""
    assert ids(LEASE_SECONDS=90, TIMEOUT=(5, 30)) == []
    assert ids(LEASE_SECONDS=89, TIMEOUT=(5, 30)) == ["django_klaviyo.W007"]
    with override_settings(KLAVIYO={**GOOD, "LEASE_SECONDS": 200, "TIMEOUT": 60}):
        (warning,) = check_klaviyo_settings()
    assert isinstance(warning, Warning) and warning.id == "django_klaviyo.W007"
    assert "130 s" in warning.msg and "at least 260" in warning.hint


def test_a_lease_that_can_run_out_during_a_request_and_a_poll_warns_apart():
    """Renewed once a quarter of it has passed, a lease must outlast a quarter of itself
    plus one request and one job poll (45 s with these timeouts): under 60 s it can run
    out mid-request even with every clock alike."""
    assert ids(LEASE_SECONDS=60, TIMEOUT=(5, 30)) == ["django_klaviyo.W007"]
    assert ids(LEASE_SECONDS=59, TIMEOUT=(5, 30)) == ["django_klaviyo.W041"]
    # A slow catalog poll interval counts too: 40 s of request + 30 s before the poll.
    assert ids(LEASE_SECONDS=90, TIMEOUT=(5, 30), CATALOG_JOB_POLL_SECONDS=30) == [
        "django_klaviyo.W041"
    ]
    with override_settings(KLAVIYO={**GOOD, "LEASE_SECONDS": 45, "TIMEOUT": (5, 30)}):
        (warning,) = check_klaviyo_settings()
    assert isinstance(warning, Warning) and warning.id == "django_klaviyo.W041"
    assert "45 s" in warning.msg and "at least 90" in warning.hint
