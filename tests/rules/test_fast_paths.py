"""The save path's specialisations of the rules give what the general rules give.

Each rule on the save path has a fast path for the usual values (plain text, numbers,
dicts and lists of them, an email, a UTC time). These tests hold each fast path equal to
the general rule it specialises on the inputs where they could diverge.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_email as django_validate_email

from django_klaviyo.exceptions import KlaviyoValidationError
from django_klaviyo.rules import identifiers

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
