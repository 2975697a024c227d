"""Who a storefront visitor is, for browse events sent from the server.

Klaviyo ties a browser to a profile by its ``__kla_id`` cookie (base64 JSON whose ``cid``
is klaviyo.js's anonymous client id) and by ``_kx``, the exchange id in links from
Klaviyo emails. A visitor whose ad blocker stops klaviyo.js has neither, so the first
server-side event gives the session an anonymous id of our own.

Precedence (docs/storefront.md, "Who an event is about"):

1. a logged-in user is identified by the user (``USER_PROFILE_MAPPER``) alone: never by
   a ``_kx`` or ``cid`` from the URL or a cookie, which anyone can put in a link or a
   browser, and the session's anonymous ids are forgotten;
2. else a guest who gave an email or phone (the identify step, ``identify_visitor``) is
   that email or phone; the anonymous id goes with the first event after that, once, to
   link the anonymous browsing to it, and is then forgotten;
3. else the anonymous ids: ``_kx`` (URL, cookie, session) and the first anonymous id seen
   (session, else cookie, else a new one), kept in the session.
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

__all__ = [
    "identify_visitor",
    "remember_visitor",
    "user_profile",
    "visit_id",
    "visitor_anonymous_id",
    "visitor_profile",
]

SESSION_ANONYMOUS_ID = "klaviyo_anonymous_id"
SESSION_KX = "klaviyo_kx"
# What a guest typed into a field marked for identification: {"email": ...} etc.
SESSION_IDENTIFIED = "klaviyo_identified"
# The guest's anonymous id, until one event has carried it next to what they typed.
SESSION_LINK = "klaviyo_link_anonymous_id"
# ... and after: the guest's order may carry it too (the same link, made again).
SESSION_LINKED = "klaviyo_linked_anonymous_id"
# A random id of this session's visit (a new session is a new visit: Started Checkout).
SESSION_VISIT = "klaviyo_visit"
# The Started Checkout row of this visit, sent again on the guest's profile at identify.
SESSION_OPEN_CHECKOUT = "klaviyo_open_checkout"
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
    may be missing). An identified visitor (a logged-in user, or a guest who gave an email
    or phone) has none: they are dropped from the session and {} is returned."""
    session = getattr(request, "session", None)
    if _is_user(request) or (session is not None and session.get(SESSION_IDENTIFIED)):
        if session is not None:
            for key in (SESSION_ANONYMOUS_ID, SESSION_KX):
                if key in session:
                    del session[key]
        return {}
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
    """The anonymous id this session's browse events carried (for the order's profile):
    None for a logged-in user; for a guest who identified, the id that linked them."""
    if _is_user(request):
        return None
    session = getattr(request, "session", None)
    if session is not None:
        linked = _clean_id(session.get(SESSION_LINK)) or _clean_id(session.get(SESSION_LINKED))
        if linked:
            return linked
    return remember_visitor(request).get("anonymous_id")


def user_profile(user: Any) -> dict[str, Any]:
    """A logged-in user's identifiers through USER_PROFILE_MAPPER ({} for anonymous)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return {}
    return dict(klaviyo_settings.callable("USER_PROFILE_MAPPER")(user) or {})


def _is_user(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and getattr(user, "is_authenticated", False))


def visitor_profile(request: HttpRequest) -> dict[str, Any]:
    """The event profile for this request, by the precedence of the module docstring: the
    logged-in user's identifiers; else what the guest gave (plus, on the first event
    after, their anonymous id); else the anonymous ids (one is created if none exists)."""
    if _is_user(request):
        remember_visitor(request)  # forgets the session's anonymous ids
        return user_profile(request.user)
    session = getattr(request, "session", None)
    given = session.get(SESSION_IDENTIFIED) if session is not None else None
    if session is None or not given:
        return remember_visitor(request, create=True)
    profile = dict(given)
    link = _clean_id(session.pop(SESSION_LINK, None))
    if link:
        profile["anonymous_id"] = link
        session[SESSION_LINKED] = link
    return profile


def identify_visitor(request: HttpRequest, identifiers: dict[str, str]) -> bool:
    """Record that this guest is ``identifiers`` (cleaned ``email`` / ``phone_number``
    they typed): their later events are that profile's. Returns False when nothing
    changed: a logged-in user (who stays the user), or the same identifiers again."""
    session = getattr(request, "session", None)
    if _is_user(request) or session is None or not identifiers:
        return False
    if session.get(SESSION_IDENTIFIED) == identifiers:
        return False
    if not session.get(SESSION_IDENTIFIED):
        # Kept for one event: the link between the anonymous browsing and the person.
        anonymous_id = remember_visitor(request).get("anonymous_id")
        if anonymous_id:
            session[SESSION_LINK] = anonymous_id
    session[SESSION_IDENTIFIED] = dict(identifiers)
    remember_visitor(request)  # drops the anonymous ids and _kx
    return True


def visit_id(request: HttpRequest) -> str | None:
    """A random id of this session (one visit); None without a session."""
    session = getattr(request, "session", None)
    if session is None:
        return None
    visit = _clean_id(session.get(SESSION_VISIT))
    if not visit:
        visit = session[SESSION_VISIT] = uuid.uuid4().hex
    return visit
