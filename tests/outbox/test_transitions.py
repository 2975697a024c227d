"""A saved object's status transition (django_klaviyo.outbox.transitions), shared by the
order receivers and the tracked models'."""

from __future__ import annotations

from types import SimpleNamespace

from django_klaviyo.outbox.transitions import remember, transition

SLOT = "_loaded"


def loaded(**fields):
    obj = SimpleNamespace(**fields)
    remember(obj, next(iter(fields)), SLOT)
    return obj


def test_a_change_moves_and_gives_the_previous_value():
    obj = loaded(status="trial")
    obj.status = "active"
    assert transition(obj, "status", SLOT, created=False) == (True, "trial")
    assert transition(obj, "status", SLOT, created=False) == (False, "active")


def test_a_creation_always_moves_and_a_deferred_status_is_unknown():
    obj = SimpleNamespace()
    remember(obj, "status", SLOT)  # deferred: not loaded
    obj.status = "active"
    assert transition(obj, "status", SLOT, created=True) == (True, None)


def test_update_fields_without_the_status_do_not_move_it_by_name_or_attname():
    obj = loaded(tier_id=1)
    obj.tier_id = 2
    assert transition(
        obj, "tier_id", SLOT, created=False, update_fields=frozenset({"note"}), name="tier"
    ) == (False, 1)
    obj.tier_id = 3
    assert transition(
        obj, "tier_id", SLOT, created=False, update_fields=frozenset({"tier"}), name="tier"
    ) == (True, 2)
