"""System checks of ``KLAVIYO["TRACKED_MODELS"]`` (ids E080-E086, W080): every entry,
key and path is checked against its model, so a broken mapping shows at startup instead
of as dead rows. Registered by ``django_klaviyo.checks``; never raises for a bad setting."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from django.apps import apps
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import FieldDoesNotExist
from django.utils.module_loading import import_string

from django_klaviyo.conf import setting_as_written as _get
from django_klaviyo.orders.checks import did_you_mean, is_metric_name
from django_klaviyo.orders.fields import path_problem
from django_klaviyo.rules.limits import METRIC_MAX_LENGTH
from django_klaviyo.tracking.config import KEYS, PROFILE_KEYS, REQUIRED_KEYS, SETTING

HINT = "See docs/mapping.md, Tracked models."
PATH_KEYS = ("value", "value_currency", "time")
PATH_MAPS = ("properties", "profile_properties")


def check_tracked_models() -> list[CheckMessage]:
    given = _get(SETTING)
    if not isinstance(given, Mapping):
        return [
            Error(
                f"KLAVIYO['{SETTING}'] must be a dict of 'app_label.Model' -> its mapping, "
                f"not {type(given).__name__}.",
                hint=HINT,
                id="django_klaviyo.E080",
            )
        ]
    messages: list[CheckMessage] = []
    for label, entry in given.items():
        messages += _entry(label, entry)
    return messages


def _entry(label: Any, entry: Any) -> list[CheckMessage]:
    where = f"KLAVIYO['{SETTING}'][{label!r}]"
    if not isinstance(entry, Mapping):
        return [Error(f"{where} must be a dict, not {type(entry).__name__}.", hint=HINT, id=E080)]
    messages: list[CheckMessage] = []
    for key in entry:
        if key not in KEYS:
            messages.append(
                Error(
                    f"{where} has an unknown key {key!r}.",
                    hint=f"{did_you_mean(str(key), KEYS)}Known keys: {', '.join(KEYS)}.",
                    id=E080,
                )
            )
    for key in REQUIRED_KEYS:
        if key not in entry:
            messages.append(Error(f"{where} has no {key!r}.", hint=HINT, id=E080))
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError, TypeError, AttributeError):
        messages.append(
            Error(
                f"{where}: {label!r} is not an installed model.",
                hint="Use 'app_label.ModelName' with the app in INSTALLED_APPS.",
                id="django_klaviyo.E081",
            )
        )
        return messages
    messages += _status(where, model, entry)
    messages += _profile(where, model, entry.get("profile"))
    for key in PATH_KEYS:
        messages += _path(f"{where}[{key!r}]", model, entry.get(key))
    for key in PATH_MAPS:
        paths = entry.get(key)
        if paths is None:
            continue
        if not isinstance(paths, Mapping):
            messages.append(
                Error(f"{where}[{key!r}] must be a dict of name -> path.", hint=HINT, id=E084)
            )
            continue
        for name, path in paths.items():
            messages += _path(f"{where}[{key!r}][{name!r}]", model, path)
    messages += _mapper(f"{where}['mapper']", entry.get("mapper"))
    return messages


E080, E084 = "django_klaviyo.E080", "django_klaviyo.E084"


def _status(where: str, model: Any, entry: Mapping[str, Any]) -> list[CheckMessage]:
    """status_field is a concrete field (E082); metrics a non-empty dict of metric
    names (E083) whose statuses are choices of the field (W080)."""
    name = entry.get("status_field")
    if name is None:
        return []
    try:
        field = model._meta.get_field(name)
        if not field.concrete:
            raise FieldDoesNotExist(name)
    except (FieldDoesNotExist, TypeError):
        names = [f.name for f in model._meta.concrete_fields]
        return [
            Error(
                f"{where}['status_field'] = {name!r} is not a field of {model._meta.label}: "
                "no event would ever be sent.",
                hint=f"{did_you_mean(str(name), names)}Name the field holding the status.",
                id="django_klaviyo.E082",
            )
        ]
    metrics = entry.get("metrics")
    if not isinstance(metrics, Mapping) or not metrics:
        return [
            Error(
                f"{where}['metrics'] must be a non-empty dict of status -> metric name.",
                hint="e.g. {'active': 'Subscription Started'}. " + HINT,
                id="django_klaviyo.E083",
            )
        ]
    messages: list[CheckMessage] = []
    choices = {str(value) for value, _label in field.flatchoices} if field.choices else None
    for status, metric in metrics.items():
        if not is_metric_name(metric):
            messages.append(
                Error(
                    f"{where}['metrics'][{status!r}] must be a metric name "
                    f"(1 to {METRIC_MAX_LENGTH} characters).",
                    hint=HINT,
                    id="django_klaviyo.E083",
                )
            )
        if choices and str(status) not in choices:
            messages.append(
                Warning(
                    f"{where}['metrics'] names status {status!r}, which is not a choice of "
                    f"{model._meta.label}.{field.name}: that event would never fire.",
                    hint=f"{did_you_mean(str(status), choices)}Choices: "
                    f"{', '.join(sorted(choices))}.",
                    id="django_klaviyo.W080",
                )
            )
    return messages


def _profile(where: str, model: Any, profile: Any) -> list[CheckMessage]:
    """The profile maps known identifiers (E085), at least one, each on the model (E084)."""
    if profile is None:
        return []  # E080: required
    where = f"{where}['profile']"
    if not isinstance(profile, Mapping) or not any(profile.get(k) for k in PROFILE_KEYS):
        return [
            Error(
                f"{where} must map at least one of {', '.join(PROFILE_KEYS)}: the events "
                "would have no profile.",
                hint="e.g. {'email': 'customer.email', 'external_id': 'customer_id'}.",
                id="django_klaviyo.E085",
            )
        ]
    messages: list[CheckMessage] = []
    for key, path in profile.items():
        if key not in PROFILE_KEYS:
            messages.append(
                Error(
                    f"{where} has an unknown key {key!r}.",
                    hint=f"{did_you_mean(str(key), PROFILE_KEYS)}Known keys: "
                    f"{', '.join(PROFILE_KEYS)}; other profile data goes in "
                    "'profile_properties'.",
                    id="django_klaviyo.E085",
                )
            )
            continue
        messages += _path(f"{where}[{key!r}]", model, path)
    return messages


def _path(where: str, model: Any, path: Any) -> list[CheckMessage]:
    problem = path_problem(model, path)
    if not problem:
        return []
    names = [f.name for f in model._meta.get_fields()]
    first = path.split(".")[0] if isinstance(path, str) else ""
    return [
        Error(
            f"{where} = {path!r}: {problem}.",
            hint=f"{did_you_mean(first, names)}Map it to a field, a dotted path or a callable "
            "of the model. " + HINT,
            id=E084,
        )
    ]


def _mapper(where: str, value: Any) -> list[CheckMessage]:
    """A custom mapper imports and is callable (E086)."""
    if value is None or callable(value):
        return []
    problem = ""
    if not isinstance(value, str):
        problem = f"must be a callable or a dotted path, not {type(value).__name__}"
    else:
        try:
            target = import_string(value)
        except ImportError as exc:
            problem = f"= {value!r} does not import: {exc}"
        else:
            if not callable(target):
                problem = f"= {value!r} is not callable"
    if not problem:
        return []
    return [
        Error(
            f"{where} {problem}.",
            hint="A function (instance, previous_status, created) -> list of event specs. " + HINT,
            id="django_klaviyo.E086",
        )
    ]


TRACKING_CHECKS: tuple[Callable[[], list[CheckMessage]], ...] = (check_tracked_models,)
