"""Retention: delivered and suppressed history goes, dead letters and pending work stay, and on
PostgreSQL the space comes back (partitions are dropped, not rows deleted).

Rows go through the real claim and record functions on a database of this module's own, and
retention passes run "later" by handing them a future `now`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select, text

from eventrelay.models import partitions
from eventrelay.models.base import LIVE, new_id, utcnow
from eventrelay.models.counters import read_counters
from eventrelay.models.delivery import ATTEMPTS, DELIVERIES, AttemptOutcome, DeliveryStatus, Lane
from eventrelay.models.session import make_engine
from eventrelay.models.vacuum import vacuum_churning_tables
from eventrelay.worker.config import Settings
from eventrelay.worker.engine import retention
from eventrelay.worker.engine.state import Outcome, claim, record
from eventrelay.worker.ops.migrate import upgrade
from tests.support import TEST_DB_NAME, ensure_database

D, A = DELIVERIES, ATTEMPTS
SETTINGS = Settings(retention_seconds=60, partition_seconds=10)


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'retention.db'}"
    else:
        url = ensure_database(f"{TEST_DB_NAME}_retention", fresh=True)
    upgrade(url)
    engine = make_engine(url)
    yield engine
    retention.forget_partitions(engine)
    engine.dispose()


def _add(engine: Engine, n: int, status: DeliveryStatus = DeliveryStatus.PENDING) -> list[Any]:
    now = utcnow()
    rows = [
        {
            "id": new_id(),
            "vendor": "vtcdn",
            "operation": "send_event",
            "payload": {"user": {"email": f"u{i}@x.io"}, "event": {"update": {}}},
            "status": status,
            "lane": Lane.FRESH,
            "attempts": 0,
            "next_attempt_at": now,
            "window_started_at": now,
            "window_base_attempts": 0,
            "created_at": now,
            "updated_at": now,
            "finished_at": now if status is DeliveryStatus.SUPPRESSED else None,
            "archived_at": LIVE,
        }
        for i in range(n)
    ]
    with engine.begin() as conn:
        conn.execute(insert(D), rows)
    return [r["id"] for r in rows]


def _finish(engine: Engine, n: int, kind: AttemptOutcome) -> list[uuid.UUID]:
    """n deliveries claimed and recorded as `kind`, the way a worker's recorder does."""
    _add(engine, n)
    with engine.begin() as conn:
        taken = claim(conn, "vtcdn", [], 30, top_up=n)
    assert len(taken) == n
    outcomes = [
        Outcome(c, kind, status_code=200 if kind is AttemptOutcome.DELIVERED else 400)
        for c in taken
    ]
    for o in outcomes:
        if kind is AttemptOutcome.DEAD:
            o.reason = "vendor refused the job (400)"
    retention.ensure_history_partition(engine, SETTINGS)
    with engine.begin() as conn:
        done = record(conn, outcomes)
    assert len(done.applied) == n
    return [c.id for c in taken]


