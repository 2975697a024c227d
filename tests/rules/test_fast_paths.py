"""The save path's specialisations of the rules give what the general rules give.

Each rule on the save path has a fast path for the usual values (plain text, numbers,
dicts and lists of them, an email, a UTC time). These tests hold each fast path equal to
the general rule it specialises on the inputs where they could diverge.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_email as django_validate_email
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy

from django_klaviyo import outbox, rules
from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import events, identifiers, limits, values

EMAILS = [
    "ada@example.com",
    " Ada@Example.COM ",
    "a+tag@sub.example.museum",
    '"a b"@example.com',
    "a@localhost",
    "a@LOCALHOST",
    "a@[127.0.0.1]",
    "a@[::1]",
    "a@[999.1.1.1]",
    "a@xn--bcher-kva.ch",
    "a@bücher.ch",
    "ü@example.com",
    "a@b",
    "a@b.",
    "a@example.com.",
    "a@-b.co",
    "a@b..co",
    "a@1.2.3.4",
    "a@c.c0m",
    "a b@example.com",
    "a.@example.com",
    ".a@example.com",
    "a@" + "b" * 63 + ".co",
    "a@" + "b" * 64 + ".co",
    "a" * 310 + "@b.co",
    "a" * 320 + "@b.co",
    "@example.com",
    "a@",
    "a@@example.com",
    "a@b@example.com",
    "a@example.com\n",
    "a@example.com\x00",
    "",
    "a@b.c",
    "a@b.co-",
    "a@b-.co",
    "a@b.-co",
    "a@-.co",
    "a@b.c0",
    "a@1.co",
    "a@b.xn--p1ai",
    "ADA.L+news@Mail.EXAMPLE.CO.UK",
    "a!#$%&'*+/=?^_`{|}~-@example.com",
    "a@" + "b" * 63 + "." + "c" * 63,
    "a@b." + "c" * 64,
    "a@b.co" + "m" * 300,
]


@pytest.mark.parametrize("email", EMAILS)
def test_the_email_rule_is_djangos(email):
    """``rules.identifiers`` compiles the patterns of Django's EmailValidator once; it
    accepts and refuses exactly what Django's ``validate_email`` does."""
    try:
        django_validate_email(email.strip())
    except ValidationError:
        with pytest.raises(KlaviyoValidationError) as refused:
            identifiers.normalize_email(email)
        assert refused.value.field == "email"
        assert str(refused.value) == f"email {email!r} is not a valid email address."
    else:
        assert identifiers.normalize_email(email) == email.strip()


ORDINARY = [
    "ada@example.com",
    "ADA.L+news@Mail.EXAMPLE.CO.UK",
    "first_last-9@sub-domain.example.museum",
    "a@1.co",
]


@pytest.mark.parametrize("email", ORDINARY)
def test_ordinary_addresses_are_taken_without_djangos_patterns(email):
    assert identifiers._ordinary_email(email)


def test_what_the_email_screen_takes_djangos_validator_takes():
    """``normalize_email`` takes an address of the ordinary shape without Django's
    patterns (they cost several µs in a save); every address that screen takes, Django
    takes too. Random addresses close to the shape (dots, hyphens, "@", digits, odd
    characters at random places) hold the two together."""
    rng = random.Random(20)
    odd = ["-", ".", "_", "+", "!", "~", '"', " ", "é", "\n", "@", "9", "xn--", "-" * 60]

    def text(length: int) -> str:
        return "".join(
            rng.choice("abZ") if rng.random() < 0.85 else rng.choice(odd) for _ in range(length)
        )

    taken = 0
    for _ in range(20_000):
        local = text(rng.randrange(0, 8))
        domain = ".".join(text(rng.randrange(0, 6)) for _ in range(rng.randrange(1, 5)))
        email = f"{local}@{domain}"
        if identifiers._ordinary_email(email):
            taken += 1
            django_validate_email(email)  # raises if Django refuses it
    assert taken > 1000


