"""Klaviyo's API behaviour, one handler per operation, on top of SandboxState.

Handlers receive a validated body (the server has already checked it against the spec)
and apply the rules a JSON schema cannot express: at least one profile identifier, E.164
phone numbers, metric names under 128 characters, bulk limits, unique_id rules. They
answer with Klaviyo's status codes and JSON:API bodies, or raise ApiError.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from django_klaviyo.testing.openapi import parse_date_time
from django_klaviyo.testing.sandbox.jsonapi import (
    ApiError,
    Handler,
    Request,
    Response,
    check_identifiers,
    clean_email,
    clean_phone,
    filters,
    invalid,
    matches,
    paginate,
    registrar,
    rel_links,
)
from django_klaviyo.testing.sandbox.records import (
    PROFILE_ATTRIBUTES,
    WEBHOOK_TOPICS,
    DuplicateProfile,
    EventRecord,
    NotFound,
    now_iso,
)
from django_klaviyo.testing.sandbox.state import SandboxState

EVENT_IDENTIFIERS = ("email", "phone_number", "external_id", "anonymous_id", "_kx")
MAX_BULK_EVENTS = 1000
MAX_BULK_IMPORT = 10_000
MAX_SUBSCRIBE = 1000
MAX_UNSUBSCRIBE = 100
MAX_LIST_RELATIONSHIPS = 1000
CAMPAIGN_CHANNELS = ("email", "sms", "mobile_push")

# This module's operations; the server joins them with catalog_routes.ROUTES.
ROUTES: dict[str, Handler] = {}
handles = registrar(ROUTES)


# --- shared helpers ------------------------------------------------------------------


def _check_metric_name(name: str, pointer: str) -> None:
    if not name.strip():
        raise invalid("Metric name must not be blank.", pointer)
    if len(name) >= 128:
        raise invalid(
            f"Metric name must be shorter than 128 characters ({len(name)} given).", pointer
        )


def _check_event_time(value: str | None, pointer: str) -> str:
    if value is None:
        return now_iso()
    parsed = parse_date_time(value)
    assert parsed is not None  # the schema's date-time format was already checked
    aware = parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    if aware.year < 1990:
        raise invalid("Event time must be after 1990.", pointer)
    if aware > datetime.now(timezone.utc) + timedelta(days=365):
        raise invalid("Event time can be at most 1 year in the future.", pointer)
    return aware.isoformat(timespec="seconds")


def _profile_resource(profile: dict[str, Any], base: str, *, subscriptions: bool = False):
    attributes = {name: profile.get(name) for name in (*PROFILE_ATTRIBUTES, "created", "updated")}
    attributes["location"] = profile.get("location") or {}
    attributes["properties"] = profile.get("properties") or {}
    attributes["last_event_date"] = profile.get("last_event_date")
    if subscriptions:
        attributes["subscriptions"] = profile.get("subscriptions") or {}
    return {
        "type": "profile",
        "id": profile["id"],
        "attributes": attributes,
        "relationships": {
            "lists": {"links": rel_links(base, "profiles", profile["id"], "lists")},
            "segments": {"links": rel_links(base, "profiles", profile["id"], "segments")},
        },
        "links": {"self": f"{base}/api/profiles/{profile['id']}/"},
    }


def _list_resource(data: dict[str, Any], base: str) -> dict[str, Any]:
    return {
        "type": "list",
        "id": data["id"],
        "attributes": {
            "name": data["name"],
            "created": data["created"],
            "updated": data["updated"],
            "opt_in_process": data["opt_in_process"],
        },
        "relationships": {
            "profiles": {"links": rel_links(base, "lists", data["id"], "profiles")},
        },
        "links": {"self": f"{base}/api/lists/{data['id']}/"},
    }


def _webhook_resource(data: dict[str, Any], base: str) -> dict[str, Any]:
    return {
        "type": "webhook",
        "id": data["id"],
        "attributes": {
            "name": data["name"],
            "description": data["description"],
            "endpoint_url": data["endpoint_url"],
            "enabled": data["enabled"],
            "created_at": data["created_at"],
            "updated_at": data["updated_at"],
        },
        "relationships": {
            "webhook-topics": {
                "data": [{"type": "webhook-topic", "id": t} for t in data["topics"]],
                "links": rel_links(base, "webhooks", data["id"], "webhook-topics"),
            }
        },
        "links": {"self": f"{base}/api/webhooks/{data['id']}/"},
    }


# --- events --------------------------------------------------------------------------


def _event_profile(state: SandboxState, profile: dict[str, Any], pointer: str):
    check_identifiers(profile, pointer, allowed=EVENT_IDENTIFIERS)
    attributes = {k: v for k, v in (profile.get("attributes") or {}).items() if k != "meta"}
    profile_id = profile.get("id")
    if profile_id and state.profile(profile_id) is None:
        raise ApiError(
            404, "not_found", f"Profile {profile_id!r} does not exist.", pointer=f"{pointer}/id"
        )
    stored, _ = state.upsert_profile(attributes, profile_id, strict=False)
    identifiers = {k: attributes[k] for k in EVENT_IDENTIFIERS if attributes.get(k)}
    if profile_id:
        identifiers["id"] = profile_id
    return stored["id"], identifiers


def _event_record(
    operation: str,
    attrs: dict[str, Any],
    profile_id: str,
    identifiers: dict[str, Any],
    pointer: str,
) -> EventRecord:
    metric = attrs["metric"]["data"]["attributes"]["name"]
    _check_metric_name(metric, f"{pointer}/metric/data/attributes/name")
    return EventRecord(
        metric=metric,
        profile_id=profile_id,
        profile=identifiers,
        unique_id=attrs.get("unique_id"),
        properties=attrs.get("properties") or {},
        value=attrs.get("value"),
        value_currency=attrs.get("value_currency"),
        time=_check_event_time(attrs.get("time"), f"{pointer}/time"),
        received_at=now_iso(),
        operation=operation,
        backfill=attrs.get("backfill") is True,
    )


@handles("create_event")
def create_event(state: SandboxState, request: Request) -> Response:
    attrs = request.body["data"]["attributes"]
    pointer = "/data/attributes"
    # Check everything before touching state, as Klaviyo rejects the whole request.
    check_identifiers(
        attrs["profile"]["data"], f"{pointer}/profile/data", allowed=EVENT_IDENTIFIERS
    )
    _check_metric_name(
        attrs["metric"]["data"]["attributes"]["name"], f"{pointer}/metric/data/attributes/name"
    )
    _check_event_time(attrs.get("time"), f"{pointer}/time")
    profile_id, identifiers = _event_profile(
        state, attrs["profile"]["data"], f"{pointer}/profile/data"
    )
    state.record_event(_event_record("create_event", attrs, profile_id, identifiers, pointer))
    return Response(202)


@handles("bulk_create_events")
def bulk_create_events(state: SandboxState, request: Request) -> Response:
    entries = request.body["data"]["attributes"]["events-bulk-create"]["data"]
    base = "/data/attributes/events-bulk-create/data"
    total = sum(len(entry["attributes"]["events"]["data"]) for entry in entries)
    if total > MAX_BULK_EVENTS:
        raise invalid(f"At most {MAX_BULK_EVENTS} events per request ({total} given).", base)
    seen: set[tuple[str, str, str]] = set()
    for i, entry in enumerate(entries):
        profile = entry["attributes"]["profile"]["data"]
        check_identifiers(profile, f"{base}/{i}/attributes/profile/data", allowed=EVENT_IDENTIFIERS)
        identity = json.dumps(
            [profile.get("id")]
            + [(profile.get("attributes") or {}).get(k) for k in EVENT_IDENTIFIERS]
        )
        for j, event in enumerate(entry["attributes"]["events"]["data"]):
            attrs = event["attributes"]
            pointer = f"{base}/{i}/attributes/events/data/{j}/attributes"
            metric = attrs["metric"]["data"]["attributes"]["name"]
            _check_metric_name(metric, f"{pointer}/metric/data/attributes/name")
            _check_event_time(attrs.get("time"), f"{pointer}/time")
            unique_id = attrs.get("unique_id")
            if unique_id is not None:
                key = (identity, metric, unique_id)
                if key in seen:
                    raise invalid(
                        f"Duplicate unique_id {unique_id!r} for the same profile and metric; "
                        "no events were processed.",
                        f"{pointer}/unique_id",
                    )
                seen.add(key)
    for i, entry in enumerate(entries):
        profile_id, identifiers = _event_profile(
            state, entry["attributes"]["profile"]["data"], f"{base}/{i}/attributes/profile/data"
        )
        for j, event in enumerate(entry["attributes"]["events"]["data"]):
            pointer = f"{base}/{i}/attributes/events/data/{j}/attributes"
            state.record_event(
                _event_record(
                    "bulk_create_events", event["attributes"], profile_id, identifiers, pointer
                )
            )
    return Response(202)


# --- profiles ------------------------------------------------------------------------

_PROFILE_FILTERS = {
    "id": ("equals", "any"),
    "email": ("equals", "any"),
    "phone_number": ("equals", "any"),
    "external_id": ("equals", "any"),
    "_kx": ("equals",),
}


def _wants_subscriptions(request: Request) -> bool:
    return "subscriptions" in request.query.get("additional-fields[profile]", "").split(",")


def _duplicate(exc: DuplicateProfile, pointer: str = "/data/attributes") -> ApiError:
    return ApiError(
        409,
        "duplicate_profile",
        "A profile already exists with one of these identifiers.",
        pointer=pointer,
        meta={"duplicate_profile_id": exc.duplicate_profile_id},
    )


def _upsert_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if k != "_kx"}


@handles("create_or_update_profile")
def create_or_update_profile(state: SandboxState, request: Request) -> Response:
    data = request.body["data"]
    check_identifiers(data, "/data", allowed=("email", "phone_number", "external_id", "_kx"))
    try:
        profile, created = state.upsert_profile(
            _upsert_attributes(data["attributes"]), data.get("id")
        )
    except DuplicateProfile as exc:
        raise _duplicate(exc) from None
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc), pointer="/data/id") from None
    resource = _profile_resource(
        profile, request.base_url, subscriptions=_wants_subscriptions(request)
    )
    return Response(201 if created else 200, {"data": resource, "links": resource["links"]})


@handles("get_profiles")
def get_profiles(state: SandboxState, request: Request) -> Response:
    conditions = filters(request, _PROFILE_FILTERS)
    profiles = [p for p in state.profiles().values() if matches(p, conditions)]
    page, links = paginate(request, profiles, default=20, maximum=100)
    wants = _wants_subscriptions(request)
    return Response(
        200,
        {
            "data": [_profile_resource(p, request.base_url, subscriptions=wants) for p in page],
            "links": links,
        },
    )


@handles("get_profile")
def get_profile(state: SandboxState, request: Request) -> Response:
    profile = state.profile(request.path_params["id"])
    if profile is None:
        raise ApiError(404, "not_found", "Not found.", pointer=None, parameter="id")
    resource = _profile_resource(
        profile, request.base_url, subscriptions=_wants_subscriptions(request)
    )
    return Response(200, {"data": resource, "links": resource["links"]})


@handles("update_profile")
def update_profile(state: SandboxState, request: Request) -> Response:
    data = request.body["data"]
    profile_id = request.path_params["id"]
    if data.get("id") != profile_id:
        raise ApiError(
            409, "conflict", "The id in the body does not match the URL.", pointer="/data/id"
        )
    attributes = data.get("attributes") or {}
    clean_email(attributes.get("email"), "/data/attributes/email")
    clean_phone(attributes.get("phone_number"), "/data/attributes/phone_number")
    try:
        profile, _ = state.upsert_profile(_upsert_attributes(attributes), profile_id)
    except DuplicateProfile as exc:
        raise _duplicate(exc) from None
    except NotFound:
        raise ApiError(404, "not_found", "Not found.", pointer=None, parameter="id") from None
    resource = _profile_resource(
        profile, request.base_url, subscriptions=_wants_subscriptions(request)
    )
    return Response(200, {"data": resource, "links": resource["links"]})


def _job_resource(job: dict[str, Any], base: str) -> dict[str, Any]:
    return {
        "type": "profile-bulk-import-job",
        "id": job["id"],
        "attributes": {
            "status": job["status"],
            "created_at": job["created_at"],
            "total_count": job["total_count"],
            "completed_count": job["completed_count"],
            "failed_count": job["failed_count"],
            "completed_at": job["completed_at"],
            "expires_at": job["expires_at"],
            "started_at": job["started_at"],
        },
        "relationships": {
            "lists": {
                "data": [{"type": "list", "id": i} for i in job["list_ids"]],
                "links": rel_links(base, "profile-bulk-import-jobs", job["id"], "lists"),
            },
            "profiles": {
                "links": rel_links(base, "profile-bulk-import-jobs", job["id"], "profiles")
            },
            "import-errors": {
                "links": rel_links(base, "profile-bulk-import-jobs", job["id"], "import-errors")
            },
        },
        "links": {"self": f"{base}/api/profile-bulk-import-jobs/{job['id']}/"},
    }


@handles("bulk_import_profiles")
def bulk_import_profiles(state: SandboxState, request: Request) -> Response:
    data = request.body["data"]
    items = data["attributes"]["profiles"]["data"]
    if len(items) > MAX_BULK_IMPORT:
        raise invalid(
            f"At most {MAX_BULK_IMPORT} profiles per request ({len(items)} given).",
            "/data/attributes/profiles/data",
        )
    list_ids = [
        item["id"]
        for item in ((data.get("relationships") or {}).get("lists") or {}).get("data") or []
    ]
    for i, list_id in enumerate(list_ids):
        try:
            state.get_list(list_id)
        except NotFound as exc:
            raise ApiError(
                404, "not_found", str(exc), pointer=f"/data/relationships/lists/data/{i}/id"
            ) from None
    created_at = now_iso()
    job: dict[str, Any] = {
        "id": state.new_id(),
        "created_at": created_at,
        "started_at": created_at,
        "started": state.job_started(),
        "list_ids": list_ids,
        "errors": [],
        "profile_ids": [],
    }
    for i, item in enumerate(items):
        pointer = f"/data/attributes/profiles/data/{i}"
        try:
            check_identifiers(item, pointer, allowed=("email", "phone_number", "external_id"))
            profile, _ = state.upsert_profile(
                _upsert_attributes(item["attributes"]), item.get("id")
            )
        except ApiError as exc:
            job["errors"].append(
                _import_error(state, exc.code, exc.detail, exc.pointer or pointer, item)
            )
            continue
        except DuplicateProfile as exc:
            job["errors"].append(_import_error(state, "duplicate_profile", str(exc), pointer, item))
            continue
        except NotFound as exc:
            job["errors"].append(_import_error(state, "not_found", str(exc), pointer, item))
            continue
        job["profile_ids"].append(profile["id"])
        for list_id in list_ids:
            state.add_members(list_id, [profile["id"]])
    job.update(
        status="complete",
        total_count=len(items),
        completed_count=len(job["profile_ids"]),
        failed_count=len(job["errors"]),
        completed_at=now_iso(),
        expires_at=(datetime.now(timezone.utc) + timedelta(days=7)).isoformat(timespec="seconds"),
    )
    job["polls"] = 0
    state.save_import_job(job)
    # As with Klaviyo, the 202 only says "accepted": the outcome is seen by polling.
    return Response(202, {"data": _job_resource({**job, "status": "queued"}, request.base_url)})


def _import_error(state: SandboxState, code: str, detail: str, pointer: str, item: Any):
    return {
        "type": "import-error",
        "id": state.new_id(),
        "attributes": {
            "code": code,
            "title": "Invalid input.",
            "detail": detail,
            "source": {"pointer": pointer},
            "original_payload": item,
        },
    }


def _import_job(state: SandboxState, job_id: str) -> dict[str, Any]:
    try:
        return state.import_job(job_id)
    except NotFound:
        raise ApiError(404, "not_found", "Not found.", pointer=None, parameter="id") from None


def _polled(state: SandboxState, job: dict[str, Any]) -> dict[str, Any]:
    """The job as one poll sees it: ``processing`` at the first poll and until the
    sandbox's ``job_seconds`` have passed, then its real status (the import itself ran
    when it was posted), so clients must poll to the end."""
    polls = job.get("polls", 1)
    job["polls"] = polls + 1
    state.save_import_job(job)
    running = polls == 0 or not state.job_due(job.get("started", 0.0))
    return {**job, "status": "processing", "completed_at": None} if running else job


@handles("get_bulk_import_profiles_job")
def get_bulk_import_profiles_job(state: SandboxState, request: Request) -> Response:
    job = _polled(state, _import_job(state, request.path_params["job_id"]))
    return Response(200, {"data": _job_resource(job, request.base_url)})


@handles("get_errors_for_bulk_import_profiles_job")
def get_errors_for_bulk_import_profiles_job(state: SandboxState, request: Request) -> Response:
    job = _import_job(state, request.path_params["id"])
    page, links = paginate(request, job["errors"], default=20, maximum=100)
    return Response(200, {"data": page, "links": links})


# --- consent -------------------------------------------------------------------------


def _list_relationship(state: SandboxState, data: dict[str, Any]) -> str | None:
    relation = ((data.get("relationships") or {}).get("list") or {}).get("data")
    if not relation:
        return None
    try:
        state.get_list(relation["id"])
    except NotFound as exc:
        raise ApiError(
            404, "not_found", str(exc), pointer="/data/relationships/list/data/id"
        ) from None
    return relation["id"]


def _channels(subscriptions: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{"email": {"marketing": {...}}, ...} without null channels or kinds."""
    return {
        channel: {kind: params for kind, params in (kinds or {}).items() if params}
        for channel, kinds in (subscriptions or {}).items()
        if kinds
    }


