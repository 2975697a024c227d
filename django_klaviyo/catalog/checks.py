"""System checks of ``KLAVIYO["CATALOG"]``: a broken mapping is reported by
``manage.py check`` (and at startup), not discovered product by product."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.checks import CheckMessage, Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

from django_klaviyo.catalog import mapping
from django_klaviyo.conf import setting_as_written
from django_klaviyo.orders.fields import path_problem
from django_klaviyo.rules.limits import CATALOG_INVENTORY_POLICIES


@register(Tags.compatibility)
def check_catalog_mapping(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        config = mapping.catalog_config()
    except ImproperlyConfigured as exc:
        return [
            Error(
                str(exc),
                hint="See docs/catalog.md for the ITEMS, VARIANTS and CATEGORIES keys.",
                id="django_klaviyo.E050",
            )
        ]
    messages: list[CheckMessage] = []
    for section, spec in config.items():
        try:
            model = apps.get_model(mapping.model_label(spec["model"]))
        except (LookupError, ValueError):
            messages.append(
                Error(
                    f"KLAVIYO['CATALOG']['{section}']['model'] = {spec['model']!r} is not an "
                    "installed model.",
                    hint="Use 'app_label.ModelName' with the app in INSTALLED_APPS.",
                    id="django_klaviyo.E051",
                )
            )
            continue
        for key, path in spec.items():
            if key == "model" or mapping.is_import_path(model, path):
                continue
            problem = path_problem(model, path)
            if problem:
                messages.append(
                    Error(
                        f"KLAVIYO['CATALOG']['{section}']['{key}']: {problem}.",
                        hint="A dotted attribute path, a callable, or a callable's import path.",
                        id="django_klaviyo.E051",
                    )
                )
    if "VARIANTS" in config and "ITEMS" not in config:
        messages.append(
            Error(
                "KLAVIYO['CATALOG'] maps VARIANTS but no ITEMS: Klaviyo's variants belong to "
                "catalog items.",
                hint="Map ITEMS too (the same model may be both, as in the example shop).",
                id="django_klaviyo.E052",
            )
        )
    return messages


@register(Tags.compatibility)
def check_catalog_inventory_policy(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    try:
        policy = setting_as_written("CATALOG_INVENTORY_POLICY")
    except ImproperlyConfigured:
        return []  # KLAVIYO is not a dict: E010 says so
    if policy is None or (policy in CATALOG_INVENTORY_POLICIES and not isinstance(policy, bool)):
        return []
    return [
        Error(
            f"KLAVIYO['CATALOG_INVENTORY_POLICY'] = {policy!r} is not one of Klaviyo's "
            "inventory policies.",
            hint="1: out-of-stock variants leave recommendation blocks; 0 or 2: they stay; "
            "None: send no policy.",
            id="django_klaviyo.E046",
        )
    ]
