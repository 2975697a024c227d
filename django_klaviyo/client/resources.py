"""The account's lists, campaigns, flows and webhooks: the ``KlaviyoClient`` operations
that are not about one profile's data (revision 2026-07-15). As for every other
operation, input is cleaned by the rules (``rules.lists``, ``rules.webhooks``) and bodies
are built by ``client.bodies`` (``lists``, ``webhooks``)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from django_klaviyo.client.bodies.lists import build_create_list, build_list_relationship
from django_klaviyo.client.bodies.webhooks import build_webhook
from django_klaviyo.client.filters import Filter, and_, equals
from django_klaviyo.client.pagination import collection_params
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules.lists import clean_new_list, clean_profile_ids
from django_klaviyo.rules.webhooks import clean_webhook

if TYPE_CHECKING:
    from django_klaviyo.client.transport import Transport

CAMPAIGN_CHANNELS = ("email", "sms", "mobile_push")


def path_segment(value: Any, field: str) -> str:
    """A path segment: non-empty, and quoted so an id cannot reach another path."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise KlaviyoValidationError(f"{field} must be a non-empty string.", field=field)
    return quote(value, safe="")


def _filter_text(value: Filter | str | None) -> Filter | str | None:
    if value is not None and not isinstance(value, (Filter, str)):
        raise KlaviyoValidationError(
            "filter must be built with django_klaviyo.client.filters (or be a string).",
            field="filter",
        )
    return value


