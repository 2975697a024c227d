"""Settings for the example shop.

Everything deployment-specific comes from the environment (django-environ), with
defaults that run the demo on SQLite against the local Klaviyo sandbox:

    DATABASE_URL              default sqlite:///<this folder>/db.sqlite3
    KLAVIYO_PRIVATE_API_KEY   unset: sandbox mode (KLAVIYO["SANDBOX"]), no Klaviyo account
                              needed; set: the shop talks to real Klaviyo
    KLAVIYO_PUBLIC_API_KEY    default a sandbox-only site id
    KLAVIYO_WEBHOOK_SECRET    default a demo secret (comma-separate several to rotate)
    KLAVIYO_API_URL           default http://127.0.0.1:8765 (the sandbox) when no real
                              key is given, else https://a.klaviyo.com
    KLAVIYO_LEASE_SECONDS     default 300 (how long a flusher owns its claimed rows)
    KLAVIYO_CONSENT_LIST_ID   default unset: the list the checkout's and signup's
                              marketing consent joins

The defaults of DJANGO_SECRET_KEY, KLAVIYO_WEBHOOK_SECRET and KLAVIYO_FLOW_WEBHOOK_TOKEN are
published in this repository: they serve the local demo only. With DJANGO_DEBUG off or a
real KLAVIYO_PRIVATE_API_KEY, `manage.py check` fails on them (django_klaviyo.E040) until
each is set from the environment to a long random value.
"""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

SECRET_KEY = env("DJANGO_SECRET_KEY", default="example-shop-insecure-key-for-local-demo-only")
DEBUG = env.bool("DJANGO_DEBUG", default=True)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

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
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "shop_site.urls"

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

WSGI_APPLICATION = "shop_site.wsgi.application"

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
# Outbox rows are written in the same transaction as the order they describe.
DATABASES["default"]["ATOMIC_REQUESTS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
LOGIN_REDIRECT_URL = "/store/"

SANDBOX_URL = "http://127.0.0.1:8765"
_private_key = env("KLAVIYO_PRIVATE_API_KEY", default="")
_webhook_secrets = env.list("KLAVIYO_WEBHOOK_SECRET", default=["demo-webhook-secret-change-me"])

KLAVIYO = {
    # Without a real key the shop runs in sandbox mode: it talks to the local sandbox
    # (`manage.py klaviyo_sandbox`) and needs no Klaviyo account. With a key, `check`
    # validates it as for any real deployment.
    "SANDBOX": not _private_key,
    "PRIVATE_API_KEY": _private_key or None,
    "PUBLIC_API_KEY": env("KLAVIYO_PUBLIC_API_KEY", default="SANDBX"),
    "WEBHOOK_SECRETS": _webhook_secrets,
    "FLOW_WEBHOOK_TOKEN": env("KLAVIYO_FLOW_WEBHOOK_TOKEN", default="demo-flow-token-change-me"),
    "API_URL": env(
        "KLAVIYO_API_URL", default="https://a.klaviyo.com" if _private_key else SANDBOX_URL
    ),
    "ORDER_MODEL": "shop.Order",
    # Marketing consent at checkout and signup (shop.forms): the store's name is the
    # consent's custom_source and is named in the SMS disclosure. With a real Klaviyo
    # account, set the list the consent joins (Klaviyo only creates a new profile from a
    # subscription with a list).
    "STORE_NAME": "Example Shop",
    "CONSENT_LIST_ID": env("KLAVIYO_CONSENT_LIST_ID", default=None),
    # The storefront (docs/storefront.md): the visitor's anonymous id on the order's events,
    # and the cart hooks behind the signed CheckoutURL of cart and checkout events.
    "ORDER_FIELDS": {"anonymous_id": "klaviyo_anonymous_id"},
    "CART_TOKEN": "shop.cart.cart_token",
    "RESTORE_CART": "shop.cart.restore_cart",
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
    # A subscription's lifecycle as events, by settings (docs/mapping.md, Tracked models).
    "TRACKED_MODELS": {
        "shop.Subscription": {
            "status_field": "status",
            "metrics": {
                "active": "Subscription Started",
                "paused": "Subscription Paused",
                "cancelled": "Subscription Cancelled",
            },
            "profile": {"email": "customer.email", "external_id": "customer_id"},
            "value": "mrr",
            "value_currency": "currency",
            "properties": {"Plan": "plan", "Interval": "interval"},
            "profile_properties": {"subscription_status": "status", "plan": "plan"},
            "time": "updated_at",
        },
    },
    # Seconds before a crashed flusher's claimed rows may be reclaimed.
    "LEASE_SECONDS": env.int("KLAVIYO_LEASE_SECONDS", default=300),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "django_klaviyo": {
            "handlers": ["console"],
            "level": env("KLAVIYO_LOG_LEVEL", default="INFO"),
        }
    },
}
