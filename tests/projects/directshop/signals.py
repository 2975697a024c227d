"""The store's own "order placed" signal (sent by checkouts that have one)."""

from __future__ import annotations

from django.dispatch import Signal

order_done = Signal()
