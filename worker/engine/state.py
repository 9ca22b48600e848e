"""The delivery state machine as plain functions over a SQLAlchemy Core connection.

    pending ──claim──▶ delivering ──▶ delivered
       ▲                   │  ├─────▶ dead (vendor refused, or retry budget spent)
       └── retry / release ┘  └─────▶ (lease expired: the scheduler records a lost attempt)

Every transition out of `delivering` is a compare-and-set on (id, attempts): a worker that
finishes after its lease was taken over (a zombie) changes nothing.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    case,
    exists,
    func,
    insert,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.exc import DBAPIError, PendingRollbackError

from eventrelay.models.base import LIVE, new_id, utcnow
from eventrelay.models.counters import Deltas, add_to_counters
from eventrelay.models.delivery import (
    ATTEMPTS,
    DELIVERIES,
    AttemptOutcome,
    DeliveryStatus,
    Lane,
)
from eventrelay.models.sql import pick_locked

log = logging.getLogger("eventrelay.worker")

D = DELIVERIES
A = ATTEMPTS

# Worker and producer clocks may disagree a little; a fresh job must still be claimable.
CLAIM_CLOCK_SKEW_SECONDS = 2.0

# Every statement on live work says so: on PostgreSQL it then reads only the live partition,
# never the history (README, "Retention").
IS_LIVE = D.c.archived_at == LIVE


@dataclass(frozen=True)
class Claimed:
    """A delivery this worker holds the lease on, at attempt number `attempt`."""

    id: uuid.UUID
    vendor: str
    operation: str
    payload: dict[str, Any]
    attempt: int
    window_started_at: datetime
    window_base_attempts: int
    depends_on: uuid.UUID | None
    lane: Lane

    @property
    def attempt_in_window(self) -> int:
        return self.attempt - self.window_base_attempts


@dataclass
class Outcome:
    """What to write for one claimed delivery when its batch is recorded."""

    claimed: Claimed
    kind: AttemptOutcome | None  # None: release without spending the attempt
    next_attempt_at: datetime | None = None
    reason: str | None = None
    status_code: int | None = None
    duration_ms: int | None = None
    error_class: str | None = None
    excerpt: str | None = None
    started_at: datetime = field(default_factory=utcnow)
    response_json: Any = None
    # Released to wait for this delivery (a Botsi event for its profile): due at once instead
    # if that one is delivered by the time the release is written (else a lost wake-up: the
    # profile's record found this event still claimed and woke nothing).
    waits_for: uuid.UUID | None = None


def claim(
    conn: Connection,
    vendor: str,
    ids: Sequence[uuid.UUID],
    lease_seconds: float,
    top_up: int = 0,
) -> list[Claimed]:
    """Atomically take the due, pending deliveries among `ids` (one conditional UPDATE).

    With `top_up`, also take up to that many other due deliveries of the vendor, the fresh lane
    first (fresh work never waits behind retries and replays), skipping rows another worker is
    claiming right now.
    """
    claimed = _claim(conn, vendor, ids, lease_seconds, top_up, Lane.FRESH) if ids or top_up else []
    if top_up and len(claimed) < top_up + len(ids):
        claimed += _claim(conn, vendor, [], lease_seconds, top_up - len(claimed), Lane.RETRY)
    order = {i: n for n, i in enumerate(ids)}  # the message's own ids first
    return sorted(claimed, key=lambda c: order.get(c.id, len(order)))


def lease_expiry(conn: Connection, lease_seconds: float) -> Any:
    """When a lease taken now ends, by the database's clock: hosts' clocks may disagree, and
    a skewed worker must never see another's lease as expired early."""
    if conn.dialect.name == "postgresql":
        return func.now() + timedelta(seconds=lease_seconds)
    return utcnow() + timedelta(seconds=lease_seconds)  # SQLite: one host, one clock


