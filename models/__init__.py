"""eventrelay's tables (SQLAlchemy 2.0). Every change here needs an Alembic revision."""

from models.base import Base
from models.delivery import Attempt, AttemptOutcome, Delivery, DeliveryStatus, Lane
from models.idempotency import IdempotencyKey
from models.identity import BotsiProfile

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "Base",
    "BotsiProfile",
    "Delivery",
    "DeliveryStatus",
    "IdempotencyKey",
    "Lane",
]
