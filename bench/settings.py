"""Django settings for the benchmarks: the example shop plus django-klaviyo.

The database comes from ``BENCH_DATABASE_URL`` (set by bench/common.py). Logging of
django_klaviyo is kept to errors so that expected retries do not flood the output.
"""

from __future__ import annotations

import environ

env = environ.Env()

SECRET_KEY = "django-klaviyo-bench-not-secret"
DEBUG = False  # DEBUG would record every query and skew the timings
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["*"]
DATABASES = {"default": env.db("BENCH_DATABASE_URL")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "rest_framework",
    "django_klaviyo",
    "shop",
]
# The admin too: bench/admin_scale.py times the outbox changelist through the test client.
ROOT_URLCONF = "bench.urls"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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
# Several flusher processes share rate limits through a shared cache: BENCH_CACHE_URL
# (e.g. dbcache://klaviyo_cache, made by createcachetable) for bench/scale_out.py.
CACHES = {"default": env.cache("BENCH_CACHE_URL", default="locmemcache://")}
KLAVIYO = {
    "PRIVATE_API_KEY": "pk_bench_0123456789abcdef0123456789abcdef",
    "API_URL": env("BENCH_API_URL", default="http://127.0.0.1:9"),
    "ORDER_MODEL": "shop.Order",
    "WEBHOOK_SECRETS": ["bench-secret"],
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_klaviyo": {"handlers": ["console"], "level": "ERROR"}},
}
STATIC_URL = "/static/"
