"""Idempotency and throttle keys under concurrent producers and the scheduler's purge.

Each race is staged step by step on real PostgreSQL connections: a transaction is held open,
and the other side is let go only once PostgreSQL shows it waiting for that transaction's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, event, func, select, text, update

from eventrelay.models.base import utcnow
from eventrelay.models.delivery import Delivery
from eventrelay.models.idempotency import IdempotencyKey
from eventrelay.models.session import get_engine
from eventrelay.worker.producer import enqueue, record_jobs, validate_job
from eventrelay.worker.producer.outbox import purge_expired_keys
from tests.integration import jobs
from tests.support import wait_for

pytestmark = pytest.mark.usefixtures("clean")


def _waiting_for_a_lock(statement_start: str) -> bool:
    with get_engine().connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock' AND query LIKE :q"
                ),
                {"q": statement_start + "%"},
            ).scalar_one()
        )


def _in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def _expire_every_key() -> None:
    with get_engine().begin() as conn:
        conn.execute(update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1)))


def test_a_key_taken_over_while_the_purge_runs_is_kept_and_still_stops_duplicates() -> None:
    payload = jobs.vtcdn_update()
    enqueue("vtcdn", "send_event", payload, idempotency_key="weekly")
    _expire_every_key()

    # A producer takes the expired key over, and has not committed yet...
    with get_engine().connect() as producer:
        with producer.begin():
            (taken,), _ = record_jobs(
                producer, [validate_job("vtcdn", "send_event", payload, "weekly")]
            )
            assert not taken.duplicate
            # ...while the scheduler purges expired keys: it must wait for that row, or skip it.
            purge, errors = _in_thread(lambda: _purge())
            wait_for(
                lambda: not purge.is_alive() or _waiting_for_a_lock("DELETE FROM idempotency_keys"),
                10,
                what="the purge to finish or wait for the producer's row",
            )
        purge.join(10)
    assert not errors, errors

    again = enqueue("vtcdn", "send_event", payload, idempotency_key="weekly")
    assert again.duplicate and again.delivery_id == taken.delivery_id


def _purge() -> None:
    with get_engine().begin() as conn:
        purge_expired_keys(conn)


def _email_open(email: str) -> Any:
    return validate_job(
        "vtcdn", "send_event", {"user": {"email": email}, "event": {"email_open": {}}}
    )


def test_two_producers_recording_email_opens_of_the_same_users_in_opposite_orders_both_succeed() -> (
    None
):
    first_claimed = threading.Event()
    go_on = threading.Event()

    def pause_after_first_key_claim(conn: Connection, cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("INSERT INTO idempotency_keys") and not first_claimed.is_set():
            first_claimed.set()
            go_on.wait(10)

    def producer(emails: list[str], pause: bool) -> None:
        with get_engine().connect() as conn:
            if pause:
                event.listen(conn, "after_cursor_execute", pause_after_first_key_claim)
            with conn.begin():
                record_jobs(conn, [_email_open(e) for e in emails])

    one, one_errors = _in_thread(lambda: producer(["ana@example.com", "bo@example.com"], True))
    wait_for(first_claimed.is_set, 10, what="the first producer to claim a throttle key")
    two, two_errors = _in_thread(lambda: producer(["bo@example.com", "ana@example.com"], False))
    wait_for(
        lambda: not two.is_alive() or _waiting_for_a_lock("INSERT INTO idempotency_keys"),
        10,
        what="the second producer to finish or wait for the first one's key",
    )
    go_on.set()
    one.join(15)
    two.join(15)

    assert not one_errors and not two_errors, one_errors + two_errors  # no deadlock
    with get_engine().connect() as conn:
        statuses = conn.execute(
            select(Delivery.status, func.count()).group_by(Delivery.status)
        ).all()
    assert sorted((str(s), n) for s, n in statuses) == [("pending", 2), ("suppressed", 2)]


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_the_purge_deletes_expired_keys_and_keeps_live_ones(backend: str, tmp_path: Any) -> None:
    from sqlalchemy import insert

    from eventrelay.models.base import Base, new_id
    from eventrelay.models.session import make_engine

    engine = get_engine() if backend == "postgresql" else make_engine(f"sqlite:///{tmp_path}/k.db")
    if backend == "sqlite":
        Base.metadata.create_all(engine)
    now = utcnow()
    rows = [
        {"vendor": "vtcdn", "key": name, "delivery_id": new_id(), "expires_at": now + delta}
        for name, delta in [("old", timedelta(hours=-1)), ("live", timedelta(hours=1))]
    ]
    with engine.begin() as conn:
        conn.execute(insert(IdempotencyKey), rows)
        assert purge_expired_keys(conn) == 1
        assert conn.execute(select(IdempotencyKey.key)).scalars().all() == ["live"]
    if backend == "sqlite":
        engine.dispose()
