"""End to end: producer → PostgreSQL → Redis → real Celery worker → mock vendor over HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import func, select

from eventrelay.models.delivery import Delivery
from eventrelay.models.identity import BotsiProfile
from eventrelay.models.session import get_engine
from eventrelay.worker.producer import enqueue, enqueue_many
from tests.integration import jobs
from tests.integration.helpers import attempts, delivery, wait_status
from tests.support import wait_for

pytestmark = pytest.mark.usefixtures("clean", "pipeline")


@pytest.mark.parametrize("sample", sorted(jobs.SAMPLES))
def test_each_vendor_job_is_delivered_and_recorded(sample: str, mock_vendors: Any) -> None:
    vendor = sample.split("/")[0]
    operation, payload = jobs.SAMPLES[sample]
    receipt = enqueue(vendor, operation, payload)
    assert receipt.duplicate is False
    row = wait_status(receipt.delivery_id, "delivered")
    assert row.attempts == 1
    [attempt] = attempts(receipt.delivery_id)
    assert str(attempt.outcome) == "delivered" and 200 <= attempt.status_code < 300
    assert len(mock_vendors.received(vendor)) == 1


def test_repeated_idempotency_key_returns_the_first_delivery_and_sends_once(
    mock_vendors: Any,
) -> None:
    first = enqueue("vtcdn", "send_event", jobs.vtcdn_update(), idempotency_key="signup-1")
    # The same job again (a different one under this key is refused: test_key_reuse.py).
    second = enqueue("vtcdn", "send_event", jobs.vtcdn_update(), idempotency_key="signup-1")
    assert second.delivery_id == first.delivery_id and second.duplicate is True
    wait_status(first.delivery_id, "delivered")
    time.sleep(0.5)
    assert len(mock_vendors.received("vtcdn")) == 1
    with get_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(Delivery)).scalar_one() == 1


def test_retry_after_a_500_then_delivered(mock_vendors: Any) -> None:
    mock_vendors.set_faults("gravityfield", fail_next=[500, 503])
    receipt = enqueue("gravityfield", "send_event", jobs.gravityfield_event())
    row = wait_status(receipt.delivery_id, "delivered")
    assert row.attempts == 3
    outcomes = [(str(a.outcome), a.status_code) for a in attempts(receipt.delivery_id)]
    assert outcomes == [("retry", 500), ("retry", 503), ("delivered", 200)]
    assert row.lane == "retry"  # retries travel in their own lane


def test_timeout_is_retried_then_delivered(mock_vendors: Any) -> None:
    mock_vendors.set_faults("vtcdn", hang_seconds=3)  # read timeout in tests is 1.5 s
    receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update())
    wait_for(lambda: attempts(receipt.delivery_id), 20, what="a first attempt")
    mock_vendors.set_faults("vtcdn", clear=True)
    wait_status(receipt.delivery_id, "delivered")
    first = attempts(receipt.delivery_id)[0]
    assert str(first.outcome) == "retry" and first.status_code is None
    assert "Timeout" in first.error_class


def test_retry_after_header_is_honoured(mock_vendors: Any) -> None:
    mock_vendors.set_faults("infobip", retry_after=3, retry_after_count=1)
    receipt = enqueue("infobip", "send_event", jobs.infobip_event())
    wait_status(receipt.delivery_id, "delivered", timeout=30)
    sent = mock_vendors.received("infobip")
    assert [r["status"] for r in sent] == [429, 201]
    # Backoff in tests starts at 0.2 s, so only Retry-After explains a gap of 3 s.
    assert sent[1]["ts"] - sent[0]["ts"] >= 2.9


def test_vendor_refusal_is_dead_lettered_with_its_reason_then_replayed(
    mock_vendors: Any, cli: Any
) -> None:
    mock_vendors.set_faults("vtcdn", unknown_users=["new@example.com"])
    receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update(email="new@example.com"))
    row = wait_status(receipt.delivery_id, "dead")
    assert row.attempts == 1
    assert "User not found" in row.reason and "must exist" in row.reason
    assert "new@example.com" not in row.reason  # personal data stays out of reasons

    listed = json.loads(cli("dlq", "list", "--vendor", "vtcdn", "--json").stdout)
    assert listed["total"] == 1 and listed["dead_letters"][0]["id"] == str(receipt.delivery_id)
    dry = json.loads(
        cli("dlq", "replay", "--all", "--vendor", "vtcdn", "--dry-run", "--json").stdout
    )
    assert dry == {"dry_run": True, "count": 1}
    assert str(delivery(receipt.delivery_id).status) == "dead"  # a dry run changes nothing

    mock_vendors.set_faults("vtcdn", clear=True)  # the operator created the user
    cli("dlq", "replay", str(receipt.delivery_id))
    row = wait_status(receipt.delivery_id, "delivered")
    assert row.attempts == 2
    assert [str(a.outcome) for a in attempts(receipt.delivery_id)] == ["dead", "delivered"]


def test_replay_never_resends_what_was_delivered(mock_vendors: Any, cli: Any) -> None:
    receipt = enqueue("gravityfield", "send_event", jobs.gravityfield_event())
    wait_status(receipt.delivery_id, "delivered")
    out = json.loads(cli("dlq", "replay", str(receipt.delivery_id), "--json").stdout)
    assert out["count"] == 0
    time.sleep(1)
    assert len(mock_vendors.received("gravityfield")) == 1


def test_botsi_event_waits_for_the_users_profile_and_the_profile_id_is_recorded(
    mock_vendors: Any,
) -> None:
    mock_vendors.set_faults("botsi", fail_next=[500, 500])  # the profile needs three tries
    profile, event = enqueue_many(
        [
            {
                "vendor": "botsi",
                "operation": "create_profile",
                "payload": jobs.botsi_profile("u-77"),
            },
            {"vendor": "botsi", "operation": "send_event", "payload": jobs.botsi_event("u-77")},
        ]
    )
    wait_status(event.delivery_id, "delivered")
    sent = [r for r in mock_vendors.received("botsi") if r["status"] == 200]
    assert [r["path"] for r in sent] == ["/botsi/profiles", "/botsi/events"]
    assert delivery(profile.delivery_id).attempts == 3
    assert delivery(event.delivery_id).attempts == 1  # waiting spent no attempt
    profile_id = sent[0]["response"]["data"]["profileId"]
    with get_engine().connect() as conn:
        stored = conn.execute(select(BotsiProfile.__table__)).one()
    assert (stored.profile_id, stored.customer_user_id) == (profile_id, "u-77")


def test_botsi_event_is_dead_when_its_profile_is_dead(mock_vendors: Any) -> None:
    mock_vendors.set_faults("botsi", fail_next=[400])
    profile = enqueue("botsi", "create_profile", jobs.botsi_profile("u-dead"))
    event = enqueue("botsi", "send_event", jobs.botsi_event("u-dead"))
    wait_status(profile.delivery_id, "dead")
    # Within a scheduler tick or two, not after the 30 s a dependency wait falls back to.
    row = wait_status(event.delivery_id, "dead", timeout=15)
    assert str(profile.delivery_id) in row.reason and "is dead" in row.reason
    assert not [r for r in mock_vendors.received("botsi") if r["path"] == "/botsi/events"]


def test_several_due_botsi_events_share_one_request_array(mock_vendors: Any) -> None:
    receipts = enqueue_many(
        [
            {
                "vendor": "botsi",
                "operation": "send_event",
                "payload": jobs.botsi_event(f"batch-{i}"),
            }
            for i in range(10)
        ]
    )
    for r in receipts:
        wait_status(r.delivery_id, "delivered")
    requests = mock_vendors.received("botsi")
    assert len(requests) == 1 and len(requests[0]["body"]) == 10
    assert all(len(attempts(r.delivery_id)) == 1 for r in receipts)
