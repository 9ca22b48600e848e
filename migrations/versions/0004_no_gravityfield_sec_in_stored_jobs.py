"""no Gravity Field `sec` in stored jobs

A Gravity Field job's `sec` is the site's key, a secret: the door drops it since the Gravity
Field fix, but rows stored before that may still hold one in their payload. Removed here from
every delivery of the vendor, live or history. Other vendors' payloads are left as they are (a
`sec` there is the job's own data).

Downgrading keeps the rows as they are: a removed secret is never put back.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 18:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # `payload` is json (not jsonb): the key operators need jsonb, so a round trip.
        op.execute(
            "UPDATE deliveries SET payload = (payload::jsonb - 'sec')::json "
            "WHERE vendor = 'gravityfield' AND payload::jsonb ? 'sec'"
        )
    else:
        op.execute(
            "UPDATE deliveries SET payload = json_remove(payload, '$.sec') "
            "WHERE vendor = 'gravityfield' AND json_type(payload, '$.sec') IS NOT NULL"
        )


def downgrade() -> None:
    pass
