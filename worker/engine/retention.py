"""Retention: finished history is removed after EVENTRELAY_RETENTION_SECONDS.

Delivered and suppressed deliveries leave the live rows when they finish (`archived_at`, the
partition key). On PostgreSQL, removing history is dropping the partitions that ended before
the cutoff; on SQLite, DELETEs of a few thousand rows each. Dead letters and pending work are
live rows, which retention never touches (`dlq purge` removes dead letters).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, select, update

from eventrelay.models import partitions
from eventrelay.models.base import LIVE, utcnow
from eventrelay.models.counters import Deltas, add_to_counters
from eventrelay.models.delivery import ATTEMPTS, DELIVERIES, DeliveryStatus
from eventrelay.models.sql import pick_locked
from eventrelay.worker.config import Settings

log = logging.getLogger("eventrelay.retention")

D, A = DELIVERIES, ATTEMPTS
DELETE_BATCH = 5000
DELETE_BUDGET_SECONDS = 0.5
ARCHIVE_BATCH = 5000
MIN_AHEAD_SECONDS = partitions.MIN_AHEAD_SECONDS


@dataclass
class RetentionSummary:
    archived: int = 0  # suppressed deliveries moved into history
    removed: int = 0  # deliveries and attempts deleted (SQLite)
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # partitions dropped (PostgreSQL)


def ahead(settings: Settings) -> timedelta:
    return partitions.ahead(settings.partition_seconds)


def run(engine: Engine, settings: Settings, now: datetime | None = None) -> RetentionSummary:
    """One retention pass: archive, create partitions ahead, remove what has expired."""
    real_time = now is None
    now = now or utcnow()
    cutoff = now - timedelta(seconds=settings.retention_seconds)
    summary = RetentionSummary()
    with engine.connect() as conn:
        partitioned = partitions.is_partitioned(conn)
    if partitioned:
        summary.created = _ensure(engine, settings, now, remember=real_time)
    with engine.begin() as conn:
        summary.archived = archive_suppressed(conn, now)
    if partitioned:
        summary.dropped = [p.name for p in partitions.drop_partitions_before(engine, cutoff)]
        if summary.dropped and not real_time:
            forget_partitions(engine)  # what this process knew may be gone now
    else:
        summary.removed = delete_expired(engine, cutoff)
    if summary.dropped or summary.removed:
        log.info(
            "retention: removed history finished before %s (%s)",
            cutoff.isoformat(timespec="seconds"),
            f"dropped partitions {', '.join(summary.dropped)}"
            if summary.dropped
            else f"deleted {summary.removed} rows",
        )
    return summary


def _ensure(engine: Engine, settings: Settings, now: datetime, remember: bool = True) -> list[str]:
    interval = timedelta(seconds=settings.partition_seconds)
    # From one interval back: a worker whose clock is a little behind still finds a partition.
    created = partitions.ensure_partitions(engine, now - interval, now + ahead(settings), interval)
    if remember:
        _covered[_key(engine)] = now + ahead(settings)
    return created


def archive_suppressed(conn: Connection, now: datetime) -> int:
    """Move suppressed deliveries into history, and count them.

    Producers store them live: an `enqueue` inside a web request must never wait for, or
    make, a partition, nor hold a running total's row lock until the app commits.
    """
    picked = (
        select(D.c.id)
        .where(D.c.archived_at == LIVE, D.c.status == DeliveryStatus.SUPPRESSED)
        .limit(ARCHIVE_BATCH)
    )
    vendors = conn.execute(
        update(D)
        .where(
            D.c.id.in_(pick_locked(conn, picked, name="suppressed")),
            D.c.archived_at == LIVE,
            D.c.status == DeliveryStatus.SUPPRESSED,
        )
        .values(archived_at=now)
        .returning(D.c.vendor)
    ).scalars()
    deltas = Deltas()
    for vendor in vendors:
        deltas.suppressed(vendor)
    add_to_counters(conn, deltas)
    return sum(deltas.values())


def delete_expired(engine: Engine, cutoff: datetime) -> int:
    """SQLite: delete history that finished before `cutoff`, a batch per transaction, within
    a time budget (the rest goes next time), so no write waits long for the database lock."""
    removed = 0
    started = time.monotonic()
    for table in (A, D):
        while time.monotonic() - started < DELETE_BUDGET_SECONDS:
            expired = select(table.c.id).where(table.c.archived_at < cutoff).limit(DELETE_BATCH)
            with engine.begin() as conn:
                n = int(
                    conn.execute(
                        delete(table).where(
                            table.c.id.in_(expired.scalar_subquery()), table.c.archived_at < cutoff
                        )
                    ).rowcount
                    or 0
                )
            removed += n
            if n < DELETE_BATCH:
                break
    return removed


def every_seconds(settings: Settings) -> float:
    """How often the scheduler runs a pass: often enough to keep partitions ahead."""
    return max(1.0, min(60.0, settings.partition_seconds / 4))


# ---- partitions for the recorder ---------------------------------------------------------

_covered: dict[tuple[int, str], datetime] = {}
_covered_lock = threading.Lock()


def _key(engine: Engine) -> tuple[int, str]:
    return (os.getpid(), str(engine.url))


def ensure_history_partition(engine: Engine, settings: Settings) -> None:
    """Make sure history has a partition for now before a worker writes into it.

    The scheduler keeps partitions ahead; this covers a worker running without one (or one
    that fell behind). Free when they exist: the answer is remembered until it runs out.
    """
    if engine.dialect.name != "postgresql":
        return
    now = utcnow()
    key = _key(engine)
    if _covered.get(key, now) > now + timedelta(seconds=1):
        return
    with _covered_lock:
        if _covered.get(key, now) > now + timedelta(seconds=1):
            return
        with engine.connect() as conn:
            partitioned = partitions.is_partitioned(conn)
        if not partitioned:
            _covered[key] = LIVE
            return
        _ensure(engine, settings, now)


def forget_partitions(engine: Engine | None = None) -> None:
    """After 'no partition of relation ... found for row': someone dropped or reset them."""
    with _covered_lock:
        if engine is None:
            _covered.clear()
        else:
            _covered.pop(_key(engine), None)


def is_missing_partition(exc: BaseException) -> bool:
    return "no partition of relation" in str(exc)


def describe(conn: Connection, settings: Settings) -> dict[str, Any]:
    """What `status` and the metrics show of retention: the settings and the oldest row kept.

    Both read an index's first entry (on PostgreSQL, per partition), never a table."""
    oldest = conn.execute(select(D.c.created_at).order_by(D.c.id).limit(1)).scalar()
    oldest_finished = conn.execute(
        select(D.c.archived_at).where(D.c.archived_at < LIVE).order_by(D.c.archived_at).limit(1)
    ).scalar()
    info: dict[str, Any] = {
        "retention_seconds": settings.retention_seconds,
        "oldest_row_created_at": oldest.isoformat() if oldest else None,
        "oldest_history_finished_at": oldest_finished.isoformat() if oldest_finished else None,
    }
    if partitions.is_partitioned(conn):
        info["partition_seconds"] = settings.partition_seconds
        info["history_partitions"] = len(partitions.history_partitions(conn, "deliveries"))
    return info
