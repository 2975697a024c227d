"""Reading one order or line under a mapping: each key's value resolved once.

The default order mapper asks a dozen values of every order and line it maps, inside the
store's save. ``reader("ORDER_FIELDS")(order)`` gives a ``Values`` dict whose entries are
exactly what ``django_klaviyo.orders.fields.resolve`` gives for each key's path: the
keys whose path is a plain model field are taken from the instance's ``__dict__`` (where
Django keeps a loaded field), every other key (a dotted path, a callable, a method, a
property, a deferred field) is resolved when first asked, and only once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db import models
from django.db.models.fields.related_descriptors import ForeignKeyDeferredAttribute
from django.db.models.query_utils import DeferredAttribute

from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.orders.fields import merged_mapping, resolve


class Values(dict):
    """``resolve(obj, paths[key])`` by key (``values["sku"]``), each resolved once, when
    first asked: what a mapper reads of one order or line (made by a ``Reader``, which
    fills in up front what needs no resolving). Every value is the one ``resolve``
    gives, and a relation is fetched only when its value is asked for. Read it by the
    mapping's keys only: it may hold the instance's other attributes too."""

    __slots__ = ("obj", "paths")

    def __missing__(self, key: str) -> Any:
        value = self[key] = resolve(self.obj, self.paths[key])
        return value


class Reader:
    """Makes the ``Values`` of objects under one mapping (``paths``). ``plain``: take the
    keys whose path is a plain field of the object's model (``_plain_fields``) from the
    instance's ``__dict__``, where Django keeps a loaded field; the keys mapped to None
    are always filled in."""

    __slots__ = ("_nones", "_plans", "paths")

    def __init__(self, paths: Mapping[str, Any], *, plain: bool = True) -> None:
        self.paths = paths
        self._nones = {key: None for key, path in paths.items() if path is None}
        # {model: its plain fields}: a handful of models per process.
        self._plans: dict[type, Any] | None = {} if plain else None

    def __call__(self, obj: Any) -> Values:
        plans, kind = self._plans, type(obj)
        plan = None if plans is None else plans.get(kind, _UNSET)
        if plan is _UNSET:
            plan = plans[kind] = _plain_fields(kind, self.paths)
        if plan is None:
            found = Values()
        else:
            # Copying the whole __dict__ is the cheapest way to take its fields (a deferred
            # field is not there: resolved when asked). Keys that are not a field of the
            # same name are taken out, or read under their field's name.
            data = obj.__dict__
            found = Values(data)
            unplain, renamed = plan
            for key in unplain:
                if key in found:
                    del found[key]
            for key, name in renamed:
                if name in data:
                    found[key] = data[name]
        if self._nones:
            found.update(self._nones)
        found.obj = obj
        found.paths = self.paths
        return found


_UNSET: Any = object()


def reader(setting: str, paths: Mapping[str, Any] | None = None) -> Reader:
    """The ``Reader`` of the mapping ``setting`` (kept until a setting changes), or of
    ``paths``, a caller's own mapping."""
    if paths is not None:
        merged = merged_mapping(setting)
        if paths is not merged and paths != merged:
            return Reader(paths, plain=False)
    return klaviyo_settings.memo(("reader", setting), lambda: Reader(merged_mapping(setting)))


def values(obj: Any, setting: str, paths: Mapping[str, Any] | None = None) -> Values:
    """The values on ``obj`` of the mapping ``setting`` (or of ``paths``)."""
    return reader(setting, paths)(obj)


def _plain_fields(
    model: type, paths: Mapping[str, Any]
) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]] | None:
    """How to take the values of ``paths`` from an instance's ``__dict__`` (None: no
    model, resolve every key): the keys whose path is not a plain field of the same name
    (resolved when asked unless the path is a plain field under another name), and
    those (key, field name) pairs. A plain field is a concrete field (or ``pk``) read
    through Django's own descriptor, which returns ``instance.__dict__[attname]`` when
    loaded: what ``resolve`` gets by ``getattr``. A property, a custom descriptor (a
    file field's), a relation or a model overriding ``__getattribute__`` is not plain."""
    if (
        not isinstance(model, type)
        or not issubclass(model, models.Model)
        or issubclass(model, Mapping)
        or model.__getattribute__ is not object.__getattribute__
    ):
        return None
    unplain, renamed = [], []
    for key, path in paths.items():
        name = _plain_attname(model, path)
        if name != key and path is not None:  # (None: the Reader fills it in)
            unplain.append(key)
            if name is not None:
                renamed.append((key, name))
    return tuple(unplain), tuple(renamed)


def _plain_attname(model: type[models.Model], path: Any) -> str | None:
    if type(path) is not str:
        return None
    if path == "pk":
        if _class_attribute(model, "pk") is not models.Model.__dict__["pk"]:
            return None
        path = model._meta.pk.attname
    field = next((f for f in model._meta.concrete_fields if f.attname == path), None)
    descriptor = _class_attribute(model, path)
    if field is None or type(descriptor) not in _PLAIN_DESCRIPTORS or descriptor.field is not field:
        return None
    return path


# Django's descriptors of a concrete field: a loaded value is ``instance.__dict__[attname]``.
_PLAIN_DESCRIPTORS = (DeferredAttribute, ForeignKeyDeferredAttribute)


def _class_attribute(model: type, name: str) -> Any:
    for klass in model.__mro__:
        if name in klass.__dict__:
            return klass.__dict__[name]
    return None
