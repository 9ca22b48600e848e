"""Retry scheduling lives in the database: leases, visibility timeout, two schedulers, cleanup."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, update

from eventrelay.models.base import utcnow
from eventrelay.models.delivery import Delivery
from eventrelay.models.idempotency import IdempotencyKey
from eventrelay.models.session import get_engine
from eventrelay.worker.engine.scheduler import Scheduler
from eventrelay.worker.producer import enqueue, enqueue_many
from tests.integration import jobs
from tests.integration.helpers import attempts, delivery, wait_status
from tests.support import Proc, start_scheduler, start_worker, wait_for


@pytest.fixture
def short_visibility_worker(
    clean: None, database_url: str, mock_vendors: Any, logs_dir: Path, child_env: Any
) -> Iterator[dict[str, Proc]]:
    env = child_env(EVENTRELAY_VISIBILITY_TIMEOUT_SECONDS="2")
    worker = start_worker(
        env,
        logs_dir / "vis-worker.log",
        queues="eventrelay.vtcdn,eventrelay.vtcdn.retry",
        name="vis",
    )
    scheduler = start_scheduler(env, logs_dir / "vis-scheduler.log")
    yield {"worker": worker, "scheduler": scheduler}
    scheduler.kill()  # the test's checks are done: a warm stop only waits
    worker.kill()


def test_a_retry_delay_longer_than_the_visibility_timeout_does_not_send_twice(
    short_visibility_worker: Any, mock_vendors: Any
) -> None:
    # Broker redelivers unacked messages after 2 s; the vendor asks us to wait 6 s.
    mock_vendors.set_faults("vtcdn", retry_after=6, retry_after_count=1)
    receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update())
    wait_status(receipt.delivery_id, "delivered", timeout=30)
    time.sleep(3)  # longer than the visibility timeout again
    sent = mock_vendors.received("vtcdn")
    assert [r["status"] for r in sent] == [429, 200]
    assert sent[1]["ts"] - sent[0]["ts"] >= 5.9
    assert delivery(receipt.delivery_id).attempts == 2


@pytest.mark.usefixtures("clean")
def test_a_killed_worker_loses_nothing_its_deliveries_come_back_after_the_lease(
    mock_vendors: Any, logs_dir: Path, child_env: Any
) -> None:
    env = child_env(EVENTRELAY_LEASE_SECONDS="4")
    doomed = start_worker(
        env, logs_dir / "doomed.log", concurrency=1, queues="eventrelay.gravityfield", name="doomed"
    )
    mock_vendors.set_faults("gravityfield", hang_seconds=1.2)  # in flight long enough to kill
    receipt = enqueue("gravityfield", "send_event", jobs.gravityfield_event(uid="u-kill"))
    wait_for(lambda: str(delivery(receipt.delivery_id).status) == "delivering", 15, what="claim")
    doomed.signal(signal.SIGKILL)
    doomed.stop()
    mock_vendors.set_faults("gravityfield", clear=True)
    survivor = start_worker(
        env,
        logs_dir / "survivor.log",
        concurrency=1,
        queues="eventrelay.gravityfield,eventrelay.gravityfield.retry",
        name="survivor",
    )
    scheduler = start_scheduler(env, logs_dir / "kill-scheduler.log")
    try:
        row = wait_status(receipt.delivery_id, "delivered", timeout=40)
    finally:
        scheduler.stop()
        survivor.stop()
    outcomes = [str(a.outcome) for a in attempts(receipt.delivery_id)]
    assert outcomes[0] == "lost" and outcomes[-1] == "delivered"
    assert row.attempts == len(outcomes)


@pytest.mark.usefixtures("clean")
def test_two_schedulers_publish_each_due_delivery_once(redis_client: Any) -> None:
    from eventrelay.worker.producer.publish import publish_many  # noqa: F401  (same code path the scheduler uses)

    receipts = enqueue_many(
        {
            "vendor": "gravityfield",
            "operation": "send_event",
            "payload": jobs.gravityfield_event(uid=f"s{i}"),
        }
        for i in range(50)
    )
    redis_client.flushdb()  # the messages are lost...
    with get_engine().begin() as conn:  # ...and the rows say they were never published
        conn.execute(update(Delivery).values(dispatched_at=None))
    # Racing, not one after the other: both tick at the same moment.
    import threading

    barrier = threading.Barrier(2)
    results: list[Any] = []

    def tick(scheduler: Scheduler) -> None:
        barrier.wait()
        results.append(scheduler.tick())

    threads = [threading.Thread(target=tick, args=(Scheduler(),)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    first, second = results
    assert first.dispatched + second.dispatched == len(receipts)
    import base64
    import json

    ids = [
        i
        for raw in redis_client.lrange("eventrelay.gravityfield", 0, -1)
        for i in json.loads(base64.b64decode(json.loads(raw)["body"]))[0][1]
    ]
    assert sorted(ids) == sorted(str(r.delivery_id) for r in receipts)  # each once


@pytest.mark.usefixtures("clean")
def test_a_flushed_broker_gets_every_pending_delivery_published_again(redis_client: Any) -> None:
    enqueue_many(
        {
            "vendor": "vtcdn",
            "operation": "send_event",
            "payload": jobs.vtcdn_update(email=f"f{i}@x.io"),
        }
        for i in range(5)
    )
    Scheduler().tick()  # marks the broker's epoch
    redis_client.flushdb()
    summary = Scheduler().tick()
    # One drain message wakes a pump, which claims all of the vendor's due work.
    assert summary.broker_reset and summary.woken == 1
    assert redis_client.llen("eventrelay.vtcdn") == 1


@pytest.mark.usefixtures("clean")
def test_a_backlog_waiting_in_the_broker_is_never_published_again(redis_client: Any) -> None:
    from eventrelay.worker.config import get_settings

    Scheduler().tick()  # marks the broker's epoch
    enqueue_many(
        {
            "vendor": "vtcdn",
            "operation": "send_event",
            "payload": jobs.vtcdn_update(email=f"b{i}@x.io"),
        }
        for i in range(200)
    )
    waiting = redis_client.llen("eventrelay.vtcdn")
    assert waiting == 10  # 200 ids in messages of 20, nobody consuming yet
    # The backlog is older than the redispatch age, and still waits in the broker.
    old = utcnow() - timedelta(seconds=get_settings().redispatch_after_seconds + 60)
    with get_engine().begin() as conn:
        conn.execute(update(Delivery).values(dispatched_at=old))
    for _ in range(3):
        summary = Scheduler().tick()
        assert summary.dispatched == 0 and summary.woken == 0
    assert redis_client.llen("eventrelay.vtcdn") == waiting


@pytest.mark.usefixtures("clean")
def test_due_work_whose_message_was_lost_gets_one_drain_message(redis_client: Any) -> None:
    enqueue_many(
        {
            "vendor": "vtcdn",
            "operation": "send_event",
            "payload": jobs.vtcdn_update(email=f"l{i}@x.io"),
        }
        for i in range(200)
    )
    Scheduler().tick()  # marks the broker's epoch
    redis_client.delete("eventrelay.vtcdn")  # the messages are gone, the broker is not reset
    with get_engine().begin() as conn:
        conn.execute(update(Delivery).values(dispatched_at=utcnow() - timedelta(seconds=60)))
    summary = Scheduler().tick()
    assert summary.woken == 1 and summary.dispatched == 0
    assert redis_client.llen("eventrelay.vtcdn") == 1  # one message, not 200 ids again


@pytest.mark.usefixtures("clean")
def test_expired_idempotency_keys_are_cleaned_up_and_the_key_can_be_used_again() -> None:
    first = enqueue("vtcdn", "send_event", jobs.vtcdn_update(), idempotency_key="weekly")
    with get_engine().begin() as conn:
        conn.execute(update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    again = enqueue("vtcdn", "send_event", jobs.vtcdn_update(), idempotency_key="weekly")
    assert not again.duplicate and again.delivery_id != first.delivery_id
    with get_engine().begin() as conn:
        conn.execute(update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert Scheduler().tick().keys_purged == 1
    with get_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(IdempotencyKey)).scalar_one() == 0


@pytest.mark.usefixtures("clean")
def test_one_at_a_time_enqueues_share_messages_and_all_get_delivered(
    redis_client: Any, mock_vendors: Any, logs_dir: Path, child_env: Any
) -> None:
    receipts = [
        enqueue("gravityfield", "send_event", jobs.gravityfield_event(uid=f"d{i}"))
        for i in range(45)
    ]
    # Nobody has answered the doorbell yet: one message waits, the other 44 jobs ride along.
    assert redis_client.llen("eventrelay.gravityfield") == 1
    worker = start_worker(
        child_env(),
        logs_dir / "doorbell-worker.log",
        concurrency=1,
        queues="eventrelay.gravityfield",
        name="doorbell",
    )
    try:
        for r in receipts:
            wait_status(r.delivery_id, "delivered", timeout=20)  # no scheduler: the drain chains
    finally:
        worker.stop()
    assert len(mock_vendors.received("gravityfield")) == 45
    assert mock_vendors.stats()["gravityfield"]["duplicates"] == 0
    assert all(delivery(r.delivery_id).attempts == 1 for r in receipts)
    tasks = worker.output().count("eventrelay.deliver[")
    assert 0 < tasks <= 2 * 3  # received + succeeded lines for 20 + 20 + 5, not 45 messages


@pytest.mark.usefixtures("clean")
@pytest.mark.serial  # how much of the replay went first is a race against the clock
def test_fresh_events_are_not_stuck_behind_a_large_replay(
    mock_vendors: Any, logs_dir: Path, child_env: Any, cli: Any
) -> None:
    replayed = enqueue_many(
        {
            "vendor": "vtcdn",
            "operation": "send_event",
            "payload": jobs.vtcdn_update(email=f"r{i}@x.io"),
        }
        for i in range(200)
    )
    with get_engine().begin() as conn:  # 200 dead letters, as after a long vendor outage
        conn.execute(update(Delivery).values(status="dead", reason="outage", finished_at=utcnow()))
    mock_vendors.set_faults("vtcdn", latency_ms=40)
    # Few slots, so the replay takes a while (200 × 40 ms over 3 requests in flight ≈ 3 s).
    worker = start_worker(
        child_env(EVENTRELAY_MAX_IN_FLIGHT="4"),
        logs_dir / "lanes-worker.log",
        concurrency=1,
        queues="eventrelay.vtcdn,eventrelay.vtcdn.retry",
        name="lanes",
    )
    try:
        cli("dlq", "replay", "--all", "--vendor", "vtcdn")  # 10 messages in the retry lane
        time.sleep(0.5)
        fresh = enqueue("vtcdn", "send_event", jobs.vtcdn_update(email="fresh@x.io"))
        wait_status(fresh.delivery_id, "delivered", timeout=30)
        with get_engine().connect() as conn:
            replay_done = conn.execute(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.status == "delivered", Delivery.id != fresh.delivery_id)
            ).scalar_one()
        assert replay_done <= 100  # the fresh event went out while most of the replay waited
        for r in replayed:
            wait_status(r.delivery_id, "delivered", timeout=60)
    finally:
        worker.kill()


@pytest.mark.usefixtures("clean")
def test_a_failing_scheduler_chore_is_logged_and_retries_still_go_out(
    mock_vendors: Any, logs_dir: Path, child_env: Any
) -> None:
    env = child_env()
    worker = start_worker(
        env,
        logs_dir / "chore-worker.log",
        queues="eventrelay.vtcdn,eventrelay.vtcdn.retry",
        name="chore",
    )
    scheduler = Proc(
        [sys.executable, "-m", "tests.apps.failing_chore_scheduler"],
        env,
        logs_dir / "chore-scheduler.log",
    )
    try:
        # The retry is due in 3 s, after the worker's pump has gone idle: only the scheduler's
        # "publish due work" chore sends it a message.
        mock_vendors.set_faults("vtcdn", retry_after=3, retry_after_count=1)
        receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update())
        wait_status(receipt.delivery_id, "delivered", timeout=15)
        assert [r["status"] for r in mock_vendors.received("vtcdn")] == [429, 200]
        log = scheduler.output()
        assert "scheduler chore 'recover expired leases' failed" in log
        assert "Traceback" in log and "RuntimeError: injected" in log
    finally:
        scheduler.kill()
        worker.kill()
