"""Circuit breaker shared through Redis, and graceful shutdown of a worker."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from eventrelay.worker.fleet import breaker
from eventrelay.worker.producer import enqueue, enqueue_many
from tests.conftest import TEST_ENV
from tests.integration import jobs
from tests.integration.helpers import delivery
from tests.support import start_worker, wait_for

URL = TEST_ENV["EVENTRELAY_REDIS_URL"]


@pytest.mark.usefixtures("clean")
def test_breaker_opens_after_repeated_failures_then_one_probe_closes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(breaker, "OPEN_SECONDS", 0.5)
    for _ in range(breaker.FAILURE_THRESHOLD - 1):
        assert breaker.record_failure("vtcdn", URL) is False
    assert breaker.check("vtcdn", URL).allowed
    assert breaker.record_failure("vtcdn", URL) is True
    gate = breaker.check("vtcdn", URL)
    assert not gate.allowed and 0 < gate.wait_seconds <= 0.5
    assert breaker.state("vtcdn", URL) == "open"
    assert breaker.check("botsi", URL).allowed  # other vendors are not affected
    time.sleep(0.6)
    probe = breaker.check("vtcdn", URL)
    assert probe.allowed and probe.probe  # exactly one process gets to probe...
    assert not breaker.check("vtcdn", URL).allowed  # ...the others keep waiting
    breaker.record_success("vtcdn", URL)
    assert breaker.state("vtcdn", URL) == "closed" and breaker.check("vtcdn", URL).allowed


@pytest.mark.usefixtures("clean")
def test_a_failed_probe_opens_the_circuit_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(breaker, "OPEN_SECONDS", 0.3)
    for _ in range(breaker.FAILURE_THRESHOLD):
        breaker.record_failure("infobip", URL)
    time.sleep(0.4)
    assert breaker.check("infobip", URL).probe
    assert breaker.record_failure("infobip", URL) is True
    assert breaker.state("infobip", URL) == "open"


@pytest.mark.usefixtures("clean")
def test_sigterm_lets_in_flight_deliveries_finish_and_leaves_nothing_claimed(
    mock_vendors: Any, logs_dir: Path, child_env: Any
) -> None:
    mock_vendors.set_faults("gravityfield", latency_ms=700)
    worker = start_worker(
        child_env(),
        logs_dir / "sigterm-worker.log",
        concurrency=2,
        queues="eventrelay.gravityfield",
        name="sigterm",
    )
    receipts = enqueue_many(
        {
            "vendor": "gravityfield",
            "operation": "send_event",
            "payload": jobs.gravityfield_event(uid=f"t{i}"),
        }
        for i in range(6)
    )

    def in_flight() -> int:
        with get_engine().connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.status == "delivering")
                ).scalar_one()
            )

    wait_for(in_flight, 15, interval=0.02, what="deliveries in flight")
    worker.popen.send_signal(signal.SIGTERM)  # to the main process, as systemd or docker stop do
    worker.popen.wait(30)
    worker.stop()
    assert in_flight() == 0  # nothing left claimed
    states = [str(delivery(r.delivery_id).status) for r in receipts]
    assert "delivered" in states and set(states) <= {"delivered", "pending"}
    assert len(mock_vendors.received("gravityfield")) == states.count("delivered")


@pytest.mark.usefixtures("clean")
def test_a_wrong_gravityfield_token_parks_the_vendor_and_its_job_waits_not_dead(
    mock_vendors: Any, logs_dir: Path, child_env: Any
) -> None:
    # Gravity Field answers a wrong token with 403 (the mock does too), not 401.
    worker = start_worker(
        child_env(GRAVITYFIELD_TOKEN="not-the-token"),
        logs_dir / "wrong-token-worker.log",
        concurrency=1,
        queues="eventrelay.gravityfield,eventrelay.gravityfield.retry",
        name="wrongtoken",
    )
    try:
        receipt = enqueue("gravityfield", "send_event", jobs.gravityfield_event())
        wait_for(lambda: breaker.state("gravityfield", URL) == "parked", 20, what="parking")
        reason = breaker.parked_reason("gravityfield", URL) or ""
        assert "credentials rejected (HTTP 403)" in reason and "GRAVITYFIELD_TOKEN" in reason
        time.sleep(0.5)
        row = delivery(receipt.delivery_id)
        assert str(row.status) == "pending"  # waits, spends nothing of its budget
        assert row.attempts - row.window_base_attempts == 0
        assert [r["status"] for r in mock_vendors.received("gravityfield")] == [403]
    finally:
        worker.kill()
