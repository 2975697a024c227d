"""HTTP entry points for Klaviyo webhooks.

``KlaviyoWebhookView`` receives signed system webhooks. ``FlowWebhookView`` receives flow
"Webhook" actions, which Klaviyo does not sign: they are guarded only by a shared token
(FLOW_WEBHOOK_TOKEN) that travels with every request, and have no timestamp, so a captured
request can be replayed (it is then deduplicated, not re-processed). Treat that endpoint as
weaker and never let its events grant anything a forged request must not get.

Both views read the raw body themselves before anything parses it, run outside
ATOMIC_REQUESTS (the delivery commits before handlers run, so a handler error cannot erase
it), and answer ``{"detail": ...}`` on every refusal:
400 malformed JSON or shape, 401 missing credentials, 403 bad signature / token / stale or
mismatched delivery, 413 too large, 405 any method but POST. 200 once stored.

Items are stored pending in one bulk INSERT. A delivery with at most
WEBHOOK_INLINE_ITEMS new items is handled before answering (the answer counts the
failures); a larger one is acknowledged at once and its items are handled by the worker
(``klaviyo_flush`` or ``klaviyo_webhooks process``), so a sender's timeout is never
spent on store code. Either way items go through ``dispatch.process_claimed``: each is
handled exactly once.
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any

from django.db import transaction
from django.http import Http404, HttpRequest
from django.utils import timezone
from django.utils.decorators import method_decorator
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from django_klaviyo import accounts
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import WebhookDelivery, WebhookItem
from django_klaviyo.webhooks import verify
from django_klaviyo.webhooks.dispatch import process_claimed
from django_klaviyo.webhooks.store import StoredDelivery, store_delivery
from django_klaviyo.webhooks.verify import WebhookEventItem, WebhookRejected

logger = logging.getLogger("django_klaviyo.webhooks")

FLOW_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FLOW_ID_KEYS = ("external_id", "event_id", "id")


class FirstRendererNegotiation(BaseContentNegotiation):
    """Always JSON: a webhook sender's Accept header must not turn into a 406."""

    def select_parser(self, request: Request, parsers: list[Any]) -> Any:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: list[Any], format_suffix: str | None = None
    ) -> tuple[Any, str]:
        return renderers[0], renderers[0].media_type


def read_body(request: HttpRequest, max_bytes: int) -> bytes:
    """The raw body, refusing more than ``max_bytes`` (declared or actual) with a 413.

    Reads the stream directly: ``request.body`` would apply DATA_UPLOAD_MAX_MEMORY_SIZE
    (2.5 MB by default) instead of our own limit.
    """
    declared = request.META.get("CONTENT_LENGTH") or "0"
    try:
        declared_length = int(declared)
    except ValueError:
        raise WebhookRejected(400, "Content-Length is not a number.") from None
    if declared_length > max_bytes:
        raise WebhookRejected(413, f"The body is larger than the {max_bytes}-byte limit.")
    body = request.read(max_bytes + 1)
    if len(body) > max_bytes:
        raise WebhookRejected(413, f"The body is larger than the {max_bytes}-byte limit.")
    return body


def _remote_addr(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR") or "")[:64]


def _body_text(body: bytes) -> str:
    # Verified JSON is UTF-8; the replacement only guards the text column.
    return body.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def handle_now(stored: StoredDelivery) -> tuple[int, int]:
    """Run the handlers of a small delivery's items now; returns (failed, pending).

    Items a worker already took are left to it and counted as pending."""
    new = len(stored.new_ids)
    if not new or new > int(klaviyo_settings.WEBHOOK_INLINE_ITEMS):
        return 0, new
    items = WebhookItem.objects.filter(pk__in=stored.new_ids, processed=False, attempts=0)
    result = process_claimed(items.order_by("pk"))
    return result.failed, new - result.handled


def _answer(stored: StoredDelivery, received: int) -> Response:
    failed, pending = handle_now(stored)
    return Response(
        {
            "received": received,
            "new": len(stored.new_ids),
            "duplicates": stored.duplicates,
            "failed": failed,
            "pending": pending,
        },
        status=200,
    )


@method_decorator(transaction.non_atomic_requests, name="dispatch")
class _WebhookView(APIView):
    authentication_classes: list[Any] = []
    permission_classes = [AllowAny]
    throttle_classes: list[Any] = []
    parser_classes: list[Any] = []
    renderer_classes = [JSONRenderer]
    content_negotiation_class = FirstRendererNegotiation
    http_method_names = ["post"]

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, WebhookRejected):
            return Response({"detail": exc.detail}, status=exc.status)
        return super().handle_exception(exc)


