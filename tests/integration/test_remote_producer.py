"""Producers with only Celery installed: `send_task("eventrelay.ingest", ...)` to a real worker."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from eventrelay.worker.integrations.remote import INGEST_QUEUE, INGEST_TASK, job, send_jobs
from tests.conftest import TEST_ENV
from tests.integration import jobs
from tests.integration.helpers import wait_status
from tests.support import ROOT, wait_for

pytestmark = pytest.mark.usefixtures("clean", "pipeline")

BROKER_URL = TEST_ENV["EVENTRELAY_BROKER_URL"]


def delivery_with_key(key: str) -> Any:
    with get_engine().connect() as conn:
        return conn.execute(select(Delivery.id).where(Delivery.idempotency_key == key)).scalar()


@pytest.fixture
def producer() -> Iterator[Any]:
    """A plain Celery app, configured with nothing but the broker."""
    from celery import Celery

    with Celery("shop", broker=BROKER_URL) as app:
        yield app


@pytest.mark.parametrize("mode", ["standalone", "installed"])
def test_a_celery_only_producer_gets_its_job_recorded_and_delivered(
    mode: str, child_env: Any, mock_vendors: Any
) -> None:
    key = f"remote-{mode}"
    # The producer's EVENTRELAY_DATABASE_URL leads nowhere: sending must not need the database.
    env = child_env(EVENTRELAY_DATABASE_URL="postgresql+psycopg://nobody@127.0.0.1:9/nowhere")
    sent = subprocess.run(
        [sys.executable, "-m", "tests.apps.celery_only_producer", mode, BROKER_URL, key],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stderr
    imported = sent.stdout.split()
    if mode == "standalone":
        assert imported == []  # neither eventrelay nor SQLAlchemy was needed
    else:
        # Installed, it is imported under eventrelay's name, and still pulls in nothing heavy:
        # no SQLAlchemy, no pydantic, no settings, no database driver.
        assert "eventrelay.worker.integrations.remote" in imported
        assert not [m for m in imported if not m.startswith("eventrelay")], imported
    delivery_id = wait_for(lambda: delivery_with_key(key), 10, what="the ingested job's row")
    wait_status(delivery_id, "delivered", timeout=10)
    [request] = mock_vendors.received("vtcdn")
    assert request["body"]["user"] == {"email": f"{key}@example.com"}


def test_an_invalid_job_is_refused_whole_and_the_worker_keeps_going(
    producer: Any, pipeline: Any, mock_vendors: Any
) -> None:
    bad = job("vtcdn", "send_event", {"user": {}}, "remote-bad")
    good_in_bad_batch = job("vtcdn", "send_event", jobs.vtcdn_update(), "remote-bad-batch")
    send_jobs(producer, [good_in_bad_batch, bad])
    producer.send_task(INGEST_TASK, args=["not a list of jobs"], queue=INGEST_QUEUE)
    send_jobs(producer, [job("vtcdn", "send_event", jobs.vtcdn_update(), "remote-good")])

    worker = pipeline["worker"]
    wait_for(
        lambda: (
            "refused ingested jobs: job #1: invalid job: payload" in worker.output()
            and "dropping malformed ingest message" in worker.output()
        ),
        10,
        what="the worker to log both refusals",
    )
    good = wait_for(lambda: delivery_with_key("remote-good"), 10, what="the valid job's row")
    wait_status(good, "delivered", timeout=10)
    assert delivery_with_key("remote-bad") is None
    assert delivery_with_key("remote-bad-batch") is None  # all or nothing
    assert len(mock_vendors.received("vtcdn")) == 1
    assert worker.popen.poll() is None
