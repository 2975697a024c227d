"""Signals django-klaviyo sends (definitions only; the save receivers are in
``orders.receivers``, ``profiles.receivers`` and ``catalog.receivers``).

``outbox_ready``: sent after a transaction that wrote outbox rows commits, a wake-up hint
for flushers. kwargs: ``count`` (rows written by that call), ``kinds`` (frozenset of kinds).
"""

from __future__ import annotations

import django.dispatch

__all__ = ["outbox_ready"]

outbox_ready = django.dispatch.Signal()
