"""manage.py klaviyo_webhooks and klaviyo_sync against a mocked Klaviyo (responses)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
import responses
from django.core.management import CommandError, call_command

from django_klaviyo.models import KlaviyoCampaign, KlaviyoFlow, KlaviyoList
from tests.klaviyo_fixtures import fast_client

API = "https://a.klaviyo.com/api"
SECRET = "a-long-enough-signing-secret-42"
TOPICS = ["event:klaviyo.bounced_email", "event:klaviyo.unsubscribed_from_email_marketing"]

pytestmark = pytest.mark.django_db


def page(resources: list[dict], next_url: str | None = None) -> dict:
    return {"data": resources, "links": {"self": "x", "next": next_url}}


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def commands_never_wait(monkeypatch):
    """The commands' client without rate-limit waits or retry sleeps (tests never sleep)."""
    for module in ("klaviyo_webhooks", "klaviyo_sync"):
        monkeypatch.setattr(f"django_klaviyo.management.commands.{module}.get_client", fast_client)


@pytest.fixture
def klaviyo():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        mock.get(
            f"{API}/webhook-topics",
            json=page([{"type": "webhook-topic", "id": t} for t in TOPICS]),
        )
        yield mock


# --- klaviyo_webhooks ------------------------------------------------------------------------


def test_create_webhook_sends_secret_but_never_prints_it(klaviyo, monkeypatch):
    monkeypatch.setenv("SHOP_WEBHOOK_SECRET", SECRET)
    klaviyo.post(
        f"{API}/webhooks",
        status=201,
        json={"data": {"type": "webhook", "id": "01WH", "attributes": {"name": "shop"}}},
    )
    out, err = run(
        "klaviyo_webhooks",
        "create",
        "--name",
        "shop",
        "--url",
        "https://shop.example.com/klaviyo/webhooks/",
        "--topic",
        TOPICS[0],
        "--topic",
        TOPICS[1],
        "--secret-env",
        "SHOP_WEBHOOK_SECRET",
    )
    assert "Created webhook 01WH for 2 topic(s)" in out
    assert SECRET not in out + err
    assert "not in KLAVIYO['WEBHOOK_SECRETS']" in err
    sent = json.loads(next(c.request.body for c in klaviyo.calls if c.request.method == "POST"))
    assert (
        sent["data"]["attributes"]["endpoint_url"] == "https://shop.example.com/klaviyo/webhooks/"
    )
    assert sent["data"]["attributes"]["secret_key"] == SECRET
    assert [t["id"] for t in sent["data"]["relationships"]["webhook-topics"]["data"]] == TOPICS


