"""Claims take exactly what they ask for, fresh work first, once."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from eventrelay.models.delivery import DELIVERIES, Lane
from eventrelay.models.session import get_engine
from eventrelay.worker.engine.state import claim
from eventrelay.worker.producer import enqueue, enqueue_many
from tests.integration import jobs

pytestmark = pytest.mark.usefixtures("clean")


def _backlog(n: int) -> None:
    enqueue_many(
        {
            "vendor": "vtcdn",
            "operation": "send_event",
            "payload": jobs.vtcdn_update(email=f"c{i}@x.io"),
        }
        for i in range(n)
    )


def test_a_claim_never_takes_more_rows_than_it_asks_for() -> None:
    # PostgreSQL may rescan a LIMIT ... SKIP LOCKED subquery per updated row, each rescan
    # skipping what the statement itself locked: a 3-row claim once took all 40.
    _backlog(40)
    with get_engine().begin() as conn:
        conn.execute(update(DELIVERIES).values(lane=Lane.RETRY))
    with get_engine().begin() as conn:
        assert len(claim(conn, "vtcdn", [], 10, top_up=3)) == 3
        assert len(claim(conn, "vtcdn", [], 10, top_up=5)) == 5


def test_a_claim_takes_fresh_work_before_retries() -> None:
    _backlog(30)
    with get_engine().begin() as conn:
        conn.execute(update(DELIVERIES).values(lane=Lane.RETRY))
    fresh = enqueue("vtcdn", "send_event", jobs.vtcdn_update(email="fresh@x.io"))
    with get_engine().begin() as conn:
        taken = claim(conn, "vtcdn", [], 10, top_up=2)
    assert [c.id for c in taken][0] == fresh.delivery_id
    assert [c.lane for c in taken] == [Lane.FRESH, Lane.RETRY]


def test_a_heartbeat_skips_a_delivery_being_recorded_instead_of_failing_on_it() -> None:
    # The recorder moves a delivered row into a history partition. A heartbeat that waited
    # for that row would fail once it moved (PostgreSQL: "tuple to be locked was already moved
    # to another partition"), renewing none of its other leases.
    from eventrelay.models.delivery import AttemptOutcome
    from eventrelay.worker.engine.state import Outcome, record, renew_leases

    _backlog(3)
    with get_engine().begin() as conn:
        taken = claim(conn, "vtcdn", [], 10, top_up=3)
    held = [(c.id, c.attempt) for c in taken]
    recorder = get_engine().connect()
    try:
        tx = recorder.begin()
        record(recorder, [Outcome(taken[0], AttemptOutcome.DELIVERED, status_code=200)])
        with get_engine().begin() as conn:
            conn.exec_driver_sql("SET LOCAL lock_timeout = '3s'")
            assert renew_leases(conn, held, 10) == 2  # the other two, at once
        tx.commit()
    finally:
        recorder.close()
    with get_engine().begin() as conn:
        assert renew_leases(conn, held, 10) == 2


@pytest.mark.parametrize("behind_seconds", [3.0, 60.0])
def test_a_worker_whose_clock_is_behind_still_claims_due_work(
    monkeypatch: pytest.MonkeyPatch, behind_seconds: float
) -> None:
    # Due is decided by the database's clock, as leases are: a worker behind the producer
    # left a fresh row to the orphan sweep (5 s; 300 s without queue depths).
    from datetime import timedelta

    from eventrelay.models.base import utcnow
    from eventrelay.worker.engine import state

    named = enqueue("vtcdn", "send_event", jobs.vtcdn_update(email="named@x.io"))
    other = enqueue("vtcdn", "send_event", jobs.vtcdn_update(email="other@x.io"))
    monkeypatch.setattr(state, "utcnow", lambda: utcnow() - timedelta(seconds=behind_seconds))
    with get_engine().begin() as conn:
        assert [c.id for c in claim(conn, "vtcdn", [named.delivery_id], 10)] == [named.delivery_id]
        assert [c.id for c in claim(conn, "vtcdn", [], 10, top_up=5)] == [other.delivery_id]
