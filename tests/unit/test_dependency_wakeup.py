"""A Botsi event released to wait for its profile is never left waiting once the profile is
delivered (the lost wake-up behind `redis restart mid-run ... recovered_in=28.7s`).

Runs the real claim / dependency check / record functions on a private SQLite file: no
services, and the interleaving is spelled out instead of raced.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select, update

from eventrelay.models.base import Base, utcnow
from eventrelay.models.delivery import DELIVERIES as D
from eventrelay.models.delivery import AttemptOutcome, DeliveryStatus, Lane
from eventrelay.models.session import make_engine
from eventrelay.worker.engine.pump.request import apply_dependencies
from eventrelay.worker.engine.scheduler import Scheduler, wake_stranded_dependents
from eventrelay.worker.engine.state import Claimed, Outcome, claim, dependency_states, record


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'eventrelay.db'}")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


def _add(engine: Engine, operation: str, depends_on: uuid.UUID | None = None) -> uuid.UUID:
    now = utcnow()
    row: dict[str, Any] = {
        "id": uuid.uuid4(),
        "vendor": "botsi",
        "operation": operation,
        "payload": {},
        "depends_on": depends_on,
        "status": DeliveryStatus.PENDING,
        "lane": Lane.FRESH,
        "attempts": 0,
        "next_attempt_at": now,
        "window_started_at": now,
        "window_base_attempts": 0,
        "dispatched_at": now,
        "created_at": now,
        "updated_at": now,
    }
    with engine.begin() as conn:
        conn.execute(insert(D), [row])
    return row["id"]  # type: ignore[no-any-return]


def _claim_one(engine: Engine, delivery_id: uuid.UUID) -> Claimed:
    with engine.begin() as conn:
        (claimed,) = claim(conn, "botsi", [delivery_id], 8)
    return claimed


def _wait_for_dependency(engine: Engine, event: Claimed) -> list[Outcome]:
    """What the pump does with a claimed event: look at its profile, wait if not delivered."""
    with engine.begin() as conn:
        deps = dependency_states(conn, [event.depends_on] if event.depends_on else [])
    waiting: list[Outcome] = []
    assert apply_dependencies([event], deps, waiting) == []
    return waiting


def _row(engine: Engine, delivery_id: uuid.UUID) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(D).where(D.c.id == delivery_id)).one()


def _strand(engine: Engine) -> tuple[uuid.UUID, uuid.UUID]:
    """The race, in order: process A holds the profile, process B claims the event and sees
    the profile still delivering; A's record (profile delivered, dependents woken) commits
    before B's release of the event."""
    profile = _add(engine, "create_profile")
    event = _add(engine, "send_event", depends_on=profile)
    held_profile = _claim_one(engine, profile)
    waiting = _wait_for_dependency(engine, _claim_one(engine, event))
    with engine.begin() as conn:
        done = record(
            conn,
            [Outcome(held_profile, AttemptOutcome.DELIVERED, status_code=200)],
            follows=lambda o: True,
        )
    assert done.woken == []  # the event is still "delivering": nothing to wake yet
    with engine.begin() as conn:
        record(conn, waiting)
    return profile, event


def test_an_event_released_while_its_profile_was_recorded_is_due_within_a_tick(
    engine: Engine,
) -> None:
    profile, event = _strand(engine)
    assert _row(engine, profile).status == DeliveryStatus.DELIVERED
    # Here the release used to leave the event waiting ~30 s for nothing; one scheduler tick
    # (or the record itself, with the proposed engine/state.py change) makes it due now.
    with engine.begin() as conn:
        wake_stranded_dependents(conn, ["botsi"])
    woken = _row(engine, event)
    assert woken.status == DeliveryStatus.PENDING
    assert woken.next_attempt_at <= utcnow()
    assert woken.dispatched_at is None  # dispatch_due publishes it in the same tick
    assert woken.attempts == 0  # a wait never spends an attempt


def test_the_sweep_wakes_a_stranded_wait_once(engine: Engine) -> None:
    profile = _add(engine, "create_profile")
    event = _add(engine, "send_event", depends_on=profile)
    with engine.begin() as conn:
        conn.execute(
            update(D)
            .where(D.c.id == profile)
            .values(status=DeliveryStatus.DELIVERED, finished_at=utcnow())
        )
        conn.execute(  # what the release wrote, 30 s of waiting ahead
            update(D)
            .where(D.c.id == event)
            .values(
                next_attempt_at=utcnow() + timedelta(seconds=30),
                dispatched_at=None,
                reason=f"waiting for delivery {profile} to be delivered first",
            )
        )
    with engine.begin() as conn:
        assert wake_stranded_dependents(conn, ["botsi"]) == 1
    assert _row(engine, event).next_attempt_at <= utcnow()
    with engine.begin() as conn:
        assert wake_stranded_dependents(conn, ["botsi"]) == 0


def test_an_event_waiting_for_a_profile_that_went_dead_is_dead_lettered_within_a_tick(
    engine: Engine,
) -> None:
    # The profile's record wakes only on delivery: dead, its events sat out the 30 s wait.
    profile = _add(engine, "create_profile")
    event = _add(engine, "send_event", depends_on=profile)
    outcomes = _wait_for_dependency(engine, _claim_one(engine, event))
    with engine.begin() as conn:
        record(conn, outcomes)
        conn.execute(
            update(D)
            .where(D.c.id == profile)
            .values(status=DeliveryStatus.DEAD, reason="HTTP 400", finished_at=utcnow())
        )
    with engine.begin() as conn:
        assert wake_stranded_dependents(conn, ["botsi"]) == 1
    assert _row(engine, event).next_attempt_at <= utcnow()
    claimed = _claim_one(engine, event)
    with engine.begin() as conn:
        deps = dependency_states(conn, [profile])
    dead: list[Outcome] = []
    assert apply_dependencies([claimed], deps, dead) == []
    assert dead[0].kind is AttemptOutcome.DEAD and "is dead" in (dead[0].reason or "")


def test_only_dependency_waits_whose_dependency_is_finished_are_woken(engine: Engine) -> None:
    # Still waiting for a profile that is not delivered: keeps waiting.
    pending_profile = _add(engine, "create_profile")
    waits = _add(engine, "send_event", depends_on=pending_profile)
    # Claimed and checked before the record's transaction: SQLite has one writer at a time.
    outcomes = _wait_for_dependency(engine, _claim_one(engine, waits))
    with engine.begin() as conn:
        record(conn, outcomes)
    # A retry in backoff whose profile is delivered: its backoff is kept.
    delivered_profile = _add(engine, "create_profile")
    backoff = _add(engine, "send_event", depends_on=delivered_profile)
    later = utcnow() + timedelta(seconds=25)
    with engine.begin() as conn:
        conn.execute(
            update(D)
            .where(D.c.id == delivered_profile)
            .values(status=DeliveryStatus.DELIVERED, finished_at=utcnow())
        )
        conn.execute(
            update(D)
            .where(D.c.id == backoff)
            .values(next_attempt_at=later, lane=Lane.RETRY, reason="HTTP 503: unavailable")
        )
    with engine.begin() as conn:
        assert wake_stranded_dependents(conn, ["botsi"]) == 0
    assert _row(engine, waits).next_attempt_at > utcnow() + timedelta(seconds=20)
    assert _row(engine, backoff).next_attempt_at == later


def test_the_scheduler_sweeps_the_vendors_that_have_dependencies() -> None:
    assert Scheduler._dependent_vendors() == ["botsi"]
