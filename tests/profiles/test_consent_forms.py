"""Marketing consent collected by a store's form (``MarketingConsentFormMixin``): the
boxes, their validation, the ``subscribe`` row written in the caller's transaction, and
what reaches Klaviyo (the sandbox validates each request against the spec)."""

from __future__ import annotations

from typing import Any

import pytest
from django import forms
from django.apps import apps
from django.core.checks import run_checks
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from shop.models import Order

from django_klaviyo.models import OutboxEvent
from django_klaviyo.profiles.forms import (
    MarketingConsentFormMixin,
    consent_source,
    sms_disclosure,
    store_name,
)
from tests.klaviyo_fixtures import flush_now

Kind = OutboxEvent.Kind
Status = OutboxEvent.Status

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_rate_limits")]


class CheckoutForm(MarketingConsentFormMixin, forms.Form):
    email = forms.EmailField(required=False)


class EmailOnlyForm(MarketingConsentFormMixin, forms.Form):
    consent_channels = ("email",)
    email = forms.EmailField()


class MobileForm(MarketingConsentFormMixin, forms.Form):
    consent_phone_field = "mobile"
    consent_source = "Northwind app"
    email = forms.EmailField()
    mobile = forms.CharField(required=False)


def form(data: dict[str, Any], form_class: type[forms.Form] = CheckoutForm) -> Any:
    bound = form_class(data)
    bound.is_valid()
    return bound


def subscribe_rows() -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(kind=Kind.SUBSCRIBE))


def test_the_boxes_are_unticked_and_the_sms_box_carries_the_disclosure():
    unbound = CheckoutForm()
    html = str(unbound)

    assert unbound.fields["email_marketing"].initial is False
    assert unbound.fields["sms_marketing"].initial is False
    assert 'name="email_marketing"' in html and "checked" not in html
    assert 'name="phone_number"' in html
    disclosure = unbound.fields["sms_marketing"].help_text
    assert "from Test Shop at the number provided" in disclosure
    assert "Consent is not a condition of purchase" in disclosure
    assert "Reply HELP for help and STOP to cancel" in disclosure
    assert "sms_marketing" not in EmailOnlyForm().fields
    assert "phone_number" not in EmailOnlyForm().fields


def test_unticked_boxes_write_nothing():
    bound = form({"email": "ada@example.com", "phone_number": "+14155550100"})

    assert bound.is_valid()
    assert bound.subscribe_consent() is None
    assert bound.consented_at is None
    assert not OutboxEvent.objects.exists()


def test_ticked_boxes_subscribe_with_the_store_as_source(klaviyo_sandbox):
    bound = form(
        {
            "email": "ada@example.com",
            "phone_number": "+1 (415) 555-0100",
            "email_marketing": "on",
            "sms_marketing": "on",
        }
    )
    assert bound.is_valid(), bound.errors

    with transaction.atomic():
        row = bound.subscribe_consent()

    assert row is not None and row.kind == Kind.SUBSCRIBE
    assert row.payload["profile"] == {"email": "ada@example.com", "phone_number": "+14155550100"}
    assert row.payload["channels"] == ["email", "sms"]
    assert row.payload["custom_source"] == "Test Shop"
    assert row.payload["list_id"] is None
    # The consent time is the form's, and the row's: not sent (see the module's docstring).
    assert row.payload["consented_at"] is None
    assert bound.consented_at is not None and bound.consented_at <= row.created_at

    report = flush_now()

    assert report.dead == 0 and report.sent == 1
    (job,) = klaviyo_sandbox.state.subscriptions()
    assert job["email"] == "ada@example.com" and job["phone_number"] == "+14155550100"
    assert job["channels"] == ["email", "sms"]
    assert job["custom_source"] == "Test Shop"
    assert job["historical_import"] is False
    profile_id = job["profile_id"]
    assert klaviyo_sandbox.state.consent(profile_id, "email") == "SUBSCRIBED"
    assert klaviyo_sandbox.state.consent(profile_id, "sms") == "SUBSCRIBED"


def test_one_ticked_box_subscribes_that_channel_only():
    bound = form(
        {"email": "ada@example.com", "phone_number": "+14155550100", "email_marketing": "on"}
    )

    row = bound.subscribe_consent()

    assert row.payload["channels"] == ["email"]
    # Without SMS consent the phone number does not travel.
    assert row.payload["profile"] == {"email": "ada@example.com"}


def test_the_list_and_the_source_come_from_settings_or_the_form(settings, klaviyo_sandbox):
    newsletter = klaviyo_sandbox.state.create_list("Newsletter")
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "CONSENT_SOURCE": "Northwind checkout",
        "CONSENT_LIST_ID": newsletter["id"],
    }
    form({"email": "ada@example.com", "email_marketing": "on"}).subscribe_consent()
    form(
        {"email": "bob@example.com", "mobile": "+14155550101", "sms_marketing": "on"}, MobileForm
    ).subscribe_consent()

    assert consent_source() == "Northwind checkout"
    assert flush_now().dead == 0
    jobs = {job["email"]: job for job in klaviyo_sandbox.state.subscriptions()}
    assert jobs["ada@example.com"]["custom_source"] == "Northwind checkout"
    assert jobs["ada@example.com"]["list_id"] == newsletter["id"]
    assert jobs["bob@example.com"]["custom_source"] == "Northwind app"
    assert jobs["bob@example.com"]["phone_number"] == "+14155550101"
    assert jobs["bob@example.com"]["channels"] == ["sms"]


