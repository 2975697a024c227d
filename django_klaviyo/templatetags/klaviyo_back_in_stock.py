"""Deprecated: ``{% klaviyo_back_in_stock_form %}`` is in the ``klaviyo`` tag library now
(``{% load klaviyo %}``). Loading ``klaviyo_back_in_stock`` still works and gives the same
tags; it will be removed in a later release."""

from django_klaviyo.templatetags.klaviyo import register

__all__ = ["register"]
