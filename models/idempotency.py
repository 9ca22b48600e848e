"""Idempotency keys: one row per (vendor, key), so duplicates are stopped by a unique key."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import cast

from sqlalchemy import Index, String, Table, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from eventrelay.models.base import Base, UTCDateTime, utcnow


class IdempotencyKey(Base):
    """Claims a (vendor, key) for one delivery until `expires_at`.

    Also holds vendor throttle windows (keys starting with `~throttle:`), which work the same
    way: the first job in the window takes the key, later ones find it taken.
    """

    __tablename__ = "idempotency_keys"

    vendor: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_idempotency_keys_expires_at", "expires_at"),)


IDEMPOTENCY_KEYS = cast(Table, IdempotencyKey.__table__)
