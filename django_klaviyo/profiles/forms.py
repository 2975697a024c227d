"""Marketing consent at checkout and signup, as Klaviyo's store integrations collect it.

:class:`MarketingConsentFormMixin` adds two boxes to a store's form, unticked:
``email_marketing`` and ``sms_marketing`` (with the SMS disclosure under it, and a
``phone_number`` field when the form has none). A ticked box needs its contact: a ticked
SMS box without a valid E.164 phone number is a form error on the phone field, never a
silent drop. After the store saves the order or the user, ``form.subscribe_consent()``
writes one ``subscribe`` outbox row *in the caller's transaction* (a rolled-back
checkout subscribes nobody) with ``custom_source`` naming the store. An unticked box
writes nothing: it neither subscribes nor unsubscribes.

The consent time is kept as ``form.consented_at`` and is the row's ``created_at``; it is
not sent as Klaviyo's ``consented_at``, which Klaviyo accepts only on a historical import
(no double opt-in, no "added to list" flows): a shopper ticking a box now gets the list's
opt-in process and welcome flow, and Klaviyo stamps the consent when the row is sent.
"""

from __future__ import annotations

import datetime as dt
import string
from typing import Any

from django import forms
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.html import escape

from django_klaviyo import accounts, api
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import OutboxEvent
from django_klaviyo.outbox.refused import record_refused, source_label
from django_klaviyo.rules.consent import consent_contact
from django_klaviyo.rules.lists import clean_list_id

__all__ = [
    "MarketingConsentFormMixin",
    "consent_source",
    "sms_disclosure",
    "store_name",
]

# Klaviyo's own integrations name themselves as the source when the store has no name.
INTEGRATION_NAME = "django-klaviyo"
# The one placeholder SMS_CONSENT_DISCLOSURE may hold.
STORE_PLACEHOLDER = "store"


def store_name() -> str | None:
    """``KLAVIYO["STORE_NAME"]``, else the current Site's name (django.contrib.sites),
    else None."""
    name = klaviyo_settings.STORE_NAME
    if name:
        return str(name)
    if apps.is_installed("django.contrib.sites"):
        from django.contrib.sites.models import Site

        try:
            return Site.objects.get_current().name or None
        except (Site.DoesNotExist, ImproperlyConfigured):
            return None
    return None


def consent_source() -> str:
    """The ``custom_source`` of consent collected by the store's forms:
    ``KLAVIYO["CONSENT_SOURCE"]``, else the store's name, else "django-klaviyo"."""
    return klaviyo_settings.CONSENT_SOURCE or store_name() or INTEGRATION_NAME


def disclosure_placeholders(text: str) -> set[str]:
    """The ``{names}`` a disclosure text uses (ValueError: a stray brace)."""
    return {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}


def sms_disclosure() -> str:
    """``KLAVIYO["SMS_CONSENT_DISCLOSURE"]`` with ``{store}`` filled in. A text naming the
    store while no store name is known raises ImproperlyConfigured: an SMS disclosure
    must say who will send the messages."""
    text = str(klaviyo_settings.SMS_CONSENT_DISCLOSURE)
    if STORE_PLACEHOLDER not in disclosure_placeholders(text):
        return text.format()  # {{ and }} are literal braces
    name = store_name()
    if not name:
        raise ImproperlyConfigured(
            "KLAVIYO['SMS_CONSENT_DISCLOSURE'] names the store, but no store name is known: "
            "set KLAVIYO['STORE_NAME'] (or use django.contrib.sites)."
        )
    return text.format(store=name)


