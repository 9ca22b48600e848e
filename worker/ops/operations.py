"""What operators ask of the database: status, one delivery, dead letters, replay, purge.

Each function returns plain JSON-ready data; the CLI prints it as a table or as `--json`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy.sql.elements import ColumnElement

from eventrelay.models import counters
from eventrelay.models.base import LIVE, utcnow
from eventrelay.models.counters import read_counters
from eventrelay.models.delivery import ATTEMPTS, DELIVERIES, DeliveryStatus, Lane
from eventrelay.worker.errors import DeliveryNotFound, EventRelayError

D = DELIVERIES
A = ATTEMPTS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """'90s', '30m', '12h', '7d', '2w' (a bare number is seconds)."""
    match = _DURATION.match(text)
    if not match:
        raise EventRelayError(f"cannot read {text!r} as a duration: use e.g. 90s, 30m, 12h, 7d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def format_duration(seconds: float) -> str:
    """The largest unit that divides `seconds` evenly: 2592000 → '30d', 90 → '90s'."""
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# Suppressed ones are live only until the next retention pass moves (and counts) them.
LIVE_STATES = (
    DeliveryStatus.PENDING,
    DeliveryStatus.DELIVERING,
    DeliveryStatus.DEAD,
    DeliveryStatus.SUPPRESSED,
)


def status_counts(conn: Connection) -> dict[str, dict[str, Any]]:
    """Per vendor: counts by state and the age of the oldest pending delivery.

    Pending, delivering and dead are counted in the live rows (work not yet done, bounded by
    the backlog); delivered and suppressed are the running totals (`delivery_counters`), so
    the answer costs the same with a year of history and is not lowered by retention.
    """
    from eventrelay.worker.vendors import vendor_names

    now = utcnow()

    def entry_for(vendor: str) -> dict[str, Any]:
        return result.setdefault(
            vendor,
            {"counts": {s.value: 0 for s in DeliveryStatus}, "oldest_pending_age_seconds": None},
        )

    result: dict[str, dict[str, Any]] = {}
    for v in vendor_names():
        entry_for(v)
    for vendor, status, count in conn.execute(
        select(D.c.vendor, D.c.status, func.count())
        .where(D.c.archived_at == LIVE, D.c.status.in_(LIVE_STATES))
        .group_by(D.c.vendor, D.c.status)
    ):
        entry_for(vendor)["counts"][str(status)] = count
    for (vendor, name), value in read_counters(conn).items():
        if name in (counters.DELIVERED, counters.SUPPRESSED):
            entry_for(vendor)["counts"][name] += value
    for vendor, oldest in conn.execute(
        select(D.c.vendor, func.min(D.c.created_at))
        .where(
            D.c.archived_at == LIVE,
            D.c.status.in_([DeliveryStatus.PENDING, DeliveryStatus.DELIVERING]),
        )
        .group_by(D.c.vendor)
    ):
        if oldest is not None:
            if oldest.tzinfo is None:  # SQLite's min() comes back as a naive string-parsed value
                from datetime import UTC

                oldest = oldest.replace(tzinfo=UTC)
            entry_for(vendor)["oldest_pending_age_seconds"] = round(
                (now - oldest).total_seconds(), 3
            )
    return result


def delivery_dict(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "vendor": row.vendor,
        "operation": row.operation,
        "status": str(row.status),
        "lane": str(row.lane),
        "attempts": row.attempts,
        "idempotency_key": row.idempotency_key,
        "depends_on": str(row.depends_on) if row.depends_on else None,
        "reason": row.reason,
        "last_status_code": row.last_status_code,
        "next_attempt_at": _iso(row.next_attempt_at),
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "finished_at": _iso(row.finished_at),
    }


def show(conn: Connection, delivery_id: str) -> dict[str, Any]:
    """A delivery with its payload and every attempt."""
    try:
        key = uuid.UUID(delivery_id)
    except ValueError:
        raise DeliveryNotFound(f"{delivery_id!r} is not a delivery id (a UUID)") from None
    row = conn.execute(select(D).where(D.c.id == key)).one_or_none()
    if row is None:
        raise DeliveryNotFound(f"no delivery {delivery_id}")
    data = delivery_dict(row)
    data["payload"] = row.payload
    data["attempt_history"] = [
        {
            "number": a.number,
            "outcome": str(a.outcome),
            "started_at": _iso(a.started_at),
            "duration_ms": a.duration_ms,
            "status_code": a.status_code,
            "error_class": a.error_class,
            "response_excerpt": a.response_excerpt,
        }
        for a in conn.execute(select(A).where(A.c.delivery_id == key).order_by(A.c.number))
    ]
    return data


@dataclass(frozen=True)
class DeadFilter:
    """Which dead letters an operation applies to."""

    ids: Sequence[str] = ()
    vendor: str | None = None
    reason: str | None = None  # substring, case-insensitive
    since: datetime | None = None  # dead-lettered at or after
    until: datetime | None = None  # dead-lettered before

    def where(self) -> list[ColumnElement[bool]]:
        clauses: list[ColumnElement[bool]] = [
            D.c.archived_at == LIVE,
            D.c.status == DeliveryStatus.DEAD,
        ]
        if self.ids:
            try:
                clauses.append(D.c.id.in_([uuid.UUID(i) for i in self.ids]))
            except ValueError as exc:
                raise EventRelayError(f"not a delivery id: {exc}") from None
        if self.vendor:
            clauses.append(D.c.vendor == self.vendor)
        if self.reason:
            clauses.append(func.lower(D.c.reason).contains(self.reason.lower(), autoescape=True))
        if self.since:
            clauses.append(D.c.finished_at >= self.since)
        if self.until:
            clauses.append(D.c.finished_at < self.until)
        return clauses


def dead_letters(conn: Connection, flt: DeadFilter, limit: int = 100) -> list[dict[str, Any]]:
    rows = conn.execute(
        select(D).where(*flt.where()).order_by(D.c.finished_at.desc(), D.c.id).limit(limit)
    )
    return [delivery_dict(r) for r in rows]


def count_dead(conn: Connection, flt: DeadFilter) -> int:
    return int(conn.execute(select(func.count()).select_from(D).where(*flt.where())).scalar_one())


def replay(conn: Connection, flt: DeadFilter) -> list[tuple[uuid.UUID, str, Lane]]:
    """Make matching dead deliveries pending again, with a fresh retry budget.

    Only dead deliveries are touched, so nothing delivered is ever sent again. Replays go to
    the retry lane, so a large replay never delays fresh events.
    """
    now = utcnow()
    rows = conn.execute(
        update(D)
        .where(*flt.where())
        .values(
            status=DeliveryStatus.PENDING,
            lane=Lane.RETRY,
            next_attempt_at=now,
            dispatched_at=now,
            window_started_at=now,
            window_base_attempts=D.c.attempts,
            reason=None,
            finished_at=None,
            updated_at=now,
        )
        .returning(D.c.id, D.c.vendor, D.c.lane)
    ).all()
    return [(r.id, r.vendor, Lane(r.lane)) for r in rows]


def purge_dead(conn: Connection, older_than: timedelta, dry_run: bool = False) -> int:
    """Delete dead letters that died longer ago than `older_than` (attempts go with them)."""
    return len(purge(conn, DeadFilter(until=utcnow() - older_than), dry_run))


def purge(conn: Connection, flt: DeadFilter, dry_run: bool = False) -> list[uuid.UUID]:
    """Delete the dead letters matching `flt` with their attempts; returns their ids.

    Only dead deliveries are ever deleted, whatever `flt` names: a delivery replayed or
    delivered meanwhile stays. With `dry_run`, the ids that would go.
    """
    where = flt.where()
    if dry_run:
        return [r.id for r in conn.execute(select(D.c.id).where(*where))]
    ids = [r.id for r in conn.execute(delete(D).where(*where).returning(D.c.id))]
    for start in range(0, len(ids), 1000):
        conn.execute(
            delete(A).where(A.c.archived_at == LIVE, A.c.delivery_id.in_(ids[start : start + 1000]))
        )
    return ids


def resume_vendor(conn: Connection, vendor: str) -> list[tuple[uuid.UUID, str, Lane]]:
    """After a vendor is unparked, its waiting deliveries become due now."""
    now = utcnow()
    rows = conn.execute(
        update(D)
        .where(
            D.c.archived_at == LIVE,
            D.c.vendor == vendor,
            D.c.status == DeliveryStatus.PENDING,
            D.c.next_attempt_at > now,
        )
        .values(next_attempt_at=now, dispatched_at=None, updated_at=now)
        .returning(D.c.id, D.c.vendor, D.c.lane)
    ).all()
    return [(r.id, r.vendor, Lane(r.lane)) for r in rows]


def park(vendor: str, reason: str, redis_url: str | None) -> None:
    """Park a vendor by hand: nothing is sent to it until `resume` (its deliveries wait).

    The same state a refused credential puts it in (fleet/breaker.py), so workers, the
    scheduler, `status` and the metrics see it the same way.

    Raises:
        EventRelayError: unknown vendor, empty reason, or no Redis configured.
    """
    from eventrelay.worker.fleet import breaker

    _known_vendor(vendor)
    if not reason.strip():
        raise EventRelayError("say why the vendor is parked (--reason)")
    if not redis_url:
        raise EventRelayError("parking needs Redis: set EVENTRELAY_REDIS_URL")
    breaker.park(vendor, reason.strip(), redis_url)


@dataclass(frozen=True)
class Resumed:
    vendor: str
    was_parked: bool
    due_now: list[tuple[uuid.UUID, str, Lane]]


def resume(conn: Connection, vendor: str, redis_url: str | None) -> Resumed:
    """Unpark a vendor and make its waiting deliveries due now (the scheduler publishes them).

    Raises:
        EventRelayError: unknown vendor.
    """
    from eventrelay.worker.fleet import breaker

    _known_vendor(vendor)
    was_parked = breaker.unpark(vendor, redis_url) if redis_url else False
    return Resumed(vendor, was_parked, resume_vendor(conn, vendor))


def _known_vendor(vendor: str) -> None:
    from eventrelay.worker.vendors import vendor_names

    if vendor not in vendor_names():
        raise EventRelayError(
            f"unknown vendor {vendor!r}; valid vendors: {', '.join(vendor_names())}"
        )


def circuit(vendor: str, redis_url: str | None) -> dict[str, Any]:
    """The vendor's gate as `status --json` shows it: circuit, cooling_seconds_left,
    parked_reason (all None without a Redis to read them from)."""
    from eventrelay.worker.fleet import breaker

    out: dict[str, Any] = {"circuit": None, "cooling_seconds_left": None, "parked_reason": None}
    if redis_url:
        try:
            health = breaker.health(vendor, redis_url)
        except Exception:
            out["circuit"] = "unknown (redis unreachable)"
        else:
            out["circuit"] = health.state
            out["cooling_seconds_left"] = health.cooling_seconds_left
            out["parked_reason"] = health.parked_reason
    return out


def vendor_overview(conn: Connection, redis_url: str | None) -> list[dict[str, Any]]:
    """One row per vendor for consoles: circuit, parked reason, cooling left, backlog, age.

    `backlog` is pending plus delivering (live rows only, so it costs the same with any amount
    of history); circuit fields are None when Redis cannot be read.
    """
    rows = []
    for vendor, entry in sorted(status_counts(conn).items()):
        counts = entry["counts"]
        rows.append(
            {
                "vendor": vendor,
                **circuit(vendor, redis_url),
                "backlog": counts[DeliveryStatus.PENDING.value]
                + counts[DeliveryStatus.DELIVERING.value],
                "dead": counts[DeliveryStatus.DEAD.value],
                "oldest_pending_age_seconds": entry["oldest_pending_age_seconds"],
            }
        )
    return rows


SEARCH_LIMIT = 1_000


def search_ids(conn: Connection, term: str, limit: int = SEARCH_LIMIT) -> list[uuid.UUID]:
    """Deliveries a console search names: a delivery id, an idempotency key or a user reference.

    Each is found by an index, never by reading history: an OR of the three in one statement
    would read every row. Keys are found while `idempotency_keys` holds them
    (EVENTRELAY_IDEMPOTENCY_TTL_SECONDS, primary key (vendor, key)) and for any live delivery;
    user references at any age (index (vendor, user_ref)).
    """
    from eventrelay.models.idempotency import IDEMPOTENCY_KEYS as K
    from eventrelay.worker.vendors import vendor_names

    term = term.strip()
    try:
        return [uuid.UUID(term)]
    except ValueError:
        pass
    vendors = list(vendor_names())
    found: list[uuid.UUID] = []
    for stmt in (
        select(K.c.delivery_id).where(K.c.vendor.in_(vendors), K.c.key == term),
        select(D.c.id).where(D.c.archived_at == LIVE, D.c.idempotency_key == term),
        select(D.c.id).where(D.c.vendor.in_(vendors), D.c.user_ref == term),
    ):
        found += [row[0] for row in conn.execute(stmt.limit(limit))]
    return list(dict.fromkeys(found))
