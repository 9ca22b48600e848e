"""A delivery is one job on its way to one vendor; attempts are its history."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any, cast

from sqlalchemy import DDL, JSON, Index, Integer, String, Table, Text, Uuid, event, text
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import Mapped, mapped_column, relationship

from eventrelay.models.base import LIVE, Base, UTCDateTime, new_id, utcnow


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt (next_attempt_at)
    DELIVERING = "delivering"  # claimed by a worker until lease_expires_at
    DELIVERED = "delivered"
    DEAD = "dead"  # dead-lettered: `reason` says why; can be replayed
    SUPPRESSED = "suppressed"  # a vendor rule says it must not be sent (e.g. vtcdn email opens)


class Lane(enum.StrEnum):
    """Which queue a delivery's next message goes to: fresh work never waits behind retries."""

    FRESH = "fresh"
    RETRY = "retry"


class AttemptOutcome(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    LOST = "lost"  # the worker vanished while holding the lease
    PARKED = "parked"  # credentials rejected; the attempt is not counted against the job


def _enum(cls: type[enum.Enum], name: str) -> SAEnum:
    # Stored as plain strings (no native PG enum): adding a state is then a code change only.
    return SAEnum(cls, name=name, native_enum=False, length=16, values_callable=_values)


def _values(cls: type[enum.Enum]) -> list[str]:
    return [str(m.value) for m in cls]


# Finished history is kept apart from live work by `archived_at`, the tables' partition key on
# PostgreSQL (README, "Retention"): LIVE for pending, delivering and dead rows, which retention
# never removes; the moment a delivery was delivered or suppressed for the rest, so a day of
# history is one partition, removed by dropping it. The key is part of each primary key
# because PostgreSQL wants it in every unique index of a partitioned table, and for the same
# reason there are no foreign keys between these tables (the code keeps them consistent: a
# delivery's attempts always carry its `archived_at`).
PARTITIONED_BY = "RANGE (archived_at)"


class Delivery(Base):
    __tablename__ = "deliveries"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    archived_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True, default=LIVE)
    vendor: Mapped[str] = mapped_column(String(64))
    operation: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    # The vendor's notion of "the user" (e.g. Botsi customerUserId), for ordering rules.
    user_ref: Mapped[str | None] = mapped_column(String(255))
    # Must wait until this delivery is delivered (Botsi: an event waits for its profile).
    # (A missing one, removed by retention or `dlq purge`, is waited for no longer.)
    depends_on: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The W3C trace context of the span that enqueued the job ({"traceparent", "tracestate"}),
    # NULL when none was active: each attempt's span joins that trace (worker/tracing.py).
    trace_context: Mapped[dict[str, str] | None] = mapped_column(JSON(none_as_null=True))

    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
    )
    lane: Mapped[Lane] = mapped_column(_enum(Lane, "delivery_lane"), default=Lane.FRESH)
    # Attempts made so far, over the delivery's whole life (attempt numbers never repeat).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The retry budget (max attempts, max age) counts from here: set on accept and on replay.
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    window_base_attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When a message for it was last published; NULL means "publish me when due".
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    reason: Mapped[str | None] = mapped_column(Text)
    last_status_code: Mapped[int | None] = mapped_column(Integer)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    attempt_history: Mapped[list[Attempt]] = relationship(
        back_populates="delivery",
        lazy="raise",
        primaryjoin="Delivery.id == foreign(Attempt.delivery_id)",
        order_by="Attempt.number",
        viewonly=True,
    )

    __table_args__ = (
        # Each index serves one query that runs all the time, so a large backlog never turns
        # it into a scan of every pending row:
        # the scheduler's "never published" scan (partial: only rows waiting for a message),
        Index(
            "ix_deliveries_undispatched",
            "next_attempt_at",
            postgresql_where=text("status = 'pending' AND dispatched_at IS NULL"),
            sqlite_where=text("status = 'pending' AND dispatched_at IS NULL"),
        ),
        # its "published long ago, message probably lost" scan,
        Index("ix_deliveries_status_dispatched_at", "status", "dispatched_at"),
        # its expired-lease scan,
        Index("ix_deliveries_status_lease_expires_at", "status", "lease_expires_at"),
        # the workers' top-up claim (and per-vendor counts, by its prefix),
        Index(
            "ix_deliveries_vendor_status_lane_next", "vendor", "status", "lane", "next_attempt_at"
        ),
        Index("ix_deliveries_depends_on", "depends_on"),
        Index("ix_deliveries_vendor_user_ref", "vendor", "user_ref"),
        # retention's batched DELETE on SQLite, and the oldest kept history row
        Index("ix_deliveries_archived_at", "archived_at"),
        {"postgresql_partition_by": PARTITIONED_BY},
    )


class Attempt(Base):
    __tablename__ = "delivery_attempts"

    # A UUIDv7 made here, not a sequence: SQLite cannot autoincrement a two-column key.
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    # Always its delivery's `archived_at`: attempts leave with their delivery.
    archived_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True, default=LIVE)
    delivery_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    number: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[AttemptOutcome] = mapped_column(_enum(AttemptOutcome, "attempt_outcome"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error_class: Mapped[str | None] = mapped_column(String(128))
    # Redacted and truncated: never a secret, never more than a few hundred characters.
    response_excerpt: Mapped[str | None] = mapped_column(Text)

    delivery: Mapped[Delivery] = relationship(
        back_populates="attempt_history",
        lazy="raise",
        primaryjoin="foreign(Attempt.delivery_id) == Delivery.id",
        viewonly=True,
    )

    __table_args__ = (
        Index("ix_delivery_attempts_delivery_id", "delivery_id", "number"),
        Index("ix_delivery_attempts_archived_at", "archived_at"),
        {"postgresql_partition_by": PARTITIONED_BY},
    )


PARTITIONED_TABLES = ("deliveries", "delivery_attempts")


def live_partition_ddl(table: str) -> DDL:
    """The partition of live rows, made with its table (Alembic's and `create_all`'s alike)."""
    return DDL(  # type: ignore[no-untyped-call]
        f"CREATE TABLE IF NOT EXISTS {table}_live PARTITION OF {table} "
        f"FOR VALUES FROM ('{LIVE.isoformat()}') TO (MAXVALUE)"
    )


for _table in (cast(Table, Delivery.__table__), cast(Table, Attempt.__table__)):
    event.listen(
        _table, "after_create", live_partition_ddl(_table.name).execute_if(dialect="postgresql")
    )

# Typed handles for Core statements on the hot paths.
DELIVERIES = cast(Table, Delivery.__table__)
ATTEMPTS = cast(Table, Attempt.__table__)
