"""The example shop's settings for worker processes started by the tests, with the
Klaviyo request timeout taken from ``KLAVIYO_TEST_TIMEOUT`` (seconds) when given."""

from __future__ import annotations

import os

from shop_site.settings import *  # noqa: F403
from shop_site.settings import KLAVIYO

if os.environ.get("KLAVIYO_TEST_TIMEOUT"):
    _seconds = float(os.environ["KLAVIYO_TEST_TIMEOUT"])
    KLAVIYO = {**KLAVIYO, "TIMEOUT": (_seconds, _seconds)}
