"""Settings of the reliability benchmark's workers: the example shop's, with the
sandbox's URL and a lease shorter than a slow batch (from the environment)."""

from __future__ import annotations

import os

from shop_site.settings import *  # noqa: F403
from shop_site.settings import KLAVIYO, LOGGING

KLAVIYO = {
    **KLAVIYO,
    "API_URL": os.environ["BENCH_API_URL"],
    "LEASE_SECONDS": int(os.environ.get("BENCH_LEASE_SECONDS", "3")),
    # Below the sandbox's slow answers, so those end as timeouts.
    "TIMEOUT": (2.0, 2.0),
    "RETRY_BASE_SECONDS": 0.5,
    "RETRY_MAX_SECONDS": 8.0,
}
LOGGING = {**LOGGING, "loggers": {"django_klaviyo": {"handlers": ["console"], "level": "ERROR"}}}
