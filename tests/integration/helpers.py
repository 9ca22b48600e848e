from __future__ import annotations

from typing import Any

from sqlalchemy import select

from eventrelay.models.delivery import Attempt, Delivery
from eventrelay.models.session import get_engine
from tests.support import wait_for


def delivery(delivery_id: Any) -> Any:
    with get_engine().connect() as conn:
        return conn.execute(select(Delivery.__table__).where(Delivery.id == delivery_id)).one()


def attempts(delivery_id: Any) -> list[Any]:
    with get_engine().connect() as conn:
        return list(
            conn.execute(
                select(Attempt.__table__)
                .where(Attempt.delivery_id == delivery_id)
                .order_by(Attempt.id)
            )
        )


def wait_status(delivery_id: Any, *statuses: str, timeout: float = 30.0) -> Any:
    def check() -> Any:
        row = delivery(delivery_id)
        return row if str(row.status) in statuses else None

    return wait_for(check, timeout, what=f"delivery {delivery_id} to become {'/'.join(statuses)}")
