"""The filter builder: Klaviyo's syntax, quoting, and hostile values that must stay values."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from django_klaviyo.client import filters as f
from django_klaviyo.exceptions import KlaviyoValidationError

# What a well-formed expression looks like: operator(field,value) where a string value is
# "..." with only \\ and \" escapes inside. Used to prove hostile input stays one literal.
STRING_LITERAL = r'"(?:[^"\\]|\\.)*"'
ONE_COMPARISON = re.compile(rf"^equals\(email,({STRING_LITERAL})\)$")


def unquote(literal: str) -> str:
    return re.sub(r"\\(.)", r"\1", literal[1:-1])


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (f.equals("email", "a@example.com"), 'equals(email,"a@example.com")'),
        (f.any_("id", ["a", "b"]), 'any(id,["a","b"])'),
        (f.greater_than("updated", 5), "greater-than(updated,5)"),
        (f.greater_or_equal("value", 2.5), "greater-or-equal(value,2.5)"),
        (f.less_than("count", Decimal("10.00")), "less-than(count,10.00)"),
        (f.less_or_equal("count", -3), "less-or-equal(count,-3)"),
        (f.contains("name", "Sale"), 'contains(name,"Sale")'),
        (f.starts_with("name", "Jan"), 'starts-with(name,"Jan")'),
        (f.ends_with("name", "2026"), 'ends-with(name,"2026")'),
        (f.has("tags", "vip"), 'has(tags,"vip")'),
        (f.equals("archived", False), "equals(archived,false)"),
        (f.equals("archived", True), "equals(archived,true)"),
        (f.equals("title", None), "equals(title,null)"),
        (f.equals("messages.channel", "email"), 'equals(messages.channel,"email")'),
        (f.any_("id", (1, "x", None)), 'any(id,[1,"x",null])'),
    ],
)
def test_operators_render_klaviyo_syntax(built, expected):
    assert str(built) == expected


def test_datetimes_are_iso_and_unquoted():
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert str(f.greater_than("updated", when)) == "greater-than(updated,2026-01-02T03:04:05+00:00)"
    plus_two = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert str(f.less_than("created", plus_two)).endswith("2026-01-02T03:04:05+02:00)")
    assert str(f.equals("day", date(2026, 7, 15))) == "equals(day,2026-07-15)"
    with pytest.raises(KlaviyoValidationError, match="time zone"):
        f.greater_than("updated", datetime(2026, 1, 2))


def test_and_combines_built_filters_only():
    combined = f.and_(f.equals("email", "a@x.com"), f.greater_than("updated", 1))
    assert str(combined) == 'and(equals(email,"a@x.com"),greater-than(updated,1))'
    assert f.and_(f.equals("id", "1")) == f.equals("id", "1")
    with pytest.raises(KlaviyoValidationError, match="Filter objects"):
        f.and_(f.equals("id", "1"), 'equals(id,"2")')  # type: ignore[arg-type]
    with pytest.raises(KlaviyoValidationError):
        f.and_()


@pytest.mark.parametrize(
    "hostile",
    [
        'a"b@x.com',
        "x,y)",
        'x"),equals(id,"y',
        "back\\slash",
        'trailing\\"',
        "\\",
        '"',
        "'single'",
        "]),any(id,[",
        "",
    ],
)
def test_hostile_values_cannot_change_the_structure(hostile):
    expression = str(f.equals("email", hostile))
    match = ONE_COMPARISON.match(expression)
    assert match, expression
    assert unquote(match.group(1)) == hostile


def test_hostile_values_inside_lists_stay_elements():
    hostile = ['a"],equals(id,"x', "b\\", "c)"]
    expression = str(f.any_("email", hostile))
    inner = expression[len("any(email,[") : -2]
    literals = re.findall(STRING_LITERAL, inner)
    assert ",".join(literals) == inner
    assert [unquote(x) for x in literals] == hostile


@pytest.mark.parametrize(
    "field", ["", "1abc", "email)", "email,x", 'a"b', "a b", "a(b", None, 5, "équipe"]
)
def test_invalid_field_names_are_refused(field):
    with pytest.raises(KlaviyoValidationError, match="field name"):
        f.equals(field, "x")  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["email", "_kx", "messages.channel", "a-b_c.d9"])
def test_valid_field_names(field):
    assert str(f.equals(field, 1)) == f"equals({field},1)"


@pytest.mark.parametrize(
    "value", [float("nan"), float("inf"), Decimal("NaN"), object(), b"bytes", {"a": 1}]
)
def test_unrenderable_values_are_refused(value):
    with pytest.raises(KlaviyoValidationError):
        f.equals("x", value)


def test_control_characters_and_bad_lists_are_refused():
    with pytest.raises(KlaviyoValidationError, match="control"):
        f.equals("email", "a\nb")
    with pytest.raises(KlaviyoValidationError, match="list"):
        f.any_("id", "abc")
    with pytest.raises(KlaviyoValidationError, match="at least one"):
        f.any_("id", [])
    with pytest.raises(KlaviyoValidationError):
        f.any_("id", [["nested"]])
