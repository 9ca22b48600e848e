"""The embedded SQLite database: every transaction is one (pysqlite begins none before a
SELECT on its own), and a lock held by another connection never outlasts a lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select, text, update

from eventrelay.models.base import LIVE, new_id, utcnow
from eventrelay.models.delivery import ATTEMPTS, DELIVERIES, AttemptOutcome, DeliveryStatus
from eventrelay.models.session import make_engine
from eventrelay.worker.config import get_settings
from eventrelay.worker.engine.state import recover_expired_leases, renew_leases
from eventrelay.worker.ops.migrate import upgrade
from tests.support import env_vars


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'eventrelay.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _expired_delivery(engine: Engine) -> Any:
    now = utcnow()
    delivery_id = new_id()
    with engine.begin() as conn:
        conn.execute(
            insert(DELIVERIES).values(
                id=delivery_id,
                archived_at=LIVE,
                vendor="vtcdn",
                operation="send_event",
                payload={"user": {"email": "a@example.com"}, "event": {"update": {}}},
                status=DeliveryStatus.DELIVERING,
                lane="fresh",
                attempts=1,
                window_started_at=now,
                window_base_attempts=0,
                next_attempt_at=now,
                lease_expires_at=now - timedelta(seconds=5),
                created_at=now,
                updated_at=now,
            )
        )
    return delivery_id


def test_two_schedulers_recovering_one_expired_lease_record_one_lost_attempt(
    sqlite_engine: Engine,
) -> None:
    delivery_id = _expired_delivery(sqlite_engine)
    recovered: list[list[Any]] = []
    errors: list[BaseException] = []

    def other_scheduler() -> None:
        try:
            with sqlite_engine.begin() as conn:
                recovered.append(recover_expired_leases(conn))
        except BaseException as exc:  # noqa: BLE001 (reported by the assert below)
            errors.append(exc)

    other = threading.Thread(target=other_scheduler)

    def give_up(*_: Any) -> None:
        # Between this scheduler's SELECT and its UPDATE, the other one runs its own pass (up
        # to a second: with a real transaction it must wait for this one to commit).
        other.start()
        other.join(1.0)
        return None

    with sqlite_engine.begin() as conn:
        recovered.append(recover_expired_leases(conn, give_up=give_up))
    other.join(10)
    assert not errors
    assert sorted(len(r) for r in recovered) == [0, 1]  # taken back once, by one of them
    with sqlite_engine.connect() as conn:
        lost = conn.execute(
            select(func.count()).where(
                ATTEMPTS.c.delivery_id == delivery_id, ATTEMPTS.c.outcome == AttemptOutcome.LOST
            )
        ).scalar_one()
        status = conn.execute(
            select(DELIVERIES.c.status).where(DELIVERIES.c.id == delivery_id)
        ).scalar_one()
    assert lost == 1 and status == DeliveryStatus.PENDING


def test_a_heartbeat_blocked_by_another_writer_gives_up_well_within_its_lease(
    tmp_path: Path,
) -> None:
    lease_seconds = 3.0
    url = f"sqlite:///{tmp_path / 'eventrelay.db'}"
    upgrade(url)
    with env_vars(EVENTRELAY_LEASE_SECONDS=str(lease_seconds)):
        get_settings.cache_clear()
        try:
            sqlite_engine, blocker = make_engine(url), make_engine(url)
        finally:
            get_settings.cache_clear()
    delivery_id = _expired_delivery(sqlite_engine)
    with sqlite_engine.begin() as conn:
        conn.execute(update(DELIVERIES).values(lease_expires_at=utcnow() + timedelta(seconds=10)))
    # Another process (a producer, the scheduler) holds the write lock.
    with blocker.connect() as holder:
        holder.execute(text("DELETE FROM idempotency_keys"))  # now inside a write transaction
        started = time.monotonic()
        with pytest.raises(Exception, match="locked"), sqlite_engine.begin() as conn:
            renew_leases(conn, [(delivery_id, 1)], lease_seconds)
        waited = time.monotonic() - started
        holder.rollback()
    blocker.dispose()
    sqlite_engine.dispose()
    # A heartbeat beats every third of the lease: a blocked one must fail (and beat again)
    # before the lease it renews has run out, not wait the lock out for 30 s.
    assert waited < lease_seconds / 2
