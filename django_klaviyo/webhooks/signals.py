"""The one signal store code listens to for received webhooks.

``klaviyo_webhook_event`` is sent once per newly received item (system webhook event or
flow webhook call), inside a transaction together with marking the item processed: before
the HTTP answer for a small delivery, afterwards in the worker (``klaviyo_flush`` or
``klaviyo_webhooks process``) for one over WEBHOOK_INLINE_ITEMS items:

    sender    WebhookItem (the model class)
    topic     "event:klaviyo.unsubscribed_from_email_marketing", ..., or "flow:<name>"
    payload   the item's payload (for system webhooks, a Get Event API ``{"data": ...}``)
    item      the stored WebhookItem
    delivery  the WebhookDelivery it arrived in
    account   the Klaviyo account it came to ("": the default one; docs/accounts.md)

If any receiver raises, every receiver's database writes for that item are rolled back,
the error is recorded on the item, and the admin's "reprocess" action runs all receivers
again: receivers must be idempotent.
"""

from __future__ import annotations

from django.dispatch import Signal

__all__ = ["klaviyo_webhook_event"]

klaviyo_webhook_event = Signal()