def db_now(conn: Connection) -> Any:
    return func.now() if conn.dialect.name == "postgresql" else utcnow()


def _claim(
    conn: Connection,
    vendor: str,
    ids: Sequence[uuid.UUID],
    lease_seconds: float,
    top_up: int,
    lane: Lane,
) -> list[Claimed]:
    if top_up <= 0 and not ids:
        return []
    now = utcnow()
    wanted: ColumnElement[bool] | None = None
    if ids:
        wanted = and_(
            D.c.id.in_(ids),
            IS_LIVE,
            D.c.vendor == vendor,
            D.c.status == DeliveryStatus.PENDING,
            D.c.next_attempt_at <= now + timedelta(seconds=CLAIM_CLOCK_SKEW_SECONDS),
        )
    if top_up > 0:
        extra = (
            select(D.c.id)
            .where(
                IS_LIVE,
                D.c.vendor == vendor,
                D.c.status == DeliveryStatus.PENDING,
                D.c.lane == lane,
                D.c.next_attempt_at <= now,
            )
            .order_by(D.c.next_attempt_at)
            .limit(top_up)
        )
        # The picked rows are matched by id alone. Their conditions were checked when they
        # were locked (FOR UPDATE re-checks them on the newest row version, and nobody can
        # change a row this statement holds), so repeating them changes no result; it only
        # gives the planner a second way in: with statistics older than a backlog (a burst
        # before autovacuum's ANALYZE) it estimated one pending row and walked every pending
        # row of the vendor for each claim (measured: 25-45 ms a claim at a 10,000 backlog,
        # instead of 0.4-0.7 ms).
        more: ColumnElement[bool] = D.c.id.in_(pick_locked(conn, extra))
        if conn.dialect.name != "postgresql":
            more = and_(more, D.c.status == DeliveryStatus.PENDING)  # no locks: re-check
        wanted = more if wanted is None else or_(wanted, more)
    assert wanted is not None
    rows = conn.execute(
        update(D)
        # IS_LIVE: the partition key, so only the live partition is touched
        .where(wanted, IS_LIVE)
        .values(
            status=DeliveryStatus.DELIVERING,
            attempts=D.c.attempts + 1,
            lease_expires_at=lease_expiry(conn, lease_seconds),
            updated_at=now,
        )
        .returning(
            D.c.id,
            D.c.vendor,
            D.c.operation,
            D.c.payload,
            D.c.attempts,
            D.c.window_started_at,
            D.c.window_base_attempts,
            D.c.depends_on,
            D.c.lane,
        )
    ).all()
    return [
        Claimed(
            id=r.id,
            vendor=r.vendor,
            operation=r.operation,
            payload=r.payload,
            attempt=r.attempts,
            window_started_at=r.window_started_at,
            window_base_attempts=r.window_base_attempts,
            depends_on=r.depends_on,
            lane=Lane(r.lane),
        )
        for r in rows
    ]


def renew_leases(
    conn: Connection, held: Sequence[tuple[uuid.UUID, int]], lease_seconds: float
) -> int:
    """Extend the leases this worker still holds (its heartbeat); returns how many it holds.

    A lease another worker took over (a different attempt number) is left alone.
    """
    if not held:
        return 0
    # Rows the recorder is finishing right now are skipped, not waited for: once it commits,
    # they have moved into a history partition, and PostgreSQL fails a statement that waited
    # on a row that moved ("tuple to be locked was already moved to another partition").
    mine = (
        IS_LIVE,
        D.c.status == DeliveryStatus.DELIVERING,
        tuple_(D.c.id, D.c.attempts).in_(list(held)),
    )
    picked = pick_locked(conn, select(D.c.id).where(*mine), name="renewed")
    result = conn.execute(
        update(D)
        .where(D.c.id.in_(picked), *mine)
        .values(lease_expires_at=lease_expiry(conn, lease_seconds))
    )
    return int(result.rowcount or 0)