@handles("bulk_subscribe_profiles")
def bulk_subscribe_profiles(state: SandboxState, request: Request) -> Response:
    data = request.body["data"]
    attrs = data["attributes"]
    items = attrs["profiles"]["data"]
    base = "/data/attributes/profiles/data"
    if len(items) > MAX_SUBSCRIBE:
        raise invalid(f"At most {MAX_SUBSCRIBE} profiles per request ({len(items)} given).", base)
    historical = bool(attrs.get("historical_import"))
    list_id = _list_relationship(state, data)
    # A double opt-in list asks the person first: email consent stays as it was, and the
    # profile joins the list only once the confirmation is answered (``confirm_opt_in``).
    # A historical import records consent already given, so it skips the confirmation.
    double = (
        list_id is not None
        and not historical
        and state.get_list(list_id).get("opt_in_process") == "double_opt_in"
    )
    for i, item in enumerate(items):
        pointer = f"{base}/{i}/attributes"
        check_identifiers(item, f"{base}/{i}", allowed=("email", "phone_number"))
        channels = _channels(item["attributes"]["subscriptions"])
        if not channels:
            raise invalid(
                "At least one subscription channel is required.", f"{pointer}/subscriptions"
            )
        if "email" in channels and not item["attributes"].get("email"):
            raise invalid("Email consent needs an email address.", f"{pointer}/email")
        if "sms" in channels and not item["attributes"].get("phone_number"):
            raise invalid("SMS consent needs a phone number.", f"{pointer}/phone_number")
        for channel, kinds in channels.items():
            for kind, params in kinds.items():
                consented_at = params.get("consented_at")
                where = f"{pointer}/subscriptions/{channel}/{kind}/consented_at"
                if consented_at and not historical:
                    raise invalid("consented_at is only allowed with historical_import.", where)
                if historical and not consented_at:
                    raise invalid("historical_import needs consented_at.", where)
                if consented_at:
                    moment = parse_date_time(consented_at)
                    aware = moment.replace(tzinfo=moment.tzinfo or timezone.utc)  # type: ignore[union-attr]
                    if aware > datetime.now(timezone.utc):
                        raise invalid("consented_at must be in the past.", where)
    for item in items:
        attributes = item["attributes"]
        identifiers = {k: attributes[k] for k in ("email", "phone_number") if attributes.get(k)}
        profile, _ = state.upsert_profile(identifiers, strict=False)
        channels = _channels(attributes["subscriptions"])
        consented_at = None
        pending = double and "email" in channels
        for channel, kinds in channels.items():
            for kind, params in kinds.items():
                consented_at = params.get("consented_at") or consented_at
                if pending and channel == "email":
                    state.add_pending_opt_in(profile["id"], list_id, kind)  # type: ignore[arg-type]
                    continue
                state.set_consent(
                    profile["id"],
                    channel,
                    kind,
                    "SUBSCRIBED",
                    consented_at=params.get("consented_at"),
                    list_id=list_id,
                    custom_source=attrs.get("custom_source"),
                )
        if list_id and not pending:
            state.clear_list_consent(profile["id"], list_id)
            state.add_members(list_id, [profile["id"]])
        state.record_subscription(
            {
                **identifiers,
                "profile_id": profile["id"],
                "channels": sorted(channels),
                "consent": {c: sorted(k) for c, k in channels.items()},
                "list_id": list_id,
                "custom_source": attrs.get("custom_source"),
                "historical_import": historical,
                "consented_at": consented_at,
                "received_at": now_iso(),
                # "pending": a double opt-in list's confirmation is awaited (email).
                "double_opt_in": "pending" if pending else None,
            }
        )
    return Response(202)


