"""VACUUM of the few tables that churn, run by the scheduler (PostgreSQL only).

Every delivery is inserted live, updated on claim and on each attempt, and then moved into a
history partition (a delete from the live partition): a handful of dead row versions each in
a partition that holds only the live work. Autovacuum is meant to clean that up, but it may be
off, or at its defaults wakes once a minute and throttles itself: without it the live partition
grows by every delivery's dead row versions while it holds a few hundred rows, and every claim
walks the dead versions too (docs/decisions.md has the soak's figures).

So the scheduler vacuums these tables itself every few seconds. They are small (live work,
unexpired keys, one row per counter), so a pass costs milliseconds, and the space it frees is
reused by the next inserts. The options keep it off the hot path:

* SKIP_LOCKED: a table another VACUUM (autovacuum's) is working on is skipped this time;
* TRUNCATE false: giving trailing empty pages back to the OS takes an ACCESS EXCLUSIVE lock,
  which would stall every claim behind it; the pages are reused instead;
* ANALYZE: the planner's picture of the live partition (a few hundred rows, or a backlog of a
  million) changes by the minute, and autovacuum's ANALYZE may never come.

History partitions are inserted into and never updated, so they need none of this; a partition
is dropped whole when it expires.
"""

from __future__ import annotations

from sqlalchemy import Engine, text

from eventrelay.models.delivery import PARTITIONED_TABLES
from eventrelay.models.partitions import is_partitioned, live_partition_name

OTHER_CHURNING_TABLES = ("idempotency_keys", "delivery_counters")


def churning_tables(partitioned: bool) -> list[str]:
    live = [live_partition_name(t) if partitioned else t for t in PARTITIONED_TABLES]
    return [*live, *OTHER_CHURNING_TABLES]


def vacuum_churning_tables(engine: Engine) -> list[str]:
    """VACUUM (and ANALYZE) the tables that churn; returns their names, [] off PostgreSQL."""
    if engine.dialect.name != "postgresql":
        return []  # SQLite reuses freed pages by itself; its history goes by batched DELETEs
    with engine.connect() as conn:
        tables = churning_tables(is_partitioned(conn))
    # VACUUM cannot run inside a transaction block.
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("SET lock_timeout = '2s'"))
        try:
            conn.execute(text(f"VACUUM (SKIP_LOCKED, TRUNCATE false, ANALYZE) {', '.join(tables)}"))
        finally:
            conn.execute(text("RESET lock_timeout"))  # the connection goes back to the pool
    return tables
