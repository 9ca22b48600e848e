"""The delivery state machine as plain functions over a SQLAlchemy Core connection.

    pending ──claim──▶ delivering ──▶ delivered
       ▲                   │  ├─────▶ dead (vendor refused, or retry budget spent)
       └── retry / release ┘  └─────▶ (lease expired: the scheduler records a lost attempt)

Every transition out of `delivering` is a compare-and-set on (id, attempts): a worker that
finishes after its lease was taken over (a zombie) changes nothing.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    Interval,
    Uuid,
    and_,
    bindparam,
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

from eventrelay.models.base import LIVE, UTCDateTime, new_id, utcnow
from eventrelay.models.counters import Deltas, add_to_counters
from eventrelay.models.delivery import (
    ATTEMPTS,
    DELIVERIES,
    AttemptOutcome,
    DeliveryStatus,
    Lane,
)
from eventrelay.models.sql import BatchRows, pick_locked, pick_locked_in

log = logging.getLogger("eventrelay.worker")

# A producer's clock and the database's may disagree a little; a fresh job named in its
# message must still be claimable at once.
CLAIM_CLOCK_SKEW_SECONDS = 2.0

# Every statement on live work says so: on PostgreSQL it then reads only the live partition,
# never the history (README, "Retention").
IS_LIVE = DELIVERIES.c.archived_at == LIVE


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
    # The W3C trace context stored with the job (worker/tracing.py), None without one.
    trace_context: dict[str, str] | None = None

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
    if not ids:  # the pump's claim: a statement built once, run with this claim's values
        params = _lane_claim_values(conn, vendor, lane, top_up, lease_seconds)
        rows = conn.execute(_lane_claim(conn.dialect.name), params).all()
        return [_claimed(r) for r in rows]
    wanted = _named_and_due(conn, vendor, ids)
    if top_up > 0:
        wanted = or_(wanted, _due_in_lane(conn.dialect.name, vendor, lane, top_up, db_now(conn)))
    take = _take(wanted, lease_expiry(conn, lease_seconds), utcnow())
    return [_claimed(r) for r in conn.execute(take).all()]


def _named_and_due(conn: Connection, vendor: str, ids: Sequence[uuid.UUID]) -> ColumnElement[bool]:
    """The message's own rows, still pending and due by the database's clock (give or take
    the producer's skew: a fresh job is due when its producer says so)."""
    return and_(
        DELIVERIES.c.id.in_(ids),
        IS_LIVE,
        DELIVERIES.c.vendor == vendor,
        DELIVERIES.c.status == DeliveryStatus.PENDING,
        DELIVERIES.c.next_attempt_at <= db_now(conn) + timedelta(seconds=CLAIM_CLOCK_SKEW_SECONDS),
    )


def _due_in_lane(dialect: str, vendor: Any, lane: Any, limit: Any, now: Any) -> ColumnElement[bool]:
    """Up to `limit` other due rows of the vendor's lane, longest due first, skipping rows
    another worker is claiming. Due by the database's clock (`now`): a worker whose clock is
    behind would otherwise leave due rows to the scheduler's orphan sweep. Each argument is a
    value or a bind parameter (`_lane_claim`)."""
    due = (
        select(DELIVERIES.c.id)
        .where(
            IS_LIVE,
            DELIVERIES.c.vendor == vendor,
            DELIVERIES.c.status == DeliveryStatus.PENDING,
            DELIVERIES.c.lane == lane,
            DELIVERIES.c.next_attempt_at <= now,
        )
        .order_by(DELIVERIES.c.next_attempt_at)
        .limit(limit)
    )
    # The picked rows are matched by id alone. Their conditions were checked when they were
    # locked (FOR UPDATE re-checks them on the newest row version, and nobody can change a row
    # this statement holds), so repeating them changes no result; it only gives the planner a
    # second way in, and with statistics older than a backlog (a burst before autovacuum's
    # ANALYZE) it takes that way and walks every pending row of the vendor for each claim.
    picked: ColumnElement[bool] = DELIVERIES.c.id.in_(pick_locked_in(dialect, due))
    if dialect != "postgresql":
        picked = and_(picked, DELIVERIES.c.status == DeliveryStatus.PENDING)  # no locks: re-check
    return picked


@functools.cache
def _lane_claim(dialect: str) -> Any:
    """The pump's claim for `dialect`, built once with bind parameters (`_lane_claim_values`).

    Building a statement this size and computing its cache key cost more client CPU than the
    rest of a claim together; a statement object built once is neither built nor keyed again,
    and its compiled form is SQLAlchemy's cached one. Times are the database's on PostgreSQL
    (now() and a lease interval), the caller's on SQLite (one host, one clock).
    """
    if dialect == "postgresql":
        now: Any = func.now()
        lease_end: Any = func.now() + bindparam("claim_lease", type_=Interval())
    else:
        now = bindparam("claim_now", type_=UTCDateTime())
        lease_end = bindparam("claim_lease_end", type_=UTCDateTime())
    # Names unlike the columns': an UPDATE keeps a column's own name for its SET value.
    wanted = _due_in_lane(
        dialect,
        bindparam("claim_vendor"),
        bindparam("claim_lane"),
        bindparam("claim_limit", type_=Integer()),
        now,
    )
    return _take(wanted, lease_end, bindparam("claimed_at", type_=UTCDateTime()))


def _lane_claim_values(
    conn: Connection, vendor: str, lane: Lane, limit: int, lease_seconds: float
) -> dict[str, Any]:
    now = utcnow()
    values: dict[str, Any] = {
        "claim_vendor": vendor,
        "claim_lane": lane,
        "claim_limit": limit,
        "claimed_at": now,
    }
    if conn.dialect.name == "postgresql":
        values["claim_lease"] = timedelta(seconds=lease_seconds)
    else:
        values.update(claim_now=now, claim_lease_end=now + timedelta(seconds=lease_seconds))
    return values


def _take(wanted: ColumnElement[bool], lease_end: Any, updated_at: Any) -> Any:
    """The claim itself: `wanted` rows become delivering under a lease, attempt spent."""
    return (
        update(DELIVERIES)
        # IS_LIVE: the partition key, so only the live partition is touched
        .where(wanted, IS_LIVE)
        .values(
            status=DeliveryStatus.DELIVERING,
            attempts=DELIVERIES.c.attempts + 1,
            lease_expires_at=lease_end,
            updated_at=updated_at,
        )
        .returning(
            DELIVERIES.c.id,
            DELIVERIES.c.vendor,
            DELIVERIES.c.operation,
            DELIVERIES.c.payload,
            DELIVERIES.c.attempts,
            DELIVERIES.c.window_started_at,
            DELIVERIES.c.window_base_attempts,
            DELIVERIES.c.depends_on,
            DELIVERIES.c.lane,
            DELIVERIES.c.trace_context,
        )
    )


def _claimed(r: Any) -> Claimed:
    return Claimed(
        id=r.id,
        vendor=r.vendor,
        operation=r.operation,
        payload=r.payload,
        attempt=r.attempts,
        window_started_at=r.window_started_at,
        window_base_attempts=r.window_base_attempts,
        depends_on=r.depends_on,
        lane=Lane(r.lane),
        trace_context=r.trace_context,
    )


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
        DELIVERIES.c.status == DeliveryStatus.DELIVERING,
        tuple_(DELIVERIES.c.id, DELIVERIES.c.attempts).in_(list(held)),
    )
    picked = pick_locked(conn, select(DELIVERIES.c.id).where(*mine), name="renewed")
    result = conn.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id.in_(picked), *mine)
        .values(lease_expires_at=lease_expiry(conn, lease_seconds))
    )
    return int(result.rowcount or 0)


