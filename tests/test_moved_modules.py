"""Old dotted paths (the layout before 0.3) still import, as the modules that hold their
code now, with a DeprecationWarning: ``django_klaviyo.MOVED_MODULES`` and its finder."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import override_settings
from django.utils.module_loading import import_string

import django_klaviyo
from django_klaviyo.conf import klaviyo_settings
from django_klaviyo.models import OutboxEvent
from tests.projects.settings import KLAVIYO as TEST_KLAVIYO

MOVED = django_klaviyo.MOVED_MODULES
PACKAGE = Path(django_klaviyo.__file__).parent
SPLIT = sorted(old for old, targets in MOVED.items() if len(targets) > 1)
SINGLE = sorted(old for old, targets in MOVED.items() if len(targets) == 1)


def old_import(old: str) -> ModuleType:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return importlib.import_module(f"django_klaviyo.{old}")


@pytest.fixture
def forgotten() -> Iterator[None]:
    """Old names not yet imported in this process, so the finder runs (and warns) again;
    the modules imported before are put back afterwards."""
    old_names = [f"django_klaviyo.{old}" for old in MOVED]
    saved = {
        name: module
        for name, module in sys.modules.items()
        if any(name == old or name.startswith(old + ".") for old in old_names)
    }
    # The import system also set each as an attribute of its parent package, which
    # ``from django_klaviyo import tasks`` would find without importing.
    attributes = []
    for name, module in saved.items():
        del sys.modules[name]
        parent, _, child = name.rpartition(".")
        if getattr(sys.modules.get(parent), child, None) is module:
            attributes.append((sys.modules[parent], child, module))
            delattr(sys.modules[parent], child)
    yield
    sys.modules.update(saved)
    for parent_module, child, module in attributes:
        setattr(parent_module, child, module)


def test_the_table_names_the_splits_the_layout_made() -> None:
    # Guards the parametrized tests below against an empty or truncated table.
    assert {"ecommerce", "receivers"} <= set(SPLIT)
    assert {"tasks", "sandbox", "client.api", "flush.accounts"} <= set(SINGLE)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_path_names_no_module_that_still_exists(old: str) -> None:
    # The finder runs before the path finder: an old name that was also a real module
    # would hide it.
    path = PACKAGE.joinpath(*old.split("."))
    assert not path.with_suffix(".py").exists()
    assert not path.is_dir()


@pytest.mark.parametrize("old", SINGLE)
def test_a_moved_module_imports_as_the_module_that_holds_its_code(old: str) -> None:
    (target,) = MOVED[old]
    new = importlib.import_module(f"django_klaviyo.{target}")
    moved = old_import(old)
    # The very module object: its functions, its globals, anything patched on it.
    assert moved is new
    assert moved.__name__ == f"django_klaviyo.{target}"
    assert moved.__spec__ is not None and moved.__spec__.name == f"django_klaviyo.{target}"


@pytest.mark.parametrize("old", SPLIT)
def test_a_split_module_finds_the_names_of_each_module_it_went_to(old: str) -> None:
    moved = old_import(old)
    targets = [importlib.import_module(f"django_klaviyo.{t}") for t in MOVED[old]]
    for target in targets:
        defined = [
            name
            for name, value in vars(target).items()
            if not name.startswith("__")
            and (inspect.isfunction(value) or inspect.isclass(value))
            and value.__module__ == target.__name__
        ]
        assert defined, target.__name__
        for name in defined:
            # A name in two targets is the first one's (``connect`` of ``receivers``).
            owner = next(t for t in targets if hasattr(t, name))
            assert getattr(moved, name) is getattr(owner, name), f"{old}.{name}"
        assert any(next(t for t in targets if hasattr(t, n)) is target for n in defined), (
            f"nothing of {target.__name__} is reached through {old}"
        )
    with pytest.raises(AttributeError, match="no_such_name"):
        moved.no_such_name


def test_the_split_modules_reach_the_mappers_and_receivers_by_their_names() -> None:
    from django_klaviyo.orders import mappers
    from django_klaviyo.orders import receivers as order_receivers
    from django_klaviyo.profiles import mapper
    from django_klaviyo.profiles import receivers as user_receivers

    ecommerce = old_import("ecommerce")
    receivers = old_import("receivers")
    assert ecommerce.default_order_events is mappers.default_order_events
    assert ecommerce.default_user_profile is mapper.default_user_profile
    assert receivers.enqueue_or_keep_refused is order_receivers.enqueue_or_keep_refused
    assert receivers.enqueue_profile_upsert is user_receivers.enqueue_profile_upsert


def test_a_submodule_of_a_moved_package_imports_by_its_old_path() -> None:
    from django_klaviyo.flush import rotation
    from django_klaviyo.testing.sandbox import pytest_plugin, server

    assert old_import("sandbox.pytest_plugin") is pytest_plugin
    assert old_import("sandbox.server") is server
    assert old_import("flush.accounts") is rotation


@pytest.mark.usefixtures("forgotten")
def test_an_old_path_warns_once_naming_the_new_one() -> None:
    with pytest.warns(
        DeprecationWarning, match=r"django_klaviyo\.tasks moved to django_klaviyo\.outbox\.tasks"
    ):
        from django_klaviyo import tasks  # noqa: F401
    with pytest.warns(DeprecationWarning) as caught:
        importlib.import_module("django_klaviyo.ecommerce")
    assert "django_klaviyo.orders.mappers and django_klaviyo.profiles.mapper" in str(
        caught[0].message
    )
    # Imported once, the old name is an ordinary module: no warning on every use.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        importlib.import_module("django_klaviyo.tasks")


@pytest.mark.usefixtures("forgotten")
def test_the_new_paths_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        for targets in MOVED.values():
            for target in targets:
                importlib.import_module(f"django_klaviyo.{target}")


def test_patching_through_an_old_name_patches_the_new_module() -> None:
    from django_klaviyo.orders import fields

    old_import("mapping")
    with mock.patch("django_klaviyo.mapping.metric", return_value="Patched") as patched:
        assert fields.metric is patched
        assert fields.metric("placed_order") == "Patched"
    assert fields.metric("placed_order") == "Placed Order"


def test_import_string_resolves_an_old_settings_value() -> None:
    from django_klaviyo.orders.mappers import default_order_events
    from django_klaviyo.outbox.tasks import flush_outbox_task
    from django_klaviyo.profiles.mapper import default_user_profile

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        assert import_string("django_klaviyo.ecommerce.default_order_events") is (
            default_order_events
        )
        assert import_string("django_klaviyo.ecommerce.default_user_profile") is (
            default_user_profile
        )
        assert import_string("django_klaviyo.tasks.flush_outbox_task") is flush_outbox_task


@pytest.mark.django_db(transaction=True)
def test_mapper_settings_with_old_paths_still_map_saves() -> None:
    from django_klaviyo.orders.mappers import default_order_events
    from django_klaviyo.profiles.mapper import default_user_profile

    old = {
        **TEST_KLAVIYO,
        "USER_PROFILE_MAPPER": "django_klaviyo.ecommerce.default_user_profile",
        "ORDER_EVENTS_MAPPER": "django_klaviyo.ecommerce.default_order_events",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with override_settings(KLAVIYO=old):
            assert klaviyo_settings.callable("ORDER_EVENTS_MAPPER") is default_order_events
            assert klaviyo_settings.callable("USER_PROFILE_MAPPER") is default_user_profile
            with transaction.atomic():
                get_user_model().objects.create(username="ada", email="ada@example.com")
    row = OutboxEvent.objects.get(kind=OutboxEvent.Kind.PROFILE_UPSERT)
    assert row.payload["profile"]["email"] == "ada@example.com"


# In a fresh interpreter nothing has imported importlib.util yet: the finder's own import
# of it must not ask the finder again, without end.
REPO = Path(__file__).resolve().parents[1]
FRESH_PROBE = """
import sys
import django_klaviyo
sys.modules.pop("importlib.util", None)  # as in a bare `python -c`
from django_klaviyo.testing.sandbox import SandboxServer
import django_klaviyo.sandbox as old
assert old.SandboxServer is SandboxServer
print("imported")
"""


def test_old_and_new_paths_import_in_a_fresh_interpreter():
    result = subprocess.run(
        [sys.executable, "-W", "ignore::DeprecationWarning", "-c", FRESH_PROBE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "imported"
