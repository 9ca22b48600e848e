"""A real Django project (psycopg 3, eventrelay's PostgreSQL database) producing jobs.

Requests go through Django's handler with its test `Client`; the real Celery worker and
scheduler deliver to the mock vendor server.
"""

from __future__ import annotations

import json
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
from tests.support import ROOT, env_vars, start_scheduler

pytestmark = pytest.mark.usefixtures("clean", "pipeline")

SETTINGS_MODULE = "tests.apps.django_project.settings"


@pytest.fixture(scope="module")
def django_db(database_url: str) -> Iterator[None]:
    """Django set up on the test database, with the shop's order table."""
    with env_vars(
        EVENTRELAY_DJANGO_DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE=SETTINGS_MODULE
    ):
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


@pytest.fixture(autouse=True)
def no_orders(django_db: None) -> None:
    from tests.apps.shop.models import Order

    Order.objects.all().delete()


@pytest.fixture
def client() -> Any:
    from django.test import Client

    return Client(raise_request_exception=False)


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


def orders() -> list[str]:
    from tests.apps.shop.models import Order

    return sorted(Order.objects.values_list("number", flat=True))


def delivery_count() -> int:
    with get_engine().connect() as conn:
        return conn.execute(select(func.count()).select_from(Delivery)).scalar_one()


def post(client: Any, path: str, **body: Any) -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json")


def test_order_and_job_commit_together_and_the_job_is_delivered(
    client: Any, mock_vendors: Any
) -> None:
    response = post(client, "/orders", number="A-1", email="ana@example.com")
    assert response.status_code == 201, response.content
    row = wait_status(response.json()["delivery_id"], "delivered", timeout=10)
    assert row.idempotency_key == "order-A-1"
    assert orders() == ["A-1"]
    [sent] = mock_vendors.received("vtcdn")
    assert sent["body"]["user"] == {"email": "ana@example.com"}


def test_a_view_that_fails_after_enqueueing_stores_and_sends_nothing(
    client: Any, mock_vendors: Any, published: list[str]
) -> None:
    response = post(client, "/orders", number="A-2", email="ana@example.com", decline=True)
    assert response.status_code == 500
    assert orders() == []
    assert delivery_count() == 0
    assert published == []  # nothing for a worker to send


def test_the_job_is_part_of_djangos_open_transaction(mock_vendors: Any) -> None:
    from django.db import connection, transaction

    from eventrelay.worker.integrations import django as integration
    from tests.apps.shop.models import Order

    # A fresh engine: SQLAlchemy's first connect (dialect setup, then a rollback) happens here,
    # inside the block, and must not undo the order created before it.
    integration._engines.clear()
    with transaction.atomic():
        Order.objects.create(number="A-3", email="ana@example.com")
        receipt = integration.enqueue("vtcdn", "send_event", jobs.vtcdn_update())
        with connection.cursor() as cursor:  # Django's own connection sees the row...
            cursor.execute("SELECT status FROM deliveries WHERE id = %s", [receipt.delivery_id])
            assert cursor.fetchone() == ("pending",)
        assert delivery_count() == 0  # ...no other connection does before the commit
        assert connection.in_atomic_block and not connection.needs_rollback
        Order.objects.create(number="A-4", email="ana@example.com")
    assert orders() == ["A-3", "A-4"]  # rows from before and after the enqueue both committed
    wait_status(receipt.delivery_id, "delivered", timeout=10)


def test_a_savepoint_rolled_back_takes_its_job_with_it(
    mock_vendors: Any, published: list[str]
) -> None:
    from django.db import transaction

    from eventrelay.worker.integrations.django import enqueue

    with transaction.atomic():
        kept = enqueue("vtcdn", "send_event", jobs.vtcdn_update(email="kept@example.com"))
        try:
            with transaction.atomic():
                enqueue("gravityfield", "send_event", jobs.gravityfield_event())
                raise RuntimeError("out of stock")
        except RuntimeError:
            pass
    wait_status(kept.delivery_id, "delivered", timeout=10)
    assert delivery_count() == 1
    assert published == [str(kept.delivery_id)]
    assert mock_vendors.received("gravityfield") == []


def test_outside_an_atomic_block_the_job_commits_at_once() -> None:
    from django.db import connection

    from eventrelay.worker.integrations.django import enqueue

    receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update())
    assert connection.get_autocommit()
    wait_status(receipt.delivery_id, "delivered", timeout=10)


def test_an_invalid_job_raises_and_the_transaction_goes_on() -> None:
    from django.db import transaction

    from eventrelay.worker.errors import InvalidJob
    from eventrelay.worker.integrations.django import enqueue
    from tests.apps.shop.models import Order

    with transaction.atomic():
        Order.objects.create(number="A-5", email="ana@example.com")
        with pytest.raises(InvalidJob) as refused:
            enqueue("vtcdn", "send_event", {"user": {}})
        assert "payload" in str(refused.value)
    assert orders() == ["A-5"] and delivery_count() == 0


def test_separate_database_helper_enqueues_only_after_commit(
    client: Any, mock_vendors: Any
) -> None:
    declined = post(client, "/orders-elsewhere", number="B-1", email="b@example.com", decline=1)
    assert declined.status_code == 500
    assert delivery_count() == 0
    response = post(client, "/orders-elsewhere", number="B-2", email="b@example.com")
    assert response.status_code == 201
    with get_engine().connect() as conn:
        [delivery_id] = conn.execute(
            select(Delivery.id).where(Delivery.idempotency_key == "order-B-2")
        ).scalars()
    wait_status(delivery_id, "delivered", timeout=10)
    assert orders() == ["B-2"]
    assert len(mock_vendors.received("vtcdn")) == 1


def test_a_producer_killed_right_after_commit_still_gets_its_job_delivered(
    child_env: Any, logs_dir: Path, mock_vendors: Any
) -> None:
    env = child_env(DJANGO_SETTINGS_MODULE=SETTINGS_MODULE)
    producer = subprocess.run(
        [sys.executable, "-m", "tests.apps.killed_producer", "django", "K-1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert producer.returncode == -signal.SIGKILL, producer.stderr
    delivery_id = producer.stdout.strip()
    assert orders() == ["K-1"]  # committed before the kill
    time.sleep(1)
    # Never published: the pipeline's scheduler would republish only after 300 s.
    assert str(delivery(delivery_id).status) == "pending"
    assert mock_vendors.received("vtcdn") == []
    # A scheduler that republishes what was marked published 1 s ago without being taken.
    scheduler = start_scheduler(
        child_env(EVENTRELAY_REDISPATCH_AFTER_SECONDS="1"), logs_dir / "django-killed.log"
    )
    try:
        wait_status(delivery_id, "delivered", timeout=10)
    finally:
        scheduler.stop()
    assert len(mock_vendors.received("vtcdn")) == 1