def dependency_states(
    conn: Connection, ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, tuple[DeliveryStatus, str | None]]:
    ids = set(ids)
    if not ids:
        return {}
    rows = conn.execute(
        select(DELIVERIES.c.id, DELIVERIES.c.status, DELIVERIES.c.reason).where(
            DELIVERIES.c.id.in_(ids)
        )
    ).all()
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
                update(ATTEMPTS)
                .where(ATTEMPTS.c.delivery_id.in_(retried), ATTEMPTS.c.archived_at == LIVE)
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
        _insert_attempts(conn, history, now)
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
    """Mark delivered what is still ours (id and attempt match); the ids that were. One
    statement for the whole batch: the common case must stay cheap."""
    if conn.dialect.name == "postgresql":
        statement, done = _delivered_statement()
        values = done.values(
            [
                {"id": o.claimed.id, "attempts": o.claimed.attempt, "status_code": o.status_code}
                for o in outcomes
            ]
        )
        rows = conn.execute(statement, {**values, "finished_now": now}).all()
        return {r.id for r in rows}
    by_status: dict[int | None, list[Outcome]] = {}
    for o in outcomes:
        by_status.setdefault(o.status_code, []).append(o)
    won: set[uuid.UUID] = set()
    for status_code, group in by_status.items():
        rows = conn.execute(
            update(DELIVERIES)
            .where(
                tuple_(DELIVERIES.c.id, DELIVERIES.c.attempts).in_(
                    [(o.claimed.id, o.claimed.attempt) for o in group]
                ),
                IS_LIVE,
                DELIVERIES.c.status == DeliveryStatus.DELIVERING,
            )
            .values(_delivered_values(now, status_code))
            .returning(DELIVERIES.c.id)
        ).all()
        won.update(r.id for r in rows)
    return won