def dependency_states(
    conn: Connection, ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, tuple[DeliveryStatus, str | None]]:
    ids = set(ids)
    if not ids:
        return {}
    rows = conn.execute(select(D.c.id, D.c.status, D.c.reason).where(D.c.id.in_(ids))).all()
    return {r.id: (DeliveryStatus(r.status), r.reason) for r in rows}


@dataclass
class Recorded:
    """Which outcomes took effect (the others lost their lease to another worker)."""

    applied: list[Outcome] = field(default_factory=list)
    zombies: list[Outcome] = field(default_factory=list)
    woken: list[tuple[uuid.UUID, str, Lane]] = field(default_factory=list)


def record(
    conn: Connection,
    outcomes: Sequence[Outcome],
    on_delivered: Callable[[Connection, Outcome], None] | None = None,
    follows: Callable[[Outcome], bool] | None = None,
    keeps_answer: Callable[[Outcome], bool] | None = None,
) -> Recorded:
    """Write outcomes, each a compare-and-set on (id, attempt).

    `on_delivered` runs for each delivery that really became delivered and whose answer
    `keeps_answer(o)` says it keeps (all, without it), in this transaction (in a savepoint of
    its own: a failing hook is logged and costs nothing but its own write). `follows(o)` says
    whether others may wait for that delivery (then they are woken).
    """
    now = utcnow()
    done = Recorded()
    delivered = [o for o in outcomes if o.kind is AttemptOutcome.DELIVERED]
    if delivered:
        won = _finish_delivered(conn, delivered, now)
        for o in delivered:
            (done.applied if o.claimed.id in won else done.zombies).append(o)
        # Earlier attempts leave the live rows with their delivery (a first attempt, the
        # common case, has none).
        retried = [o.claimed.id for o in delivered if o.claimed.id in won and o.claimed.attempt > 1]
        if retried:
            conn.execute(
                update(A)
                .where(A.c.delivery_id.in_(retried), A.c.archived_at == LIVE)
                .values(archived_at=now)
            )
    for o in outcomes:
        if o.kind is AttemptOutcome.DELIVERED:
            continue
        if _finish_one(conn, o, now):
            done.applied.append(o)
        else:
            done.zombies.append(o)
    history = [o for o in done.applied if o.kind is not None]
    if history:
        conn.execute(insert(A), [_attempt_row(o, now) for o in history])
    woken_from = [
        o.claimed.id
        for o in done.applied
        if o.kind is AttemptOutcome.DELIVERED and (follows is None or follows(o))
    ]
    if on_delivered is not None:
        for o in done.applied:
            if o.kind is AttemptOutcome.DELIVERED and (keeps_answer is None or keeps_answer(o)):
                _run_hook(conn, on_delivered, o)
    if woken_from:
        done.woken = wake_dependents(conn, woken_from, now)
    add_to_counters(conn, _deltas(history, now))  # last: its rows stay locked until commit
    return done


def _deltas(history: Sequence[Outcome], now: datetime) -> Deltas:
    deltas = Deltas()
    for o in history:
        assert o.kind is not None
        deltas.attempt(o.claimed.vendor, o.kind)
        if o.kind is AttemptOutcome.DELIVERED:
            deltas.delivered(o.claimed.vendor, o.claimed.id, now)
        elif o.kind is AttemptOutcome.DEAD:
            deltas.dead(o.claimed.vendor)
    return deltas


def _run_hook(conn: Connection, hook: Callable[[Connection, Outcome], None], o: Outcome) -> None:
    # The vendor accepted the job: it is delivered whatever the hook does. A hook that fails
    # (an answer of an unexpected shape) must not undo the batch's record, or every job in it
    # would be sent again.
    try:
        with conn.begin_nested():
            hook(conn, o)
    except PendingRollbackError:
        raise  # the connection is gone, not the hook: the whole record is retried
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        _log_hook_failure(o)
    except Exception:
        _log_hook_failure(o)


