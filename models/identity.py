"""Identities vendors hand back, kept so producers and operators can look them up."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import cast

from sqlalchemy import String, Table, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from eventrelay.models.base import Base, UTCDateTime, utcnow


class BotsiProfile(Base):
    """The `data.profileId` Botsi returned for a profile we created."""

    __tablename__ = "botsi_profiles"

    profile_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    customer_user_id: Mapped[str | None] = mapped_column(String(255), index=True)
    delivery_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


BOTSI_PROFILES = cast(Table, BotsiProfile.__table__)
