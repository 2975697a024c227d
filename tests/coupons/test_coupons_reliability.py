"""Coupons under Klaviyo's transient faults: 30% of the sandbox's answers fail (429, 500,
503, slow, dropped after the account recorded the request), and every code still ends in
Klaviyo once, sent in the outbox and ``UNASSIGNED`` in the mirror, none dead. Retry waits
run on the reliability tests' fake clock."""

from __future__ import annotations

import pytest

from django_klaviyo import coupons
from django_klaviyo.models import KlaviyoCouponCode, OutboxEvent
from django_klaviyo.testing.sandbox.catalog_routes import catalog_store
from tests.flush.test_reliability import (  # noqa: F401  (sandbox is a fixture)
    THIRTY_PERCENT_FAULTS,
    flush_until_idle,
    make_client,
    sandbox,
)
from tests.klaviyo_fixtures import FakeClock

Status = OutboxEvent.Status


@pytest.mark.django_db
@pytest.mark.klaviyo_sandbox(faults={**THIRTY_PERCENT_FAULTS, "seed": 1})
def test_coupon_codes_converge_through_thirty_percent_faults(sandbox, clock: FakeClock):  # noqa: F811
    for name in ("SPRING", "SUMMER"):
        coupon = coupons.get_or_create_coupon(name)
        coupons.generate_codes(coupon, 1200, prefix=f"{name}-")
        coupons.enqueue_codes(coupon)

    flush_until_idle(make_client(clock), clock)

    store = catalog_store(sandbox.state)
    for name in ("SPRING", "SUMMER"):
        local = set(
            KlaviyoCouponCode.objects.filter(coupon__external_id=name).values_list(
                "code", flat=True
            )
        )
        remote = [c["unique_code"] for c in store.coupon_codes(name)]
        assert sorted(remote) == sorted(local)
    assert not OutboxEvent.objects.exclude(status=Status.SENT).exists()
    assert set(KlaviyoCouponCode.objects.values_list("status", flat=True)) == {
        KlaviyoCouponCode.Status.UNASSIGNED
    }
    # The faults did apply to the coupon endpoints.
    failed = sum(
        n
        for operation, statuses in sandbox.state.request_counts().items()
        if "coupon" in operation
        for status, n in statuses.items()
        if status >= 400
    )
    assert failed > 0
