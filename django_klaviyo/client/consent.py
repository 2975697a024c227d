"""Consent and data privacy: the ``KlaviyoClient`` operations that subscribe,
unsubscribe and erase profiles (revision 2026-07-15). Input is cleaned by the rules
(``rules.consent``, ``rules.profiles``), bodies are built by ``client.bodies``
(``consent``, ``privacy``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from django_klaviyo.client.bodies.consent import build_subscribe, build_unsubscribe
from django_klaviyo.client.bodies.privacy import build_deletion
from django_klaviyo.rules.consent import clean_consent_request, clean_custom_source
from django_klaviyo.rules.lists import clean_list_id
from django_klaviyo.rules.profiles import clean_deletion, deletion_payload


def empty_batch(items: Any) -> bool:
    """An empty list or tuple: nothing to send (other bad input is validated later)."""
    return isinstance(items, (list, tuple)) and not items


class ConsentMethods:
    """Mixed into ``KlaviyoClient``, which provides the plumbing declared here."""

    clock: Callable[[], float]

    if TYPE_CHECKING:

        def _send(self, operation: str, method: str, path: str, **kwargs: Any) -> Any: ...

    # -- consent ----------------------------------------------------------------------

    def subscribe_profiles(
        self,
        profiles: Sequence[Mapping[str, Any]],
        *,
        list_id: str | None = None,
        custom_source: str | None = None,
        historical_import: bool = False,
    ) -> None:
        """``POST /api/profile-subscription-bulk-create-jobs`` (at most 1000 profiles):
        ``[{"email"?, "phone_number"?, "channels": ["email", "sms"], "consented_at"?}]``.
        Idempotent: subscribing a subscribed profile changes nothing. Empty sends nothing."""
        if empty_batch(profiles):
            return
        now = datetime.fromtimestamp(self.clock(), tz=timezone.utc)
        cleaned = clean_consent_request(
            profiles, subscribe=True, historical_import=historical_import, now=now
        )
        body = build_subscribe(
            cleaned,
            list_id=None if list_id is None else clean_list_id(list_id),
            custom_source=clean_custom_source(custom_source),
            historical_import=historical_import,
        )
        self.send_subscribe_job(body)

    def send_subscribe_job(self, body: Mapping[str, Any]) -> None:
        """``subscribe_profiles`` for a body built from clean values
        (``bodies.consent.build_subscribe``; the flusher's outbox rows)."""
        self._send(
            "bulk_subscribe_profiles",
            "POST",
            "/api/profile-subscription-bulk-create-jobs",
            body=body,
            idempotent=True,
        )

    def unsubscribe_profiles(
        self, profiles: Sequence[Mapping[str, Any]], *, list_id: str | None = None
    ) -> None:
        """``POST /api/profile-subscription-bulk-delete-jobs`` (at most 100 profiles).
        Without ``list_id`` the unsubscribe is global; with one, Klaviyo globally
        unsubscribes every profile NOT on that list, so confirm membership first (the
        flusher does, see flush/senders/unsubscribe.py). Idempotent. Empty sends nothing."""
        if empty_batch(profiles):
            return
        cleaned = clean_consent_request(profiles, subscribe=False)
        list_id = None if list_id is None else clean_list_id(list_id)
        self.send_unsubscribe_job(build_unsubscribe(cleaned, list_id=list_id))

    def send_unsubscribe_job(self, body: Mapping[str, Any]) -> None:
        """``unsubscribe_profiles`` for a body built from clean values
        (``bodies.consent.build_unsubscribe``; the flusher's outbox rows)."""
        self._send(
            "bulk_unsubscribe_profiles",
            "POST",
            "/api/profile-subscription-bulk-delete-jobs",
            body=body,
            idempotent=True,
        )

    # -- data privacy -----------------------------------------------------------------

    def request_profile_deletion(
        self,
        *,
        email: str | None = None,
        phone_number: str | None = None,
        profile_id: str | None = None,
    ) -> None:
        """``POST /api/data-privacy-deletion-jobs`` with exactly one identifier.

        Treated as idempotent: the end state (the profile erased) is the same after a
        second job, and failing to resend an erasure request is the worse outcome.
        """
        payload = deletion_payload(email=email, phone_number=phone_number, profile_id=profile_id)
        ((identifier, value),) = clean_deletion(payload)["profile"].items()
        self.send_deletion_job(build_deletion(identifier, value))

    def send_deletion_job(self, body: Mapping[str, Any]) -> None:
        """``request_profile_deletion`` for a body built from a clean identifier
        (``bodies.privacy.build_deletion``; the flusher's outbox rows)."""
        self._send(
            "request_profile_deletion",
            "POST",
            "/api/data-privacy-deletion-jobs",
            body=body,
            idempotent=True,
        )
