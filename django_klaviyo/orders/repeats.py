"""The public writers' one insert (``write``), and when a browse event repeats one
already in the outbox: the same profile's row of the same metric whose dedupe key starts
with the same prefix, written less than a window ago.

Started Checkout (``STARTED_CHECKOUT_REPEAT_AFTER``), Viewed Category and Searched Site
(``BROWSE_REPEAT_AFTER``) write through ``write_once_per_window``: a repeat writes
nothing and returns the earlier row. Read through the ``profile_key`` index.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.utils import timezone

from django_klaviyo import accounts, outbox
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.models import OutboxEvent
from django_klaviyo.rules.identifiers import profile_key


def write(
    row: outbox.OutboxRow, using: str | None, account: str | None, about: Any = None
) -> OutboxEvent | None:
    """Insert ``row`` for ``account`` (a name of KLAVIYO["ACCOUNTS"]; None: what
    ACCOUNT_RESOLVER says of ``about``, a user or an order, else the default account)."""
    resolved = accounts.account_for(None if isinstance(about, Mapping) else about, account=account)
    written = outbox.enqueue_many([row], using=using, account=resolved)
    return written[0] if written else None


def write_once_per_window(
    row: outbox.OutboxRow,
    prefix: str,
    seconds: float,
    time: Any,
    using: str | None,
    account: str | None,
    about: Any,
) -> OutboxEvent | None:
    """Write ``row`` unless the profile's like row (``prefix``) is under ``seconds`` old:
    then return that one. Only for events of "now" (an explicit ``time`` is an import);
    ``seconds`` 0: always write."""
    if time is None and seconds and klaviyo_settings.ENABLED:
        earlier = recent(row, prefix, seconds, using=using, account=account, about=about)
        if earlier is not None:
            return earlier
    return write(row, using, account, about)


def recent(
    row: outbox.OutboxRow,
    prefix: str,
    seconds: float,
    *,
    using: str | None,
    account: str | None,
    about: Any,
) -> OutboxEvent | None:
    """This profile's latest row like ``row`` (same metric, a dedupe key starting with
    ``prefix``, the same account) written less than ``seconds`` ago, or None."""
    resolved = accounts.account_for(None if isinstance(about, Mapping) else about, account=account)
    since = timezone.now() - dt.timedelta(seconds=seconds)
    return (
        OutboxEvent.objects.using(using or DEFAULT_DB_ALIAS)
        .filter(
            profile_key=profile_key(row.payload["profile"])[:320],
            kind=OutboxEvent.Kind.EVENT,
            metric=row.payload["metric"],
            account=resolved,
            created_at__gt=since,
            dedupe_key__startswith=outbox.account_dedupe_key(prefix, resolved),
        )
        .order_by("-created_at")
        .first()
    )
