"""Django set up as an app's own test suite would: settings, the app's table, a test client.

The database is the app's (EVENTRELAY_DATABASE_URL, as its settings read it); eventrelay's
plugin migrates eventrelay's tables there and empties them before each test. With
EVENTRELAY_DJANGO_DATABASE_URL on a SQLite file instead, the app has a database of its own
and eventrelay the plugin's SQLite file (separate databases).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.django_project.settings")


@pytest.fixture(scope="session")
def orders_table() -> Iterator[None]:
    import django
    from django.db import connection

    django.setup()
    from tests.apps.shop.models import Order

    with connection.schema_editor() as editor:
        editor.execute(f"DROP TABLE IF EXISTS {Order._meta.db_table}")
        editor.create_model(Order)
    yield
    with connection.schema_editor() as editor:
        editor.delete_model(Order)
    connection.close()


@pytest.fixture
def same_database(orders_table: None) -> None:
    """Skips a test of the same-database producers when the app is not on PostgreSQL."""
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip(f"same-database enqueue needs PostgreSQL; the app is on {connection.vendor}")


@pytest.fixture
def client(orders_table: None) -> Any:
    from django.test import Client

    from tests.apps.shop.models import Order

    Order.objects.all().delete()
    return Client(raise_request_exception=False)