def _log_hook_failure(o: Outcome) -> None:
    log.exception(
        "delivery %s (%s %s): recorded delivered; keeping what the vendor returned failed",
        o.claimed.id,
        o.claimed.vendor,
        o.claimed.operation,
    )


def _finish_delivered(
    conn: Connection, outcomes: Sequence[Outcome], now: datetime
) -> set[uuid.UUID]:
    # One statement for the whole batch: the common case must stay cheap.
    by_status: dict[int | None, list[Outcome]] = {}
    for o in outcomes:
        by_status.setdefault(o.status_code, []).append(o)
    won: set[uuid.UUID] = set()
    for status_code, group in by_status.items():
        rows = conn.execute(
            update(D)
            .where(
                tuple_(D.c.id, D.c.attempts).in_(
                    [(o.claimed.id, o.claimed.attempt) for o in group]
                ),
                IS_LIVE,
                D.c.status == DeliveryStatus.DELIVERING,
            )
            .values(
                # Moves the row into history: on PostgreSQL, into the partition of `now`.
                archived_at=now,
                status=DeliveryStatus.DELIVERED,
                lease_expires_at=None,
                reason=None,
                last_status_code=status_code,
                finished_at=now,
                updated_at=now,
            )
            .returning(D.c.id)
        ).all()
        won.update(r.id for r in rows)
    return won


def _finish_one(conn: Connection, o: Outcome, now: datetime) -> bool:
    c = o.claimed
    values: dict[str, Any] = {"lease_expires_at": None, "updated_at": now}
    if o.status_code is not None:
        values["last_status_code"] = o.status_code
    if o.kind is AttemptOutcome.DEAD:
        values.update(status=DeliveryStatus.DEAD, reason=o.reason, finished_at=now)
    elif o.kind is AttemptOutcome.RETRY:
        values.update(
            status=DeliveryStatus.PENDING,
            reason=o.reason,
            next_attempt_at=o.next_attempt_at,
            dispatched_at=None,
            lane=Lane.RETRY,
        )
    elif o.kind is AttemptOutcome.PARKED:
        # The request was made (its attempt row keeps its number: numbers never repeat), but
        # a refused key is not the job's fault: the budget's window moves past it.
        values.update(
            status=DeliveryStatus.PENDING,
            window_base_attempts=D.c.window_base_attempts + 1,
            next_attempt_at=o.next_attempt_at or now,
            dispatched_at=None,
            reason=o.reason,
        )
    else:
        # Released (dependency pending, limiter busy, nothing sent): the attempt is not spent.
        values.update(
            status=DeliveryStatus.PENDING,
            attempts=D.c.attempts - 1,
            next_attempt_at=_release_until(o, now),
            dispatched_at=None,
        )
        if o.reason:
            values["reason"] = o.reason
    result = conn.execute(
        update(D)
        .where(
            and_(
                D.c.id == c.id,
                IS_LIVE,
                D.c.attempts == c.attempt,
                D.c.status == DeliveryStatus.DELIVERING,
            )
        )
        .values(**values)
    )
    return bool(result.rowcount)


def _release_until(o: Outcome, now: datetime) -> Any:
    until = o.next_attempt_at or now
    if o.waits_for is None:
        return until
    dependency = D.alias("dependency")
    delivered = exists().where(
        dependency.c.id == o.waits_for, dependency.c.status == DeliveryStatus.DELIVERED
    )
    return case((delivered, now), else_=until)


def _attempt_row(o: Outcome, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id(),
        "archived_at": now if o.kind is AttemptOutcome.DELIVERED else LIVE,
        "delivery_id": o.claimed.id,
        "number": o.claimed.attempt,
        "outcome": o.kind,
        "started_at": o.started_at,
        "duration_ms": o.duration_ms,
        "status_code": o.status_code,
        "error_class": o.error_class,
        "response_excerpt": o.excerpt or None,
    }


