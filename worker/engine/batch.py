"""One request's worth of work: gate → (claimed) → dependencies → build → limit → send → outcome.

Plain functions: the pump (`eventrelay.worker.engine.pump`) runs many of them at once, and
`process_batch` runs them one after another for a given list of ids (tests, tools).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, PendingRollbackError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from eventrelay.models.base import utcnow
from eventrelay.models.delivery import AttemptOutcome, DeliveryStatus
from eventrelay.models.session import get_engine
from eventrelay.worker.config import Settings, get_settings
from eventrelay.worker.engine import retention
from eventrelay.worker.engine.retry import RetryPolicy
from eventrelay.worker.engine.state import (
    Claimed,
    Outcome,
    Recorded,
    claim,
    dependency_states,
    record,
)
from eventrelay.worker.errors import ConfigurationError, Unsendable
from eventrelay.worker.fleet import breaker, ratelimit
from eventrelay.worker.logs import log_attempt
from eventrelay.worker.redact import redact
from eventrelay.worker.vendors import get_vendor
from eventrelay.worker.vendors.base import SendResult, Vendor, Verdict, send

log = logging.getLogger("eventrelay.worker")

DEPENDENCY_WAIT_SECONDS = 30.0  # a fallback: dependents are woken as soon as the profile lands
CONFIG_ERROR_WAIT_SECONDS = 60.0
LIMITER_MAX_WAIT_SECONDS = 5.0
RECORD_RETRY_SECONDS = 60.0
# Rows one claim may take: enough for a vendor's largest array (Botsi takes 50 events).
CLAIM_MAX_ROWS = 200


@dataclass
class BatchSummary:
    """What `process_batch` did."""

    vendor: str
    claimed: int = 0
    delivered: int = 0
    retry: int = 0
    dead: int = 0
    released: int = 0
    zombies: int = 0
    delivery_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v or k == "vendor"}


@dataclass
class SentGroup:
    """What came of one request: outcomes to record, and what the caller should do next."""

    outcomes: list[Outcome] = field(default_factory=list)
    # The vendor refused an array: send each element on its own to find the bad one.
    resend: list[list[Claimed]] = field(default_factory=list)
    # Whether the fleet's failure count may now be non-zero (a later success resets it).
    health_dirty: bool = False
    # Stop claiming for this vendor for a while (parked, config missing, limiter saturated).
    pause_seconds: float = 0.0
    # The vendor answered with success / failed to (a retryable failure or refused key).
    succeeded: bool = False
    failed: bool = False


def claim_limit(vendor: Vendor, free_slots: int) -> int:
    """Rows to claim for `free_slots` requests: one each. A claim of many due events of a
    vendor that takes arrays still fills one array (up to CLAIM_MAX_ROWS), but a claim never
    holds rows that must wait for a free slot."""
    return max(1, min(CLAIM_MAX_ROWS, free_slots))


def groups_of(vendor: Vendor, claimed: Sequence[Claimed]) -> list[list[Claimed]]:
    """Requests to make: batchable operations share one request, the rest go one by one."""
    groups: list[list[Claimed]] = []
    batches: dict[str, list[Claimed]] = {}
    for c in claimed:
        size = vendor.batch_sizes.get(c.operation, 1)
        if size <= 1:
            groups.append([c])
            continue
        current = batches.setdefault(c.operation, [])
        current.append(c)
        if len(current) >= size:
            groups.append(current)
            batches[c.operation] = []
    groups.extend(g for g in batches.values() if g)
    return groups


def apply_dependencies(
    claimed: Sequence[Claimed],
    deps: dict[uuid.UUID, tuple[DeliveryStatus, str | None]],
    outcomes: list[Outcome],
) -> list[Claimed]:
    """Deliveries whose prerequisite is not delivered yet wait; a dead one kills them."""
    ready = []
    for c in claimed:
        state = deps.get(c.depends_on) if c.depends_on else None
        if state is None or state[0] is DeliveryStatus.DELIVERED:
            ready.append(c)
        elif state[0] is DeliveryStatus.DEAD:
            outcomes.append(
                Outcome(
                    c,
                    AttemptOutcome.DEAD,
                    error_class="DependencyDead",
                    reason=f"the delivery it waits for ({c.depends_on}) is dead: {state[1]}",
                )
            )
        else:
            outcomes.append(
                Outcome(
                    c,
                    None,
                    next_attempt_at=utcnow() + timedelta(seconds=DEPENDENCY_WAIT_SECONDS),
                    reason=f"waiting for delivery {c.depends_on} to be delivered first",
                    waits_for=c.depends_on,
                )
            )
    return ready


def send_group(
    vendor: Vendor,
    group: list[Claimed],
    settings: Settings,
    redis_url: str | None,
    *,
    health_dirty: bool = False,
) -> SentGroup:
    """Build, rate-limit and send one request for `group`; every member gets an outcome
    (or goes back in `resend`). Never raises for the vendor's or the network's trouble."""
    policy = RetryPolicy.for_vendor(vendor, settings)
    out = SentGroup(health_dirty=health_dirty)
    try:
        request = vendor.build_request(group[0].operation, [c.payload for c in group])
    except Unsendable as exc:  # retrying cannot change a stored payload
        if len(group) > 1:
            out.resend = [[c] for c in group]  # find the one that cannot go
            return out
        reason = f"cannot be sent: {redact(str(exc), 500)}"
        out.outcomes = [
            Outcome(group[0], AttemptOutcome.DEAD, error_class="Unsendable", reason=reason)
        ]
        return out
    except ConfigurationError as exc:
        log.error("%s: %s; its deliveries wait", vendor.name, exc)
        out.outcomes = release(group, CONFIG_ERROR_WAIT_SECONDS, str(exc))
        out.pause_seconds = CONFIG_ERROR_WAIT_SECONDS
        return out
    except Exception as exc:  # an adapter bug on one job must not stop the others
        log.exception("%s adapter failed to build a request", vendor.name)
        failed = adapter_error(exc)
        out.outcomes = [_outcome(c, AttemptOutcome.RETRY, failed, utcnow(), policy) for c in group]
        return out
    rate = vendor.settings.rate_limit
    if rate and redis_url and not _acquire(vendor.name, rate, redis_url):
        out.outcomes = release(group, 1.0, "rate limit: waiting")
        out.pause_seconds = 0.5
        return out
    started = utcnow()
    try:
        result = send(
            vendor,
            request,
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            max_response_bytes=settings.max_response_bytes,
        )
    except Exception as exc:  # an adapter bug: retried, then dead with its summary
        log.exception("%s adapter raised while handling a response", vendor.name)
        result = adapter_error(exc)
    if len(group) > 1 and result.verdict is Verdict.DEAD:
        out.resend = [[c] for c in group]
        return out
    # The vendor has answered: the outcome is decided before any bookkeeping can fail, or a
    # sent job would be released and sent again.
    if result.verdict is Verdict.CREDENTIALS:
        reason = result.reason or "credentials rejected"
        out.outcomes = [_outcome(c, AttemptOutcome.PARKED, result, started, policy) for c in group]
        out.pause_seconds = breaker.PARKED_RECHECK_SECONDS
        out.failed = True
        if redis_url:
            best_effort("park the vendor", breaker.park, vendor.name, reason, redis_url)
        log.error(
            "%s: vendor parked: %s. Fix %s's credentials, then run `eventrelay vendors resume %s`",
            vendor.name,
            reason,
            vendor.name,
            vendor.name,
        )
        return out
    out.outcomes = [_outcome(c, _kind(result), result, started, policy) for c in group]
    out.succeeded = result.verdict in (Verdict.DELIVERED, Verdict.DEAD)  # the vendor is up
    out.failed = result.verdict is Verdict.RETRY
    if result.verdict is not Verdict.DELIVERED or health_dirty:
        best_effort("track vendor health", _track_vendor_health, vendor.name, result, redis_url)
        out.health_dirty = result.verdict is not Verdict.DELIVERED
    return out


def release(claimed: Sequence[Claimed], wait_seconds: float, reason: str | None) -> list[Outcome]:
    """Outcomes that give deliveries back without spending their attempt."""
    until = utcnow() + timedelta(seconds=wait_seconds)
    return [Outcome(c, None, next_attempt_at=until, reason=reason) for c in claimed]


@retry(
    # PendingRollbackError: the connection died inside the transaction; a new one is fine.
    retry=retry_if_exception_type((DBAPIError, PendingRollbackError)),
    wait=wait_exponential(multiplier=0.5, max=5),
    stop=stop_after_delay(RECORD_RETRY_SECONDS),
    reraise=True,
)
def record_with_retry(engine: Engine, outcomes: list[Outcome]) -> Recorded:
    """Record outcomes of any vendors in one transaction, retrying a lost database.

    The vendors have answered: losing this write would mean sending again. A database restart
    costs a few seconds of retrying here; past that the lease expiry takes over.
    """
    settings = get_settings()
    retention.ensure_history_partition(engine, settings)
    try:
        with engine.begin() as conn:
            return record(
                conn,
                outcomes,
                on_delivered=_on_delivered,
                follows=_is_followed,
                keeps_answer=_keeps_answer,
            )
    except DBAPIError as exc:
        if retention.is_missing_partition(exc):
            retention.forget_partitions(engine)  # made again on the retry
        raise


def _on_delivered(conn: Connection, o: Outcome) -> None:
    get_vendor(o.claimed.vendor).on_delivered(
        conn, o.claimed.id, o.claimed.operation, o.response_json
    )


def _keeps_answer(o: Outcome) -> bool:
    return o.claimed.operation in get_vendor(o.claimed.vendor).keeps_answer_of


def _is_followed(o: Outcome) -> bool:
    # Only operations that others wait for can have dependents (saves a query per batch).
    return o.claimed.operation in get_vendor(o.claimed.vendor).followed_operations()


def log_recorded(result: Recorded) -> None:
    for o in result.applied:
        if o.kind is not None:
            log_attempt(o)
    for o in result.zombies:
        log.warning(
            "delivery %s: lease was taken over by another worker; attempt %d result discarded",
            o.claimed.id,
            o.claimed.attempt,
        )


def process_batch(vendor_name: str, ids: Sequence[uuid.UUID]) -> BatchSummary:
    """Claim `ids` of one vendor, send them one request after another, record the outcomes.

    The synchronous path, for tests and tools; workers use the pump.
    """
    settings = get_settings()
    vendor = get_vendor(vendor_name)
    summary = BatchSummary(vendor=vendor_name)
    engine = get_engine()
    redis_url = settings.effective_redis_url
    with engine.begin() as conn:
        claimed = claim(conn, vendor_name, ids, settings.lease_seconds)
        deps = dependency_states(conn, [c.depends_on for c in claimed if c.depends_on])
    summary.claimed = len(claimed)
    summary.delivery_ids = [str(c.id) for c in claimed]
    outcomes: list[Outcome] = []
    pending = groups_of(vendor, apply_dependencies(claimed, deps, outcomes))
    dirty = True
    while pending:
        sent = send_group(vendor, pending.pop(0), settings, redis_url, health_dirty=dirty)
        dirty = sent.health_dirty
        outcomes += sent.outcomes
        pending = sent.resend + pending
    result = record_with_retry(engine, outcomes)
    log_recorded(result)
    for o in result.applied:
        _count(summary, o)
    summary.zombies = len(result.zombies)
    return summary


def _count(summary: BatchSummary, o: Outcome) -> None:
    if o.kind is AttemptOutcome.DELIVERED:
        summary.delivered += 1
    elif o.kind is AttemptOutcome.RETRY:
        summary.retry += 1
    elif o.kind is AttemptOutcome.DEAD:
        summary.dead += 1
    else:
        summary.released += 1


def _kind(result: SendResult) -> AttemptOutcome:
    return {
        Verdict.DELIVERED: AttemptOutcome.DELIVERED,
        Verdict.RETRY: AttemptOutcome.RETRY,
        Verdict.DEAD: AttemptOutcome.DEAD,
    }[result.verdict]


def adapter_error(exc: Exception) -> SendResult:
    """An unexpected exception in a vendor adapter: retried, then dead-lettered with this."""
    return SendResult(
        Verdict.RETRY,
        None,
        0,
        error_class=type(exc).__name__,
        reason=f"adapter error {type(exc).__name__}: {redact(str(exc), 200)}",
    )


def gate_for(vendor: str, redis_url: str | None) -> breaker.Gate:
    """The vendor's gate; if Redis cannot say, deliveries go ahead (failing open)."""
    if not redis_url:
        return breaker.Gate(True)
    try:
        return breaker.check(vendor, redis_url)
    except Exception as exc:
        log.warning(
            "%s: circuit state unavailable (%s); sending without it", vendor, type(exc).__name__
        )
        return breaker.Gate(True)


