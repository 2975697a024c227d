"""System checks of ``KLAVIYO["PROFILE_ORDER_STATS"]`` (ids E090, E091): its form, and
the paths the stats query needs (docs/mapping.md, "Order stats on the profile").

Registered by ``django_klaviyo.checks``; never raises for a bad setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.core.checks import CheckMessage, Error

from django_klaviyo.conf import setting_as_written as _get
from django_klaviyo.orders import fields as mapping
from django_klaviyo.orders.checks import _order_model as order_model
from django_klaviyo.orders.checks import did_you_mean
from django_klaviyo.orders.stats import OPTIONS, STATS

STATS_OPTIONS = (*STATS, *OPTIONS)


def check_profile_order_stats() -> list[CheckMessage]:
    """PROFILE_ORDER_STATS is a bool or a dict of known keys naming distinct properties
    (E090), and the paths its query reads are fields of ORDER_MODEL (E091)."""
    given = _get("PROFILE_ORDER_STATS")
    if isinstance(given, bool) or given is None:
        return [] if not given else _stats_paths({})
    if not isinstance(given, Mapping):
        return [
            _e090(
                f"KLAVIYO['PROFILE_ORDER_STATS'] must be True, False or a dict, not "
                f"{type(given).__name__}."
            )
        ]
    messages = []
    names: dict[str, str] = {}
    for key, name in given.items():
        if key not in STATS_OPTIONS:
            messages.append(
                _e090(
                    f"KLAVIYO['PROFILE_ORDER_STATS'] has an unknown key {key!r}.",
                    f"{did_you_mean(str(key), STATS_OPTIONS)}Known keys: "
                    f"{', '.join(STATS_OPTIONS)}.",
                )
            )
        elif key != "refunds" and name is not None:
            if not isinstance(name, str) or not name.strip():
                messages.append(
                    _e090(
                        f"KLAVIYO['PROFILE_ORDER_STATS'][{key!r}] must be a profile property "
                        "name (a non-empty string) or None (not sent)."
                    )
                )
            elif name in names:
                messages.append(
                    _e090(
                        f"KLAVIYO['PROFILE_ORDER_STATS'] sends {names[name]!r} and {key!r} as "
                        f"the same property {name!r}."
                    )
                )
            else:
                names[name] = key
    return messages or _stats_paths(given)


def _e090(msg: str, hint: str = 'See docs/mapping.md, "Order stats on the profile".') -> Error:
    return Error(msg, hint=hint, id="django_klaviyo.E090")


def _stats_paths(given: Mapping[str, Any]) -> list[CheckMessage]:
    """E091: the customer's orders are found by ORDER_FIELDS customer_id or email, each a
    field path the database can filter on; ``refunds`` resolves on the order."""
    model = order_model()
    if model is None:
        return []
    fields = mapping.mapping("ORDER_FIELDS")
    messages = []
    if not any(mapping.field_path(model, fields.get(key)) for key in ("customer_id", "email")):
        messages.append(
            Error(
                "PROFILE_ORDER_STATS cannot find a customer's orders: neither "
                "ORDER_FIELDS['customer_id'] nor ORDER_FIELDS['email'] is a field path of "
                f"{model._meta.label} (a callable or a property cannot be queried).",
                hint="Map one of them to a field (e.g. 'customer_id', 'email').",
                id="django_klaviyo.E091",
            )
        )
    refunds = given.get("refunds")
    problem = mapping.path_problem(model, refunds) if refunds is not None else None
    if problem:
        messages.append(
            Error(
                f"KLAVIYO['PROFILE_ORDER_STATS']['refunds'] = {refunds!r}: {problem}.",
                hint="Name the order's refund records (e.g. the reverse relation 'refunds'), or "
                "None to read refunds from the refund ledger.",
                id="django_klaviyo.E091",
            )
        )
    return messages


STATS_CHECKS = (check_profile_order_stats,)