@functools.cache
def _delivered_statement() -> tuple[Any, BatchRows]:
    """PostgreSQL: the compare-and-set of a batch of delivered outcomes, built once (see
    BatchRows); run with the batch's rows and `finished_now`."""
    done = BatchRows("done", (("id", Uuid()), ("attempts", Integer()), ("status_code", Integer())))
    statement = (
        update(DELIVERIES)
        .where(
            DELIVERIES.c.id == done.table.c.id,
            DELIVERIES.c.attempts == done.table.c.attempts,
            IS_LIVE,
            DELIVERIES.c.status == DeliveryStatus.DELIVERING,
        )
        .values(
            _delivered_values(
                bindparam("finished_now", type_=UTCDateTime()), done.table.c.status_code
            )
        )
        .returning(DELIVERIES.c.id)
    )
    return statement, done


def _delivered_values(now: Any, status_code: Any) -> dict[str, Any]:
    return {
        # Moves the row into history: on PostgreSQL, into the partition of `now`.
        "archived_at": now,
        "status": DeliveryStatus.DELIVERED,
        "lease_expires_at": None,
        "reason": None,
        "last_status_code": status_code,
        "finished_at": now,
        "updated_at": now,
    }


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
            window_base_attempts=DELIVERIES.c.window_base_attempts + 1,
            next_attempt_at=o.next_attempt_at or now,
            dispatched_at=None,
            reason=o.reason,
        )
    else:
        # Released (dependency pending, limiter busy, nothing sent): the attempt is not spent.
        values.update(
            status=DeliveryStatus.PENDING,
            attempts=DELIVERIES.c.attempts - 1,
            next_attempt_at=_release_until(o, now),
            dispatched_at=None,
        )
        if o.reason:
            values["reason"] = o.reason
    result = conn.execute(
        update(DELIVERIES)
        .where(
            and_(
                DELIVERIES.c.id == c.id,
                IS_LIVE,
                DELIVERIES.c.attempts == c.attempt,
                DELIVERIES.c.status == DeliveryStatus.DELIVERING,
            )
        )
        .values(**values)
    )
    return bool(result.rowcount)


def _release_until(o: Outcome, now: datetime) -> Any:
    until = o.next_attempt_at or now
    if o.waits_for is None:
        return until
    dependency = DELIVERIES.alias("dependency")
    delivered = exists().where(
        dependency.c.id == o.waits_for, dependency.c.status == DeliveryStatus.DELIVERED
    )
    return case((delivered, now), else_=until)


def _insert_attempts(conn: Connection, history: Sequence[Outcome], now: datetime) -> None:
    rows = [_attempt_row(o, now) for o in history]
    if conn.dialect.name != "postgresql":
        conn.execute(insert(ATTEMPTS), rows)
        return
    statement, attempts = _attempts_statement()
    conn.execute(statement, attempts.values(rows))


@functools.cache
def _attempts_statement() -> tuple[Any, BatchRows]:
    """PostgreSQL: the insert of a batch of attempt rows (`_attempt_row`: every column of the
    table), built once (see BatchRows)."""
    attempts = BatchRows("attempt", [(c.name, c.type) for c in ATTEMPTS.c])
    return insert(ATTEMPTS).from_select(attempts.names, select(*attempts.table.c)), attempts


