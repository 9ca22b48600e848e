"""Running totals kept as deliveries finish, so that reading them never scans history.

`status` and the metrics read these instead of counting rows: a count over months of finished
deliveries is a scan of every one of them, and retention removes rows the totals still count.
"""

from __future__ import annotations

import functools
import uuid
from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Connection, String, Table, select, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from eventrelay.models.base import Base
from eventrelay.models.delivery import AttemptOutcome
from eventrelay.models.sql import BatchRows, dialect_insert


class DeliveryCounter(Base):
    """One running total per (vendor, name); the names are below."""

    __tablename__ = "delivery_counters"

    vendor: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


DELIVERY_COUNTERS = cast(Table, DeliveryCounter.__table__)


def add_to_counters(conn: Connection, deltas: Mapping[tuple[str, str], int]) -> None:
    """Add `deltas` to the totals, in this transaction.

    In key order: two transactions bumping the same totals in different orders would deadlock.
    Call it last before commit, since each total's row stays locked until then.
    """
    rows = [
        {"vendor": vendor, "name": name, "value": n}
        for (vendor, name), n in sorted(deltas.items())
        if n
    ]
    if not rows:
        return
    if conn.dialect.name == "postgresql":  # one statement, whatever the number of totals
        statement, totals = _add_statement()
        conn.execute(statement, totals.values(rows))
        return
    stmt = dialect_insert(conn, DELIVERY_COUNTERS)
    stmt = stmt.on_conflict_do_update(
        index_elements=["vendor", "name"],
        set_={"value": DELIVERY_COUNTERS.c.value + stmt.excluded.value},
    )
    conn.execute(stmt, rows)


@functools.cache
def _add_statement() -> tuple[Any, BatchRows]:
    """PostgreSQL: adding a batch of deltas to the totals, built once (see BatchRows)."""
    totals = BatchRows("total", (("vendor", String()), ("name", String()), ("value", BigInteger())))
    stmt = postgresql.insert(DELIVERY_COUNTERS).from_select(
        # WHERE true: without it PostgreSQL would read ON CONFLICT as a join's ON.
        totals.names,
        select(*totals.table.c).where(true()),
    )
    statement = stmt.on_conflict_do_update(
        index_elements=["vendor", "name"],
        set_={"value": DELIVERY_COUNTERS.c.value + stmt.excluded.value},
    )
    return statement, totals


def read_counters(conn: Connection) -> dict[tuple[str, str], int]:
    c = DELIVERY_COUNTERS.c
    return {
        (r.vendor, r.name): int(r.value) for r in conn.execute(select(c.vendor, c.name, c.value))
    }


# ---- what is counted ------------------------------------------------------------------------
# Everything that finishes a delivery or writes an attempt adds its deltas in the same
# transaction, so the totals are exact.

DELIVERED = "delivered"
SUPPRESSED = "suppressed"
DEAD = "dead"  # times a delivery was dead-lettered (a replayed one that dies again counts twice)
LATENCY_SUM_MS = "latency_sum_ms"
# Upper bounds of the accepted → delivered histogram's buckets.
LATENCY_BUCKETS_SECONDS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    1800,
    3600,
    86400,
)


def attempts_name(outcome: AttemptOutcome | str) -> str:
    return f"attempts.{outcome}"


def latency_bucket_name(index: int) -> str:
    """Bucket `index` counts latencies in (bound[index-1], bound[index]]; the last is +Inf."""
    return f"latency.{index}"


class Deltas(Counter[tuple[str, str]]):
    """(vendor, counter name) → how much to add."""

    def delivered(self, vendor: str, delivery_id: uuid.UUID, now: datetime) -> None:
        self[(vendor, DELIVERED)] += 1
        accepted = accepted_at_ms(delivery_id)
        if accepted is None:
            return
        latency_ms = max(0, int(now.timestamp() * 1000) - accepted)
        index = bisect_left(LATENCY_BUCKETS_SECONDS, latency_ms / 1000)
        self[(vendor, latency_bucket_name(index))] += 1
        self[(vendor, LATENCY_SUM_MS)] += latency_ms

    def dead(self, vendor: str) -> None:
        self[(vendor, DEAD)] += 1

    def suppressed(self, vendor: str) -> None:
        self[(vendor, SUPPRESSED)] += 1

    def attempt(self, vendor: str, outcome: AttemptOutcome) -> None:
        self[(vendor, attempts_name(outcome))] += 1


def accepted_at_ms(delivery_id: uuid.UUID) -> int | None:
    """When the delivery was accepted, read from its UUIDv7 id (ms since the epoch): the
    recorder knows the id, and reading `created_at` back would cost a column per claim."""
    if delivery_id.version != 7:
        return None
    return delivery_id.int >> 80
