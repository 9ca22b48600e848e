"""Running totals kept as deliveries finish, so that reading them never scans history.

`status` and the metrics read these instead of counting rows: a count over months of finished
deliveries is a scan of every one of them, and retention removes rows the totals still count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from sqlalchemy import BigInteger, Connection, String, Table
from sqlalchemy.orm import Mapped, mapped_column

from eventrelay.models.base import Base
from eventrelay.models.sql import dialect_insert


class DeliveryCounter(Base):
    """One running total per (vendor, name); names are listed in `worker/engine/counting.py`."""

    __tablename__ = "delivery_counters"

    vendor: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


DELIVERY_COUNTERS = cast(Table, DeliveryCounter.__table__)


def add_to_counters(conn: Connection, deltas: Mapping[tuple[str, str], int]) -> None:
    """Add `deltas` to the totals, in this transaction.

    In key order: two transactions bumping the same totals in different orders would deadlock.
    Call it last before commit, since each total's row stays locked until then.
    """
    rows = [
        {"vendor": vendor, "name": name, "value": n}
        for (vendor, name), n in sorted(deltas.items())
        if n
    ]
    if not rows:
        return
    stmt = dialect_insert(conn, DELIVERY_COUNTERS)
    stmt = stmt.on_conflict_do_update(
        index_elements=["vendor", "name"],
        set_={"value": DELIVERY_COUNTERS.c.value + stmt.excluded.value},
    )
    conn.execute(stmt, rows)


def read_counters(conn: Connection) -> dict[tuple[str, str], int]:
    from sqlalchemy import select

    c = DELIVERY_COUNTERS.c
    return {
        (r.vendor, r.name): int(r.value) for r in conn.execute(select(c.vendor, c.name, c.value))
    }
