"""django-klaviyo: a reliable, fast Klaviyo integration for Django stores.

The public API is imported lazily so that ``import django_klaviyo`` never loads
models before Django's app registry is ready.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"

__all__ = [
    "add_to_list",
    "added_to_cart",
    "forget_profile",
    "in_segment",
    "order_placed",
    "order_refunded",
    "remove_from_list",
    "searched_site",
    "segment_synced_at",
    "started_checkout",
    "subscribe",
    "subscribe_back_in_stock",
    "subscription_status",
    "track",
    "unsubscribe",
    "upsert_profile",
    "viewed_category",
    "viewed_product",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from django_klaviyo import api

        return getattr(api, name)
    raise AttributeError(f"module 'django_klaviyo' has no attribute {name!r}")


# --- moved modules -----------------------------------------------------------------------
# The package was laid out by capability in 0.3 (docs/architecture.md). Every dotted path of
# the old layout still imports, as the module that holds its code now, with a
# DeprecationWarning: settings that name a mapper or a task by its old path, and imports
# in a store's code, keep working. One table, one finder; nothing else knows the old names.
# What payloads.py held went to one body module per Klaviyo resource (its ``*_body``
# functions, which cleaned then built, are the client's methods now).
_PAYLOADS = tuple(
    f"client.bodies.{m}"
    for m in ("events", "profiles", "consent", "lists", "privacy", "webhooks", "encoding")
)
MOVED_MODULES: dict[str, tuple[str, ...]] = {
    "account_checks": ("accounts.checks",),
    "backfill": ("outbox.backfill",),
    "cart": ("orders.browse",),
    "consent": ("profiles.consent",),
    "ecommerce": ("orders.mappers", "profiles.mapper"),
    "erasure": ("profiles.erasure",),
    "identifiers": ("rules.identifiers",),
    "invalid_rows": ("outbox.refused",),
    "limits": ("rules.limits",),
    "mapping": ("orders.fields",),
    "openapi": ("testing.openapi",),
    "operations": ("outbox.actions",),
    "order_checks": ("orders.checks",),
    "outbox_insert": ("outbox.insert",),
    "payloads": _PAYLOADS,
    "purge": ("outbox.purge",),
    "receivers": ("orders.receivers", "profiles.receivers"),
    "refunds": ("orders.refunds",),
    "status_view": ("health.views",),
    "task_queue": ("outbox.task_queue",),
    "tasks": ("outbox.tasks",),
    "values": ("rules.values",),
    "sandbox": ("testing.sandbox",),
    "spec": ("testing.spec",),
    "client.api": ("client.client",),
    "client.account": ("client.resources",),
    "client.payloads": _PAYLOADS,
    "flush.accounts": ("flush.rotation",),
}


class _MovedModuleFinder:
    """Imports ``django_klaviyo.<old path>`` as the module its code moved to. An old path
    whose code went to several modules is a thin module that looks names up in each."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        prefix, _, old = fullname.partition(".")
        if prefix != __name__:
            return None
        # Only now: importing importlib.util asks this finder again, which must answer None
        # before importing anything (else a fresh interpreter recurses without end).
        import importlib.util

        for moved, targets in MOVED_MODULES.items():
            if old == moved or (len(targets) == 1 and old.startswith(moved + ".")):
                new = [f"{__name__}.{t}{old[len(moved) :]}" for t in targets]
                return importlib.util.spec_from_loader(fullname, _MovedModuleLoader(new))
        return None


class _MovedModuleLoader:
    def __init__(self, targets: list[str]) -> None:
        self.targets = targets

    def create_module(self, spec: Any) -> Any:
        import importlib
        import types
        import warnings

        warnings.warn(
            f"{spec.name} moved to {' and '.join(self.targets)}; import it from there.",
            DeprecationWarning,
            stacklevel=2,
        )
        modules = [importlib.import_module(target) for target in self.targets]
        if len(modules) == 1:
            self._real_spec = modules[0].__spec__
            return modules[0]  # the same module object: patching either name patches both
        thin = types.ModuleType(spec.name, f"Moved: see {', '.join(self.targets)}.")

        def lookup(name: str) -> Any:
            for module in modules:
                if hasattr(module, name):
                    return getattr(module, name)
            raise AttributeError(f"module {spec.name!r} has no attribute {name!r}")

        thin.__getattr__ = lookup  # type: ignore[method-assign]
        return thin

    def exec_module(self, module: Any) -> None:
        # The import system set the old name's spec on the module; give it its own back.
        if getattr(self, "_real_spec", None) is not None:
            module.__spec__ = self._real_spec


import sys as _sys  # noqa: E402

if not any(isinstance(finder, _MovedModuleFinder) for finder in _sys.meta_path):
    # Before the path finder: it would otherwise load a second copy of a moved package's
    # submodule under its old name.
    _sys.meta_path.insert(0, _MovedModuleFinder())
