"""The sandbox answers like Klaviyo where Klaviyo documents it (issue 23): jobs take time,
unknown attributes are refused with 400, a double opt-in list waits for the confirmation,
job errors come in the documented ``APIJobErrorPayload`` shape."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from django_klaviyo.client import KlaviyoClient
from django_klaviyo.client.bodies.catalog import catalog_resource
from django_klaviyo.testing import openapi
from django_klaviyo.testing.sandbox import SandboxServer
from tests.testing.test_openapi import BULK_IMPORT, PROFILE_IMPORT, SUBSCRIBE
from tests.testing.test_sandbox import HEADERS, KEY

MUG = {"title": "Mug", "url": "https://shop.example/p/MUG", "price": 12.5, "description": ""}


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update(HEADERS)
        yield session


def client_for(sandbox: SandboxServer) -> KlaviyoClient:
    return KlaviyoClient(KEY, api_url=sandbox.url, max_attempts=1, rate_limiter=None)


def job_status(job: dict[str, Any]) -> str:
    return str(job["attributes"]["status"])


# --- jobs take time -----------------------------------------------------------------------


def test_a_catalog_job_stays_processing_for_the_sandboxs_job_seconds():
    with SandboxServer(job_seconds=3600, enforce_rate_limits=False) as sandbox:
        client = client_for(sandbox)
        job = client.start_catalog_job(
            "item", "create", [catalog_resource("item", "create", "MUG", MUG)]
        )
        polls = [job_status(client.get_catalog_job("item", "create", job["id"])) for _ in range(3)]
        assert polls == ["processing"] * 3
        sandbox.state.job_seconds = 0  # the time has passed
        assert job_status(client.get_catalog_job("item", "create", job["id"])) == "complete"


def test_without_job_seconds_a_job_completes_when_first_polled():
    with SandboxServer(enforce_rate_limits=False) as sandbox:
        client = client_for(sandbox)
        job = client.start_catalog_job(
            "item", "create", [catalog_resource("item", "create", "MUG", MUG)]
        )
        assert job_status(client.get_catalog_job("item", "create", job["id"])) == "complete"


def test_a_profile_import_job_stays_processing_for_the_sandboxs_job_seconds(http):
    with SandboxServer(job_seconds=3600, enforce_rate_limits=False) as sandbox:
        body = copy.deepcopy(BULK_IMPORT)
        del body["data"]["relationships"]
        job = http.post(f"{sandbox.url}/api/profile-bulk-import-jobs", json=body).json()["data"]
        url = f"{sandbox.url}/api/profile-bulk-import-jobs/{job['id']}"
        assert [job_status(http.get(url).json()["data"]) for _ in range(3)] == ["processing"] * 3
        sandbox.state.job_seconds = 0
        assert job_status(http.get(url).json()["data"]) == "complete"


def test_the_sandbox_command_takes_job_seconds():
    from django_klaviyo.management.commands.klaviyo_sandbox import Command

    parser = Command().create_parser("manage.py", "klaviyo_sandbox")
    assert parser.parse_args(["--job-seconds", "2.5"]).job_seconds == 2.5
    assert parser.parse_args([]).job_seconds == 0.0


# --- unknown attributes -------------------------------------------------------------------


def test_an_unknown_profile_attribute_is_refused_with_klaviyos_words(http):
    with SandboxServer(enforce_rate_limits=False) as sandbox:
        body = copy.deepcopy(PROFILE_IMPORT)
        body["data"]["attributes"]["x"] = 1
        answer = http.post(f"{sandbox.url}/api/profile-import", json=body)
    assert answer.status_code == 400
    (error,) = answer.json()["errors"]
    assert error["detail"] == "'x' is not a valid field for the resource 'profile'."
    assert error["source"]["pointer"] == "/data/attributes/x"


def test_custom_properties_stay_free_form(http):
    with SandboxServer(enforce_rate_limits=False) as sandbox:
        body = copy.deepcopy(PROFILE_IMPORT)
        body["data"]["attributes"]["properties"] = {"x": 1, "anything": {"at": "all"}}
        assert http.post(f"{sandbox.url}/api/profile-import", json=body).status_code in (200, 201)


# --- double opt-in ------------------------------------------------------------------------


def subscribe(http, sandbox: SandboxServer, list_id: str, *, historical: bool = False) -> str:
    body = copy.deepcopy(SUBSCRIBE)
    body["data"]["relationships"]["list"]["data"]["id"] = list_id
    attributes = body["data"]["attributes"]
    profile = attributes["profiles"]["data"][0]["attributes"]
    profile["subscriptions"] = {"email": {"marketing": {"consent": "SUBSCRIBED"}}}
    del profile["phone_number"]
    if historical:
        attributes["historical_import"] = True
        profile["subscriptions"]["email"]["marketing"]["consented_at"] = "2024-01-01T00:00:00Z"
    answer = http.post(f"{sandbox.url}/api/profile-subscription-bulk-create-jobs", json=body)
    assert answer.status_code == 202
    return sandbox.state.find_profile_id("email", profile["email"])


def test_a_subscription_to_a_double_opt_in_list_waits_for_the_confirmation(http):
    with SandboxServer(enforce_rate_limits=False) as sandbox:
        list_id = sandbox.state.create_list("Newsletter", "double_opt_in")["id"]
        profile_id = subscribe(http, sandbox, list_id)
        state = sandbox.state
        assert state.consent(profile_id, "email") == "NEVER_SUBSCRIBED"
        assert not state.is_member(list_id, profile_id)
        assert state.pending_opt_ins(profile_id) == [list_id]
        assert state.subscriptions()[-1]["double_opt_in"] == "pending"

        state.confirm_opt_in(profile_id, list_id)  # the person clicks the link
        assert state.consent(profile_id, "email") == "SUBSCRIBED"
        assert state.is_member(list_id, profile_id)
        assert state.pending_opt_ins(profile_id) == []


def test_single_opt_in_and_historical_imports_subscribe_at_once(http):
    with SandboxServer(enforce_rate_limits=False) as sandbox:
        single = sandbox.state.create_list("Single")["id"]
        profile_id = subscribe(http, sandbox, single)
        assert sandbox.state.consent(profile_id, "email") == "SUBSCRIBED"
        sandbox.state.reset()
        double = sandbox.state.create_list("Double", "double_opt_in")["id"]
        profile_id = subscribe(http, sandbox, double, historical=True)
        assert sandbox.state.consent(profile_id, "email") == "SUBSCRIBED"
        assert sandbox.state.is_member(double, profile_id)


# --- job errors in the documented shape -----------------------------------------------------


def test_catalog_and_coupon_job_errors_are_api_job_error_payloads():
    schema = {"$ref": "#/components/schemas/APIJobErrorPayload"}
    with SandboxServer(enforce_rate_limits=False) as sandbox:
        client = client_for(sandbox)
        mug = catalog_resource("item", "create", "MUG", MUG)
        client.get_catalog_job(
            "item", "create", client.start_catalog_job("item", "create", [mug])["id"]
        )
        again = client.start_catalog_job("item", "create", [mug])  # a duplicate
        job = client.get_catalog_job("item", "create", again["id"])
    (error,) = job["attributes"]["errors"]
    assert set(error) == {"id", "code", "title", "detail", "source"}
    assert openapi.validate_schema(schema, error) == []


def test_profile_import_errors_are_import_error_resources(http):
    schema = {"$ref": "#/components/schemas/ImportErrorResponseObjectResource"}
    with SandboxServer(enforce_rate_limits=False) as sandbox:
        body = copy.deepcopy(BULK_IMPORT)
        del body["data"]["relationships"]
        body["data"]["attributes"]["profiles"]["data"].append(
            {"type": "profile", "attributes": {"first_name": "no identifier"}}
        )
        job = http.post(f"{sandbox.url}/api/profile-bulk-import-jobs", json=body).json()["data"]
        url = f"{sandbox.url}/api/profile-bulk-import-jobs/{job['id']}/import-errors"
        (error,) = http.get(url).json()["data"]
    assert openapi.validate_schema(schema, error) == []