class KlaviyoWebhookView(_WebhookView):
    """Signed system webhooks (``Klaviyo-Signature`` over raw body + ``Klaviyo-Timestamp``)."""

    def post(self, request: Request, account: str | None = None) -> Response:
        django_request: HttpRequest = request._request
        try:
            # webhooks/<account>/: that account's secrets only; webhooks/: the default's.
            klaviyo_account = accounts.get_account(account)
        except KlaviyoValidationError:
            raise Http404("No such Klaviyo account.") from None
        headers = django_request.headers
        body = read_body(django_request, int(klaviyo_settings.WEBHOOK_MAX_BODY_BYTES))
        signature = headers.get(verify.SIGNATURE_HEADER, "")
        timestamp = headers.get(verify.TIMESTAMP_HEADER, "")
        webhook_id = headers.get(verify.WEBHOOK_ID_HEADER, "")
        missing = [
            name
            for name, value in (
                (verify.SIGNATURE_HEADER, signature),
                (verify.TIMESTAMP_HEADER, timestamp),
                (verify.WEBHOOK_ID_HEADER, webhook_id),
            )
            if not value
        ]
        if missing:
            logger.warning(
                "Klaviyo webhook from %s refused: missing header(s) %s.",
                _remote_addr(django_request),
                ", ".join(missing),
            )
            raise WebhookRejected(401, f"Missing header(s): {', '.join(missing)}.")
        secrets = klaviyo_account.webhook_secrets
        if not secrets:
            logger.error(
                "Klaviyo webhook refused: %s is empty.",
                klaviyo_account.setting("WEBHOOK_SECRETS"),
            )
            raise WebhookRejected(403, "Webhook signatures cannot be verified here.")
        if not verify.signature_matches(body, timestamp, signature, secrets):
            logger.warning(
                "Klaviyo webhook %r from %s refused: BAD SIGNATURE (forged, or the secret "
                "is not among WEBHOOK_SECRETS).",
                webhook_id[:64],
                _remote_addr(django_request),
            )
            raise WebhookRejected(403, "The Klaviyo-Signature does not match.")
        try:
            delivery = verify.parse_system_delivery(verify.parse_json(body), body=body)
            verify.check_webhook_id(webhook_id, delivery)
            verify.check_freshness(
                delivery.timestamp,
                now=timezone.now(),
                tolerance_seconds=float(klaviyo_settings.WEBHOOK_TOLERANCE_SECONDS),
                future_seconds=verify.MAX_FUTURE_SKEW_SECONDS,
            )
        except WebhookRejected as exc:
            logger.warning(
                "Signed Klaviyo webhook %r from %s refused (%s): %s",
                webhook_id[:64],
                _remote_addr(django_request),
                exc.status,
                exc.detail,
            )
            raise
        stored = store_delivery(
            source=WebhookDelivery.Source.SYSTEM,
            webhook_id=delivery.webhook_id,
            headers=headers,
            body=_body_text(body),
            remote_addr=_remote_addr(django_request),
            items=delivery.items,
            account=klaviyo_account.stored,
        )
        return _answer(stored, received=len(delivery.items))


class FlowWebhookView(_WebhookView):
    """Flow "Webhook" actions: unsigned, guarded by a shared token (weaker, see module doc).

    The token comes as ``Authorization: Bearer <token>`` or ``X-Klaviyo-Flow-Token``. The
    item's topic is ``flow:<name>`` from the URL (``flow:default`` without one); its dedupe
    key is the body's ``external_id`` / ``event_id`` / ``id`` if given, else the body's
    SHA-256.
    """

    def _provided_token(self, request: HttpRequest) -> str:
        authorization = request.headers.get("Authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
        return request.headers.get(verify.FLOW_TOKEN_HEADER, "").strip()

    def post(self, request: Request, name: str = "default") -> Response:
        django_request: HttpRequest = request._request
        if not FLOW_NAME_RE.match(name):
            raise WebhookRejected(
                400, "The flow webhook name must be 1-64 letters, digits, - or _."
            )
        body = read_body(django_request, int(klaviyo_settings.WEBHOOK_MAX_BODY_BYTES))
        expected = klaviyo_settings.FLOW_WEBHOOK_TOKEN
        if not expected:
            logger.error("Flow webhook refused: KLAVIYO['FLOW_WEBHOOK_TOKEN'] is not set.")
            raise WebhookRejected(403, "Flow webhooks are not enabled.")
        provided = self._provided_token(django_request)
        if not provided:
            raise WebhookRejected(401, "Missing flow token (Authorization: Bearer <token>).")
        if not verify.token_matches(provided, str(expected)):
            logger.warning(
                "Flow webhook %r from %s refused: BAD TOKEN.", name, _remote_addr(django_request)
            )
            raise WebhookRejected(403, "The flow token does not match.")
        document = verify.parse_json(body)
        if not isinstance(document, dict):
            raise WebhookRejected(400, "The flow webhook body must be a JSON object.")
        item = WebhookEventItem(
            external_id=self._dedupe_key(name, document, body),
            topic=f"flow:{name}",
            payload=verify.storable_document(document),
        )
        stored = store_delivery(
            source=WebhookDelivery.Source.FLOW,
            webhook_id="",
            headers=django_request.headers,
            body=_body_text(body),
            remote_addr=_remote_addr(django_request),
            items=[item],
        )
        return _answer(stored, received=1)

    @staticmethod
    def _dedupe_key(name: str, document: dict[str, Any], body: bytes) -> str:
        for key in FLOW_ID_KEYS:
            value = document.get(key)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value):
                client_key = f"flow:{name}:id:{value}"
                if len(client_key) <= verify.MAX_EXTERNAL_ID_LENGTH:
                    return client_key
                digest = hashlib.sha256(str(value).encode("utf-8", "replace")).hexdigest()
                return f"flow:{name}:idsha256:{digest}"
        return f"flow:{name}:sha256:{hashlib.sha256(body).hexdigest()}"


klaviyo_webhook = KlaviyoWebhookView.as_view()
flow_webhook = FlowWebhookView.as_view()
