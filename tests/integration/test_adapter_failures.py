"""An adapter that raises is retried, then dead-lettered with the exception's summary.

Runs the worker's own batch function in this process (no Celery worker consumes these
queues here), so the adapter can be made to fail on purpose.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from eventrelay.models.base import utcnow
from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from eventrelay.worker.engine.batch import process_batch
from eventrelay.worker.producer import enqueue
from eventrelay.worker.vendors import get_vendor
from tests.integration import jobs
from tests.integration.helpers import attempts, delivery


@pytest.mark.usefixtures("clean")
def test_an_adapter_bug_is_retried_then_dead_lettered_with_its_summary(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vendor = get_vendor("gravityfield")

    def broken(operation: str, payloads: Any) -> Any:
        raise KeyError("productId")

    monkeypatch.setattr(vendor, "build_request", broken)
    monkeypatch.setattr(vendor.settings, "max_attempts", 3)
    receipt = enqueue("gravityfield", "send_event", jobs.gravityfield_event())
    for _ in range(3):
        with get_engine().begin() as conn:  # due now: no waiting for the backoff in a test
            conn.execute(
                update(Delivery)
                .where(Delivery.id == receipt.delivery_id)
                .values(next_attempt_at=utcnow())
            )
        process_batch("gravityfield", [receipt.delivery_id])
    row = delivery(receipt.delivery_id)
    assert str(row.status) == "dead" and row.attempts == 3
    assert "gave up after 3 attempts" in row.reason and "adapter error KeyError" in row.reason
    assert [a.error_class for a in attempts(receipt.delivery_id)] == ["KeyError"] * 3


@pytest.mark.usefixtures("clean")
def test_a_missing_secret_holds_deliveries_without_spending_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vendor = get_vendor("vtcdn")
    monkeypatch.setattr(vendor.settings, "api_key", None)
    receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update())
    summary = process_batch("vtcdn", [receipt.delivery_id])
    row = delivery(receipt.delivery_id)
    assert summary.released == 1 and str(row.status) == "pending" and row.attempts == 0
    assert "VTCDN_API_KEY is not set" in row.reason
    assert row.next_attempt_at > utcnow()
