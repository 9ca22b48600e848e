"""indexes for large backlogs: each scheduler and top-up query gets its own index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 19:17:14.280489
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_status_next_attempt_at"))
        batch_op.drop_index(batch_op.f("ix_deliveries_vendor_status"))
        batch_op.create_index(
            "ix_deliveries_status_dispatched_at", ["status", "dispatched_at"], unique=False
        )
        batch_op.create_index(
            "ix_deliveries_undispatched",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text("status = 'pending' AND dispatched_at IS NULL"),
            sqlite_where=sa.text("status = 'pending' AND dispatched_at IS NULL"),
        )
        batch_op.create_index(
            "ix_deliveries_vendor_status_lane_next",
            ["vendor", "status", "lane", "next_attempt_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_deliveries_vendor_status_lane_next")
        batch_op.drop_index(
            "ix_deliveries_undispatched",
            postgresql_where=sa.text("status = 'pending' AND dispatched_at IS NULL"),
            sqlite_where=sa.text("status = 'pending' AND dispatched_at IS NULL"),
        )
        batch_op.drop_index("ix_deliveries_status_dispatched_at")
        batch_op.create_index(
            batch_op.f("ix_deliveries_vendor_status"), ["vendor", "status"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_deliveries_status_next_attempt_at"),
            ["status", "next_attempt_at"],
            unique=False,
        )
