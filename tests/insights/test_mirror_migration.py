"""Migration 0012 keeps the list, campaign and flow mirrors on the default account."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("django_klaviyo", "0011_klaviyo_jobs")]
AFTER = [("django_klaviyo", "0012_segments_accounts")]


@pytest.fixture
def whole_schema_afterwards():
    """Leave every migration applied for the tests after this one (0013 and later)."""
    yield
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("whole_schema_afterwards")
def test_existing_mirror_rows_stay_on_the_default_account():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    old.get_model("django_klaviyo", "KlaviyoList").objects.create(klaviyo_id="L1", name="News")
    old.get_model("django_klaviyo", "KlaviyoFlow").objects.create(klaviyo_id="F1", name="Welcome")
    old.get_model("django_klaviyo", "KlaviyoCampaign").objects.create(klaviyo_id="C1", name="Sale")

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    new = executor.loader.project_state(AFTER).apps
    for model, klaviyo_id in (
        ("KlaviyoList", "L1"),
        ("KlaviyoFlow", "F1"),
        ("KlaviyoCampaign", "C1"),
    ):
        rows = new.get_model("django_klaviyo", model).objects.values_list("account", "klaviyo_id")
        assert list(rows) == [("", klaviyo_id)], model
    # The same id in another account is another row now.
    lists = new.get_model("django_klaviyo", "KlaviyoList").objects
    lists.create(account="eu", klaviyo_id="L1", name="News EU")
    assert lists.filter(klaviyo_id="L1").count() == 2
