"""Spec validation in the sandbox: a 1,000-event bulk_create_events body, validated as the
sandbox does (``openapi.request_violations``: fastjsonschema's verdict) vs jsonschema alone
(the baseline: what validating with jsonschema on every request would cost), plus the
one-off compile of the operation's validator and the cost of explaining a rejected body.
Best of 5 after a warm-up. No database.
"""

from __future__ import annotations

import copy
import time

from bench.common import parse_bench_args, print_header, print_result, sized

EVENTS = 1000


def bulk_body() -> dict:
    from tests.testing.test_openapi import BULK_EVENTS

    body = copy.deepcopy(BULK_EVENTS)
    entry = body["data"]["attributes"]["events-bulk-create"]["data"][0]
    entries = []
    for i in range(sized(EVENTS, 10)):
        one = copy.deepcopy(entry)
        one["attributes"]["profile"]["data"]["attributes"]["email"] = f"c{i}@example.com"
        one["attributes"]["events"]["data"][0]["attributes"]["unique_id"] = f"order-{i}"
        entries.append(one)
    body["data"]["attributes"]["events-bulk-create"]["data"] = entries
    return body


def best(fn, rounds: int = 5) -> float:
    fn()
    times = []
    for _ in range(sized(rounds, 1)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    import argparse

    from django_klaviyo.testing import openapi

    parse_bench_args(argparse.ArgumentParser(description=__doc__))
    print_header("spec validation (sandbox)")
    body = bulk_body()
    start = time.perf_counter()
    openapi._request_verdict("bulk_create_events")
    compile_seconds = time.perf_counter() - start
    assert openapi.request_violations("bulk_create_events", body) == []
    ours = best(lambda: openapi.request_violations("bulk_create_events", body))
    reference = openapi._request_validator("bulk_create_events")
    baseline = best(lambda: list(reference.iter_errors(body)))
    broken = copy.deepcopy(body)
    del broken["data"]["attributes"]["events-bulk-create"]["data"][-1]["attributes"]["events"]
    explain = best(lambda: openapi.request_violations("bulk_create_events", broken))
    print_result(
        "spec_validation",
        events=sized(EVENTS, 10),
        jsonschema_ms=baseline * 1000,
        fastjsonschema_verdict_ms=ours * 1000,
        RATIO=ours / baseline,
        compile_once_ms=compile_seconds * 1000,
        rejected_body_explained_ms=explain * 1000,
    )


if __name__ == "__main__":
    main()