@handles("bulk_unsubscribe_profiles")
def bulk_unsubscribe_profiles(state: SandboxState, request: Request) -> Response:
    data = request.body["data"]
    items = data["attributes"]["profiles"]["data"]
    base = "/data/attributes/profiles/data"
    if len(items) > MAX_UNSUBSCRIBE:
        raise invalid(f"At most {MAX_UNSUBSCRIBE} profiles per request ({len(items)} given).", base)
    list_id = _list_relationship(state, data)
    for i, item in enumerate(items):
        check_identifiers(item, f"{base}/{i}", allowed=("email", "phone_number"))
        if not _channels(item["attributes"]["subscriptions"]):
            raise invalid(
                "At least one subscription channel is required.",
                f"{base}/{i}/attributes/subscriptions",
            )
    for item in items:
        attributes = item["attributes"]
        identifiers = {k: attributes[k] for k in ("email", "phone_number") if attributes.get(k)}
        channels = _channels(attributes["subscriptions"])
        profile_id = None
        for name, value in identifiers.items():
            profile_id = profile_id or state.find_profile_id(name, value)
        # Klaviyo: a profile not on the job's list is unsubscribed globally.
        scope = state.unsubscribe(profile_id, channels, list_id) if profile_id else None
        state.record_unsubscription(
            {
                **identifiers,
                "profile_id": profile_id,
                "channels": sorted(channels),
                "list_id": list_id,
                "scope": scope,
                "received_at": now_iso(),
            }
        )
    return Response(202)


