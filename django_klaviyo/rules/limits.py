"""Every Klaviyo limit the app enforces, defined once.

The rules (``django_klaviyo.rules``) check them when a row is written or a client method
is called; the flusher and the client's request assembly only use them to size requests.
Sources: Klaviyo's OpenAPI spec (revision 2026-07-15) and its rate-limits and
ingestion-limits pages (see ``docs/outbox.md``).
"""

from __future__ import annotations

import datetime as dt

# -- one request ------------------------------------------------------------------------
# Bulk endpoints take at most "5MB" per request: read as 5,000,000 bytes, the smaller of
# the two readings, so a request that fits here fits either way.
MAX_REQUEST_BYTES = 5_000_000
# What the items of one request may take, leaving room for the JSON:API wrapping.
REQUEST_BYTES_BUDGET = MAX_REQUEST_BYTES - 256 * 1024
# Per-item JSON:API wrapping ("type", "attributes", metric/profile "data" objects).
ITEM_OVERHEAD_BYTES = 256
EVENTS_PER_REQUEST = 1000
PROFILES_PER_IMPORT_JOB = 10_000
IDS_PER_LIST_REQUEST = 1000
PROFILES_PER_SUBSCRIBE_JOB = 1000
PROFILES_PER_UNSUBSCRIBE_JOB = 100
# Catalog item/variant/category bulk jobs: "Accepts up to 100 ... per request".
CATALOG_RESOURCES_PER_JOB = 100
# A catalog item's or variant's custom_metadata: "Flat JSON blob ... May not exceed 100kb"
# (read as 100,000 bytes of compact UTF-8 JSON, the smaller reading).
CATALOG_CUSTOM_METADATA_MAX_BYTES = 100_000
# A variant's inventory_policy: 1 keeps an out-of-stock variant out of recommendation
# feeds and blocks; 0 and 2 show it whatever its stock (Klaviyo's default is 0).
CATALOG_INVENTORY_POLICIES = (0, 1, 2)
# "Max number of coupon codes per job we allow for is 1000."
COUPON_CODES_PER_JOB = 1000
# Profile lookups (GET /api/profiles, a list's profiles) by any(field, [...]): at most 100
# values, and a page holds at most 100 profiles, so every match comes back on one page.
VALUES_PER_PROFILE_LOOKUP = 100

# -- one event --------------------------------------------------------------------------
# "must be shorter than 128 characters"
METRIC_MAX_LENGTH = 127
MAX_PROPERTIES = 400
# Nesting of properties (and any other JSON value the app stores), arrays, strings.
MAX_DEPTH = 10
MAX_ARRAY_ITEMS = 4000
MAX_STRING_BYTES = 100 * 1024
# Event times: after 1990 and at most one year ahead.
EARLIEST_EVENT_TIME = dt.datetime(1990, 1, 1, tzinfo=dt.timezone.utc)
LATEST_EVENT_TIME_AHEAD = dt.timedelta(days=365)

# -- one profile ------------------------------------------------------------------------
MAX_PROFILE_BYTES = 100 * 1024

# -- the app's own keys -----------------------------------------------------------------
# unique_id / dedupe_key columns.
KEY_MAX_LENGTH = 255

# -- what Klaviyo accepts in a profile ---------------------------------------------------
PROFILE_ATTRIBUTES = frozenset(
    {
        "email",
        "phone_number",
        "external_id",
        "_kx",
        "first_name",
        "last_name",
        "organization",
        "locale",
        "title",
        "image",
        "location",
        "properties",
    }
)
EVENT_PROFILE_ATTRIBUTES = PROFILE_ATTRIBUTES | {"anonymous_id"}
# profile-import and bulk import take no _kx on update; PATCH takes no _kx either.
UPDATE_PROFILE_ATTRIBUTES = PROFILE_ATTRIBUTES - {"_kx"}
LOCATION_KEYS = frozenset(
    {
        "address1",
        "address2",
        "city",
        "country",
        "latitude",
        "longitude",
        "region",
        "zip",
        "timezone",
        "ip",
    }
)
CONSENT_CHANNELS = ("email", "sms")

# -- what the public endpoints take from anyone (storefront events, back in stock) --------
# Not Klaviyo's limits: the app's own, so one anonymous post cannot make the outbox (and
# the database) hold megabytes (docs/deployment.md, "Byte budgets").
# A request body, refused (413) before it is parsed.
MAX_PUBLIC_BODY_BYTES = 64 * 1024
# One stored event (its outbox payload as JSON): an ordinary cart item stores about 310
# bytes, so a full cart (100 items, MAX_CART_ITEMS) of ordinary items fits.
MAX_PUBLIC_EVENT_BYTES = 32 * 1024
# A Searched Site's term: what a visitor typed, kept to its first characters (the helpers
# and tags cut it; the storefront endpoint refuses a longer one).
MAX_SEARCH_TERM_CHARS = 100
# Nesting of any JSON the app parses from outside (public endpoints and webhooks): deeper
# input is refused with a 400 before anything walks it. Klaviyo's own payloads nest at most
# MAX_DEPTH levels of properties inside a few levels of wrapping.
MAX_INPUT_DEPTH = 32


def too_deep(value: object, limit: int = MAX_INPUT_DEPTH) -> bool:
    """Whether parsed JSON nests objects/arrays more than ``limit`` levels (the outermost
    container is level 1). Walked level by level without recursion, so any depth is
    measured; about a fifth of json.loads' own time on a 5 MB webhook body."""
    level = [value] if type(value) in (dict, list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[object] = []
        for item in level:
            for child in item.values() if type(item) is dict else item:  # type: ignore[attr-defined]
                if type(child) is dict or type(child) is list:
                    below.append(child)
        level = below
    return False
