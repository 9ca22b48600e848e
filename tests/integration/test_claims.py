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
