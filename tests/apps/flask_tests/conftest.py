"""The Flask sample app (tests/apps/flask_app.py) on the database eventrelay's plugin gives
the test: its SQLite file, or the app's test database if EVENTRELAY_DATABASE_URL is set."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def client(eventrelay_outbox: Any) -> Iterator[Any]:
    from tests.apps.flask_app import Order, create_app, db

    app = create_app(eventrelay_outbox.database_url)
    with app.app_context():
        db.create_all()
        db.session.execute(Order.__table__.delete())
        db.session.commit()
    yield app.test_client()
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
