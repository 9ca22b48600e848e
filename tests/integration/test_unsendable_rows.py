"""A row stored before the door refused what it holds can never be sent: it is dead-lettered at
once with the reason, not retried as an adapter error until its budget runs out."""

from __future__ import annotations

from typing import Any

import pytest

from eventrelay.models.session import get_engine
from eventrelay.worker.producer import publish_after_commit, record_jobs
from eventrelay.worker.vendors.base import PreparedJob
from tests.integration import jobs
from tests.integration.helpers import attempts, wait_status

pytestmark = pytest.mark.usefixtures("clean", "pipeline")


def _store_as_an_old_producer(payload: dict[str, Any]) -> Any:
    """Written without today's validation, as a producer before the `..` rule wrote it."""
    job = PreparedJob("infobip", "send_event", payload, idempotency_key=None)
    with get_engine().begin() as conn:
        [receipt], to_publish = record_jobs(conn, [job])
    publish_after_commit(to_publish)
    return receipt


def test_an_infobip_row_with_a_dot_segment_stored_before_the_rule_is_dead_at_once(
    mock_vendors: Any,
) -> None:
    bad = _store_as_an_old_producer(jobs.infobip_event() | {"personId": ".."})
    good = _store_as_an_old_producer(jobs.infobip_event("ana@example.com"))
    row = wait_status(bad.delivery_id, "dead", timeout=15)
    assert row.attempts == 1
    assert row.reason == "cannot be sent: personId '..' would change the request path; not sent"
    [attempt] = attempts(bad.delivery_id)
    assert (str(attempt.outcome), attempt.error_class) == ("dead", "Unsendable")
    wait_status(good.delivery_id, "delivered")
    assert len(mock_vendors.received("infobip")) == 1  # only the good one went out
