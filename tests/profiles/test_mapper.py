"""The default user mapper: a user's profile attributes, and a bad phone left out."""

import logging

from django.contrib.auth import get_user_model

from django_klaviyo.profiles.mapper import default_user_profile


def test_default_user_profile(db):
    user = get_user_model()(pk=7, email="ada@example.com", first_name="Ada", last_name="")
    user.phone_number = "+44 20 7946 0958"
    assert default_user_profile(user) == {
        "email": "ada@example.com",
        "external_id": "7",
        "first_name": "Ada",
        "phone_number": "+442079460958",
    }
    assert default_user_profile(get_user_model()()) is None


def test_default_user_profile_leaves_out_a_bad_phone_with_a_warning(caplog):
    user = get_user_model()(pk=8, email="bob@example.com")
    user.phone_number = "call me maybe"
    with caplog.at_level(logging.WARNING, logger="django_klaviyo.profiles.mapper"):
        profile = default_user_profile(user)
    assert profile == {"email": "bob@example.com", "external_id": "8"}
    assert "user 8" in caplog.text
    assert "call me maybe" not in caplog.text