# --- lists ---------------------------------------------------------------------------


@handles("create_list")
def create_list(state: SandboxState, request: Request) -> Response:
    attributes = request.body["data"]["attributes"]
    if not attributes["name"].strip():
        raise invalid("List name must not be blank.", "/data/attributes/name")
    created = state.create_list(attributes["name"], attributes.get("opt_in_process"))
    resource = _list_resource(created, request.base_url)
    return Response(201, {"data": resource, "links": resource["links"]})


@handles("get_lists")
def get_lists(state: SandboxState, request: Request) -> Response:
    conditions = filters(request, {"name": ("any", "equals"), "id": ("any", "equals")})
    items = [item for item in state.lists().values() if matches(item, conditions)]
    page, links = paginate(request, items, default=10, maximum=10)
    return Response(
        200, {"data": [_list_resource(i, request.base_url) for i in page], "links": links}
    )


def _get_list(state: SandboxState, list_id: str) -> dict[str, Any]:
    try:
        return state.get_list(list_id)
    except NotFound:
        raise ApiError(404, "not_found", "Not found.", pointer=None, parameter="id") from None


@handles("get_list")
def get_list(state: SandboxState, request: Request) -> Response:
    resource = _list_resource(_get_list(state, request.path_params["id"]), request.base_url)
    if request.query.get("additional-fields[list]") == "profile_count":
        resource["attributes"]["profile_count"] = len(state.members(resource["id"]))
    return Response(200, {"data": resource, "links": resource["links"]})


