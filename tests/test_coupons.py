"""Coupons: a Klaviyo coupon and its unique codes, created through the Coupons API (the
sandbox checks each body against the spec), mirrored locally with their status, from
``manage.py klaviyo_coupons`` and the admin action."""

from __future__ import annotations

from io import StringIO

import pytest
import responses
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.core.management import CommandError, call_command

from django_klaviyo import coupons
from django_klaviyo.client import KlaviyoClient, UnlimitedRateLimiter
from django_klaviyo.models import KlaviyoCoupon, KlaviyoCouponCode
from django_klaviyo.sandbox.catalog_routes import catalog_store

Status = KlaviyoCouponCode.Status

pytestmark = pytest.mark.django_db


def fast_client() -> KlaviyoClient:
    return KlaviyoClient(
        rate_limiter=UnlimitedRateLimiter(), sleep=lambda seconds: None, max_attempts=1
    )


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    caches["default"].clear()
    monkeypatch.setattr("django_klaviyo.coupons.get_client", fast_client)
    monkeypatch.setattr(
        "django_klaviyo.management.commands.klaviyo_coupons.get_client", fast_client
    )


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("klaviyo_coupons", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def statuses(coupon: str) -> dict[str, int]:
    codes = KlaviyoCouponCode.objects.filter(coupon__external_id=coupon)
    result: dict[str, int] = {}
    for status in codes.values_list("status", flat=True):
        result[status] = result.get(status, 0) + 1
    return result


def test_generated_codes_are_uploaded_in_jobs_of_a_thousand_and_mirrored(klaviyo_sandbox):
    run("create", "SUMMER10")

    out, _ = run("generate", "SUMMER10", "--count", "1500", "--prefix", "SUM-")

    store = catalog_store(klaviyo_sandbox.state)
    remote = {c["unique_code"] for c in store.coupon_codes("SUMMER10")}
    local = set(KlaviyoCouponCode.objects.values_list("code", flat=True))
    assert len(local) == 1500
    assert remote == local
    assert all(code.startswith("SUM-") for code in local)
    assert statuses("SUMMER10") == {Status.UNASSIGNED: 1500}
    assert not KlaviyoCouponCode.objects.filter(klaviyo_id="").exists()
    counts = klaviyo_sandbox.state.request_counts()
    assert counts["create_coupon"] == {201: 1}
    assert counts["bulk_create_coupon_codes"] == {202: 2}
    assert "1500/1500 code(s) uploaded" in out


def test_codes_klaviyo_refuses_are_marked_failed_with_its_reason(klaviyo_sandbox, tmp_path):
    run("create", "VIP")
    first = tmp_path / "first.txt"
    first.write_text("VIP-AAA\nVIP-BBB\n")
    run("import", "VIP", str(first))
    # Klaviyo has VIP-AAA but the local mirror lost it (a restored database, say).
    KlaviyoCouponCode.objects.filter(code="VIP-AAA").delete()
    second = tmp_path / "second.txt"
    second.write_text("VIP-AAA\nVIP-CCC\n")

    with pytest.raises(CommandError, match="refused 1 code"):
        run("import", "VIP", str(second))

    failed = KlaviyoCouponCode.objects.get(code="VIP-AAA")
    assert failed.status == Status.FAILED
    assert failed.error_code == "duplicate"
    assert "already exists" in failed.error_detail
    assert KlaviyoCouponCode.objects.get(code="VIP-CCC").status == Status.UNASSIGNED


def test_a_coupon_klaviyo_already_has_is_adopted(klaviyo_sandbox):
    fast_client().create_coupon("WINTER")  # made in Klaviyo's UI, say

    out, _ = run("create", "WINTER")

    assert KlaviyoCoupon.objects.get().klaviyo_id == "WINTER"
    assert "WINTER is in Klaviyo" in out


def test_a_code_with_bad_characters_is_refused_naming_it(klaviyo_sandbox, tmp_path):
    codes = tmp_path / "codes.txt"
    codes.write_text("GOOD-1\nbad code!\n")

    with pytest.raises(CommandError, match="codes\\[1\\]"):
        run("import", "SPRING", str(codes))

    assert not KlaviyoCouponCode.objects.exists()


def test_a_refused_upload_keeps_the_codes_pending_and_fails_the_command():
    coupon = KlaviyoCoupon.objects.create(external_id="FALL", klaviyo_id="FALL")
    coupons.add_codes(coupon, ["FALL-1", "FALL-2"])
    error = {
        "errors": [
            {
                "id": "e",
                "status": 400,
                "code": "invalid",
                "title": "Invalid input.",
                "detail": "Too many jobs in progress.",
                "source": {"pointer": "/data"},
            }
        ]
    }
    with responses.RequestsMock() as mock:
        mock.post("https://a.klaviyo.com/api/coupon-code-bulk-create-jobs", json=error, status=400)

        with pytest.raises(CommandError, match="Too many jobs in progress"):
            run("push", "FALL")

    assert statuses("FALL") == {Status.PENDING: 2}


def test_the_admin_action_uploads_the_pending_codes(klaviyo_sandbox, client):
    coupon = coupons.get_or_create_coupon("ADMIN10")
    coupons.generate_codes(coupon, 3)
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(admin)

    response = client.post(
        "/admin/django_klaviyo/klaviyocoupon/",
        {"action": "upload_to_klaviyo", "_selected_action": [coupon.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "3 code(s) imported, 0 refused" in response.content.decode()
    assert statuses("ADMIN10") == {Status.UNASSIGNED: 3}
    assert len(catalog_store(klaviyo_sandbox.state).coupon_codes("ADMIN10")) == 3


def test_the_status_subcommand_counts_codes_by_status(klaviyo_sandbox):
    run("create", "COUNT")
    run("generate", "COUNT", "--count", "2", "--no-push")

    out, _ = run("status", "COUNT")

    assert "pending: 2" in out
    assert "Klaviyo id COUNT" in out