@pytest.mark.parametrize("phone", ["", "4155550100", "call me"])
def test_a_ticked_sms_box_without_a_valid_phone_is_an_error_on_the_phone_field(phone):
    bound = form({"email": "ada@example.com", "phone_number": phone, "sms_marketing": "on"})

    assert not bound.is_valid()
    assert bound.errors["phone_number"] == [
        "To get text messages, give a mobile number with its country code."
    ]
    with pytest.raises(ValueError, match="needs a valid form"):
        bound.subscribe_consent()
    assert not OutboxEvent.objects.exists()


def test_the_error_goes_to_the_form_s_own_phone_field():
    bound = form({"email": "ada@example.com", "sms_marketing": "on"}, MobileForm)

    assert list(bound.errors) == ["mobile"]


def test_a_ticked_email_box_without_an_email_is_an_error_on_the_email_field():
    bound = form({"email": "", "email_marketing": "on"})

    assert bound.errors["email"] == ["To get emails, give a valid email address."]
    # The field's own error is not repeated.
    assert form({"email": "not-an-email", "email_marketing": "on"}).errors["email"] == [
        "Enter a valid email address."
    ]


def test_a_rolled_back_save_subscribes_nobody():
    bound = form({"email": "ada@example.com", "email_marketing": "on"})

    with pytest.raises(RuntimeError), transaction.atomic():
        Order.objects.create(number="N-1", email="ada@example.com")
        assert bound.subscribe_consent() is not None
        raise RuntimeError("payment declined")

    assert not Order.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_the_row_is_written_in_the_caller_s_transaction():
    bound = form({"email": "ada@example.com", "email_marketing": "on"})

    with transaction.atomic():
        order = Order.objects.create(number="N-1", email="ada@example.com")
        row = bound.subscribe_consent(about=order)
        assert OutboxEvent.objects.filter(pk=row.pk).exists()

    assert subscribe_rows() == [row]


def test_disabled_writes_nothing(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "ENABLED": False}
    bound = form({"email": "ada@example.com", "email_marketing": "on"})

    assert bound.subscribe_consent() is None
    assert not OutboxEvent.objects.exists()


def test_an_account_that_cannot_be_resolved_leaves_a_dead_row_and_the_save_goes_on(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "ACCOUNT_RESOLVER": lambda obj, request=None: "nope"}
    bound = form({"email": "ada@example.com", "email_marketing": "on"})

    with transaction.atomic():
        order = Order.objects.create(number="N-1", email="ada@example.com")
        row = bound.subscribe_consent(about=order)

    assert Order.objects.filter(pk=order.pk).exists()
    assert row.status == Status.DEAD and row.kind == Kind.SUBSCRIBE
    assert row.last_error_code == "invalid_on_save"
    assert "account" in row.last_error_detail
    assert f"shop.order:{order.pk}" in row.outcome_note
    assert row.payload["custom_source"] == "Test Shop"


def test_the_store_name_falls_back_to_the_site_then_refuses_an_unnamed_disclosure(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "STORE_NAME": None}
    if apps.is_installed("django.contrib.sites"):
        from django.contrib.sites.models import Site

        Site.objects.clear_cache()
        Site.objects.update_or_create(pk=settings.SITE_ID, defaults={"name": "Site Shop"})
        assert store_name() == "Site Shop"
        assert "from Site Shop at" in sms_disclosure()
        Site.objects.all().delete()
        Site.objects.clear_cache()

    assert store_name() is None
    assert consent_source() == "django-klaviyo"
    with pytest.raises(ImproperlyConfigured, match="STORE_NAME"):
        CheckoutForm()
    # A disclosure that does not name the store needs no name; nor does email alone.
    EmailOnlyForm()
    settings.KLAVIYO = {
        **settings.KLAVIYO,
        "STORE_NAME": None,
        "SMS_CONSENT_DISCLOSURE": "Texts from Acme; reply STOP to cancel. {{promo}}",
    }
    assert CheckoutForm().fields["sms_marketing"].help_text == (
        "Texts from Acme; reply STOP to cancel. {promo}"
    )


def test_the_disclosure_is_escaped(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "STORE_NAME": "<b>Shop</b>"}

    assert "&lt;b&gt;Shop&lt;/b&gt;" in str(CheckoutForm())


@pytest.mark.parametrize(
    ("key", "value", "check_id"),
    [
        ("STORE_NAME", "", "django_klaviyo.E043"),
        ("CONSENT_SOURCE", 42, "django_klaviyo.E043"),
        ("SMS_CONSENT_DISCLOSURE", "", "django_klaviyo.E044"),
        ("SMS_CONSENT_DISCLOSURE", "From {shop}", "django_klaviyo.E044"),
        ("SMS_CONSENT_DISCLOSURE", "From {store", "django_klaviyo.E044"),
        ("CONSENT_LIST_ID", ["Y6nRLr"], "django_klaviyo.E045"),
        ("CONSENT_LIST_ID", " ", "django_klaviyo.E045"),
    ],
)
def test_bad_consent_settings_are_check_errors(settings, key, value, check_id):
    settings.KLAVIYO = {**settings.KLAVIYO, key: value}

    assert check_id in [m.id for m in run_checks()]


def test_the_default_consent_settings_pass_the_checks():
    ids = {m.id for m in run_checks()}
    assert not ids & {"django_klaviyo.E043", "django_klaviyo.E044", "django_klaviyo.E045"}
