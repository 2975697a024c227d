"""Issue 19, case 6: identities no one can hijack. A logged-in shopper's events are about
her, never about a ``_kx`` from a link or a ``cid`` from a cookie someone planted; an
anonymous id lasts only until the shopper is identified (docs/storefront.md, "Who an
event is about")."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.storefront.visitors import (
    VIEW,
    kla_cookie,
    last_profile,
    new_visitor,
    post,
)

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.urls("tests.projects.storefront_urls"),
    pytest.mark.usefixtures("fresh_throttle"),
]


def test_a_kx_in_a_link_does_not_attach_to_a_logged_in_shopper(visitor, django_user_model):
    user = django_user_model.objects.create_user("ada", email="ada@example.com")
    visitor.force_login(user)
    # Someone sends her a shop link carrying their own exchange id.
    visitor.get(reverse("shop:products"), {"_kx": "attacker.KX"})

    assert post(visitor, VIEW).status_code == 202

    assert last_profile() == {"email": "ada@example.com", "external_id": str(user.pk)}
    assert "klaviyo_kx" not in visitor.session


def test_a_klaviyo_cookie_does_not_attach_to_a_logged_in_shopper(visitor, django_user_model):
    user = django_user_model.objects.create_user("ada", email="ada@example.com")
    visitor.force_login(user)
    visitor.cookies["__kla_id"] = kla_cookie({"cid": "planted", "$exchange_id": "planted.KX"})

    post(visitor, VIEW)

    assert last_profile() == {"email": "ada@example.com", "external_id": str(user.pk)}


def test_the_anonymous_id_is_dropped_once_the_shopper_logs_in(visitor, django_user_model):
    visitor.get(reverse("shop:products"), {"_kx": "kx.Before"})
    post(visitor, VIEW)
    assert set(last_profile()) == {"anonymous_id", "_kx"}
    user = django_user_model.objects.create_user("ada", email="ada@example.com")
    visitor.force_login(user)  # login keeps the session's data

    post(visitor, VIEW)

    assert last_profile() == {"email": "ada@example.com", "external_id": str(user.pk)}
    assert "klaviyo_anonymous_id" not in visitor.session
    assert "klaviyo_kx" not in visitor.session


def test_an_anonymous_visitor_still_gets_the_cookie_and_link_ids(django_user_model):
    visitor = new_visitor(_kx="kx.Mine")
    visitor.cookies["__kla_id"] = kla_cookie({"cid": "Y2lk"})
    post(visitor, VIEW)
    assert last_profile() == {"anonymous_id": "Y2lk", "_kx": "kx.Mine"}
