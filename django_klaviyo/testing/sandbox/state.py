"""The sandbox's in-memory Klaviyo account: profiles, events, lists, consent, webhooks.

Every public method takes the state's lock, so request threads and test code can read
and write it concurrently; readers get copies, never live objects.
"""

from __future__ import annotations

import copy
import hashlib
import random
import threading
import time
from collections import Counter
from typing import Any

from django_klaviyo.testing.sandbox.account_objects import AccountObjects
from django_klaviyo.testing.sandbox.records import (
    IDENTIFIER_FIELDS,
    PROFILE_ATTRIBUTES,
    DuplicateProfile,
    EventRecord,
    NotFound,
    now_iso,
)


def key_digest(api_key: str) -> str:
    """What the sandbox keeps of an API key: the digest the client keys its rate limits by
    (``django_klaviyo.client.ratelimit.account_scope``, which tests hold this to; the
    sandbox does not import the client, which needs Django's settings)."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()[:16]


_ULID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


class SandboxState(AccountObjects):
    """One Klaviyo account, in memory."""

    def __init__(self, seed: int | None = None) -> None:
        self._lock = threading.RLock()
        self._seed = seed
        # Seconds a bulk job stays "processing" after it was created (``job_due``).
        self.job_seconds = 0.0
        self.reset()

    def job_started(self) -> float:
        """A bulk job's start, for ``job_due`` (monotonic seconds)."""
        return time.monotonic()

    def job_due(self, started: float) -> bool:
        """Whether a job started at ``started`` has had its ``job_seconds`` to run."""
        return time.monotonic() - started >= self.job_seconds

    # --- lifecycle -------------------------------------------------------------------

    def reset(self) -> None:
        """Forget everything (ids restart from the seed)."""
        with self._lock:
            self._random = random.Random(self._seed)
            self._profiles: dict[str, dict[str, Any]] = {}
            self._index: dict[str, dict[str, str]] = {f: {} for f in IDENTIFIER_FIELDS}
            self._events: list[EventRecord] = []
            self._event_keys: set[tuple[str, str, str]] = set()
            self._duplicate_events = 0
            self._lists: dict[str, dict[str, Any]] = {}
            self._members: dict[str, dict[str, str]] = {}  # list id -> {profile id: joined}
            self._subscriptions: list[dict[str, Any]] = []
            self._unsubscriptions: list[dict[str, Any]] = []
            self._deletions: list[dict[str, Any]] = []
            self._import_jobs: dict[str, dict[str, Any]] = {}
            self._webhooks: dict[str, dict[str, Any]] = {}
            self._webhook_secrets: dict[str, str] = {}
            self._campaigns: list[dict[str, Any]] = []
            self._flows: list[dict[str, Any]] = []
            self._requests: Counter[tuple[str, int]] = Counter()
            self._keys: Counter[str] = Counter()
            # Stores of optional route modules (e.g. sandbox.catalog_routes), by name.
            self.extensions: dict[str, Any] = {}

    def new_id(self, length: int = 26) -> str:
        with self._lock:
            return "".join(self._random.choice(_ULID_ALPHABET) for _ in range(length))

    # --- request counters ------------------------------------------------------------

    def count_request(self, operation: str, status: int) -> None:
        with self._lock:
            self._requests[(operation, status)] += 1

    def count_key(self, api_key: str) -> None:
        """One request sent with ``api_key``; only a digest is kept (see ``key_counts``)."""
        digest = key_digest(api_key)
        with self._lock:
            self._keys[digest] += 1

    def key_counts(self) -> dict[str, int]:
        """Requests by the API key they carried, as ``key_digest(key)`` (the digest the
        client keys its rate limits by): several accounts can be told apart without the
        sandbox keeping a key."""
        with self._lock:
            return dict(self._keys)

    def request_counts(self) -> dict[str, dict[int, int]]:
        """``{"create_event": {202: 10, 429: 2}, ...}``."""
        with self._lock:
            counts: dict[str, dict[int, int]] = {}
            for (operation, status), n in sorted(self._requests.items()):
                counts.setdefault(operation, {})[status] = n
            return counts

    # --- profiles --------------------------------------------------------------------

    def profiles(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._profiles)

    def profile(self, profile_id: str) -> dict[str, Any] | None:
        with self._lock:
            found = self._profiles.get(profile_id)
            return copy.deepcopy(found) if found else None

    def find_profile_id(self, field: str, value: str) -> str | None:
        with self._lock:
            if field == "id":
                return value if value in self._profiles else None
            return self._index.get(field, {}).get(value)

    def _match(self, identifiers: dict[str, Any]) -> dict[str, str]:
        """Identifier field -> id of the profile that already holds that value."""
        matches = {}
        for field in IDENTIFIER_FIELDS:
            value = identifiers.get(field)
            if value:
                owner = self._index[field].get(value)
                if owner:
                    matches[field] = owner
        return matches

    def _apply(self, profile: dict[str, Any], attributes: dict[str, Any]) -> None:
        for name in PROFILE_ATTRIBUTES:
            if name not in attributes:
                continue  # Klaviyo: an omitted field stays unchanged, null clears it
            value = attributes[name]
            if name in IDENTIFIER_FIELDS:
                old = profile.get(name)
                if old:
                    self._index[name].pop(old, None)
                if value:
                    self._index[name][value] = profile["id"]
            if name == "properties" and isinstance(value, dict):
                merged = dict(profile.get("properties") or {})
                merged.update(value)
                value = merged
            profile[name] = copy.deepcopy(value)
        profile["updated"] = now_iso()

    def _create(self, attributes: dict[str, Any], profile_id: str | None = None) -> dict[str, Any]:
        profile_id = profile_id or self.new_id()
        stamp = now_iso()
        profile: dict[str, Any] = {"id": profile_id, "created": stamp, "updated": stamp}
        profile.update({name: None for name in PROFILE_ATTRIBUTES})
        profile["properties"] = {}
        profile["subscriptions"] = {}
        self._profiles[profile_id] = profile
        self._apply(profile, attributes)
        return profile

    def upsert_profile(
        self, attributes: dict[str, Any], profile_id: str | None = None, *, strict: bool = True
    ) -> tuple[dict[str, Any], bool]:
        """Create or update by id or identifiers; returns (profile copy, created).

        ``strict`` (profile-import, PATCH): identifiers pointing at two different profiles
        raise DuplicateProfile. Events are lenient like Klaviyo's: the first match by
        priority wins and identifiers held by other profiles are left where they are.
        """
        with self._lock:
            matches = self._match(attributes)
            if profile_id:
                if profile_id not in self._profiles:
                    raise NotFound(f"Profile {profile_id!r} does not exist.")
                target: str | None = profile_id
            else:
                target = next(iter(matches.values()), None)
            conflicts = {f: owner for f, owner in matches.items() if owner != target}
            if conflicts and strict:
                field, owner = next(iter(conflicts.items()))
                raise DuplicateProfile(owner, field)
            clean = {k: v for k, v in attributes.items() if k not in conflicts}
            if target is None:
                return copy.deepcopy(self._create(clean)), True
            profile = self._profiles[target]
            self._apply(profile, clean)
            return copy.deepcopy(profile), False

    def set_consent(
        self, profile_id: str, channel: str, kind: str, consent: str, **details: Any
    ) -> None:
        with self._lock:
            subs = self._profiles[profile_id].setdefault("subscriptions", {})
            subs.setdefault(channel, {})[kind] = {
                "consent": consent,
                "consent_timestamp": details.pop("consented_at", None) or now_iso(),
                **details,
            }

    def consent(self, profile_id: str, channel: str = "email", kind: str = "marketing") -> str:
        """The profile's global consent on one channel ("NEVER_SUBSCRIBED" if none yet)."""
        with self._lock:
            subs = self._profiles[profile_id].get("subscriptions") or {}
            return ((subs.get(channel) or {}).get(kind) or {}).get("consent", "NEVER_SUBSCRIBED")

    def unsubscribe(
        self, profile_id: str, channels: dict[str, Any], list_id: str | None = None
    ) -> str:
        """Apply one profile of an unsubscribe job the way Klaviyo documents it.

        Without a list, or for a profile NOT on the given list, the unsubscribe is global
        ("Profiles not in the specified list will be globally unsubscribed"). A member of
        the list is unsubscribed from that list only: it leaves the list and the list
        records the withdrawn consent; its global consent stays. Returns "list" or "global".
        """
        with self._lock:
            if list_id and profile_id in self._members.get(list_id, {}):
                stamp = now_iso()
                per_list = self._profiles[profile_id].setdefault("list_consent", {})
                for channel, kinds in channels.items():
                    for kind in kinds:
                        per_list.setdefault(list_id, {}).setdefault(channel, {})[kind] = {
                            "consent": "UNSUBSCRIBED",
                            "consent_timestamp": stamp,
                        }
                self._members[list_id].pop(profile_id, None)
                return "list"
            for channel, kinds in channels.items():
                for kind in kinds:
                    self.set_consent(profile_id, channel, kind, "UNSUBSCRIBED", list_id=list_id)
            return "global"

    def add_pending_opt_in(self, profile_id: str, list_id: str, kind: str = "marketing") -> None:
        """An email subscription to a double opt-in list, awaiting its confirmation."""
        with self._lock:
            kinds = (
                self._profiles[profile_id].setdefault("pending_opt_in", {}).setdefault(list_id, [])
            )
            if kind not in kinds:  # a list, so the state stays JSON
                kinds.append(kind)

    def pending_opt_ins(self, profile_id: str) -> list[str]:
        """The double opt-in lists whose confirmation the profile has not answered yet."""
        with self._lock:
            return sorted(self._profiles[profile_id].get("pending_opt_in") or {})

    def confirm_opt_in(self, profile_id: str, list_id: str) -> None:
        """The person clicked the confirmation link: subscribed, and on the list."""
        with self._lock:
            kinds = (self._profiles[profile_id].get("pending_opt_in") or {}).pop(list_id, [])
            for kind in sorted(kinds):
                self.set_consent(profile_id, "email", kind, "SUBSCRIBED", list_id=list_id)
            self.clear_list_consent(profile_id, list_id)
            self.add_members(list_id, [profile_id])

    def list_consent(self, profile_id: str, list_id: str) -> dict[str, dict[str, Any]]:
        """What the profile withdrew for one list only: ``{"email": {"marketing": {...}}}``."""
        with self._lock:
            per_list = self._profiles[profile_id].get("list_consent") or {}
            return copy.deepcopy(per_list.get(list_id) or {})

    def clear_list_consent(self, profile_id: str, list_id: str) -> None:
        """Subscribing through a list lifts that list's own unsubscribe."""
        with self._lock:
            (self._profiles[profile_id].get("list_consent") or {}).pop(list_id, None)

    def is_member(self, list_id: str, profile_id: str) -> bool:
        with self._lock:
            return profile_id in self._members.get(list_id, {})

    def delete_profile(self, profile_id: str) -> bool:
        with self._lock:
            profile = self._profiles.pop(profile_id, None)
            if profile is None:
                return False
            for field in IDENTIFIER_FIELDS:
                if profile.get(field):
                    self._index[field].pop(profile[field], None)
            for members in self._members.values():
                members.pop(profile_id, None)
            return True

    # --- events ----------------------------------------------------------------------

    def record_event(self, event: EventRecord) -> bool:
        """Keep the event unless (profile, metric, unique_id) was seen; True when kept."""
        with self._lock:
            if event.unique_id is not None:
                key = (event.profile_id, event.metric, event.unique_id)
                if key in self._event_keys:
                    self._duplicate_events += 1
                    return False
                self._event_keys.add(key)
            self._events.append(event)
            return True

    def events(self, metric: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e.as_dict() for e in self._events if metric is None or e.metric == metric]

    @property
    def duplicate_events(self) -> int:
        """Events accepted (202) but not recorded because their unique_id repeated."""
        with self._lock:
            return self._duplicate_events

    def metric_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(e.metric for e in self._events))

    # --- lists -----------------------------------------------------------------------

    def create_list(self, name: str, opt_in_process: str | None = None) -> dict[str, Any]:
        with self._lock:
            list_id = self.new_id(6)
            stamp = now_iso()
            self._lists[list_id] = {
                "id": list_id,
                "name": name,
                "opt_in_process": opt_in_process or "single_opt_in",
                "created": stamp,
                "updated": stamp,
            }
            self._members[list_id] = {}
            return dict(self._lists[list_id])

    def lists(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._lists)

    def get_list(self, list_id: str) -> dict[str, Any]:
        with self._lock:
            if list_id not in self._lists:
                raise NotFound(f"List {list_id!r} does not exist.")
            return dict(self._lists[list_id])

    def members(self, list_id: str) -> list[str]:
        """Profile ids on the list, in the order they joined."""
        with self._lock:
            if list_id not in self._members:
                raise NotFound(f"List {list_id!r} does not exist.")
            return list(self._members[list_id])

    def add_members(self, list_id: str, profile_ids: list[str]) -> None:
        with self._lock:
            self.get_list(list_id)
            missing = [p for p in profile_ids if p not in self._profiles]
            if missing:
                raise NotFound(f"Profile {missing[0]!r} does not exist.")
            for profile_id in profile_ids:
                self._members[list_id].setdefault(profile_id, now_iso())

    def remove_members(self, list_id: str, profile_ids: list[str]) -> None:
        with self._lock:
            self.get_list(list_id)
            for profile_id in profile_ids:
                self._members[list_id].pop(profile_id, None)

    # --- consent, deletion, jobs -----------------------------------------------------

    def record_subscription(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._subscriptions.append(copy.deepcopy(record))

    def record_unsubscription(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._unsubscriptions.append(copy.deepcopy(record))

    def subscriptions(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._subscriptions)

    def unsubscriptions(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._unsubscriptions)

    def record_deletion(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._deletions.append(copy.deepcopy(record))

    def deletion_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._deletions)

    def save_import_job(self, job: dict[str, Any]) -> None:
        with self._lock:
            self._import_jobs[job["id"]] = copy.deepcopy(job)

    def import_job(self, job_id: str) -> dict[str, Any]:
        with self._lock:
            if job_id not in self._import_jobs:
                raise NotFound(f"Bulk import job {job_id!r} does not exist.")
            return copy.deepcopy(self._import_jobs[job_id])

    # --- overview --------------------------------------------------------------------

    def summary(self, *, latest: int = 20) -> dict[str, Any]:
        """A JSON-safe overview (no secrets) for GET /__sandbox__/state and the page."""
        with self._lock:
            return {
                "events": len(self._events),
                "duplicate_events": self._duplicate_events,
                "metrics": dict(sorted(Counter(e.metric for e in self._events).items())),
                "profiles": len(self._profiles),
                "lists": {
                    list_id: {"name": data["name"], "members": len(self._members[list_id])}
                    for list_id, data in self._lists.items()
                },
                "subscriptions": len(self._subscriptions),
                "unsubscriptions": len(self._unsubscriptions),
                "deletion_requests": len(self._deletions),
                "webhooks": len(self._webhooks),
                "requests": {
                    op: {str(status): n for status, n in statuses.items()}
                    for op, statuses in self.request_counts().items()
                },
                "latest_events": [e.as_dict() for e in self._events[-latest:]][::-1],
                # Overviews of the optional route modules' stores ("catalog": {...}).
                **{name: store.summary() for name, store in self.extensions.items()},
            }
