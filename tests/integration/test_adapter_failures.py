"""An adapter that raises is retried, then dead-lettered with the exception's summary.

Drives a pump in this process (no Celery worker consumes these queues here), so the adapter
can be made to fail on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import update

from eventrelay.models.base import utcnow
from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from eventrelay.worker.config import get_settings
from eventrelay.worker.engine.pump import Pump
from eventrelay.worker.producer import enqueue
from eventrelay.worker.vendors import get_vendor
from tests.integration import jobs
from tests.integration.helpers import attempts, delivery
from tests.support import wait_for


@pytest.fixture
def pump() -> Iterator[Pump]:
    started = Pump(get_settings())
    yield started
    started.drain(5.0)


def _attempted(pump: Pump, vendor: str, delivery_id: Any, times: int) -> None:
    def check() -> bool:
        pump.offer(vendor, wait_seconds=0)
        return len(attempts(delivery_id)) >= times and not pump.held()

    wait_for(check, 10, interval=0.1, what=f"attempt {times} of {delivery_id} to be recorded")


@pytest.mark.usefixtures("clean")
def test_an_adapter_bug_is_retried_then_dead_lettered_with_its_summary(
    pump: Pump, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = get_vendor("gravityfield")

    def broken(operation: str, payloads: Any) -> Any:
        raise KeyError("productId")

    monkeypatch.setattr(vendor, "build_request", broken)
    monkeypatch.setattr(vendor.settings, "max_attempts", 3)
    receipt = enqueue("gravityfield", "send_event", jobs.gravityfield_event())
    for n in range(1, 4):
        with get_engine().begin() as conn:  # due now: no waiting for the backoff in a test
            conn.execute(
                update(Delivery)
                .where(Delivery.id == receipt.delivery_id, Delivery.status == "pending")
                .values(next_attempt_at=utcnow())
            )
        _attempted(pump, "gravityfield", receipt.delivery_id, n)
    row = delivery(receipt.delivery_id)
    assert str(row.status) == "dead" and row.attempts == 3
    assert "gave up after 3 attempts" in row.reason and "adapter error KeyError" in row.reason
    assert [a.error_class for a in attempts(receipt.delivery_id)] == ["KeyError"] * 3


@pytest.mark.usefixtures("clean")
def test_a_missing_secret_holds_deliveries_without_spending_attempts(
    pump: Pump, monkeypatch: pytest.MonkeyPatch
) -> None:
    vendor = get_vendor("vtcdn")
    monkeypatch.setattr(vendor.settings, "api_key", None)
    receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update())

    def released() -> Any:
        pump.offer("vtcdn", wait_seconds=0)
        row = delivery(receipt.delivery_id)
        return row if row.reason and not pump.held() else None

    row = wait_for(released, 10, what="the delivery to be given back")
    assert str(row.status) == "pending" and row.attempts == 0
    assert "VTCDN_API_KEY is not set" in row.reason
    assert row.next_attempt_at > utcnow()
    assert attempts(receipt.delivery_id) == []