def test_create_webhook_uses_the_configured_secret_by_default(klaviyo):
    klaviyo.post(f"{API}/webhooks", status=201, json={"data": {"type": "webhook", "id": "01WH"}})
    out, err = run(
        "klaviyo_webhooks",
        "create",
        "--name",
        "shop",
        "--url",
        "https://s.example.com/h/",
        "--topic",
        TOPICS[0],
    )
    sent = json.loads(next(c.request.body for c in klaviyo.calls if c.request.method == "POST"))
    assert sent["data"]["attributes"]["secret_key"] == "whsec-test-secret-0123456789"
    assert "whsec-test-secret" not in out + err and not err


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--url", "http://shop.example.com/h/"], {}, "https://"),
        (["--url", "https:///nohost"], {}, "https://"),
        (["--secret-env", "SHORT"], {"SHORT": "short"}, "at least 16"),
        (["--secret-env", "UNSET_VAR_FOR_TEST"], {}, "UNSET_VAR_FOR_TEST is empty"),
        (
            ["--topic", "event:klaviyo.bounced_emails"],
            {},
            "did you mean event:klaviyo.bounced_email",
        ),
    ],
)
def test_create_webhook_refuses_bad_input(klaviyo, monkeypatch, args, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    base = {"--name": "shop", "--url": "https://shop.example.com/h/", "--topic": TOPICS[0]}
    merged = dict(base)
    extra = []
    for flag, value in zip(args[::2], args[1::2]):
        if flag in merged:
            merged[flag] = value
        else:
            extra += [flag, value]
    argv = [x for pair in merged.items() for x in pair] + extra
    with pytest.raises(CommandError) as exc:
        run("klaviyo_webhooks", "create", *argv)
    assert message in str(exc.value)
    assert "short" not in str(exc.value).replace("shop", "")
    assert not [c for c in klaviyo.calls if c.request.method == "POST"]


def test_list_and_delete_webhooks(klaviyo):
    klaviyo.get(
        f"{API}/webhooks",
        json=page(
            [
                {
                    "type": "webhook",
                    "id": "01WH",
                    "attributes": {
                        "name": "shop",
                        "enabled": True,
                        "endpoint_url": "https://s.example.com/...truncated",
                    },
                }
            ]
        ),
    )
    klaviyo.delete(f"{API}/webhooks/01WH", status=204)
    out, _ = run("klaviyo_webhooks", "list")
    assert "01WH  shop  enabled" in out and "1 webhook(s)." in out
    out, _ = run("klaviyo_webhooks", "delete", "01WH")
    assert "Deleted webhook 01WH." in out
    assert any(c.request.method == "DELETE" for c in klaviyo.calls)


def test_api_errors_become_command_errors(klaviyo):
    klaviyo.get(
        f"{API}/webhooks",
        status=403,
        json={
            "errors": [
                {
                    "status": 403,
                    "code": "permission_denied",
                    "title": "Forbidden",
                    "detail": "You must have Advanced KDP enabled",
                }
            ]
        },
    )
    with pytest.raises(CommandError) as exc:
        run("klaviyo_webhooks", "list")
    assert "Klaviyo refused the list" in str(exc.value)


# --- klaviyo_sync ----------------------------------------------------------------------------


def test_sync_pulls_lists_campaigns_and_flows(klaviyo):
    klaviyo.get(
        f"{API}/lists",
        json=page(
            [
                {
                    "type": "list",
                    "id": "L1",
                    "attributes": {
                        "name": "Newsletter",
                        "opt_in_process": "double_opt_in",
                        "created": "2026-01-01T00:00:00+00:00",
                        "updated": "2026-02-01T00:00:00+00:00",
                    },
                }
            ],
            next_url=f"{API}/lists?page%5Bcursor%5D=abc",
        ),
        match=[responses.matchers.query_param_matcher({}, strict_match=False)],
    )
    klaviyo.get(
        f"{API}/lists?page%5Bcursor%5D=abc",
        json=page([{"type": "list", "id": "L2", "attributes": {"name": "VIP"}}]),
        match=[responses.matchers.query_param_matcher({"page[cursor]": "abc"})],
    )

    def campaigns(request):
        channel = "sms" if "sms" in request.params.get("filter", "") else "email"
        body = page(
            [
                {
                    "type": "campaign",
                    "id": f"C-{channel}",
                    "attributes": {
                        "name": f"{channel} blast",
                        "status": "Sent",
                        "send_time": "2026-03-01T10:00:00+00:00",
                        "updated_at": "2026-03-01T11:00:00+00:00",
                    },
                }
            ]
        )
        return 200, {}, json.dumps(body)

    klaviyo.add_callback(responses.GET, f"{API}/campaigns", callback=campaigns)
    klaviyo.get(
        f"{API}/flows",
        json=page(
            [
                {
                    "type": "flow",
                    "id": "F1",
                    "attributes": {
                        "name": "Welcome",
                        "status": "live",
                        "archived": False,
                        "trigger_type": "Added to List",
                        "created": "2026-01-01T00:00:00Z",
                        "updated": "bad date",
                    },
                }
            ]
        ),
    )
    klaviyo.get(f"{API}/segments", json=page([]))  # segments: tests/insights/
    KlaviyoList.objects.create(klaviyo_id="L1", name="Old name")
    # The mirrors only: with no argument the command also fetches the reports (tested in
    # tests/insights/).
    out, _ = run("klaviyo_sync", "lists", "campaigns", "flows")
    assert "lists: 1 created, 1 updated." in out
    assert "campaigns: 2 created, 0 updated." in out
    assert "flows: 1 created, 0 updated." in out
    assert KlaviyoList.objects.get(klaviyo_id="L1").name == "Newsletter"
    assert KlaviyoList.objects.get(klaviyo_id="L1").opt_in_process == "double_opt_in"
    assert set(KlaviyoCampaign.objects.values_list("klaviyo_id", "channel")) == {
        ("C-email", "email"),
        ("C-sms", "sms"),
    }
    filters = sorted(
        c.request.params.get("filter", "").replace('"', "'")
        for c in klaviyo.calls
        if "/campaigns" in c.request.url
    )
    assert filters == ["equals(messages.channel,'email')", "equals(messages.channel,'sms')"]
    flow = KlaviyoFlow.objects.get()
    assert flow.trigger_type == "Added to List" and flow.remote_updated is None and flow.synced_at
    # Running again updates in place.
    out, _ = run("klaviyo_sync", "flows")
    assert out.strip() == "flows: 0 created, 1 updated."
    assert KlaviyoFlow.objects.count() == 1


def test_sync_rejects_unknown_resources():
    with pytest.raises(CommandError):
        run("klaviyo_sync", "segments")