def _acquire(vendor: str, rate: float, redis_url: str) -> bool:
    """A fleet-wide send slot; if Redis cannot give one, wait (nothing is sent, nothing spent)."""
    try:
        return ratelimit.acquire(vendor, rate, LIMITER_MAX_WAIT_SECONDS, redis_url)
    except Exception as exc:
        log.warning(
            "%s: rate limiter unavailable (%s); deliveries wait", vendor, type(exc).__name__
        )
        return False


def best_effort(what: str, fn: Any, *args: Any) -> Any:
    """Fleet-wide bookkeeping in Redis: its failure is logged, never raised (it must not undo
    a recorded vendor answer, and the scheduler covers for a lost doorbell). None on failure."""
    try:
        return fn(*args)
    except Exception as exc:
        log.warning("could not %s (%s: %s)", what, type(exc).__name__, exc)
        return None


def _track_vendor_health(vendor: str, result: SendResult, redis_url: str | None) -> None:
    if not redis_url:
        return
    if result.verdict is Verdict.RETRY:
        if result.status_code == 429:
            ratelimit.back_off(vendor, result.retry_after_seconds, redis_url)
        elif breaker.record_failure(vendor, redis_url):
            log.warning("%s: circuit opened after repeated failures", vendor)
    elif result.verdict is Verdict.DELIVERED or result.status_code is not None:
        # Any answer that is not a retryable failure shows the vendor is up.
        breaker.record_success(vendor, redis_url)


def _outcome(
    c: Claimed, kind: AttemptOutcome, result: SendResult, started: Any, policy: RetryPolicy
) -> Outcome:
    o = Outcome(
        c,
        kind,
        reason=result.reason,
        status_code=result.status_code,
        duration_ms=result.duration_ms,
        error_class=result.error_class,
        excerpt=result.excerpt,
        started_at=started,
        response_json=result.response_json,
    )
    if kind is AttemptOutcome.PARKED:
        o.next_attempt_at = utcnow() + timedelta(seconds=breaker.PARKED_RECHECK_SECONDS)
    elif kind is AttemptOutcome.RETRY:
        delay = policy.delay_seconds(c.attempt_in_window, result.retry_after_seconds)
        next_at = utcnow() + timedelta(seconds=delay)
        give_up = policy.give_up_reason(c.attempt_in_window, c.window_started_at, next_at)
        if give_up:
            o.kind = AttemptOutcome.DEAD
            o.reason = f"{give_up}; last error: {result.reason}"
        else:
            o.next_attempt_at = next_at
    return o