def _count(engine: Engine, table: Any, *where: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def _history_bytes(engine: Engine) -> int:
    """Bytes of both tables' partitions, indexes included."""
    with engine.connect() as conn:
        return sum(
            int(
                conn.execute(
                    text(
                        "SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree(:t) "
                        "WHERE isleaf"
                    ),
                    {"t": table},
                ).scalar_one()
            )
            for table in ("deliveries", "delivery_attempts")
        )


def test_delivered_history_goes_while_dead_letters_and_pending_work_stay(engine: Engine) -> None:
    delivered = _finish(engine, 300, AttemptOutcome.DELIVERED)
    dead = _finish(engine, 2, AttemptOutcome.DEAD)
    pending = _add(engine, 3)
    suppressed = _add(engine, 2, DeliveryStatus.SUPPRESSED)

    # Within the retention nothing goes; suppressed ones move into history.
    first = retention.run(engine, SETTINGS)
    assert first.archived == 2
    assert _count(engine, D, D.c.id.in_(delivered)) == 300
    assert _count(engine, A, A.c.delivery_id.in_(delivered)) == 300
    assert _count(engine, D, D.c.id.in_(suppressed), D.c.archived_at < LIVE) == 2
    pg = engine.dialect.name == "postgresql"
    before = _history_bytes(engine) if pg else 0

    # Long after (past any partition the rows can be in): history is gone.
    later = retention.run(engine, SETTINGS, now=utcnow() + timedelta(days=4))
    assert _count(engine, D, D.c.id.in_(delivered + suppressed)) == 0
    assert _count(engine, A, A.c.delivery_id.in_(delivered)) == 0
    # Dead letters, with their attempts, and pending work are never removed by retention.
    assert _count(engine, D, D.c.id.in_(dead), D.c.status == DeliveryStatus.DEAD) == 2
    assert _count(engine, A, A.c.delivery_id.in_(dead)) == 2
    assert _count(engine, D, D.c.id.in_(pending), D.c.status == DeliveryStatus.PENDING) == 3
    # The totals status and the metrics show are not lowered by retention.
    with engine.connect() as conn:
        totals = read_counters(conn)
    assert totals[("vtcdn", "delivered")] == 300
    assert totals[("vtcdn", "attempts.delivered")] == 300
    assert totals[("vtcdn", "dead")] == 2
    assert totals[("vtcdn", "suppressed")] == 2  # counted when the pass moved them
    if pg:
        # Removing history was dropping partitions: they are gone, and so is their space.
        assert later.dropped and later.removed == 0
        with engine.connect() as conn:
            left = conn.execute(
                text("SELECT count(*) FROM pg_class WHERE relname = ANY(:names)"),
                {"names": later.dropped},
            ).scalar_one()
        assert left == 0
        assert _history_bytes(engine) < before
    else:
        assert later.removed == 300 + 300 + 2  # attempts, deliveries, suppressed


def test_sqlite_removes_history_in_batches_that_each_commit(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL drops partitions instead")
    monkeypatch.setattr(retention, "DELETE_BATCH", 40)
    delivered = _finish(engine, 100, AttemptOutcome.DELIVERED)
    removed = retention.delete_expired(engine, utcnow() + timedelta(seconds=1))
    assert removed == 200
    assert _count(engine, D, D.c.id.in_(delivered)) == 0


def test_partitions_are_made_ahead_and_a_worker_makes_a_missing_one(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no partitions")
    now = utcnow()
    retention.run(engine, SETTINGS)
    with engine.connect() as conn:
        ends = [p.end for p in partitions.history_partitions(conn, "deliveries")]
    assert max(ends) >= now + timedelta(seconds=retention.MIN_AHEAD_SECONDS)
    # Every history partition dropped (a long-stopped scheduler, an operator): the recorder
    # makes the one it needs instead of failing.
    retention.run(engine, SETTINGS, now=utcnow() + timedelta(days=4))
    with engine.begin() as conn:
        for p in partitions.history_partitions(conn, "deliveries"):
            if p.start <= utcnow() < p.end:
                pytest.fail(f"{p.name} should have been dropped")
    delivered = _finish(engine, 5, AttemptOutcome.DELIVERED)
    assert _count(engine, D, D.c.id.in_(delivered), D.c.status == DeliveryStatus.DELIVERED) == 5


def test_status_shows_the_retention_and_the_oldest_row_kept(engine: Engine) -> None:
    ids = _finish(engine, 3, AttemptOutcome.DELIVERED)
    with engine.connect() as conn:
        info = retention.describe(conn, SETTINGS)
        created = conn.execute(select(func.min(D.c.created_at)).where(D.c.id.in_(ids))).scalar()
    assert info["retention_seconds"] == 60
    assert info["oldest_row_created_at"] is not None
    assert created is not None
    assert (
        abs(
            (
                created.replace(tzinfo=created.tzinfo or LIVE.tzinfo)
                - _parse(info["oldest_row_created_at"])
            ).total_seconds()
        )
        < 1
    )
    if engine.dialect.name == "postgresql":
        assert info["history_partitions"] >= 1


def _parse(value: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(value)


# Serial: VACUUM frees only what no open snapshot still sees, and beside a parallel test's
# workers it freed too little twice in this project's CI runs.
@pytest.mark.serial
def test_the_live_partition_reuses_the_space_of_work_that_finished(engine: Engine) -> None:
    """Finished deliveries leave the live partition as dead row versions; the scheduler's
    vacuum lets the next ones reuse that space, so the partition stays the size of one round
    of churn, not of everything ever delivered (this machine runs with autovacuum off)."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite reuses its freed pages by itself")

    def live_bytes() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT pg_total_relation_size('deliveries_live') "
                        "+ pg_total_relation_size('delivery_attempts_live')"
                    )
                ).scalar_one()
            )

    # Two rounds first: an index page emptied by one vacuum is reusable after the next.
    for _ in range(2):
        _finish(engine, 2000, AttemptOutcome.DELIVERED)
        assert vacuum_churning_tables(engine) == [
            "deliveries_live",
            "delivery_attempts_live",
            "idempotency_keys",
            "delivery_counters",
        ]
    settled = live_bytes()
    for _ in range(4):
        _finish(engine, 2000, AttemptOutcome.DELIVERED)
        vacuum_churning_tables(engine)
    assert live_bytes() <= 1.1 * settled  # without the vacuum: more than twice
