"""Who a storefront visitor is, for browse events sent from the server.

Klaviyo ties a browser to a profile by its ``__kla_id`` cookie (base64 JSON whose ``cid``
is klaviyo.js's anonymous client id) and by ``_kx``, the exchange id in links from
Klaviyo emails. A visitor whose ad blocker stops klaviyo.js has neither, so the first
server-side event gives the session an anonymous id of our own. Whichever id is found
first is kept in the session: Django's ``login()`` keeps session data, so the visitor's
later events as a logged-in user, and their order (``ORDER_FIELDS["anonymous_id"]``),
carry the same id and land on the same Klaviyo profile as their anonymous browsing.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from typing import Any
from urllib.parse import unquote

from django.http import HttpRequest

from django_klaviyo.conf import klaviyo_settings

__all__ = ["remember_visitor", "user_profile", "visitor_anonymous_id", "visitor_profile"]

SESSION_ANONYMOUS_ID = "klaviyo_anonymous_id"
SESSION_KX = "klaviyo_kx"
KLA_COOKIE = "__kla_id"
# Ids go into Klaviyo profiles: plain tokens only, bounded in length.
ID_RE = re.compile(r"^[A-Za-z0-9_.:=+/-]{1,128}$")


def _clean_id(value: Any) -> str | None:
    if isinstance(value, str) and ID_RE.match(value):
        return value
    return None


def kla_cookie_ids(raw: str | None) -> dict[str, str]:
    """``{"anonymous_id": cid, "_kx": $exchange_id}`` from a ``__kla_id`` cookie value;
    {} when it is absent or unreadable (a malformed cookie is ignored, never an error)."""
    if not raw or len(raw) > 4096:
        return {}
    raw = unquote(raw).strip()  # browsers may keep the padding percent-encoded (%3D)
    try:
        padded = raw + "=" * (-len(raw) % 4)
        data = json.loads(base64.b64decode(padded.replace("-", "+").replace("_", "/")))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    found = {}
    cid = _clean_id(data.get("cid"))
    if cid:
        found["anonymous_id"] = cid
    kx = _clean_id(data.get("$exchange_id"))
    if kx:
        found["_kx"] = kx
    return found


def remember_visitor(request: HttpRequest, *, create: bool = False) -> dict[str, str]:
    """The visitor's anonymous identifiers, remembered in the session.

    ``_kx`` comes from the page's query string (a click from a Klaviyo email) or the
    ``__kla_id`` cookie; the anonymous id from the cookie, else the session, else (with
    ``create``) a new random one. Returns ``{"anonymous_id": ..., "_kx": ...}`` (either
    may be missing)."""
    session = getattr(request, "session", None)
    cookie = kla_cookie_ids(request.COOKIES.get(KLA_COOKIE))
    ids: dict[str, str] = {}
    kx = _clean_id(request.GET.get("_kx")) or cookie.get("_kx")
    if session is not None:
        kx = kx or _clean_id(session.get(SESSION_KX))
    if kx:
        ids["_kx"] = kx
    anonymous_id = None
    if session is not None:
        # The first id seen is kept: klaviyo.js may load only on a later page, and the
        # events already sent under the session's id must stay on one profile.
        anonymous_id = _clean_id(session.get(SESSION_ANONYMOUS_ID))
    anonymous_id = anonymous_id or cookie.get("anonymous_id")
    if not anonymous_id and create and session is not None:
        anonymous_id = uuid.uuid4().hex
    if anonymous_id:
        ids["anonymous_id"] = anonymous_id
    if session is not None:
        for key, value in ((SESSION_ANONYMOUS_ID, anonymous_id), (SESSION_KX, kx)):
            if value and session.get(key) != value:
                session[key] = value
    return ids


def visitor_anonymous_id(request: HttpRequest) -> str | None:
    """The anonymous id this session's browse events carried (for the order's profile)."""
    return remember_visitor(request).get("anonymous_id")


def user_profile(user: Any) -> dict[str, Any]:
    """A logged-in user's identifiers through USER_PROFILE_MAPPER ({} for anonymous)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return {}
    return dict(klaviyo_settings.callable("USER_PROFILE_MAPPER")(user) or {})


def visitor_profile(request: HttpRequest) -> dict[str, Any]:
    """The event profile for this request: the logged-in user's identifiers plus the
    visitor's anonymous ids, or the anonymous ids alone (one is created if none exists)."""
    profile = user_profile(getattr(request, "user", None))
    profile.update(remember_visitor(request, create=True))
    return profile
