"""``KLAVIYO["TRACKED_MODELS"]``, read once (until a setting changes) into one
:class:`Tracked` per installed model.

::

    KLAVIYO["TRACKED_MODELS"] = {
        "shop.Subscription": {
            "status_field": "status",
            "metrics": {"active": "Subscription Started", "cancelled": "Subscription Cancelled"},
            "profile": {"email": "customer.email", "external_id": "customer_id"},
            "value": "mrr",
            "value_currency": "currency",
            "properties": {"Plan": "plan.name", "Interval": "interval"},
            "profile_properties": {"subscription_status": "status", "plan": "plan.name"},
            "time": "updated_at",
            "mapper": None,
        },
    }

Paths are read like the order mapping's (``django_klaviyo.orders.fields.resolve``): a
dotted attribute path, a callable taking the object, or None. An entry that cannot be
used (an unknown model, no status field) is left out here and reported by the system
checks (``django_klaviyo.tracking.checks``), never by a traceback in a save.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.utils.module_loading import import_string

from django_klaviyo.conf import klaviyo_settings

SETTING = "TRACKED_MODELS"
# Every key of one model's entry; status_field and metrics are required.
KEYS = (
    "status_field",
    "metrics",
    "profile",
    "value",
    "value_currency",
    "properties",
    "profile_properties",
    "time",
    "mapper",
)
REQUIRED_KEYS = ("status_field", "metrics", "profile")
# The profile identifiers an entry's "profile" may map.
PROFILE_KEYS = ("email", "phone_number", "external_id")
DEFAULT_MAPPER = "django_klaviyo.tracking.mapper.default_tracked_events"


@dataclass(frozen=True)
class Tracked:
    """One tracked model's entry, as the save path reads it."""

    label: str  # as written in the setting ("shop.Subscription")
    model: Any
    status_field: str
    status_attname: str  # the attribute holding the status (a foreign key's "<name>_id")
    metrics: dict[str, str]  # str(status value) -> metric name
    profile: dict[str, Any]
    value: Any = None
    value_currency: Any = None
    properties: dict[str, Any] = field(default_factory=dict)
    profile_properties: dict[str, Any] = field(default_factory=dict)
    time: Any = None
    mapper: Any = None

    def where(self, key: str = "") -> str:
        """``KLAVIYO['TRACKED_MODELS']['shop.Subscription']['key']``: for messages."""
        suffix = f"[{key!r}]" if key else ""
        return f"KLAVIYO['{SETTING}'][{self.label!r}]{suffix}"

    def metric(self, status: Any) -> str | None:
        """The metric sent when an object enters ``status`` (None: no event)."""
        return None if status is None else self.metrics.get(str(status))

    def mapper_function(self) -> Callable[..., Any]:
        """The entry's mapper (its own, else the default one); a mapper that does not
        import raises ImproperlyConfigured when called, under the save path's failure
        policy (a dead row), as E086 reports at startup."""
        return klaviyo_settings.memo(("tracked_mapper", self.label), self._import_mapper)

    def _import_mapper(self) -> Callable[..., Any]:
        value = self.mapper or DEFAULT_MAPPER
        if callable(value):
            return value  # type: ignore[no-any-return]
        try:
            found = import_string(value)
        except (ImportError, TypeError) as exc:
            problem = f"{self.where('mapper')} = {value!r} does not import: {exc}"

            def broken(*args: Any) -> Any:
                raise ImproperlyConfigured(problem)

            return broken
        return found  # type: ignore[no-any-return]


def given() -> Mapping[str, Any]:
    """The setting as written ({} when it is not a dict: E080 says so)."""
    value = klaviyo_settings.get(SETTING)
    return value if isinstance(value, Mapping) else {}


def tracked_models() -> dict[Any, Tracked]:
    """Every usable entry by model class."""
    return klaviyo_settings.memo("tracked_models", _read)  # type: ignore[no-any-return]


def tracked(model: Any) -> Tracked | None:
    """The entry of ``model`` (None: not tracked)."""
    return tracked_models().get(model)


def _read() -> dict[Any, Tracked]:
    found: dict[Any, Tracked] = {}
    for label, entry in given().items():
        spec = parse(label, entry)
        if spec is not None:
            found[spec.model] = spec
    return found


def _paths(value: Any) -> dict[str, Any]:
    return {str(k): v for k, v in value.items()} if isinstance(value, Mapping) else {}


def parse(label: Any, entry: Any) -> Tracked | None:
    """``entry`` as a :class:`Tracked`, or None when it cannot drive events (the checks
    name why)."""
    if not isinstance(label, str) or not isinstance(entry, Mapping):
        return None
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        return None
    name = entry.get("status_field")
    metrics = entry.get("metrics")
    if not isinstance(name, str) or not isinstance(metrics, Mapping):
        return None
    try:
        status = model._meta.get_field(name)
    except FieldDoesNotExist:
        return None
    if not getattr(status, "concrete", False):
        return None
    return Tracked(
        label=label,
        model=model,
        status_field=name,
        status_attname=status.attname,
        metrics={str(k): str(v) for k, v in metrics.items()},
        profile=_paths(entry.get("profile")),
        value=entry.get("value"),
        value_currency=entry.get("value_currency"),
        properties=_paths(entry.get("properties")),
        profile_properties=_paths(entry.get("profile_properties")),
        time=entry.get("time"),
        mapper=entry.get("mapper"),
    )