def _relationship_ids(state: SandboxState, request: Request) -> tuple[str, list[str]]:
    list_id = request.path_params["id"]
    _get_list(state, list_id)
    items = request.body["data"]
    if len(items) > MAX_LIST_RELATIONSHIPS:
        raise invalid(
            f"At most {MAX_LIST_RELATIONSHIPS} profiles per request ({len(items)} given)."
        )
    ids = [item["id"] for item in items]
    for i, profile_id in enumerate(ids):
        if state.profile(profile_id) is None:
            raise ApiError(
                404, "not_found", f"Profile {profile_id!r} does not exist.", pointer=f"/data/{i}/id"
            )
    return list_id, ids


@handles("add_profiles_to_list")
def add_profiles_to_list(state: SandboxState, request: Request) -> Response:
    list_id, ids = _relationship_ids(state, request)
    state.add_members(list_id, ids)
    return Response(204)


@handles("remove_profiles_from_list")
def remove_profiles_from_list(state: SandboxState, request: Request) -> Response:
    list_id, ids = _relationship_ids(state, request)
    state.remove_members(list_id, ids)
    return Response(204)


@handles("get_profiles_for_list")
def get_profiles_for_list(state: SandboxState, request: Request) -> Response:
    list_id = request.path_params["id"]
    _get_list(state, list_id)
    conditions = filters(request, {"email": ("any", "equals"), "phone_number": ("any", "equals")})
    profiles = [state.profile(pid) for pid in state.members(list_id)]
    members = [p for p in profiles if p is not None and matches(p, conditions)]
    page, links = paginate(request, members, default=20, maximum=100)
    wants = _wants_subscriptions(request)
    return Response(
        200,
        {
            "data": [_profile_resource(p, request.base_url, subscriptions=wants) for p in page],
            "links": links,
        },
    )