class Spec(Mapping):
    """A read-only mapping that is not a dict."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def placed_order(**changes: Any) -> dict[str, Any]:
    """A Placed Order spec as the mapper makes it (3 lines)."""
    items = [
        {
            "ProductID": sku,
            "SKU": sku,
            "ProductName": name,
            "Quantity": quantity,
            "ItemPrice": price,
            "RowTotal": quantity * price,
            "ProductURL": "",
            "ImageURL": "",
            "Categories": [],
            "Brand": "",
        }
        for sku, name, quantity, price in [
            ("TEA-1", "Green tea", 2, 4.5),
            ("CUP-2", "Cup", 1, 12.0),
            ("POT-3", "Teapot", 1, 35.0),
        ]
    ]
    spec = {
        "metric": "Placed Order",
        "profile": {"email": "ada@example.com"},
        "properties": {
            "OrderId": "A-1",
            "ItemNames": ["Green tea", "Cup", "Teapot"],
            "Categories": [],
            "Brands": [],
            "ItemCount": 4,
            "Items": items,
        },
        "time": (timezone.now() - dt.timedelta(days=1)).isoformat(),
        "value": 56.0,
        "value_currency": "USD",
        "unique_id": "A-1",
        "dedupe_key": "event:shop.order:1:placed",
        "item_events": {"metric": "Ordered Product", "unique_ids": ["A-1-1", "A-1-2", "A-1-3"]},
    }
    return {**spec, **changes}


SPECS = {
    "placed order": placed_order(),
    "backfill": placed_order(backfill=True),
    "backfill False": placed_order(backfill=False),
    "no item events": placed_order(item_events=None),
    "empty item events": placed_order(item_events={}),
    "expand": placed_order(
        item_events=None,
        expand=[{"metric": "Ordered Product", "unique_id": "A-1-1", "properties": {"a": 1}}],
    ),
    "no unique_id": placed_order(unique_id=None, dedupe_key=None),
    "bad unique_id": placed_order(unique_id="u" * 256),
    "bad dedupe_key": placed_order(dedupe_key=""),
    "bad backfill": placed_order(backfill=1),
    "blank metric": placed_order(metric=" "),
    "bad email": placed_order(profile={"email": "ada@"}),
}


@pytest.mark.parametrize("name", SPECS)
def test_build_events_takes_a_spec_as_build_event_takes_its_arguments(name):
    """``build_events`` cleans each spec as it is; ``build_event(**spec)`` gives the same
    row or the same refusal, a spec that is a Mapping but not a dict too."""
    spec = SPECS[name]

    def rows(build: Any) -> Any:
        try:
            (row,) = build()
        except KlaviyoValidationError as refused:
            return ("refused", str(refused), refused.field)
        unique_id = "generated" if spec.get("unique_id") is None else row.unique_id
        return (json.dumps(row.payload), unique_id, row.dedupe_key, row.metric, row.kind)

    expected = rows(lambda: [outbox.build_event(**spec)])
    assert rows(lambda: outbox.build_events([spec])) == expected
    assert rows(lambda: outbox.build_events([Spec(spec)])) == expected
    if expected[0] != "refused":
        assert outbox.build_events([spec])[0].rules_version == rules.RULES_VERSION


class Text(str):
    """A str subclass (as SafeString is)."""


def _times() -> list[Any]:
    now = timezone.now().replace(microsecond=349428)
    text = now.isoformat()
    paris = ZoneInfo("Europe/Paris")
    return [
        text,
        text.replace("+00:00", "Z"),
        text.replace("+00:00", ""),
        text.replace("T", " "),
        now.astimezone(paris).isoformat(),
        f" {text} ",
        f"{text}\n",
        f"\u3000{text}",
        text[:10],
        text.replace(".349428", ".000000"),
        text.replace(".349428", ".000001"),
        text[:10] + "T24:00:00.000001+00:00",
        text[:10] + "T23:59:60.000001+00:00",
        text.replace("+00:00", "-00:00"),
        text.replace("+00:00", "+00:01"),
        text.replace("-", "\uff0d", 1),
        "\uff12\uff10\uff12\uff16" + text[4:],  # fullwidth digits
        "2026-W49-7T20:10:54.349428+00:00",
        "2026-12-06T20:10:54.349428+00:00",
        "1989-12-31T23:59:59.999999+00:00",
        text.replace(".349428", ",5"),
        "20261206T201054Z",
        "2026-W49-7T20:10:54+00:00",
        "1989-12-31T23:59:59+00:00",
        "2999-01-01T00:00:00+00:00",
        "tomorrow",
        "",
        Text(text),
        Text(f" {text}"),
        now,
        now.replace(tzinfo=None),
        now.astimezone(paris),
        now.replace(tzinfo=ZoneInfo("UTC")),
        now.replace(tzinfo=dt.timezone(dt.timedelta(0), "Zulu")),
        now + dt.timedelta(days=300),
        dt.datetime(1980, 1, 1, tzinfo=dt.timezone.utc),
        now.date(),
        5,
    ]


def general_iso_time(value: Any, path: str, allow_future: bool) -> str:
    """``iso_time`` as written before its fast paths: parse_iso, then in_utc, always."""
    if isinstance(value, str):
        value = values.parse_iso(value, path)
    elif not isinstance(value, dt.datetime):
        raise KlaviyoValidationError(
            f"{path} must be a datetime or an ISO-8601 string, not {type(value).__name__}.",
            field=path,
        )
    value = values.in_utc(value)
    if value < limits.EARLIEST_EVENT_TIME:
        raise KlaviyoValidationError(f"{path} must be after 1990.", field=path)
    now = timezone.now()
    latest = now + limits.LATEST_EVENT_TIME_AHEAD if allow_future else now
    if value > latest:
        which = "more than a year in the future" if allow_future else "in the future"
        raise KlaviyoValidationError(f"{path} must not be {which}.", field=path)
    return value.isoformat()


def outcome(rule: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return ("ok", rule(*args, **kwargs))
    except KlaviyoValidationError as refused:
        return ("refused", str(refused), refused.field)


@pytest.mark.parametrize("allow_future", [True, False])
@pytest.mark.parametrize("index", range(len(_times())))
def test_iso_time_takes_a_time_in_utc_and_an_iso_string_as_the_general_rule(index, allow_future):
    """``iso_time`` parses a string with fromisoformat when it can (else parse_iso) and
    converts only a time not already in UTC: the same text, or the same refusal."""
    value = _times()[index]
    assert outcome(values.iso_time, value, "time", allow_future=allow_future) == outcome(
        general_iso_time, value, "time", allow_future
    )


class Code(str):
    """A str subclass (a SafeString is one)."""


class Amount(float):
    """A float subclass."""


def _leaves() -> list[Any]:
    return [
        "plain",
        "",
        "café",
        "a\x00b",
        "x\ud800y",
        "\ud83d\ude00",
        "a" * limits.MAX_STRING_BYTES,
        "a" * (limits.MAX_STRING_BYTES + 1),
        "é" * (limits.MAX_STRING_BYTES // 2 + 1),
        Code("sub"),
        Code("sub\x00"),
        mark_safe("safe"),
        gettext_lazy("Lazy text"),
        0,
        2**70,
        True,
        None,
        1.5,
        -0.0,
        float("nan"),
        float("inf"),
        Amount(2.5),
        Amount("nan"),
        Decimal("4.50"),
        Decimal("NaN"),
        dt.datetime(2026, 1, 2, 3, 4, 5),
        dt.date(2026, 1, 2),
        uuid.UUID(int=7),
        dt.timedelta(seconds=90),
        b"bytes",
        {1, 2},
        (1, "a"),
        (),
        [],
        {},
        [1, [2, [3]]],
        Spec({"m": Decimal("1")}),
        {1: "an int key"},
        {"a\x00": 1},
        {"k\ud800": 1},
        {Code("key"): 1},
        list(range(limits.MAX_ARRAY_ITEMS + 1)),
        ("s",) * (limits.MAX_ARRAY_ITEMS + 1),
    ]


def nested(levels: int, leaf: Any, container: type = dict) -> Any:
    for _ in range(levels):
        leaf = {"a": leaf} if container is dict else [leaf]
    return leaf


@pytest.mark.parametrize("index", range(len(_leaves())))
def test_a_containers_inline_checks_are_to_json_of_each_value(index):
    """A dict, a Mapping, a list and a tuple check their plain values inline; each value
    comes out as ``to_json`` of it alone at its path, or refused the same."""
    leaf = _leaves()[index]
    assert outcome(values.to_json, {"k": leaf}, "p") == outcome(
        lambda: {"k": values.to_json(leaf, "p.k", _depth=1)}
    )
    assert outcome(values.to_json, Spec({"k": leaf}), "p") == outcome(
        lambda: {"k": values.to_json(leaf, "p.k", _depth=1)}
    )
    for container in ([1, leaf], (1, leaf)):
        assert outcome(values.to_json, container, "p") == outcome(
            lambda: [1, values.to_json(leaf, "p[1]", _depth=1)]
        )


@pytest.mark.parametrize("container", [dict, list])
@pytest.mark.parametrize("leaf", [1, "x", [], {}, (), Decimal(1)])
def test_the_walk_counts_every_level_an_empty_container_too(container, leaf):
    """Containers may nest 11 deep (the outermost is level 0); an empty one, which the
    walk does not enter, is still refused past the limit, like any value that needs a
    conversion; a plain leaf is not a level."""
    assert outcome(values.to_json, nested(10, leaf, container), "p")[0] == "ok"
    beyond = outcome(values.to_json, nested(11, leaf, container), "p")
    if type(leaf) in (int, str):
        assert beyond == ("ok", nested(11, leaf, container))
    else:
        path = "p" + (".a" if container is dict else "[0]") * 11
        assert beyond == ("refused", f"{path} is nested more than 10 levels deep.", path)


def test_the_walk_copies_every_container():
    """What the walk returns shares no dict or list with its input: a caller changing
    its data afterwards does not change a cleaned payload."""
    data = {"a": [], "b": {}, "c": [{"d": []}], "e": ["x"]}
    cleaned = values.to_json(data, "p")
    assert cleaned == data
    data["a"].append(1)
    data["b"]["x"] = 1
    data["c"][0]["d"].append(1)
    data["e"].append("y")
    assert cleaned == {"a": [], "b": {}, "c": [{"d": []}], "e": ["x"]}
    assert type(values.to_json(Spec({"k": (1,)}), "p")) is dict
    assert values.to_json(Spec({"k": (1,)}), "p") == {"k": [1]}


KEYS = ["A-1", " spaced ", "é", "a\x00", "x\ud800", "k" * 255, "k" * 256, "", Code("A-1"), 5, None]


def general_key(value: Any, path: str) -> str:
    """``values.key`` as written before its fast path: check_text, always."""
    if not isinstance(value, str) or not value:
        raise KlaviyoValidationError(f"{path} must be a non-empty string.", field=path)
    if len(value) > limits.KEY_MAX_LENGTH:
        raise KlaviyoValidationError(
            f"{path} must be at most {limits.KEY_MAX_LENGTH} characters.", field=path
        )
    return values.check_text(value, path)


@pytest.mark.parametrize("value", KEYS)
def test_key_and_metric_take_plain_text_as_check_text_does(value):
    assert outcome(values.key, value, "unique_id") == outcome(general_key, value, "unique_id")
    metric = outcome(events.clean_metric, value, "metric")
    if isinstance(value, str) and value.strip() and len(value.strip()) <= 127:
        assert metric == outcome(values.check_text, value.strip(), "metric")
    else:
        assert metric[0] == "refused"