class AccountMethods:
    """Mixed into ``KlaviyoClient``, which provides the plumbing declared here."""

    _transport: Transport

    if TYPE_CHECKING:

        def _send(self, operation: str, method: str, path: str, **kwargs: Any) -> Any: ...

        def _data(self, document: Any) -> dict[str, Any]: ...

        def _collection(
            self, operation: str, path: str, params: Mapping[str, str] | None
        ) -> Iterator[dict[str, Any]]: ...

    # -- lists ------------------------------------------------------------------------

    def add_profiles_to_list(self, list_id: str, profile_ids: Iterable[str]) -> None:
        """``POST /api/lists/{id}/relationships/profiles`` (at most 1000 ids). Idempotent:
        membership is a set. Does not give consent (use subscribe_profiles)."""
        body = build_list_relationship(clean_profile_ids(profile_ids))
        self.send_list_change(list_id, body)

    def remove_profiles_from_list(self, list_id: str, profile_ids: Iterable[str]) -> None:
        """``DELETE /api/lists/{id}/relationships/profiles`` (at most 1000 ids). Idempotent."""
        body = build_list_relationship(clean_profile_ids(profile_ids))
        self.send_list_change(list_id, body, remove=True)

    def send_list_change(
        self, list_id: str, body: Mapping[str, Any], *, remove: bool = False
    ) -> None:
        """Add (or ``remove``) the profiles of a body built from Klaviyo profile ids
        (``bodies.lists.build_list_relationship``); an empty one sends nothing."""
        if not body["data"]:
            return
        path = f"/api/lists/{path_segment(list_id, 'list_id')}/relationships/profiles"
        if remove:
            self._send("remove_profiles_from_list", "DELETE", path, body=body, idempotent=True)
        else:
            self._send("add_profiles_to_list", "POST", path, body=body, idempotent=True)

    def create_list(self, name: str, *, opt_in_process: str | None = None) -> dict[str, Any]:
        """``POST /api/lists``. NOT idempotent (list names are not unique, so a repeat
        after a lost answer could make a second list; Klaviyo also caps lists at 150/day)."""
        body = build_create_list(*clean_new_list(name, opt_in_process))
        return self._data(
            self._send("create_list", "POST", "/api/lists", body=body, idempotent=False)
        )

    def get_lists(
        self,
        *,
        filter: Filter | str | None = None,
        sort: str | None = None,
        fields: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """``GET /api/lists``, all pages (page_size at most 10)."""
        params = collection_params(
            filter=_filter_text(filter),
            sort=sort,
            fields={"list": fields} if fields else None,
            include=include,
            page_size=page_size,
            max_page_size=10,
        )
        return self._collection("get_lists", "/api/lists", params)

    def get_list_profiles(
        self,
        list_id: str,
        *,
        filter: Filter | str | None = None,
        sort: str | None = None,
        fields: Iterable[str] | None = None,
        page_size: int | None = 100,
    ) -> Iterator[dict[str, Any]]:
        """``GET /api/lists/{id}/profiles``, all pages (page_size at most 100)."""
        path = f"/api/lists/{path_segment(list_id, 'list_id')}/profiles"
        params = collection_params(
            filter=_filter_text(filter),
            sort=sort,
            fields={"profile": fields} if fields else None,
            page_size=page_size,
            max_page_size=100,
        )
        return self._collection("get_profiles_for_list", path, params)

    # -- campaigns and flows ----------------------------------------------------------

    def get_campaigns(
        self,
        *,
        channel: str = "email",
        filter: Filter | None = None,
        sort: str | None = None,
        fields: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """``GET /api/campaigns`` of one channel (Klaviyo requires the channel filter);
        an extra ``filter`` is ANDed to it."""
        if channel not in CAMPAIGN_CHANNELS:
            raise KlaviyoValidationError(
                f"channel must be one of {', '.join(CAMPAIGN_CHANNELS)}, not {channel!r}.",
                field="channel",
            )
        if filter is not None and not isinstance(filter, Filter):
            raise KlaviyoValidationError(
                "get_campaigns combines filters built with django_klaviyo.client.filters.",
                field="filter",
            )
        channel_filter = equals("messages.channel", channel)
        combined = and_(channel_filter, filter) if filter is not None else channel_filter
        params = collection_params(
            filter=combined,
            sort=sort,
            fields={"campaign": fields} if fields else None,
            include=include,
            page_size=page_size,
            max_page_size=100,
        )
        return self._collection("get_campaigns", "/api/campaigns", params)

    def get_flows(
        self,
        *,
        filter: Filter | str | None = None,
        sort: str | None = None,
        fields: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
        page_size: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """``GET /api/flows``, all pages (page_size at most 50)."""
        params = collection_params(
            filter=_filter_text(filter),
            sort=sort,
            fields={"flow": fields} if fields else None,
            include=include,
            page_size=page_size,
            max_page_size=50,
        )
        return self._collection("get_flows", "/api/flows", params)

    # -- webhooks ---------------------------------------------------------------------

    def create_webhook(
        self,
        *,
        name: str,
        endpoint_url: str,
        secret_key: str,
        topics: Iterable[str],
        description: str | None = None,
    ) -> dict[str, Any]:
        """``POST /api/webhooks``. NOT idempotent: a repeat after a lost answer would
        register a second webhook and double every delivery. Error messages never echo
        ``secret_key``."""
        webhook = clean_webhook(
            name=name,
            endpoint_url=endpoint_url,
            secret_key=secret_key,
            topics=topics,
            description=description,
        )
        body = build_webhook(webhook)
        return self._data(
            self._send("create_webhook", "POST", "/api/webhooks", body=body, idempotent=False)
        )

    def get_webhooks(self, *, include: Iterable[str] | None = None) -> Iterator[dict[str, Any]]:
        """``GET /api/webhooks`` (cursor pages only)."""
        return self._collection("get_webhooks", "/api/webhooks", collection_params(include=include))

    def get_webhook(self, webhook_id: str) -> dict[str, Any]:
        path = f"/api/webhooks/{path_segment(webhook_id, 'webhook_id')}"
        return self._data(self._transport.request("get_webhook", "GET", path, idempotent=True))

    def delete_webhook(self, webhook_id: str) -> None:
        """``DELETE /api/webhooks/{id}``. Idempotent in effect (a repeat may answer 404)."""
        path = f"/api/webhooks/{path_segment(webhook_id, 'webhook_id')}"
        self._transport.request("delete_webhook", "DELETE", path, idempotent=True)

    def get_webhook_topics(self) -> Iterator[dict[str, Any]]:
        return self._collection("get_webhook_topics", "/api/webhook-topics", None)