# --- campaigns, flows ----------------------------------------------------------------


@handles("get_campaigns")
def get_campaigns(state: SandboxState, request: Request) -> Response:
    conditions = filters(
        request,
        {
            "messages.channel": ("equals",),
            "name": ("contains",),
            "id": ("any",),
            "archived": ("equals",),
            "status": ("any", "equals"),
        },
    )
    channels = [value for op, name, value in conditions if name == "messages.channel"]
    if not channels or channels[0] not in CAMPAIGN_CHANNELS:
        raise invalid(
            "A channel filter is required: filter=equals(messages.channel,'email'), "
            "'sms' or 'mobile_push'.",
            None,
            parameter="filter",
        )
    rest = [c for c in conditions if c[1] != "messages.channel"]
    items = [c for c in state.campaigns(channels[0]) if matches(c, rest)]
    page, links = paginate(request, items, default=100, maximum=100)
    data = [
        {
            "type": "campaign",
            "id": c["id"],
            "attributes": {
                k: c[k] for k in ("name", "status", "archived", "created_at", "updated_at")
            }
            | {"send_channel": c["channel"]},
            "links": {"self": f"{request.base_url}/api/campaigns/{c['id']}/"},
        }
        for c in page
    ]
    return Response(200, {"data": data, "links": links})


