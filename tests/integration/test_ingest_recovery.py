"""The `eventrelay.ingest` task, fed by Celery-only producers, against a real worker whose
database connection runs through a proxy the tests can cut.

An ingest message is the only copy of its jobs until a worker records them: a database outage
must delay it, not drop it, and a message delivered twice must record its jobs once.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from eventrelay.worker.integrations.remote import INGEST_QUEUE, INGEST_TASK, job, send_jobs
from tests.conftest import TEST_ENV, _child_env
from tests.integration import jobs
from tests.integration.netfaults import TcpProxy
from tests.support import TEST_DB_NAME, Proc, start_worker, wait_for

pytestmark = pytest.mark.usefixtures("clean")


@pytest.fixture(scope="module")
def database_proxy(database_url: str) -> Iterator[TcpProxy]:
    proxy = TcpProxy(5432)
    proxy.open()
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def ingest_worker(database_proxy: TcpProxy, mock_vendors: Any, logs_dir: Path) -> Iterator[Proc]:
    """A worker for the ingest queue only, reaching PostgreSQL through the proxy."""
    env = _child_env(
        EVENTRELAY_DATABASE_URL=(
            f"postgresql+psycopg://postgres@127.0.0.1:{database_proxy.port}/{TEST_DB_NAME}"
        )
    )
    worker = start_worker(
        env, logs_dir / "ingest-worker.log", concurrency=1, queues=INGEST_QUEUE, name="ingest"
    )
    yield worker
    worker.kill()  # the module's checks are done: a warm stop only waits


@pytest.fixture
def producer() -> Iterator[Any]:
    from celery import Celery

    with Celery("shop", broker=TEST_ENV["EVENTRELAY_BROKER_URL"]) as app:
        yield app


def _rows() -> list[Any]:
    with get_engine().connect() as conn:
        return list(conn.execute(select(Delivery.idempotency_key, Delivery.operation)))


def _count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Delivery)).scalar_one())


def test_an_ingest_message_that_finds_the_database_down_is_retried_until_its_jobs_are_recorded(
    ingest_worker: Proc, database_proxy: TcpProxy, producer: Any
) -> None:
    database_proxy.close()
    try:
        result = send_jobs(producer, [job("vtcdn", "send_event", jobs.vtcdn_update())])
        wait_for(
            lambda: f"eventrelay.ingest[{result.id}] retry" in ingest_worker.output(),
            20,
            what="the worker to retry the ingest message",
        )
        assert _count() == 0
    finally:
        database_proxy.open()
    wait_for(lambda: _count() == 1, 60, what="the ingested job to be recorded")


@pytest.mark.parametrize("message_id", ["uuid", "a-producer-chosen-id-" + "x" * 280])
def test_an_ingest_message_delivered_twice_records_its_jobs_once(
    ingest_worker: Proc, producer: Any, message_id: str
) -> None:
    message_id = str(uuid.uuid4()) if message_id == "uuid" else message_id
    batch = [
        job("vtcdn", "send_event", jobs.vtcdn_update()),
        job("infobip", "send_event", jobs.infobip_event(), idempotency_key="cart-1"),
        job("botsi", "send_event", jobs.botsi_event("u-ingest")),
    ]
    # What the broker does when a worker took a message and died before acknowledging it.
    for _ in range(2):
        producer.send_task(INGEST_TASK, args=[batch], queue=INGEST_QUEUE, task_id=message_id)
    wait_for(
        lambda: ingest_worker.output().count(f"eventrelay.ingest[{message_id}] succeeded") == 2,
        20,
        what="the worker to run both copies",
    )
    keys = sorted(str(key) for key, _ in _rows())
    assert len(keys) == 3
    # The producer's key and the vendor's derived key stand; only the keyless job got one.
    assert keys[0] == "cart-1" and keys[1].startswith("impression:")
    assert keys[2].startswith("ingest:") and len(keys[2]) <= 255


def test_task_events_and_flower_show_how_many_jobs_an_ingest_message_carries_not_their_payloads(
    ingest_worker: Proc, producer: Any
) -> None:
    from eventrelay.worker.fleet.celery_app import get_app

    app = get_app()
    events: list[dict[str, Any]] = []
    heard = threading.Event()
    sent: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        heard.set()
        if event.get("type") == "task-succeeded" and event.get("uuid") in sent:
            receiver.should_stop = True

    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": on_event})
        listening = threading.Thread(
            target=lambda: receiver.capture(limit=None, timeout=30, wakeup=False), daemon=True
        )
        listening.start()
        heard.wait(10)  # a worker heartbeat: the receiver is subscribed
        secret_email = "private.person-93@example.com"
        result = send_jobs(
            producer,
            [
                job("vtcdn", "send_event", jobs.vtcdn_update(email=secret_email)),
                job("vtcdn", "send_event", jobs.vtcdn_generic(email=secret_email)),
            ],
        )
        sent.append(result.id)
        listening.join(30)

    ours = [e for e in events if e.get("uuid") == result.id]
    received = [e for e in ours if e["type"] == "task-received"]
    assert received and received[0]["args"] == "[<2 jobs>]"
    assert received[0]["kwargs"] == "{}"
    assert any(e["type"] == "task-succeeded" for e in ours)
    assert secret_email not in repr(ours)
