"""history apart from live work: archived_at partition key, running totals

Deliveries and attempts get `archived_at` (LIVE for pending, delivering and dead rows; the
finish time for delivered and suppressed ones) as part of their primary keys, attempts get
UUID ids, and the foreign keys between them go (README, "Retention"). On PostgreSQL both tables
become partitioned by `archived_at`: a live partition, and history partitions covering the
rows already finished (all those older than the retention in one partition, which the first
retention pass drops). `delivery_counters` is filled from the rows present.

The tables are rebuilt and their rows copied: stop workers and the scheduler while it runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 04:30:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from alembic import op

from eventrelay.models.base import LIVE, UTCDateTime, utcnow

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELIVERY_COLUMNS = (
    "id, vendor, operation, payload, idempotency_key, user_ref, depends_on, status, lane, "
    "attempts, window_started_at, window_base_attempts, next_attempt_at, dispatched_at, "
    "lease_expires_at, reason, last_status_code, created_at, updated_at, finished_at"
)
ATTEMPT_COLUMNS = (
    "delivery_id, number, outcome, started_at, duration_ms, status_code, error_class, "
    "response_excerpt"
)
PENDING_WHERE = "status = 'pending' AND dispatched_at IS NULL"
# (name, columns, partial) of each table's indexes at 0002 and at 0003.
INDEXES_0002 = {
    "deliveries": [
        ("ix_deliveries_depends_on", ["depends_on"], False),
        ("ix_deliveries_status_lease_expires_at", ["status", "lease_expires_at"], False),
        ("ix_deliveries_vendor_user_ref", ["vendor", "user_ref"], False),
        ("ix_deliveries_status_dispatched_at", ["status", "dispatched_at"], False),
        ("ix_deliveries_undispatched", ["next_attempt_at"], True),
        (
            "ix_deliveries_vendor_status_lane_next",
            ["vendor", "status", "lane", "next_attempt_at"],
            False,
        ),
    ],
    "delivery_attempts": [("ix_delivery_attempts_delivery_id", ["delivery_id", "number"], False)],
}
INDEXES_0003 = {
    "deliveries": [
        *INDEXES_0002["deliveries"],
        ("ix_deliveries_archived_at", ["archived_at"], False),
    ],
    "delivery_attempts": [
        *INDEXES_0002["delivery_attempts"],
        ("ix_delivery_attempts_archived_at", ["archived_at"], False),
    ],
}


def _pg() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _status_enum() -> sa.Enum:
    return sa.Enum(
        "pending",
        "delivering",
        "delivered",
        "dead",
        "suppressed",
        name="delivery_status",
        native_enum=False,
        length=16,
    )


def _delivery_columns() -> list[sa.Column[object]]:
    t = UTCDateTime(timezone=True)
    return [
        sa.Column("vendor", sa.String(length=64), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("user_ref", sa.String(length=255), nullable=True),
        sa.Column("depends_on", sa.Uuid(), nullable=True),
        sa.Column("status", _status_enum(), nullable=False),
        sa.Column(
            "lane",
            sa.Enum("fresh", "retry", name="delivery_lane", native_enum=False, length=16),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("window_started_at", t, nullable=False),
        sa.Column("window_base_attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", t, nullable=False),
        sa.Column("dispatched_at", t, nullable=True),
        sa.Column("lease_expires_at", t, nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("created_at", t, nullable=False),
        sa.Column("updated_at", t, nullable=False),
        sa.Column("finished_at", t, nullable=True),
    ]


def _attempt_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("delivery_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum(
                "delivered",
                "retry",
                "dead",
                "lost",
                "parked",
                name="attempt_outcome",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("started_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error_class", sa.String(length=128), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
    ]


def _move_aside(indexes: dict[str, list[tuple[str, list[str], bool]]], suffix: str) -> None:
    """Rename both tables to <name>_<suffix>, freeing every index and key name they held."""
    for table in ("delivery_attempts", "deliveries"):
        for name, _cols, _partial in indexes[table]:
            op.drop_index(name, table_name=table)
        if _pg():
            op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT pk_{table} TO pk_{table}_{suffix}")
        op.rename_table(table, f"{table}_{suffix}")


def _create_indexes(indexes: dict[str, list[tuple[str, list[str], bool]]]) -> None:
    for table, entries in indexes.items():
        for name, cols, partial in entries:
            where = sa.text(PENDING_WHERE) if partial else None
            op.create_index(name, table, cols, postgresql_where=where, sqlite_where=where)


def _dt(name: str, value: datetime) -> sa.BindParameter[datetime]:
    return sa.bindparam(name, value, type_=UTCDateTime())


def _archived_at_of_old_rows() -> str:
    least = "least" if _pg() else "min"
    return (
        "CASE WHEN status IN ('delivered', 'suppressed') "
        f"THEN {least}(coalesce(finished_at, updated_at), :now) ELSE :live END"
    )


def upgrade() -> None:
    now = utcnow()
    bind = op.get_bind()
    _move_aside(INDEXES_0002, "0002")
    partitioned: dict[str, Any] = {"postgresql_partition_by": "RANGE (archived_at)"}
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("archived_at", UTCDateTime(timezone=True), nullable=False),
        *_delivery_columns(),
        sa.PrimaryKeyConstraint("id", "archived_at", name="pk_deliveries"),
        **partitioned,
    )
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("archived_at", UTCDateTime(timezone=True), nullable=False),
        *_attempt_columns(),
        sa.PrimaryKeyConstraint("id", "archived_at", name="pk_delivery_attempts"),
        **partitioned,
    )
    archived_at = _archived_at_of_old_rows()
    if _pg():
        _partition_for_old_rows(bind, now, archived_at)
    bind.execute(
        sa.text(
            f"INSERT INTO deliveries (archived_at, {DELIVERY_COLUMNS}) "
            f"SELECT {archived_at}, {DELIVERY_COLUMNS} FROM deliveries_0002"
        ).bindparams(_dt("now", now), _dt("live", LIVE))
    )
    new_id = "gen_random_uuid()" if _pg() else "lower(hex(randomblob(16)))"
    prefixed = ", ".join(f"a.{c.strip()}" for c in ATTEMPT_COLUMNS.split(","))
    bind.execute(
        sa.text(
            f"INSERT INTO delivery_attempts (id, archived_at, {ATTEMPT_COLUMNS}) "
            f"SELECT {new_id}, d.archived_at, {prefixed} "
            "FROM delivery_attempts_0002 a JOIN deliveries d ON d.id = a.delivery_id"
        )
    )
    _create_indexes(INDEXES_0003)
    op.drop_table("delivery_attempts_0002")
    op.drop_table("deliveries_0002")
    op.create_table(
        "delivery_counters",
        sa.Column("vendor", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("vendor", "name", name=op.f("pk_delivery_counters")),
    )
    _fill_counters(bind)


def _partition_for_old_rows(bind: sa.Connection, now: datetime, archived_at: str) -> None:
    from eventrelay.models import partitions
    from eventrelay.worker.config import get_settings

    settings = get_settings()
    interval = timedelta(seconds=settings.partition_seconds)
    for table in ("deliveries", "delivery_attempts"):
        partitions.create_live_partition(bind, table)
    oldest = bind.execute(
        sa.text(
            f"SELECT min({archived_at}) FROM deliveries_0002 "
            "WHERE status IN ('delivered', 'suppressed')"
        )
        .bindparams(_dt("now", now), _dt("live", LIVE))
        .columns(sa.column("oldest", UTCDateTime()))
    ).scalar()
    start = partitions.floor_to(now - interval, interval)
    made: list[partitions.Partition] = []
    if oldest is not None:
        regular = partitions.floor_to(now - timedelta(seconds=settings.retention_seconds), interval)
        first = partitions.floor_to(oldest, interval)
        if first < regular:
            # Everything older than the retention in one partition: the first pass drops it.
            for table in ("deliveries", "delivery_attempts"):
                name = partitions.create_history_partition(bind, table, first, regular)
                made.append(partitions.Partition(table, name, first, regular))
            start = regular
        else:
            start = min(start, first)
    until = now + partitions.ahead(settings.partition_seconds)
    for lo, hi in partitions.missing_ranges(
        [p for p in made if p.table == "deliveries"], start, until, interval
    ):
        for table in ("deliveries", "delivery_attempts"):
            partitions.create_history_partition(bind, table, lo, hi)


def _fill_counters(bind: sa.Connection) -> None:
    from eventrelay.models import counters

    latency = (
        "extract(epoch FROM finished_at - created_at)"
        if _pg()
        else "(julianday(finished_at) - julianday(created_at)) * 86400.0"
    )
    bucket = (
        "CASE "
        + " ".join(
            f"WHEN {latency} <= {bound} THEN '{counters.latency_bucket_name(i)}'"
            for i, bound in enumerate(counters.LATENCY_BUCKETS_SECONDS)
        )
        + f" ELSE '{counters.latency_bucket_name(len(counters.LATENCY_BUCKETS_SECONDS))}' END"
    )
    delivered = "status = 'delivered' AND finished_at IS NOT NULL"
    statements = [
        "SELECT vendor, status, count(*) FROM deliveries "
        "WHERE status IN ('delivered', 'suppressed', 'dead') GROUP BY vendor, status",
        "SELECT vendor, 'attempts.' || a.outcome, count(*) FROM delivery_attempts a "
        "JOIN deliveries d ON d.id = a.delivery_id GROUP BY vendor, a.outcome",
        f"SELECT vendor, {bucket}, count(*) FROM deliveries WHERE {delivered} "
        f"GROUP BY vendor, {bucket}",
        f"SELECT vendor, '{counters.LATENCY_SUM_MS}', "
        f"CAST(round(sum({latency}) * 1000) AS BIGINT) FROM deliveries "
        f"WHERE {delivered} GROUP BY vendor",
    ]
    for select in statements:
        bind.execute(sa.text(f"INSERT INTO delivery_counters (vendor, name, value) {select}"))


def downgrade() -> None:
    bind = op.get_bind()
    op.drop_table("delivery_counters")
    _move_aside(INDEXES_0003, "0003")
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_delivery_columns(),
        sa.ForeignKeyConstraint(
            ["depends_on"],
            ["deliveries.id"],
            name=op.f("fk_deliveries_depends_on_deliveries"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
    )
    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        *_attempt_columns(),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_attempts_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    # A dependency removed by retention is no longer waited for (the foreign key's SET NULL).
    kept_dependency = (
        "CASE WHEN depends_on IN (SELECT id FROM deliveries_0003) THEN depends_on END"
    )
    bind.execute(
        sa.text(
            f"INSERT INTO deliveries ({DELIVERY_COLUMNS}) SELECT "
            + DELIVERY_COLUMNS.replace(" depends_on,", f" {kept_dependency},")
            + " FROM deliveries_0003"
        )
    )
    bind.execute(
        sa.text(
            f"INSERT INTO delivery_attempts ({ATTEMPT_COLUMNS}) SELECT {ATTEMPT_COLUMNS} "
            "FROM delivery_attempts_0003 a WHERE EXISTS "
            "(SELECT 1 FROM deliveries d WHERE d.id = a.delivery_id) "
            "ORDER BY a.delivery_id, a.number"
        )
    )
    _create_indexes(INDEXES_0002)
    op.drop_table("delivery_attempts_0003")
    op.drop_table("deliveries_0003")
