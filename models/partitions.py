"""PostgreSQL partitions of the history tables: created ahead, dropped when expired.

Each partitioned table (`deliveries`, `delivery_attempts`) has one partition for live rows
(`archived_at` = LIVE) and one per interval of history. Why not pg_partman: it must be
installed into the application's database as an extension (superuser on a self-hosted server,
not offered by every managed one) and run by a cron or background worker of its own, and its
default partition would stop `DETACH ... CONCURRENTLY`; what eventrelay needs is these few
statements, run by its own scheduler.

Locks, so the hot path never waits: a partition is created empty and ATTACHed, which takes
SHARE UPDATE EXCLUSIVE on the parent (reads and writes go on); an expired one is DETACHed
CONCURRENTLY (no default partition exists, so this is allowed) and then dropped, which locks
only the detached table. Every step has a short `lock_timeout`: if it cannot get its lock it
gives up and the next run tries again.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, text

from eventrelay.models.base import LIVE
from eventrelay.models.delivery import PARTITIONED_TABLES, live_partition_ddl

# One lock for all partition maintenance of this database: schedulers and workers that create
# or drop at the same moment take turns.
ADVISORY_LOCK_KEY = 0x65766E74  # "evnt"
LOCK_TIMEOUT = "2s"
_BOUNDS = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")
# Partitions exist this far ahead, so a worker rarely has to create one (at least 20 s, for
# intervals of seconds in tests; two intervals otherwise).
MIN_AHEAD_SECONDS = 20.0


def ahead(partition_seconds: float) -> timedelta:
    """How far ahead of now history partitions are kept ready."""
    return timedelta(seconds=max(2 * partition_seconds, MIN_AHEAD_SECONDS))


@dataclass(frozen=True)
class Partition:
    table: str
    name: str
    start: datetime
    end: datetime


_PARTITION_NAME = re.compile(
    r"^(?:" + "|".join(PARTITIONED_TABLES) + r")_(?:live|p\d{8}_\d{6})$"
)


def is_partition_name(name: str | None) -> bool:
    """Whether a table is one of our partitions (Alembic compares the parents only)."""
    return bool(name and _PARTITION_NAME.match(name))


def live_partition_name(table: str) -> str:
    return f"{table}_live"


def partition_name(table: str, start: datetime) -> str:
    return f"{table}_p{start.astimezone(UTC):%Y%m%d_%H%M%S}"


def _literal(moment: datetime) -> str:
    return f"'{moment.astimezone(UTC).isoformat()}'"


def is_partitioned(conn: Connection, table: str = "deliveries") -> bool:
    if conn.dialect.name != "postgresql":
        return False
    found = conn.execute(
        text("SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(:t)"), {"t": table}
    ).first()
    return found is not None


def create_live_partition(conn: Connection, table: str) -> None:
    conn.execute(live_partition_ddl(table))


def history_partitions(conn: Connection, table: str) -> list[Partition]:
    """The table's history partitions, oldest first (the live one is not among them)."""
    # Bounds print in the session's time zone, with its offset: parsed to UTC below.
    rows = conn.execute(
        text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass(:t) AND NOT i.inhdetachpending"
        ),
        {"t": table},
    ).all()
    found = []
    for name, bound in rows:
        match = _BOUNDS.search(bound or "")
        if match is None:
            continue  # the live partition: FROM (LIVE) TO (MAXVALUE)
        start, end = (datetime.fromisoformat(v).astimezone(UTC) for v in match.groups())
        if start >= LIVE:
            continue
        found.append(Partition(table, name, start, end))
    return sorted(found, key=lambda p: p.start)


def floor_to(moment: datetime, interval: timedelta) -> datetime:
    seconds = interval.total_seconds()
    epoch = moment.timestamp()
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def missing_ranges(
    existing: Sequence[Partition], start: datetime, end: datetime, interval: timedelta
) -> list[tuple[datetime, datetime]]:
    """Interval-aligned ranges covering [start, end) that no existing partition overlaps.

    A slot partly covered (the interval was changed since) is cut to the uncovered part."""
    taken = sorted((p.start, p.end) for p in existing)
    wanted = []
    slot = floor_to(start, interval)
    while slot < end:
        lo, hi = slot, slot + interval
        for t_lo, t_hi in taken:
            if t_hi <= lo or t_lo >= hi:
                continue
            if t_lo <= lo:
                lo = max(lo, t_hi)
            else:
                hi = min(hi, t_lo)
        if lo < hi:
            wanted.append((lo, hi))
        slot += interval
    return wanted


@contextmanager
def _maintenance(engine: Engine) -> Iterator[Connection]:
    """An autocommit connection holding the maintenance lock (DETACH CONCURRENTLY cannot run
    inside a transaction block)."""
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text(f"SET lock_timeout = '{LOCK_TIMEOUT}'"))
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": ADVISORY_LOCK_KEY})
        try:
            yield conn
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_LOCK_KEY})
            conn.execute(text("RESET lock_timeout"))


def ensure_partitions(
    engine: Engine, start: datetime, end: datetime, interval: timedelta
) -> list[str]:
    """Create the history partitions that [start, end) still lacks; returns their names."""
    created = []
    with _maintenance(engine) as conn:
        for table in PARTITIONED_TABLES:
            existing = history_partitions(conn, table)
            for lo, hi in missing_ranges(existing, start, end, interval):
                name = partition_name(table, lo)
                # Not in one transaction, so no lock outlives its statement: a table left
                # unattached by a failure is attached by the next run.
                conn.execute(
                    text(
                        f"CREATE TABLE IF NOT EXISTS {name} "
                        f"(LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
                    )
                )
                conn.execute(
                    text(
                        f"ALTER TABLE {table} ATTACH PARTITION {name} "
                        f"FOR VALUES FROM ({_literal(lo)}) TO ({_literal(hi)})"
                    )
                )
                created.append(name)
    return created


def drop_partitions_before(engine: Engine, cutoff: datetime) -> list[Partition]:
    """Detach and drop every history partition that ends at or before `cutoff`."""
    dropped = []
    with _maintenance(engine) as conn:
        _finish_interrupted_detaches(conn)
        for table in PARTITIONED_TABLES:
            for p in [p for p in history_partitions(conn, table) if p.end <= cutoff]:
                conn.execute(text(f"ALTER TABLE {table} DETACH PARTITION {p.name} CONCURRENTLY"))
                conn.execute(text(f"DROP TABLE IF EXISTS {p.name}"))
                dropped.append(p)
    return dropped


def _finish_interrupted_detaches(conn: Connection) -> None:
    # A DETACH ... CONCURRENTLY cut short (a killed scheduler) leaves the partition pending.
    rows = conn.execute(
        text(
            "SELECT p.relname, c.relname FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent "
            "WHERE i.inhdetachpending AND p.relname = ANY(:tables)"
        ),
        {"tables": list(PARTITIONED_TABLES)},
    ).all()
    for parent, child in rows:
        conn.execute(text(f"ALTER TABLE {parent} DETACH PARTITION {child} FINALIZE"))
        conn.execute(text(f"DROP TABLE IF EXISTS {child}"))


def create_history_partition(conn: Connection, table: str, start: datetime, end: datetime) -> str:
    """Create one history partition in this transaction (migrations: nobody else is writing)."""
    name = partition_name(table, start)
    conn.execute(
        text(
            f"CREATE TABLE {name} PARTITION OF {table} "
            f"FOR VALUES FROM ({_literal(start)}) TO ({_literal(end)})"
        )
    )
    return name
