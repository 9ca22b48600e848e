"""The scheduler: publishes due deliveries and takes back expired leases.

Retry delays live in the database (`next_attempt_at`), not in Celery countdowns: with the Redis
transport a countdown longer than the visibility timeout is delivered twice (celery#2599).
Running two schedulers is safe: every step is a conditional UPDATE (with SKIP LOCKED on
PostgreSQL), and a message published twice is harmless because workers claim atomically.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, exists, select, update

from eventrelay.models.base import utcnow
from eventrelay.models.delivery import DELIVERIES, DeliveryStatus, Lane
from eventrelay.models.idempotency import IDEMPOTENCY_KEYS
from eventrelay.models.session import get_engine
from eventrelay.models.sql import pick_locked
from eventrelay.models.vacuum import vacuum_churning_tables
from eventrelay.worker.config import Settings, get_settings, is_redis_url
from eventrelay.worker.engine import retention
from eventrelay.worker.engine.retry import RetryPolicy
from eventrelay.worker.engine.state import IS_LIVE, recover_expired_leases
from eventrelay.worker.fleet import breaker, keys, liveness
from eventrelay.worker.fleet.queues import vendor_queues
from eventrelay.worker.producer.outbox import mark_unpublished, purge_expired_keys
from eventrelay.worker.producer.publish import publish, publish_many
from eventrelay.worker.vendors import get_vendor, vendor_names

log = logging.getLogger("eventrelay.scheduler")

D = DELIVERIES
K = IDEMPOTENCY_KEYS

DISPATCH_LIMIT_PER_TICK = 5000
PURGE_BATCH = 5000
PURGE_BUDGET_SECONDS = 0.5
# A pending delivery whose vendor queues are empty, published this long ago, lost its message.
# Short, because a worker killed while it pumped a vendor leaves rows that got no message of
# their own (the doorbell it held kept producers from publishing): they must go out again
# within seconds (README, "Guarantees").
ORPHAN_AFTER_SECONDS = 5.0
CLEANUP_EVERY_SECONDS = 60.0
# The live partitions and key table churn by thousands of rows a second; vacuumed this often
# they stay at a few seconds' worth of dead rows (models/vacuum.py).
VACUUM_EVERY_SECONDS = 10.0
# How a delivery waiting for another one reads (engine/pump/request.py `apply_dependencies`).
DEPENDENCY_WAIT_REASON = "waiting for delivery %"
STRANDED_LIMIT_PER_TICK = 1000
# kombu's Redis transport keeps one list per priority step next to the queue's own.
_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")


@dataclass
class TickSummary:
    recovered: int = 0
    dispatched: int = 0
    keys_purged: int = 0
    woken: int = 0  # vendors sent a drain message (lost messages, a dead pump, a reset)
    unstranded: int = 0  # deliveries whose dependency was delivered while they were released
    broker_reset: bool = False
    retention_pass: retention.RetentionSummary | None = None  # when this tick ran a retention pass
    vacuumed: list[str] | None = None  # tables this tick vacuumed


def queue_depths(broker_url: str) -> dict[str, int] | None:
    """Messages waiting per queue (Redis broker only; None otherwise or if unreachable)."""
    if not is_redis_url(broker_url):
        return None
    from eventrelay.worker.fleet.redis_client import get_redis

    try:
        client = get_redis(broker_url)
        names = [q for v in vendor_names() for q in vendor_queues(v)]
        pipe = client.pipeline()
        for name in names:
            for suffix in _PRIORITY_SUFFIXES:
                pipe.llen(name + suffix)
        counts = pipe.execute()
    except Exception:
        return None
    depths = {}
    for n, name in enumerate(names):
        depths[name] = sum(counts[n * len(_PRIORITY_SUFFIXES) : (n + 1) * len(_PRIORITY_SUFFIXES)])
    return depths


def _broker_was_reset(broker_url: str) -> bool:
    """True the first time we see a broker without our epoch mark (restart, FLUSHALL)."""
    if not is_redis_url(broker_url):
        return False
    from eventrelay.worker.fleet.redis_client import get_redis

    try:
        return bool(get_redis(broker_url).set(keys.BROKER_EPOCH, str(time.time()), nx=True))
    except Exception:
        return False


def dispatch_due(
    conn: Connection, *, blocked_vendors: set[str]
) -> list[tuple[uuid.UUID, str, Lane]]:
    """Mark due deliveries that were never published as published now, and return them.

    These are retries, released and replayed work whose time has come (`dispatched_at` NULL,
    found through their own partial index). Everything else that is due but has a message
    somewhere needs none of its own: a message for a vendor makes a worker's pump claim all
    of the vendor's due deliveries, so ids in a message are hints (see `vendors_to_wake`).
    """
    now = utcnow()
    due = (
        select(D.c.id)
        .where(
            IS_LIVE,
            D.c.status == DeliveryStatus.PENDING,
            D.c.next_attempt_at <= now,
            D.c.dispatched_at.is_(None),
        )
        .order_by(D.c.next_attempt_at)
        .limit(DISPATCH_LIMIT_PER_TICK)
    )
    if blocked_vendors:
        due = due.where(D.c.vendor.not_in(blocked_vendors))
    rows = conn.execute(
        update(D)
        .where(D.c.id.in_(pick_locked(conn, due)), IS_LIVE, D.c.status == DeliveryStatus.PENDING)
        .values(dispatched_at=now)
        .returning(D.c.id, D.c.vendor, D.c.lane)
    ).all()
    return [(r.id, r.vendor, Lane(r.lane)) for r in rows]


def wake_stranded_dependents(conn: Connection, vendors: list[str]) -> int:
    """Make due now the deliveries still waiting for a dependency that is already delivered,
    or dead (their next claim dead-letters them, naming it).

    A worker that finds an event's profile not yet delivered releases the event for
    DEPENDENCY_WAIT_SECONDS, and the profile's own record wakes it. When the profile's record
    commits between that check and the event's release (another process, or the recorder's
    next batch), the wake finds nothing to wake and the event would sit out the whole fallback
    wait (30 s); a profile dead-lettered wakes nobody, and its events sat out that wait too
    before they were dead-lettered. This takes them back within a tick;
    returns how many. Only dependency waits, never a retry's backoff.
    """
    if not vendors:
        return 0
    now = utcnow()
    dependency = D.alias("dependency")
    stranded = (
        select(D.c.id)
        .where(
            IS_LIVE,
            D.c.vendor.in_(vendors),
            D.c.status == DeliveryStatus.PENDING,
            D.c.next_attempt_at > now,
            D.c.depends_on.is_not(None),
            D.c.reason.like(DEPENDENCY_WAIT_REASON),
            exists().where(
                dependency.c.id == D.c.depends_on,
                dependency.c.status.in_((DeliveryStatus.DELIVERED, DeliveryStatus.DEAD)),
            ),
        )
        .limit(STRANDED_LIMIT_PER_TICK)
    )
    result = conn.execute(
        update(D)
        .where(
            D.c.id.in_(pick_locked(conn, stranded, name="stranded")),
            IS_LIVE,
            D.c.status == DeliveryStatus.PENDING,
        )
        .values(next_attempt_at=now, dispatched_at=None, updated_at=now)
    )
    return int(result.rowcount or 0)


def has_stale_due(conn: Connection, vendor: str, older_than_seconds: float) -> bool:
    """Whether the vendor has due work published more than `older_than_seconds` ago."""
    now = utcnow()
    row = conn.execute(
        select(D.c.id)
        .where(
            IS_LIVE,
            D.c.status == DeliveryStatus.PENDING,
            D.c.dispatched_at < now - timedelta(seconds=older_than_seconds),
            D.c.vendor == vendor,
            D.c.next_attempt_at <= now,
        )
        .limit(1)
    ).first()
    return row is not None


def vendors_to_wake(
    conn: Connection,
    settings: Settings,
    *,
    depths: dict[str, int] | None,
    rung: set[str],
    blocked_vendors: set[str],
    everything: bool,
) -> list[str]:
    """Vendors whose due work may have no message left anywhere: each gets one drain message.

    - After a broker reset (restart, FLUSHALL): every vendor with pending work.
    - A vendor whose queues are empty and whose doorbell nobody holds (no pump is working on
      it and no message waits) but that has due work published a while ago: its message was
      lost, or the worker pumping it died (ORPHAN_AFTER_SECONDS).
    - Without queue depths (a non-Redis broker): due work published longer ago than
      EVENTRELAY_REDISPATCH_AFTER_SECONDS.

    One message per vendor, not one per row: a backlog still waiting in the broker is never
    published again, however long it is (no redispatch flood).
    """
    wake = []
    for vendor in vendor_names():
        if vendor in blocked_vendors:
            continue
        if everything:
            stale_after = 0.0
        elif depths is None:
            stale_after = settings.redispatch_after_seconds
        elif vendor in rung or any(depths.get(q, 0) for q in vendor_queues(vendor)):
            continue
        else:
            stale_after = ORPHAN_AFTER_SECONDS
        if has_stale_due(conn, vendor, stale_after):
            wake.append(vendor)
    return wake


def _rung_doorbells(redis_url: str | None) -> set[str]:
    if not redis_url:
        return set()
    from eventrelay.worker.fleet.redis_client import get_redis

    names = vendor_names()
    try:
        found = get_redis(redis_url).mget([keys.doorbell(v) for v in names])
    except Exception:
        return set()
    return {v for v, value in zip(names, found, strict=True) if value}


def purge_keys(conn_factory: Any, budget_seconds: float | None = None) -> int:
    """Purge expired keys in short batches until none are left or the time budget is spent:
    no fixed cap per minute, and no batch holds its locks for long."""
    budget_seconds = PURGE_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    started = time.monotonic()
    purged = 0
    while True:  # at least one batch, however small the budget
        with conn_factory() as conn:
            n = purge_expired_keys(conn, limit=PURGE_BATCH)
        purged += n
        if n < PURGE_BATCH or time.monotonic() - started >= budget_seconds:
            return purged


@dataclass(frozen=True)
class Chore:
    """One periodic job of the scheduler: `run` at most once per `every_seconds` (0: every
    tick). A chore that returns True has work left and runs again on the next tick."""

    name: str
    every_seconds: Callable[[Settings], float]
    run: Callable[[Scheduler, TickSummary], bool | None]


def _every_tick(_: Settings) -> float:
    return 0.0


class Scheduler:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._last_ran: dict[str, float] = {}  # chore name -> time.monotonic() it last ran
        self._failing: dict[str, str] = {}  # chore name -> the error it failed with last
        self.stop_event = threading.Event()

    def _budget_spent(self, vendor: str, attempt: int, window_started_at: datetime) -> str | None:
        policy = RetryPolicy.for_vendor(get_vendor(vendor), self.settings)
        return policy.give_up_reason(attempt, window_started_at, utcnow())

    @staticmethod
    def _dependent_vendors() -> list[str]:
        """Vendors with operations that wait for another delivery (Botsi events)."""
        return [v for v in vendor_names() if get_vendor(v).followed_operations()]

    def _gated_vendors(self) -> set[str]:
        url = self.settings.effective_redis_url
        if not url:
            return set()
        blocked = set()
        for name in vendor_names():
            try:
                if breaker.state(name, url) in ("parked", "open", "cooling"):
                    blocked.add(name)
            except Exception:
                return set()
        return blocked

    def tick(self, raise_errors: bool = False) -> TickSummary:
        """Run every chore that is due. One chore's failure is logged with its traceback and
        never stops the others: a broken purge must not stop retries from going out.

        Raises:
            Exception: with `raise_errors`, the first chore's error, once every chore ran
                (`eventrelay scheduler --once` exits non-zero on it).
        """
        summary = TickSummary()
        errors: list[Exception] = []
        for chore in CHORES:
            now = time.monotonic()
            last = self._last_ran.get(chore.name)
            if last is not None and now - last <= chore.every_seconds(self.settings):
                continue
            self._last_ran[chore.name] = now
            try:
                again = chore.run(self, summary)
            except Exception as exc:
                errors.append(exc)
                self._failed(chore, exc)
            else:
                if self._failing.pop(chore.name, None):
                    log.info("scheduler chore %r works again", chore.name)
                if again:
                    self._last_ran.pop(chore.name)
        self._log(summary)
        if not errors:  # what the metrics exporter reads as eventrelay_scheduler_*
            liveness.scheduler_beat(self.settings.effective_redis_url)
        if errors and raise_errors:
            raise errors[0]
        return summary

    def _failed(self, chore: Chore, exc: Exception) -> None:
        # The traceback once, when a chore starts failing; while the same error goes on (the
        # database away), one line a tick.
        kind = type(exc).__name__
        if self._failing.get(chore.name) == kind:
            log.warning("scheduler chore %r failed again (%s: %s)", chore.name, kind, exc)
        else:
            log.exception("scheduler chore %r failed; the other chores go on", chore.name)
        self._failing[chore.name] = kind

    def recover_leases(self, summary: TickSummary) -> None:
        with get_engine().begin() as conn:
            summary.recovered = len(recover_expired_leases(conn, give_up=self._budget_spent))

    def publish_due(self, summary: TickSummary) -> None:
        """Publish due work that has no message: retries, released and replayed rows, and one
        drain message for each vendor whose message may have been lost."""
        summary.broker_reset = _broker_was_reset(self.settings.broker_url)
        depths = queue_depths(self.settings.broker_url)
        blocked = self._gated_vendors()
        engine = get_engine()
        with engine.begin() as conn:
            # Before dispatch_due, which publishes them in this very tick.
            summary.unstranded = wake_stranded_dependents(conn, self._dependent_vendors())
            rows = dispatch_due(conn, blocked_vendors=blocked)
            wake = vendors_to_wake(
                conn,
                self.settings,
                depths=depths,
                rung=_rung_doorbells(self.settings.effective_redis_url),
                blocked_vendors=blocked,
                everything=summary.broker_reset,
            )
        try:
            if rows:
                publish_many(rows)
            for vendor in wake:
                publish(vendor, Lane.FRESH, [])
        except Exception as exc:
            log.warning("broker unavailable (%s); will publish on a later tick", type(exc).__name__)
            if rows:
                with engine.begin() as conn:
                    mark_unpublished(conn, [r[0] for r in rows])
            rows, wake = [], []
        summary.woken = len(wake)
        summary.dispatched = len(rows)

    def purge_idempotency_keys(self, summary: TickSummary) -> bool:
        summary.keys_purged = purge_keys(get_engine().begin)
        # The budget ran out with keys left: purge again next tick until caught up, so the
        # purge keeps pace with any enqueue rate.
        return bool(summary.keys_purged) and summary.keys_purged % PURGE_BATCH == 0

    def run_retention(self, summary: TickSummary) -> None:
        summary.retention_pass = retention.run(get_engine(), self.settings)

    def vacuum(self, summary: TickSummary) -> None:
        summary.vacuumed = vacuum_churning_tables(get_engine())

    @staticmethod
    def _log(summary: TickSummary) -> None:
        if summary.unstranded:
            log.info(
                "scheduler: %d deliveries waited for a dependency already delivered; due now",
                summary.unstranded,
            )
        if summary.recovered or summary.dispatched or summary.broker_reset or summary.woken:
            log.info(
                "scheduler: recovered %d expired leases, published %d deliveries, woke %d "
                "vendors%s",
                summary.recovered,
                summary.dispatched,
                summary.woken,
                " (broker was reset: republished everything pending)"
                if summary.broker_reset
                else "",
            )

    def run(self, interval: float | None = None, max_seconds: float | None = None) -> None:
        """Tick until SIGTERM/SIGINT (or `max_seconds`); database/broker errors are survived."""
        interval = interval or self.settings.scheduler_interval_seconds
        started = time.monotonic()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, self._stop)
        while not self.stop_event.is_set():
            t0 = time.monotonic()
            try:
                summary = self.tick()
            except Exception as exc:
                log.warning("scheduler tick failed (%s: %s); retrying", type(exc).__name__, exc)
                summary = TickSummary()
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                return
            if summary.dispatched < DISPATCH_LIMIT_PER_TICK:
                self.stop_event.wait(max(0.0, interval - (time.monotonic() - t0)))

    def _stop(self, *_: Any) -> None:
        self.stop_event.set()


# The scheduler's periodic chores, in the order a tick runs them.
CHORES: tuple[Chore, ...] = (
    Chore("recover expired leases", _every_tick, Scheduler.recover_leases),
    Chore("publish due work", _every_tick, Scheduler.publish_due),
    Chore(
        "purge expired idempotency keys",
        lambda _: CLEANUP_EVERY_SECONDS,
        Scheduler.purge_idempotency_keys,
    ),
    Chore("retention", retention.every_seconds, Scheduler.run_retention),
    Chore("vacuum", lambda _: VACUUM_EVERY_SECONDS, Scheduler.vacuum),
)
