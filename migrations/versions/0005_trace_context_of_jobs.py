"""the trace context of each job: deliveries.trace_context

The W3C trace context (`traceparent`, `tracestate`) of the span that enqueued a job, NULL
when there was none (README, "Tracing"). Nullable and without a default, so adding it rewrites
no row. On PostgreSQL a column added to the partitioned `deliveries` is added to every
partition; a history partition that was created but not yet attached (maintenance cut short
between its two statements) gets it too, or attaching it would fail for the missing column.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("trace_context", sa.JSON(none_as_null=True)))
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for (name,) in bind.execute(sa.text(_UNATTACHED_PARTITIONS)):
            op.execute(f'ALTER TABLE "{name}" ADD COLUMN IF NOT EXISTS trace_context json')


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        for (name,) in bind.execute(sa.text(_UNATTACHED_PARTITIONS)):
            op.execute(f'ALTER TABLE "{name}" DROP COLUMN IF EXISTS trace_context')
    # SQLite (3.35+) drops a column in place, as PostgreSQL does: no table copy.
    op.execute("ALTER TABLE deliveries DROP COLUMN trace_context")


# History partitions are named deliveries_pYYYYMMDD_HHMMSS (models/partitions.py).
_UNATTACHED_PARTITIONS = (
    "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relispartition "
    "AND c.relname ~ '^deliveries_p[0-9]{8}_[0-9]{6}$'"
)
