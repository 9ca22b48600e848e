"""A real Flask app with Flask-SQLAlchemy on eventrelay's PostgreSQL database, producing jobs.

Requests go through Flask's `test_client()`; the real Celery worker and scheduler deliver to the
mock vendor server.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from tests.integration import jobs
from tests.integration.helpers import delivery, wait_status
from tests.support import ROOT, start_scheduler

pytestmark = pytest.mark.usefixtures("clean", "pipeline")


@pytest.fixture(scope="module")
def app(database_url: str) -> Iterator[Any]:
    from tests.apps.flask_app import Order, create_app, db

    app = create_app(database_url)
    with app.app_context():
        Order.__table__.drop(db.engine, checkfirst=True)
        db.create_all()
    yield app
    with app.app_context():
        Order.__table__.drop(db.engine)
        db.engine.dispose()


@pytest.fixture
def client(app: Any) -> Any:
    from tests.apps.flask_app import Order, db

    with app.app_context():
        db.session.execute(Order.__table__.delete())
        db.session.commit()
    return app.test_client()


@pytest.fixture
def published() -> Iterator[list[str]]:
    """Delivery ids this process publishes, seen through Celery's `before_task_publish`."""
    from celery.signals import before_task_publish

    ids: list[str] = []

    def record(sender: str | None = None, body: Any = None, **_: Any) -> None:
        if sender == "eventrelay.deliver":
            ids.extend(body[0][1])

    before_task_publish.connect(record, weak=False)
    yield ids
    before_task_publish.disconnect(record)


def orders(app: Any) -> list[str]:
    from tests.apps.flask_app import Order, db

    with app.app_context():
        return sorted(db.session.scalars(select(Order.number)))


def delivery_count() -> int:
    with get_engine().connect() as conn:
        return conn.execute(select(func.count()).select_from(Delivery)).scalar_one()


def test_committed_order_and_job_commit_together_and_the_job_is_delivered(
    app: Any, client: Any, mock_vendors: Any
) -> None:
    response = client.post("/orders", json={"number": "F-1", "email": "ana@example.com"})
    assert response.status_code == 201, response.text
    row = wait_status(response.json["delivery_id"], "delivered", timeout=10)
    assert row.idempotency_key == "order-F-1"
    assert orders(app) == ["F-1"]
    [sent] = mock_vendors.received("vtcdn")
    assert sent["body"]["user"] == {"email": "ana@example.com"}


@pytest.mark.parametrize("decline", ["rollback", "raise"])
def test_a_request_that_does_not_commit_stores_and_sends_nothing(
    app: Any, client: Any, mock_vendors: Any, published: list[str], decline: str
) -> None:
    response = client.post(
        "/orders", json={"number": "F-2", "email": "ana@example.com", "decline": decline}
    )
    assert response.status_code == (402 if decline == "rollback" else 500)
    assert orders(app) == []
    assert delivery_count() == 0
    assert published == []  # nothing for a worker to send


def test_a_rolled_back_savepoint_drops_its_job_and_the_rest_is_delivered(
    app: Any, client: Any, mock_vendors: Any, published: list[str]
) -> None:
    response = client.post("/orders-with-gift", json={"number": "F-3", "email": "g@example.com"})
    assert response.status_code == 201, response.text
    wait_status(response.json["delivery_id"], "delivered", timeout=10)
    assert orders(app) == ["F-3"]
    assert delivery_count() == 1  # the gift's delivery row went with its savepoint...
    assert published == [response.json["delivery_id"]]  # ...and its publish with it
    assert mock_vendors.received("gravityfield") == []