class MarketingConsentFormMixin:
    """Email and SMS marketing consent boxes for a store's checkout or signup form::

        class CheckoutForm(MarketingConsentFormMixin, forms.Form):
            email = forms.EmailField()

        # in the view, after form.is_valid():
        with transaction.atomic():
            order = place_order(...)
            form.subscribe_consent(about=order)

    Class attributes a form may change: ``consent_channels`` (the boxes offered),
    ``consent_email_field`` / ``consent_phone_field`` (where the contact is read),
    ``consent_source`` and ``consent_list_id`` (None: the settings). Override
    ``consent_contact_data()`` when the contact is not in the form (a logged-in user's
    email)."""

    consent_channels: tuple[str, ...] = ("email", "sms")
    consent_email_field: str = "email"
    consent_phone_field: str = "phone_number"
    consent_source: str | None = None
    consent_list_id: str | None = None

    fields: dict[str, forms.Field]
    cleaned_data: dict[str, Any]
    errors: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # When the boxes were ticked (set by a valid form with a ticked box).
        self.consented_at: dt.datetime | None = None
        self._consent: dict[str, Any] | None = None
        if "email" in self.consent_channels:
            self.fields["email_marketing"] = forms.BooleanField(
                required=False,
                initial=False,
                label="Email me news and offers",
            )
        if "sms" in self.consent_channels:
            if self.consent_phone_field not in self.fields:
                self.fields[self.consent_phone_field] = forms.CharField(
                    required=False,
                    max_length=32,
                    label="Mobile phone",
                    help_text="With the country code, e.g. +14155550100.",
                )
            self.fields["sms_marketing"] = forms.BooleanField(
                required=False,
                initial=False,
                label="Text me news and offers",
                # Escaped: Django renders help_text as HTML.
                help_text=escape(sms_disclosure()),
            )

    def marketing_channels(self) -> list[str]:
        """The channels whose box is ticked ("email", "sms")."""
        data = getattr(self, "cleaned_data", {})
        return [c for c in ("email", "sms") if data.get(f"{c}_marketing")]

    def consent_contact_data(self) -> dict[str, Any]:
        """The contact the ticked channels need, read from the form: the email (with any
        box), the phone number (with the SMS box)."""
        data = self.cleaned_data
        contact = {"email": data.get(self.consent_email_field) or None}
        if "sms" in self.marketing_channels():
            contact["phone_number"] = data.get(self.consent_phone_field) or None
        return {k: v for k, v in contact.items() if v}

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        self._consent = None
        channels = self.marketing_channels()
        if not channels:
            return cleaned
        try:
            contact = consent_contact(self.consent_contact_data(), channels)
        except KlaviyoValidationError as exc:
            self._consent_error(exc)
            return cleaned
        self._consent = {"profile": contact, "channels": channels}
        self.consented_at = timezone.now()
        return cleaned

    def _consent_error(self, exc: KlaviyoValidationError) -> None:
        """The contact's error on the field the shopper can fix (or the box)."""
        phone = (exc.field or "").endswith("phone_number")
        field = self.consent_phone_field if phone else self.consent_email_field
        if field in self.errors:
            return  # the field's own error already says what is wrong
        if field not in self.fields:
            field = "sms_marketing" if phone else "email_marketing"
        if phone:
            message = "To get text messages, give a mobile number with its country code."
        else:
            message = "To get emails, give a valid email address."
        self.add_error(field, message)  # type: ignore[attr-defined]

    def subscribe_consent(
        self,
        *,
        about: Any = None,
        using: str | None = None,
        account: str | None = None,
        dedupe_key: str | None = None,
    ) -> OutboxEvent | None:
        """Write the ``subscribe`` row of the ticked boxes in the caller's transaction
        (call it in the ``transaction.atomic()`` that saves ``about``, the order or user);
        None when no box is ticked. ``about`` picks the account (``ACCOUNT_RESOLVER``) and
        names the row's origin. On an invalid form it raises ValueError, as Django's
        ``ModelForm.save()`` does. What Klaviyo would refuse was already a form error; if
        it is refused all the same (an account that fails), a dead row names why and the
        caller's save goes on."""
        if self.errors:
            raise ValueError(
                f"{type(self).__name__}.subscribe_consent() needs a valid form: call it after "
                "is_valid() returned True."
            )
        if self._consent is None:
            return None
        list_id = self.consent_list_id or klaviyo_settings.CONSENT_LIST_ID
        source = self.consent_source or consent_source()
        try:
            resolved = accounts.account_for(about, account=account)
            return api.subscribe(
                self._consent["profile"],
                channels=self._consent["channels"],
                list_id=None if list_id is None else clean_list_id(list_id),
                custom_source=source,
                dedupe_key=dedupe_key,
                using=using,
                account=accounts.display(resolved),
            )
        except KlaviyoValidationError as exc:
            if not klaviyo_settings.ENABLED:
                return None
            payload = {**self._consent, "list_id": list_id, "custom_source": source}
            origin = source_label(about) if about is not None else type(self).__name__
            return record_refused(
                OutboxEvent.Kind.SUBSCRIBE, payload, exc, source=origin, using=using
            )
