"""A failing SQL statement never carries a job's payload into an exception, and so into logs.

SQLAlchemy puts a statement's parameters into the text of its errors unless the engine is
created with `hide_parameters=True`; a delivery's parameters are the user's data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.exc import DBAPIError, StatementError

from eventrelay.models.base import Base, utcnow
from eventrelay.models.delivery import DELIVERIES
from eventrelay.models.session import get_engine, make_engine
from tests.support import env_vars

PII = "ana.pii-7c1e@example.com"


def _row() -> dict[str, Any]:
    now = utcnow()
    return {
        "id": uuid.uuid4(),
        "vendor": "vtcdn",
        "operation": "send_event",
        "payload": {"user": {"email": PII}, "event": {"update": {}}},
        "user_ref": PII,
        "status": "pending",
        "lane": "fresh",
        "attempts": 0,
        "next_attempt_at": now,
        "window_started_at": now,
        "window_base_attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def _insert_twice(engine: Engine) -> str:
    """Insert one delivery twice (a primary-key clash); returns the error's text."""
    row = _row()
    with pytest.raises((DBAPIError, StatementError)) as caught, engine.begin() as conn:
        conn.execute(insert(DELIVERIES), row)
        conn.execute(insert(DELIVERIES), row)
    return str(caught.value) + repr(caught.value)


@pytest.mark.usefixtures("clean")
def test_a_failing_statement_on_postgresql_does_not_show_the_payload() -> None:
    text = _insert_twice(get_engine())
    assert "duplicate key" in text  # it did fail, and says why
    assert PII not in text


def test_a_failing_statement_on_sqlite_does_not_show_the_payload(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'eventrelay.db'}")
    try:
        Base.metadata.create_all(engine)
        text = _insert_twice(engine)
    finally:
        engine.dispose()
    assert "UNIQUE constraint failed" in text
    assert PII not in text


@pytest.fixture
def django_engine(database_url: str) -> Iterator[Any]:
    """eventrelay's engine on a Django project's connection (the same-database integration)."""
    with env_vars(
        EVENTRELAY_DJANGO_DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="tests.apps.django_project.settings",
    ):
        import django

        django.setup()
        from django.db import connection

        from eventrelay.worker.integrations.django import _engine

        yield _engine("default")
        connection.close()


@pytest.mark.usefixtures("clean")
def test_a_failing_statement_on_djangos_connection_does_not_show_the_payload(
    django_engine: Any,
) -> None:
    from django.db import transaction

    row = _row()
    with (
        pytest.raises((DBAPIError, StatementError)) as caught,
        transaction.atomic(),
        django_engine.connect() as conn,
    ):
        conn.execute(insert(DELIVERIES), row)
        conn.execute(insert(DELIVERIES), row)
    text = str(caught.value) + repr(caught.value)
    assert "duplicate key" in text
    assert PII not in text
