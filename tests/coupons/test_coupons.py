"""Coupons: a Klaviyo coupon and its unique codes ride the outbox like every other kind.

``klaviyo_coupons`` (or the admin action) saves the codes in the local mirror and queues
a ``coupon`` row and one ``coupon_code`` row per code; ``klaviyo_flush`` creates the
coupon (the sandbox checks each body against the spec) and packs the codes into bulk
jobs of at most 1,000, settled by a later pass. A code Klaviyo refuses is a dead outbox row
with Klaviyo's reason and a ``failed`` mirror code with the same reason; requeued from
the outbox admin and sent, the mirror follows."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
import responses
from django.core.management import CommandError, call_command
from django.utils import timezone

from django_klaviyo import coupons
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.models import KlaviyoCoupon, KlaviyoCouponCode, OutboxEvent
from django_klaviyo.outbox import OutboxRow, enqueue_many
from django_klaviyo.testing.sandbox.catalog_routes import catalog_store
from tests.klaviyo_fixtures import fast_client, flush_now

Status = KlaviyoCouponCode.Status
Kind = OutboxEvent.Kind
Row = OutboxEvent.Status
API = "https://a.klaviyo.com/api"

# Rate-limit windows live in the cache: every test starts with none.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fresh_rate_limits")]


@pytest.fixture(autouse=True)
def quick_jobs(settings):
    settings.KLAVIYO = {**settings.KLAVIYO, "CATALOG_JOB_POLL_SECONDS": 0.01}


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


def code_row(code: str) -> OutboxEvent:
    return OutboxEvent.objects.get(kind=Kind.COUPON_CODE, payload__code=code)


def in_klaviyo_already(sandbox: Any, coupon: str, *codes: str) -> None:
    """Klaviyo has the coupon and these codes (made in its UI, or by another store)."""
    client = fast_client()
    client.create_coupon(coupon)
    client.run_coupon_code_job(coupon, [(c, None) for c in codes], poll_interval=0.0)


# --- the outbox path -------------------------------------------------------------------


def test_a_coupon_and_its_codes_reach_the_sandbox_through_klaviyo_flush(klaviyo_sandbox):
    run("create", "SUMMER10", "--description", "10% off")
    run("generate", "SUMMER10", "--count", "1500", "--prefix", "SUM-")
    assert OutboxEvent.objects.filter(kind=Kind.COUPON).count() == 1
    assert OutboxEvent.objects.filter(kind=Kind.COUPON_CODE).count() == 1500
    assert statuses("SUMMER10") == {Status.QUEUED: 1500}

    call_command("klaviyo_flush", "--batch-size", "2000", stdout=StringIO())

    store = catalog_store(klaviyo_sandbox.state)
    assert store.coupons["SUMMER10"]["description"] == "10% off"
    remote = {c["unique_code"] for c in store.coupon_codes("SUMMER10")}
    local = set(KlaviyoCouponCode.objects.values_list("code", flat=True))
    assert len(local) == 1500
    assert remote == local
    assert statuses("SUMMER10") == {Status.UNASSIGNED: 1500}
    assert not KlaviyoCouponCode.objects.filter(klaviyo_id="").exists()
    assert KlaviyoCoupon.objects.get().klaviyo_id == "SUMMER10"
    assert not OutboxEvent.objects.exclude(status=Row.SENT).exists()
    counts = klaviyo_sandbox.state.request_counts()
    assert counts["create_coupon"] == {201: 1}
    assert counts["bulk_create_coupon_codes"] == {202: 2}  # 1,000 + 500


def test_coupons_are_created_at_the_pace_klaviyo_allows(klaviyo_sandbox):
    # POST /api/coupons allows 3 a second; the sandbox enforces it like Klaviyo.
    for i in range(7):
        coupons.enqueue_coupon(coupons.get_or_create_coupon(f"PACE-{i}"))

    call_command("klaviyo_flush", stdout=StringIO())

    answers = klaviyo_sandbox.state.request_counts()["create_coupon"]
    assert answers[201] == 7
    # Sent all at once, 4 of the 7 would be refused (429). Paced, none is; on a loaded
    # machine a delayed request can still land in the next one's second, and its 429 is
    # retried after Retry-After like any other.
    assert answers.get(429, 0) <= 1
    assert set(KlaviyoCoupon.objects.values_list("klaviyo_id", flat=True)) == {
        f"PACE-{i}" for i in range(7)
    }


def test_a_code_klaviyo_refuses_is_dead_with_its_reason_and_the_rest_of_its_job_is_sent(
    klaviyo_sandbox, tmp_path
):
    in_klaviyo_already(klaviyo_sandbox, "VIP", "VIP-AAA")
    codes = tmp_path / "codes.txt"
    codes.write_text("VIP-AAA\nVIP-BBB\nVIP-CCC\n")
    run("import", "VIP", str(codes))

    flush_now()

    dead = code_row("VIP-AAA")
    assert dead.status == Row.DEAD
    assert dead.last_error_code == "duplicate"
    assert "already exists" in dead.last_error_detail
    assert "/coupon-codes/data/0" in dead.last_error_detail
    failed = KlaviyoCouponCode.objects.get(code="VIP-AAA")
    assert failed.status == Status.FAILED
    assert (failed.error_code, failed.error_detail) == (
        dead.last_error_code,
        dead.last_error_detail,
    )
    assert code_row("VIP-BBB").status == code_row("VIP-CCC").status == Row.SENT
    assert statuses("VIP") == {Status.FAILED: 1, Status.UNASSIGNED: 2}
    # The coupon Klaviyo already had was adopted (409), not a failure.
    assert OutboxEvent.objects.get(kind=Kind.COUPON).status == Row.SENT
    assert klaviyo_sandbox.state.request_counts()["bulk_create_coupon_codes"] == {202: 2}


def test_a_requeued_dead_code_is_sent_and_its_mirror_follows(klaviyo_sandbox, admin_client):
    in_klaviyo_already(klaviyo_sandbox, "VIP", "VIP-AAA")
    coupon = coupons.get_or_create_coupon("VIP")
    coupons.add_codes(coupon, ["VIP-AAA"])
    coupons.enqueue_codes(coupon)
    flush_now()
    row = code_row("VIP-AAA")
    assert row.status == Row.DEAD
    # The outbox admin shows the dead row with Klaviyo's reason.
    page = admin_client.get(f"/admin/django_klaviyo/outboxevent/{row.pk}/change/")
    assert "already exists for coupon VIP" in page.content.decode()
    # Someone removes the code in Klaviyo, then requeues the row from the outbox admin.
    store = catalog_store(klaviyo_sandbox.state)
    with store.lock:
        store.codes.pop("VIP-VIP-AAA")

    admin_client.post(
        "/admin/django_klaviyo/outboxevent/",
        {"action": "requeue_dead", "_selected_action": [row.pk]},
    )
    # Requeued, the code is waiting again, no longer "failed".
    assert KlaviyoCouponCode.objects.get(code="VIP-AAA").status == Status.QUEUED
    flush_now()

    row.refresh_from_db()
    assert row.status == Row.SENT
    code = KlaviyoCouponCode.objects.get(code="VIP-AAA")
    assert code.status == Status.UNASSIGNED
    assert (code.error_code, code.error_detail) == ("", "")
    assert code.klaviyo_id == "VIP-VIP-AAA"


def test_codes_wait_uncounted_while_their_coupon_is_throttled(settings):
    coupon = coupons.get_or_create_coupon("FALL")
    coupons.add_codes(coupon, ["FALL-1", "FALL-2"])
    coupons.enqueue_codes(coupon)
    with responses.RequestsMock() as mock:
        # No coupon-code request is registered: sending one would fail the test.
        mock.post(f"{API}/coupons", json=throttled(), status=429, headers={"Retry-After": "1"})

        flush_now()

    assert OutboxEvent.objects.get(kind=Kind.COUPON).status == Row.RETRYING
    for code in ("FALL-1", "FALL-2"):
        assert (code_row(code).status, code_row(code).attempts) == (Row.PENDING, 0)
    assert statuses("FALL") == {Status.QUEUED: 2}


def test_a_429_from_the_coupon_code_endpoint_is_retried_then_sent():
    coupon = KlaviyoCoupon.objects.create(external_id="FALL", klaviyo_id="FALL")
    coupons.add_codes(coupon, ["FALL-1", "FALL-2"])
    coupons.enqueue_codes(coupon)
    jobs = f"{API}/coupon-code-bulk-create-jobs"
    with responses.RequestsMock() as mock:
        mock.post(jobs, json=throttled(), status=429, headers={"Retry-After": "30"})
        flush_now()

    row = code_row("FALL-1")
    assert (row.status, row.attempts, row.last_error_status) == (Row.RETRYING, 1, 429)
    assert row.next_attempt_at >= timezone.now() + timedelta(seconds=29)
    assert statuses("FALL") == {Status.QUEUED: 2}

    later = timezone.now() + timedelta(minutes=5)
    with responses.RequestsMock() as mock:
        mock.post(jobs, json=job("J1", "processing"), status=202)
        mock.get(f"{jobs}/J1", json=job("J1", "complete", codes=["FALL-1", "FALL-2"]))
        flush_now(clock=lambda: later)

    assert {code_row(c).status for c in ("FALL-1", "FALL-2")} == {Row.SENT}
    assert statuses("FALL") == {Status.UNASSIGNED: 2}


@pytest.mark.parametrize(
    ("first_failure", "then"),
    [
        # The first job's answer was lost: its codes may be in Klaviyo, so "already
        # exists" on the retry is that attempt's work.
        (503, Row.SENT),
        # A throttled request is not processed: "already exists" is a real conflict.
        (429, Row.DEAD),
    ],
)
def test_already_exists_on_a_retry_counts_as_sent_only_if_the_first_try_may_have_landed(
    first_failure, then
):
    coupon = KlaviyoCoupon.objects.create(external_id="FALL", klaviyo_id="FALL")
    coupons.add_codes(coupon, ["FALL-1", "FALL-2"])
    coupons.enqueue_codes(coupon)
    jobs = f"{API}/coupon-code-bulk-create-jobs"
    with responses.RequestsMock() as mock:
        mock.post(jobs, json=throttled(), status=first_failure, headers={"Retry-After": "1"})
        flush_now()
    done = job("J1", "complete", codes=["FALL-2"])
    done["data"]["attributes"].update(failed_count=1)
    done["data"]["attributes"]["errors"] = [
        {
            "id": "e",
            "code": "duplicate",
            "title": "Conflict.",
            "detail": "The coupon code FALL-1 already exists for coupon FALL.",
            "source": {"pointer": "/data/attributes/coupon-codes/data/0"},
        }
    ]

    later = timezone.now() + timedelta(minutes=5)
    with responses.RequestsMock() as mock:
        mock.post(jobs, json=job("J1", "processing"), status=202)
        mock.get(f"{jobs}/J1", json=done)
        flush_now(clock=lambda: later)

    assert code_row("FALL-1").status == then
    assert code_row("FALL-2").status == Row.SENT
    mirror = KlaviyoCouponCode.objects.get(code="FALL-1").status
    assert mirror == (Status.UNASSIGNED if then == Row.SENT else Status.FAILED)


def test_a_refused_job_request_dead_letters_its_codes_and_marks_them_failed():
    coupon = KlaviyoCoupon.objects.create(external_id="FALL", klaviyo_id="FALL")
    coupons.add_codes(coupon, ["FALL-1"])
    coupons.enqueue_codes(coupon)
    refused = {
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
        mock.post(f"{API}/coupon-code-bulk-create-jobs", json=refused, status=400)
        flush_now()

    row = code_row("FALL-1")
    assert (row.status, row.last_error_status) == (Row.DEAD, 400)
    assert "Too many jobs in progress." in row.last_error_detail
    code = KlaviyoCouponCode.objects.get()
    assert code.status == Status.FAILED
    assert code.error_detail == row.last_error_detail


def test_a_code_job_error_naming_no_code_fails_the_codes_the_job_did_not_create():
    coupon = KlaviyoCoupon.objects.create(external_id="FALL", klaviyo_id="FALL")
    coupons.add_codes(coupon, ["FALL-1", "FALL-2"])
    coupons.enqueue_codes(coupon)
    jobs = f"{API}/coupon-code-bulk-create-jobs"
    done = job("J1", "complete", codes=["FALL-1"])
    done["data"]["attributes"].update(failed_count=1)
    with responses.RequestsMock() as mock:
        mock.post(jobs, json=job("J1", "processing"), status=202)
        mock.get(f"{jobs}/J1", json=done)
        flush_now()

    assert code_row("FALL-1").status == Row.SENT
    assert code_row("FALL-2").status == Row.DEAD
    assert "failed 1 code(s) without saying which" in code_row("FALL-2").last_error_detail
    assert statuses("FALL") == {Status.UNASSIGNED: 1, Status.FAILED: 1}


def test_a_dry_run_counts_the_coupon_and_its_code_jobs_without_sending():
    coupon = coupons.get_or_create_coupon("DRY")
    coupons.generate_codes(coupon, 1500)
    coupons.enqueue_codes(coupon)

    report = flush_now(dry_run=True)

    assert report.planned == {Kind.COUPON: 1, Kind.COUPON_CODE: 1500}
    assert report.planned_requests == 3  # the coupon, then jobs of 1,000 and 500 codes
    assert OutboxEvent.objects.filter(status=Row.PENDING).count() == 1501


# --- the command -----------------------------------------------------------------------


def test_the_command_flushes_and_succeeds_when_every_code_is_in_klaviyo(klaviyo_sandbox):
    out, err = run("generate", "SPRING", "--count", "3", "--flush")

    assert "3 code(s) queued." in out
    assert "UNASSIGNED: 3" in out
    assert err == ""
    assert len(catalog_store(klaviyo_sandbox.state).coupon_codes("SPRING")) == 3


def test_the_command_fails_naming_the_codes_klaviyo_refused(klaviyo_sandbox, tmp_path):
    in_klaviyo_already(klaviyo_sandbox, "VIP", "VIP-AAA")
    codes = tmp_path / "codes.txt"
    codes.write_text("VIP-AAA\nVIP-CCC\n")
    err = StringIO()

    with pytest.raises(CommandError, match="1 code\\(s\\) failed"):
        call_command(
            "klaviyo_coupons", "import", "VIP", str(codes), "--flush", stdout=StringIO(), stderr=err
        )

    assert "VIP-AAA: duplicate: The coupon code VIP-AAA already exists" in err.getvalue()
    assert statuses("VIP") == {Status.FAILED: 1, Status.UNASSIGNED: 1}


def test_the_command_fails_while_codes_are_still_unsent_after_the_wait():
    coupon = KlaviyoCoupon.objects.create(external_id="FALL", klaviyo_id="FALL")
    coupons.add_codes(coupon, ["FALL-1"])
    with responses.RequestsMock() as mock:
        mock.post(
            f"{API}/coupon-code-bulk-create-jobs",
            json=throttled(),
            status=429,
            headers={"Retry-After": "60"},
        )
        with pytest.raises(CommandError, match="1 row\\(s\\) still unsent"):
            run("push", "FALL", "--flush")

    assert statuses("FALL") == {Status.QUEUED: 1}


def test_create_with_flush_makes_the_coupon_in_klaviyo(klaviyo_sandbox):
    out, _ = run("create", "AUTUMN", "--description", "Autumn sale", "--flush")

    assert "Coupon AUTUMN queued for Klaviyo." in out
    assert catalog_store(klaviyo_sandbox.state).coupons["AUTUMN"]["description"] == "Autumn sale"
    assert KlaviyoCoupon.objects.get().klaviyo_id == "AUTUMN"


def test_create_with_flush_fails_with_klaviyo_s_reason_when_it_refuses_the_coupon():
    refused = {
        "errors": [
            {
                "id": "e",
                "status": 400,
                "code": "invalid",
                "title": "Invalid input.",
                "detail": "Coupon limit reached for this account.",
                "source": {"pointer": "/data"},
            }
        ]
    }
    with responses.RequestsMock() as mock:
        mock.post(f"{API}/coupons", json=refused, status=400)

        with pytest.raises(CommandError, match="not in Klaviyo \\(invalid: Coupon limit reached"):
            run("create", "AUTUMN", "--flush")

    assert OutboxEvent.objects.get(kind=Kind.COUPON).status == Row.DEAD


def test_without_flush_the_command_only_queues(klaviyo_sandbox):
    out, _ = run("generate", "QUIET", "--count", "2")

    assert "klaviyo_flush" in out
    assert klaviyo_sandbox.state.request_counts().get("bulk_create_coupon_codes") is None
    assert OutboxEvent.objects.filter(kind=Kind.COUPON_CODE, status=Row.PENDING).count() == 2


def test_a_code_with_bad_characters_is_refused_naming_it(tmp_path):
    codes = tmp_path / "codes.txt"
    codes.write_text("GOOD-1\nbad code!\n")

    with pytest.raises(CommandError, match="codes\\[1\\]"):
        run("import", "SPRING", str(codes))

    assert not KlaviyoCouponCode.objects.exists()
    assert not OutboxEvent.objects.exists()


def test_push_queues_only_the_codes_not_queued_yet():
    run("generate", "TWICE", "--count", "2")
    run("generate", "TWICE", "--count", "1", "--no-push")

    out, _ = run("push", "TWICE")

    assert "1 code(s) queued." in out
    assert OutboxEvent.objects.filter(kind=Kind.COUPON_CODE).count() == 3
    assert OutboxEvent.objects.filter(kind=Kind.COUPON).count() == 1


def test_push_retry_failed_requeues_the_dead_rows_of_failed_codes(klaviyo_sandbox):
    in_klaviyo_already(klaviyo_sandbox, "VIP", "VIP-AAA")
    run("generate", "VIP", "--count", "1", "--no-push")
    coupons.add_codes(KlaviyoCoupon.objects.get(), ["VIP-AAA"])
    with pytest.raises(CommandError):
        run("push", "VIP", "--flush")
    store = catalog_store(klaviyo_sandbox.state)
    with store.lock:
        store.codes.pop("VIP-VIP-AAA")  # the conflict is resolved in Klaviyo

    out, _ = run("push", "VIP", "--retry-failed", "--flush")

    assert "1 failed code(s) requeued." in out
    assert statuses("VIP") == {Status.UNASSIGNED: 2}
    assert code_row("VIP-AAA").status == Row.SENT


def test_the_status_subcommand_counts_codes_and_unsent_rows():
    run("create", "COUNT")
    run("generate", "COUNT", "--count", "2", "--no-push")

    out, _ = run("status", "COUNT")

    assert "pending: 2" in out
    assert "Klaviyo id -" in out
    assert "unsent outbox rows: 1" in out


# --- the admin -------------------------------------------------------------------------


def test_the_admin_action_queues_the_pending_codes_for_the_flusher(klaviyo_sandbox, admin_client):
    coupon = coupons.get_or_create_coupon("ADMIN10")
    coupons.generate_codes(coupon, 3)

    response = admin_client.post(
        "/admin/django_klaviyo/klaviyocoupon/",
        {"action": "queue_for_klaviyo", "_selected_action": [coupon.pk]},
        follow=True,
    )
    flush_now()

    assert "3 code(s) queued" in response.content.decode()
    assert statuses("ADMIN10") == {Status.UNASSIGNED: 3}
    assert len(catalog_store(klaviyo_sandbox.state).coupon_codes("ADMIN10")) == 3


def test_a_failed_code_shows_its_reason_and_links_to_its_outbox_row(klaviyo_sandbox, admin_client):
    in_klaviyo_already(klaviyo_sandbox, "VIP", "VIP-AAA")
    coupon = coupons.get_or_create_coupon("VIP")
    coupons.add_codes(coupon, ["VIP-AAA"])
    coupons.enqueue_codes(coupon)
    flush_now()
    code = KlaviyoCouponCode.objects.get()

    page = admin_client.get(f"/admin/django_klaviyo/klaviyocouponcode/{code.pk}/change/")

    html = page.content.decode()
    assert "already exists for coupon VIP" in html
    assert f"/admin/django_klaviyo/outboxevent/{code_row('VIP-AAA').pk}/change/" in html


# --- the rules -------------------------------------------------------------------------


def test_coupon_rows_are_cleaned_when_written():
    with pytest.raises(KlaviyoValidationError) as err:
        enqueue_many([OutboxRow(kind=Kind.COUPON_CODE, payload={"coupon": "X", "code": "a b"})])
    assert err.value.field == "code"
    with pytest.raises(KlaviyoValidationError) as err:
        enqueue_many(
            [
                OutboxRow(
                    kind=Kind.COUPON_CODE,
                    payload={"coupon": "X", "code": "A1", "expires_at": "next week"},
                )
            ]
        )
    assert err.value.field == "expires_at"

    (row,) = enqueue_many(
        [
            OutboxRow(
                kind=Kind.COUPON_CODE,
                payload={"coupon": " X ", "code": "A1", "expires_at": "2027-01-01T01:00:00+01:00"},
            )
        ]
    )
    assert row.payload == {"coupon": "X", "code": "A1", "expires_at": "2027-01-01T00:00:00+00:00"}


# --- helpers ---------------------------------------------------------------------------


def throttled() -> dict[str, Any]:
    return {
        "errors": [
            {
                "id": "e",
                "status": 429,
                "code": "throttled",
                "title": "Request was throttled.",
                "detail": "Request was throttled. Expected available in 1 second.",
            }
        ]
    }


def job(job_id: str, status: str, codes: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    body: dict[str, Any] = {
        "data": {
            "type": "coupon-code-bulk-create-job",
            "id": job_id,
            "attributes": {
                "status": status,
                "created_at": "2026-11-29T00:00:00+00:00",
                "total_count": len(codes),
                "completed_count": len(codes),
                "failed_count": 0,
                "errors": [],
            },
        }
    }
    body["included"] = [
        {
            "type": "coupon-code",
            "id": f"FALL-{code}",
            "attributes": {"unique_code": code, "expires_at": None, "status": "UNASSIGNED"},
        }
        for code in codes
    ]
    return body