@handles("get_flows")
def get_flows(state: SandboxState, request: Request) -> Response:
    conditions = filters(
        request,
        {
            "id": ("any",),
            "name": ("contains", "equals"),
            "status": ("equals",),
            "archived": ("equals",),
            "trigger_type": ("equals",),
        },
    )
    items = [f for f in state.flows() if matches(f, conditions)]
    page, links = paginate(request, items, default=50, maximum=50)
    data = [
        {
            "type": "flow",
            "id": f["id"],
            "attributes": {
                k: f[k]
                for k in ("name", "status", "archived", "created", "updated", "trigger_type")
            },
            "links": {"self": f"{request.base_url}/api/flows/{f['id']}/"},
        }
        for f in page
    ]
    return Response(200, {"data": data, "links": links})


# --- webhooks ------------------------------------------------------------------------


@handles("create_webhook")
def create_webhook(state: SandboxState, request: Request) -> Response:
    data = request.body["data"]
    attributes = data["attributes"]
    if not attributes["endpoint_url"].startswith("https://"):
        raise invalid("endpoint_url must be https.", "/data/attributes/endpoint_url")
    if not attributes["secret_key"]:
        raise invalid("secret_key must not be blank.", "/data/attributes/secret_key")
    topics = [t["id"] for t in data["relationships"]["webhook-topics"]["data"]]
    if not topics:
        raise invalid(
            "At least one webhook topic is required.", "/data/relationships/webhook-topics/data"
        )
    for i, topic in enumerate(topics):
        if topic not in WEBHOOK_TOPICS:
            raise invalid(
                f"Unknown webhook topic {topic!r}.",
                f"/data/relationships/webhook-topics/data/{i}/id",
            )
    created = state.create_webhook(attributes, topics)
    resource = _webhook_resource(created, request.base_url)
    return Response(201, {"data": resource, "links": resource["links"]})


