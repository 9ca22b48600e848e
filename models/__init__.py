"""eventrelay's tables (SQLAlchemy 2.0). Every change here needs an Alembic revision."""

from eventrelay.models.base import Base
from eventrelay.models.counters import DeliveryCounter
from eventrelay.models.delivery import Attempt, AttemptOutcome, Delivery, DeliveryStatus, Lane
from eventrelay.models.idempotency import IdempotencyKey
from eventrelay.models.identity import BotsiProfile

__all__ = [
    "Attempt",
    "AttemptOutcome",
    "Base",
    "BotsiProfile",
    "Delivery",
    "DeliveryCounter",
    "DeliveryStatus",
    "IdempotencyKey",
    "Lane",
]