def _attempt_row(o: Outcome, now: datetime) -> dict[str, Any]:
    return {
        "id": new_id(),
        "archived_at": now if o.kind is AttemptOutcome.DELIVERED else LIVE,
        "delivery_id": o.claimed.id,
        "number": o.claimed.attempt,
        "outcome": str(o.kind),
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
        update(DELIVERIES)
        .where(
            DELIVERIES.c.depends_on.in_(delivered_ids),
            IS_LIVE,
            DELIVERIES.c.status == DeliveryStatus.PENDING,
        )
        .values(next_attempt_at=now, dispatched_at=now, updated_at=now)
        .returning(DELIVERIES.c.id, DELIVERIES.c.vendor, DELIVERIES.c.lane)
    ).all()
    return [(r.id, r.vendor, Lane(r.lane)) for r in rows]


LEASE_EXPIRED_REASON = "lease expired: the worker stopped before recording a result"


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
    rows = _expired(conn, limit)
    if not rows:
        return []
    reasons = _spent_budgets(rows, give_up)
    back = [r for r in rows if r.id not in reasons]
    now = utcnow()
    _send_again(conn, [r.id for r in back], now)
    _dead_letter_lost(conn, reasons, now)
    _record_lost_attempts(conn, rows, set(reasons), now)
    return [(r.id, r.vendor, r.attempts) for r in back]


def _still_expired(conn: Connection) -> tuple[ColumnElement[bool], ...]:
    return (
        IS_LIVE,
        DELIVERIES.c.status == DeliveryStatus.DELIVERING,
        DELIVERIES.c.lease_expires_at < db_now(conn),
    )


def _expired(conn: Connection, limit: int) -> Sequence[Any]:
    """Up to `limit` deliveries whose lease ran out, locked for this transaction (PostgreSQL:
    rows another scheduler is recovering are skipped; SQLite: its transaction holds the one
    write lock from its start)."""
    expired = (
        select(
            DELIVERIES.c.id,
            DELIVERIES.c.vendor,
            DELIVERIES.c.attempts,
            DELIVERIES.c.window_started_at,
            DELIVERIES.c.window_base_attempts,
        )
        .where(*_still_expired(conn))
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        expired = expired.with_for_update(skip_locked=True)
    return conn.execute(expired).all()


def _spent_budgets(
    rows: Sequence[Any], give_up: Callable[[str, int, datetime], str | None] | None
) -> dict[uuid.UUID, str]:
    if give_up is None:
        return {}
    return {
        r.id: why
        for r in rows
        if (why := give_up(r.vendor, r.attempts - r.window_base_attempts, r.window_started_at))
    }


def _send_again(conn: Connection, ids: Sequence[uuid.UUID], now: datetime) -> None:
    if not ids:
        return
    conn.execute(
        update(DELIVERIES)
        .where(DELIVERIES.c.id.in_(ids), *_still_expired(conn))
        .values(
            status=DeliveryStatus.PENDING,
            lease_expires_at=None,
            next_attempt_at=now,
            dispatched_at=None,
            lane=Lane.RETRY,
            updated_at=now,
            reason=LEASE_EXPIRED_REASON,
        )
    )


def _dead_letter_lost(conn: Connection, reasons: dict[uuid.UUID, str], now: datetime) -> None:
    """Dead-letter the deliveries that spent their budget, saying how often a worker was lost
    with them (counted in their live attempt history)."""
    if not reasons:
        return
    lost_before: dict[uuid.UUID, int] = dict(
        conn.execute(
            select(ATTEMPTS.c.delivery_id, func.count())
            .where(
                ATTEMPTS.c.delivery_id.in_(list(reasons)),
                ATTEMPTS.c.archived_at == LIVE,
                ATTEMPTS.c.outcome == AttemptOutcome.LOST,
            )
            .group_by(ATTEMPTS.c.delivery_id)
        ).all()
    )
    for delivery_id, why in reasons.items():
        times = int(lost_before.get(delivery_id, 0)) + 1
        conn.execute(
            update(DELIVERIES)
            .where(DELIVERIES.c.id == delivery_id, *_still_expired(conn))
            .values(
                status=DeliveryStatus.DEAD,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
                reason=f"worker lost {times} times before recording a result; {why}",
            )
        )


def _record_lost_attempts(
    conn: Connection, rows: Sequence[Any], dead: set[uuid.UUID], now: datetime
) -> None:
    conn.execute(
        insert(ATTEMPTS),
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
        if r.id in dead:
            deltas.dead(r.vendor)
    add_to_counters(conn, deltas)