@handles("get_webhooks")
def get_webhooks(state: SandboxState, request: Request) -> Response:
    data = [_webhook_resource(w, request.base_url) for w in state.webhooks().values()]
    return Response(
        200,
        {
            "data": data,
            "links": {"self": f"{request.base_url}/api/webhooks/", "next": None, "prev": None},
        },
    )


def _webhook(state: SandboxState, webhook_id: str) -> dict[str, Any]:
    try:
        return state.webhook(webhook_id)
    except NotFound:
        raise ApiError(404, "not_found", "Not found.", pointer=None, parameter="id") from None


@handles("get_webhook")
def get_webhook(state: SandboxState, request: Request) -> Response:
    resource = _webhook_resource(_webhook(state, request.path_params["id"]), request.base_url)
    return Response(200, {"data": resource, "links": resource["links"]})


@handles("delete_webhook")
def delete_webhook(state: SandboxState, request: Request) -> Response:
    _webhook(state, request.path_params["id"])
    state.delete_webhook(request.path_params["id"])
    return Response(204)


@handles("get_webhook_topics")
def get_webhook_topics(state: SandboxState, request: Request) -> Response:
    data = [
        {
            "type": "webhook-topic",
            "id": topic,
            "links": {"self": f"{request.base_url}/api/webhook-topics/{topic}/"},
        }
        for topic in WEBHOOK_TOPICS
    ]
    return Response(
        200,
        {
            "data": data,
            "links": {
                "self": f"{request.base_url}/api/webhook-topics/",
                "next": None,
                "prev": None,
            },
        },
    )


# --- data privacy --------------------------------------------------------------------


@handles("request_profile_deletion")
def request_profile_deletion(state: SandboxState, request: Request) -> Response:
    profile = request.body["data"]["attributes"]["profile"]["data"]
    attributes = profile.get("attributes") or {}
    given = {
        k: v
        for k, v in (
            ("id", profile.get("id")),
            ("email", attributes.get("email")),
            ("phone_number", attributes.get("phone_number")),
        )
        if v
    }
    if len(given) != 1:
        raise invalid(
            "Give exactly one of id, email or phone_number.", "/data/attributes/profile/data"
        )
    ((field_name, value),) = given.items()
    if field_name == "email":
        clean_email(value, "/data/attributes/profile/data/attributes/email")
    if field_name == "phone_number":
        clean_phone(value, "/data/attributes/profile/data/attributes/phone_number")
    profile_id = state.find_profile_id(field_name, value)
    deleted = state.delete_profile(profile_id) if profile_id else False
    state.record_deletion(
        {field_name: value, "profile_id": profile_id, "deleted": deleted, "received_at": now_iso()}
    )
    return Response(202)
