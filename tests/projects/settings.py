"""Settings for django-klaviyo's own test suite.

The database comes from ``DATABASE_URL`` (default: SQLite in memory), so the same
suite runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import environ

env = environ.Env()

SECRET_KEY = "django-klaviyo-tests-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]

DATABASES = {"default": env.db("DATABASE_URL", default="sqlite://:memory:")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Tests that use threads need a file-backed test database to share it.
    DATABASES["default"].setdefault("TEST", {})
# A second alias (always SQLite in memory) for the tests of ``using=``: rows written on
# another database are claimed and flushed from it. Tests touch it only when they ask.
DATABASES["other"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_klaviyo",
    "shop",
    # Task-queue mode's end-to-end test: django-tasks-db's tables and its db_worker.
    "django_tasks_db",
    # A differently shaped store, mapped by settings only (tests/orders/test_mapping.py).
    "tests.projects.altshop",
    "tests.projects.directshop",
    # A subscription business, its model's lifecycle tracked by settings (tests/tracking/).
    "tests.projects.subshop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.projects.urls"
STATIC_URL = "/static/"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

KLAVIYO = {
    "PRIVATE_API_KEY": "pk_test_0123456789abcdef0123456789abcdef01",
    "PUBLIC_API_KEY": "AbC123",
    "WEBHOOK_SECRETS": ["whsec-test-secret-0123456789"],
    "FLOW_WEBHOOK_TOKEN": "flow-token-0123456789abcdef",
    "API_URL": "https://a.klaviyo.com",
    "ORDER_MODEL": "shop.Order",
    # Named in the SMS consent disclosure and the consent's custom_source (shop.forms).
    "STORE_NAME": "Test Shop",
    # Products in Klaviyo's catalog: each product is an item and its one variant.
    "CATALOG": {
        "ITEMS": {
            "model": "shop.Product",
            "external_id": "sku",
            "title": "name",
            "url": "url",
            "image_url": "image_url",
            "price": "price",
            "categories": "categories",
            "custom_metadata": "klaviyo_metadata",
        },
        "VARIANTS": {
            "model": "shop.Product",
            "external_id": "sku",
            "item": "sku",
            "title": "name",
            "sku": "sku",
            "url": "url",
            "image_url": "image_url",
            "price": "price",
            "inventory_quantity": "inventory",
        },
    },
}

# Django's Tasks framework: built in from Django 6.0, the django-tasks backport below it.
try:
    import django.tasks  # noqa: F401

    _TASKS = "django.tasks"
except ImportError:
    _TASKS = "django_tasks"
    INSTALLED_APPS.append("django_tasks")
TASKS = {
    "default": {"BACKEND": f"{_TASKS}.backends.dummy.DummyBackend"},
    "database": {"BACKEND": "django_tasks_db.DatabaseBackend"},
}

# django-oscar's real models, for the settings-only oscar integration test
# (tests/orders/test_oscar.py), wherever oscar installs (see the test dependency group).
try:
    import oscar
except ImportError:  # pragma: no cover - a Django version oscar does not support
    oscar = None
if oscar is not None:
    from oscar.defaults import *  # noqa: F403  (OSCAR_* settings)

    INSTALLED_APPS += [app for app in oscar.INSTALLED_APPS if app not in INSTALLED_APPS]
    SITE_ID = 1
    # Tables straight from the models: oscar's ~200 migrations would add half a minute to
    # every test database. auth and contenttypes too, as oscar's tables point at theirs
    # (PostgreSQL creates those constraints with the tables, before any migration runs).
    MIGRATION_MODULES = dict.fromkeys(
        [
            *("auth", "contenttypes"),
            *("address", "analytics", "basket", "catalogue", "checkout", "communication"),
            *("customer", "flatpages", "offer", "order", "partner", "payment", "reviews"),
            *("search", "shipping", "sites", "voucher", "wishlists"),
        ]
    )
    HAYSTACK_CONNECTIONS = {"default": {"ENGINE": "haystack.backends.simple_backend.SimpleEngine"}}
    OSCAR_INITIAL_ORDER_STATUS = "Pending"
    OSCAR_ORDER_STATUS_PIPELINE = {
        "Pending": ("Being processed", "Cancelled"),
        "Being processed": ("Complete", "Cancelled"),
        "Complete": (),
        "Cancelled": (),
    }