def wake_dependents(
    conn: Connection, delivered_ids: Sequence[uuid.UUID], now: datetime
) -> list[tuple[uuid.UUID, str, Lane]]:
    """Make deliveries waiting on these ones due now; returns what to publish."""
    rows = conn.execute(
        update(D)
        .where(D.c.depends_on.in_(delivered_ids), IS_LIVE, D.c.status == DeliveryStatus.PENDING)
        .values(next_attempt_at=now, dispatched_at=now, updated_at=now)
        .returning(D.c.id, D.c.vendor, D.c.lane)
    ).all()
    return [(r.id, r.vendor, Lane(r.lane)) for r in rows]


def recover_expired_leases(
    conn: Connection,
    give_up: Callable[[str, int, datetime], str | None] | None = None,
    limit: int = 1000,
) -> list[tuple[uuid.UUID, str, int]]:
    """Take back deliveries whose worker vanished; each gets a `lost` attempt in its history.

    `give_up(vendor, attempt_in_window, window_started_at)` says why a delivery has spent its
    retry budget: then it is dead-lettered instead of sent again (a payload that kills its
    worker every time must not be re-sent forever). Returns what went back to pending.
    """
    now = utcnow()
    expired = (
        select(D.c.id, D.c.vendor, D.c.attempts, D.c.window_started_at, D.c.window_base_attempts)
        .where(
            IS_LIVE, D.c.status == DeliveryStatus.DELIVERING, D.c.lease_expires_at < db_now(conn)
        )
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        expired = expired.with_for_update(skip_locked=True)
    rows = conn.execute(expired).all()
    if not rows:
        return []
    reasons = {
        r.id: why
        for r in rows
        if give_up is not None
        and (why := give_up(r.vendor, r.attempts - r.window_base_attempts, r.window_started_at))
    }
    back = [r for r in rows if r.id not in reasons]
    held = (IS_LIVE, D.c.status == DeliveryStatus.DELIVERING, D.c.lease_expires_at < db_now(conn))
    if back:
        conn.execute(
            update(D)
            .where(D.c.id.in_([r.id for r in back]), *held)
            .values(
                status=DeliveryStatus.PENDING,
                lease_expires_at=None,
                next_attempt_at=now,
                dispatched_at=None,
                lane=Lane.RETRY,
                updated_at=now,
                reason="lease expired: the worker stopped before recording a result",
            )
        )
    if reasons:
        lost_before: dict[uuid.UUID, int] = dict(
            conn.execute(
                select(A.c.delivery_id, func.count())
                .where(
                    A.c.delivery_id.in_(list(reasons)),
                    A.c.archived_at == LIVE,
                    A.c.outcome == AttemptOutcome.LOST,
                )
                .group_by(A.c.delivery_id)
            ).all()
        )
        for delivery_id, why in reasons.items():
            times = int(lost_before.get(delivery_id, 0)) + 1
            conn.execute(
                update(D)
                .where(D.c.id == delivery_id, *held)
                .values(
                    status=DeliveryStatus.DEAD,
                    lease_expires_at=None,
                    finished_at=now,
                    updated_at=now,
                    reason=f"worker lost {times} times before recording a result; {why}",
                )
            )
    conn.execute(
        insert(A),
        [
            {
                "id": new_id(),
                "archived_at": LIVE,
                "delivery_id": r.id,
                "number": r.attempts,
                "outcome": AttemptOutcome.LOST,
                "started_at": now,
                "error_class": "LeaseExpired",
                "response_excerpt": "worker lost before it recorded a result",
            }
            for r in rows
        ],
    )
    deltas = Deltas()
    for r in rows:
        deltas.attempt(r.vendor, AttemptOutcome.LOST)
        if r.id in reasons:
            deltas.dead(r.vendor)
    add_to_counters(conn, deltas)
    return [(r.id, r.vendor, r.attempts) for r in back]