def test_a_released_savepoint_publishes_only_when_the_outer_transaction_commits(
    app: Any, client: Any, published: list[str]
) -> None:
    from eventrelay.worker.integrations.flask import eventrelay_enqueue
    from tests.apps.flask_app import Order, db

    with app.app_context():
        db.session.add(Order(number="F-7", email="s@example.com"))
        savepoint = db.session.begin_nested()
        receipt = eventrelay_enqueue(db.session, "vtcdn", "send_event", jobs.vtcdn_update())
        savepoint.commit()  # SQLAlchemy fires after_commit here too
        assert published == []
        db.session.commit()
        assert published == [str(receipt.delivery_id)]
    wait_status(receipt.delivery_id, "delivered", timeout=10)


def test_a_session_closed_without_commit_forgets_its_jobs(
    app: Any, client: Any, published: list[str]
) -> None:
    from eventrelay.worker.integrations.flask import eventrelay_enqueue
    from tests.apps.flask_app import Order, db

    with app.app_context():
        session = db.session()
        session.add(Order(number="F-8", email="s@example.com"))
        eventrelay_enqueue(session, "vtcdn", "send_event", jobs.vtcdn_update())
        session.close()  # the same Session object is used again below
        session.add(Order(number="F-9", email="s@example.com"))
        session.commit()
    assert orders(app) == ["F-9"]
    assert published == [] and delivery_count() == 0


def test_separate_database_helper_enqueues_only_after_commit(
    app: Any, client: Any, mock_vendors: Any
) -> None:
    declined = client.post(
        "/orders-elsewhere",
        json={"number": "F-4", "email": "b@example.com", "decline": "rollback"},
    )
    assert declined.status_code == 402
    assert delivery_count() == 0
    response = client.post("/orders-elsewhere", json={"number": "F-5", "email": "b@example.com"})
    assert response.status_code == 201
    with get_engine().connect() as conn:
        [delivery_id] = conn.execute(
            select(Delivery.id).where(Delivery.idempotency_key == "order-F-5")
        ).scalars()
    wait_status(delivery_id, "delivered", timeout=10)
    assert orders(app) == ["F-5"]
    assert len(mock_vendors.received("vtcdn")) == 1


def test_an_invalid_job_raises_before_anything_is_written(app: Any, client: Any) -> None:
    from eventrelay.worker.errors import InvalidJob
    from eventrelay.worker.integrations.flask import eventrelay_enqueue
    from tests.apps.flask_app import Order, db

    with app.app_context():
        db.session.add(Order(number="F-6", email="c@example.com"))
        with pytest.raises(InvalidJob) as refused:
            eventrelay_enqueue(db.session, "vtcdn", "send_event", {"user": {}})
        assert refused.value.index == 0
        db.session.commit()
    assert orders(app) == ["F-6"] and delivery_count() == 0


def test_a_producer_killed_right_after_commit_still_gets_its_job_delivered(
    app: Any, client: Any, child_env: Any, logs_dir: Path, mock_vendors: Any, database_url: str
) -> None:
    producer = subprocess.run(
        [sys.executable, "-m", "tests.apps.killed_producer", "flask", "K-2"],
        env=child_env(EVENTRELAY_DATABASE_URL=database_url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert producer.returncode == -signal.SIGKILL, producer.stderr
    delivery_id = producer.stdout.strip()
    assert orders(app) == ["K-2"]  # committed before the kill
    time.sleep(1)
    # Never published: the pipeline's scheduler would republish only after 300 s.
    assert str(delivery(delivery_id).status) == "pending"
    assert mock_vendors.received("vtcdn") == []
    # A scheduler that republishes what was marked published 1 s ago without being taken.
    scheduler = start_scheduler(
        child_env(EVENTRELAY_REDISPATCH_AFTER_SECONDS="1"), logs_dir / "flask-killed.log"
    )
    try:
        wait_status(delivery_id, "delivered", timeout=10)
    finally:
        scheduler.stop()
    assert len(mock_vendors.received("vtcdn")) == 1
    assert (
        jobs.vtcdn_update(name="K-2")["event"] == mock_vendors.received("vtcdn")[0]["body"]["event"]
    )
