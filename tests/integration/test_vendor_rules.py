"""Vendor rules that need the whole pipeline: dedup, throttles, fleet-wide rate limit, parking."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventrelay.worker.producer import enqueue, enqueue_many
from tests.conftest import TEST_ENV
from tests.integration import jobs
from tests.integration.helpers import attempts, delivery, wait_status
from tests.support import Proc, start_worker, wait_for


@pytest.mark.usefixtures("clean", "pipeline")
def test_second_confirmation_for_the_same_order_is_never_sent(mock_vendors: Any) -> None:
    confirm = {
        "user": {"email": "buyer@example.com"},
        "event": {"confirmation": {"orderId": "A-1", "total": 10}},
    }
    first = enqueue("vtcdn", "send_event", confirm)
    again = enqueue(
        "vtcdn", "send_event", confirm | {"user": {"_id": "42"}}, idempotency_key="other"
    )
    assert again.duplicate and again.delivery_id == first.delivery_id
    wait_status(first.delivery_id, "delivered")
    time.sleep(0.5)
    assert len(mock_vendors.received("vtcdn")) == 1


@pytest.mark.usefixtures("clean", "pipeline")
def test_email_opens_within_20_minutes_are_suppressed_not_sent(mock_vendors: Any) -> None:
    opened = {"user": {"email": "reader@example.com"}, "event": {"email_open": {"campaign": "c1"}}}
    first = enqueue("vtcdn", "send_event", opened)
    later = enqueue_many([{"vendor": "vtcdn", "operation": "send_event", "payload": opened}] * 2)
    other_user = enqueue("vtcdn", "send_event", opened | {"user": {"email": "other@example.com"}})
    assert [r.status for r in later] == ["suppressed", "suppressed"]
    assert all(not r.duplicate for r in later)  # recorded as their own deliveries
    wait_status(first.delivery_id, "delivered")
    wait_status(other_user.delivery_id, "delivered")
    assert "one per 1200s" in delivery(later[0].delivery_id).reason
    time.sleep(0.5)
    assert len(mock_vendors.received("vtcdn")) == 2


@pytest.fixture
def second_worker(clean: None, pipeline: Any, logs_dir: Path, child_env: Any) -> Iterator[Proc]:
    proc = start_worker(
        child_env(),
        logs_dir / "second-worker.log",
        concurrency=2,
        queues="eventrelay.infobip,eventrelay.infobip.retry",
        name="second",
    )
    yield proc
    proc.kill()  # the test's checks are done: a warm stop only waits


@pytest.mark.serial  # counts sends per second
def test_infobip_rate_limit_holds_for_the_whole_fleet(
    second_worker: Proc, mock_vendors: Any
) -> None:
    # INFOBIP_RATE_LIMIT=20 in tests; four processes in two workers share it through Redis, and
    # the mock answers 429 like Infobip as soon as more than 20 arrive within one second.
    mock_vendors.set_faults("infobip", rate_limit=20)
    receipts = enqueue_many(
        {
            "vendor": "infobip",
            "operation": "send_event",
            "payload": jobs.infobip_event(transaction=f"t{i}"),
        }
        for i in range(80)
    )
    for r in receipts:
        wait_status(r.delivery_id, "delivered", timeout=60)
    times = sorted(r["ts"] for r in mock_vendors.received("infobip") if r["status"] == 201)
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 20
    assert mock_vendors.stats()["infobip"]["rate_limited"] == 0
    assert all(delivery(r.delivery_id).attempts == 1 for r in receipts)  # waiting spent nothing
    assert times[-1] - times[0] >= 80 / 20 - 1.5


@pytest.mark.usefixtures("clean", "pipeline")
def test_rejected_credentials_park_the_vendor_until_resumed(mock_vendors: Any, cli: Any) -> None:
    real_key = mock_vendors.credentials["infobip_api_key"]
    mock_vendors.credentials["infobip_api_key"] = "rotated-by-the-vendor"
    try:
        receipts = enqueue_many(
            {
                "vendor": "infobip",
                "operation": "send_event",
                "payload": jobs.infobip_event(transaction=f"p{i}"),
            }
            for i in range(5)
        )
        wait_for(
            lambda: (
                json.loads(cli("status", "--json").stdout)["vendors"]["infobip"]["circuit"]
                == "parked"
            ),
            20,
            what="infobip to be parked",
        )
        time.sleep(1)
        status = json.loads(cli("status", "--json").stdout)["vendors"]["infobip"]
        assert "credentials rejected" in status["parked_reason"]
        assert status["counts"]["dead"] == 0 and status["counts"]["pending"] == 5
        # No 401 storm: what was already in flight got its 401, nothing is sent after that.
        refused = len(mock_vendors.received("infobip"))
        assert 1 <= refused <= 5
        later = enqueue_many(
            {
                "vendor": "infobip",
                "operation": "send_event",
                "payload": jobs.infobip_event(transaction=f"late{i}"),
            }
            for i in range(5)
        )
        time.sleep(1.5)
        assert len(mock_vendors.received("infobip")) == refused
        receipts += later
        for r in receipts:  # nothing of the retry budget is spent on a refused key
            row = delivery(r.delivery_id)
            assert row.attempts - row.window_base_attempts == 0
    finally:
        mock_vendors.credentials["infobip_api_key"] = real_key  # the operator fixed the key
    out = cli("vendors", "resume", "infobip").stdout
    assert "unparked" in out
    for r in receipts:
        wait_status(r.delivery_id, "delivered")
    parked_attempt = attempts(receipts[0].delivery_id)
    assert [str(a.outcome) for a in parked_attempt][-1] == "delivered"
    for r in receipts:  # attempt numbers never repeat, parked ones included
        numbers = [a.number for a in attempts(r.delivery_id)]
        assert len(numbers) == len(set(numbers)), numbers


@pytest.mark.usefixtures("clean", "pipeline")
@pytest.mark.parametrize("producer_site_key", [None, "a-stale-copy-of-the-key"])
def test_a_gravityfield_sec_is_never_stored_and_the_worker_sends_its_own_site_key(
    mock_vendors: Any, cli: Any, child_env: Any, producer_site_key: str | None
) -> None:
    env = child_env()
    env.pop("GRAVITYFIELD_SITE_KEY")  # producers usually lack it
    if producer_site_key is not None:
        env["GRAVITYFIELD_SITE_KEY"] = producer_site_key
    payload = {**jobs.gravityfield_event(), "sec": TEST_ENV["GRAVITYFIELD_SITE_KEY"]}
    receipt = json.loads(
        cli(
            "send",
            "--vendor",
            "gravityfield",
            "--operation",
            "send_event",
            "--payload",
            json.dumps(payload),
            env=env,
        ).stdout
    )
    delivery_id = uuid.UUID(receipt["delivery_id"])
    assert delivery(delivery_id).payload == jobs.gravityfield_event()  # no sec stored
    wait_status(delivery_id, "delivered")
    [sent] = mock_vendors.received("gravityfield")
    assert sent["body"]["sec"] == TEST_ENV["GRAVITYFIELD_SITE_KEY"]  # the worker's, at send time
