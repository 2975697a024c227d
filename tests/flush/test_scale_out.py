"""Scale-out: flushers on several processes share Klaviyo's rate limit through a shared
cache (here the database cache), so together they stay within it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter

import pytest

from django_klaviyo.testing.sandbox import SandboxServer
from tests.flush.test_reliability_processes import (
    EXAMPLE_PROJECT,
    LONG_LEASE_SECONDS,
    SUMMARY,
    database_url,  # noqa: F401  (fixture)
    flusher_env,
    outbox_state,
    seed,
)

# SCALE_OUT_CACHE_URL=locmemcache:// shows what a per-process count draws (12 x 429 here).
SHARED_CACHE = os.environ.get("SCALE_OUT_CACHE_URL", "dbcache://klaviyo_rate_limits")


def shared_env(url: str, api_url: str) -> dict[str, str]:
    env = flusher_env(url, api_url, LONG_LEASE_SECONDS)
    env["CACHE_URL"] = SHARED_CACHE
    return env


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_four_flushers_sharing_the_database_cache_draw_no_429(database_url):  # noqa: F811
    expected = seed(database_url, 15_000, "shared")
    # Klaviyo's windows (10 bulk-event requests a second, 150 a minute), half as long in
    # the sandbox: the flushers pace the starts of their requests, the sandbox counts
    # arrivals, and on a loaded machine a request can reach it hundreds of milliseconds
    # after it started, so 1-second windows on both sides would count a stall as a burst.
    # Four flushers that each kept their own count would start up to 40 a second, twice
    # the 20 a second that half-second windows of 10 allow: that is what this test catches.
    with SandboxServer(time_scale=0.5) as sandbox:
        env = shared_env(database_url, sandbox.url)
        subprocess.run(
            [sys.executable, "manage.py", "createcachetable"],
            cwd=EXAMPLE_PROJECT,
            env=env,
            check=True,
            timeout=120,
            capture_output=True,
        )
        flushers = [
            subprocess.Popen(
                [sys.executable, "manage.py", "klaviyo_flush", "--batch-size", "250"],
                cwd=EXAMPLE_PROJECT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [flusher.communicate(timeout=240) for flusher in flushers]
        requests = sandbox.state.request_counts()["bulk_create_events"]
        accepted = Counter(e["unique_id"] for e in sandbox.state.events())
        duplicates = sandbox.state.duplicate_events

    sent = []
    for flusher, (stdout, stderr) in zip(flushers, outputs, strict=True):
        assert flusher.returncode == 0, stderr
        match = SUMMARY.search(stdout)
        assert match, stdout + stderr
        sent.append(int(match.group(1)))
    assert sum(1 for n in sent if n) >= 2, "the flushers did not run side by side"
    assert set(requests) == {202}, f"Klaviyo answered {requests}"
    assert sum(sent) == len(expected)
    assert set(accepted) == set(expected) and duplicates == 0
    assert outbox_state(database_url)["statuses"] == {"sent": len(expected)}
