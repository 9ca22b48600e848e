"""Deliver one message's worth of deliveries: gate → claim → send → record.

Plain functions, so the Celery task stays thin and this stays testable without a broker.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from eventrelay.models.base import utcnow
from eventrelay.models.delivery import AttemptOutcome, DeliveryStatus, Lane
from eventrelay.models.session import get_engine
from eventrelay.worker.config import Settings, get_settings
from eventrelay.worker.engine.retry import RetryPolicy
from eventrelay.worker.engine.state import (
    Claimed,
    Outcome,
    Recorded,
    claim,
    defer,
    dependency_states,
    record,
)
from eventrelay.worker.errors import ConfigurationError
from eventrelay.worker.fleet import breaker, ratelimit
from eventrelay.worker.logs import log_attempt
from eventrelay.worker.redact import redact
from eventrelay.worker.vendors import get_vendor
from eventrelay.worker.vendors.base import SendResult, Vendor, Verdict, send

log = logging.getLogger("eventrelay.worker")

DEPENDENCY_WAIT_SECONDS = 30.0  # a fallback: dependents are woken as soon as the profile lands
CONFIG_ERROR_WAIT_SECONDS = 60.0
LIMITER_MAX_WAIT_SECONDS = 5.0
CONSECUTIVE_FAILURES_TO_STOP = 3
RECORD_RETRY_SECONDS = 60.0


@dataclass
class BatchSummary:
    """What one task did; this is the task's result, shown by Flower."""

    vendor: str
    claimed: int = 0
    delivered: int = 0
    retry: int = 0
    dead: int = 0
    released: int = 0
    deferred: int = 0
    zombies: int = 0
    # Every delivery this task claimed, its own and topped-up ones: Flower shows them.
    delivery_ids: list[str] = field(default_factory=list)
    woken: list[tuple[uuid.UUID, str, Lane]] = field(default_factory=list, repr=False)
    # A topped-up batch came back full: more due deliveries are probably waiting.
    batch_full: bool = field(default=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        hidden = ("woken", "batch_full")
        return {k: v for k, v in self.__dict__.items() if k not in hidden and (v or k == "vendor")}


def process_batch(vendor_name: str, ids: Sequence[uuid.UUID], top_up: bool = False) -> BatchSummary:
    """Claim and deliver `ids` of one vendor; every claimed delivery ends recorded.

    With `top_up`, other due fresh deliveries of the vendor fill the batch (worker.doorbell).
    """
    settings = get_settings()
    vendor = get_vendor(vendor_name)
    summary = BatchSummary(vendor=vendor_name)
    engine = get_engine()
    redis_url = settings.effective_redis_url

    gate = _gate(vendor_name, redis_url)
    if not gate.allowed:
        until = utcnow() + timedelta(seconds=gate.wait_seconds + random.uniform(0, 1))
        with engine.begin() as conn:
            summary.deferred = defer(conn, vendor_name, ids, until)
        return summary

    own = ids[: settings.batch_size]
    extra = settings.batch_size - len(own) if top_up else 0
    with engine.begin() as conn:
        claimed = claim(conn, vendor_name, own, settings.lease_seconds, top_up=extra)
        deps = dependency_states(conn, [c.depends_on for c in claimed if c.depends_on])
    summary.claimed = len(claimed)
    summary.delivery_ids = [str(c.id) for c in claimed]
    summary.batch_full = top_up and len(claimed) >= settings.batch_size
    if not claimed:
        return summary

    outcomes: list[Outcome] = []
    try:
        ready = _apply_dependencies(claimed, deps, outcomes)
        _send_all(vendor, ready, settings, redis_url, gate, outcomes)
    except SoftTimeLimitExceeded:
        log.warning(
            "batch for %s hit the soft time limit; releasing what was not sent", vendor_name
        )
    finally:
        handled = {o.claimed.id for o in outcomes}
        for c in claimed:
            if c.id not in handled:
                outcomes.append(Outcome(c, None, next_attempt_at=utcnow(), reason=None))
        result = _record_with_retry(engine, vendor, outcomes)
    return _summarise(summary, result)


def _summarise(summary: BatchSummary, result: Recorded) -> BatchSummary:
    for o in result.applied:
        if o.kind is not None:
            log_attempt(o)
        _count(summary, o)
    for o in result.zombies:
        log.warning(
            "delivery %s: lease was taken over by another worker; attempt %d result discarded",
            o.claimed.id,
            o.claimed.attempt,
        )
    summary.zombies = len(result.zombies)
    summary.woken = result.woken
    return summary


@retry(
    retry=retry_if_exception_type(DBAPIError),
    wait=wait_exponential(multiplier=0.5, max=5),
    stop=stop_after_delay(RECORD_RETRY_SECONDS),
    reraise=True,
)
def _record_with_retry(engine: Engine, vendor: Vendor, outcomes: list[Outcome]) -> Recorded:
    # The vendor has answered: losing this write would mean sending again. A database restart
    # costs a few seconds of retrying here; past that the lease expiry takes over.
    with engine.begin() as conn:
        return record(
            conn,
            outcomes,
            on_delivered=lambda c, o: vendor.on_delivered(
                c, o.claimed.id, o.claimed.operation, o.response_json
            ),
            followed_operations=vendor.followed_operations(),
        )


def _count(summary: BatchSummary, o: Outcome) -> None:
    if o.kind is AttemptOutcome.DELIVERED:
        summary.delivered += 1
    elif o.kind is AttemptOutcome.RETRY:
        summary.retry += 1
    elif o.kind is AttemptOutcome.DEAD:
        summary.dead += 1
    else:
        summary.released += 1


def _apply_dependencies(
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
                )
            )
    return ready


def _groups(vendor: Vendor, claimed: Sequence[Claimed]) -> list[list[Claimed]]:
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


def _send_all(
    vendor: Vendor,
    claimed: Sequence[Claimed],
    settings: Settings,
    redis_url: str | None,
    gate: breaker.Gate,
    outcomes: list[Outcome],
) -> None:
    policy = RetryPolicy.for_vendor(vendor, settings)
    pending = _groups(vendor, claimed)
    failures_in_a_row = 0
    probe_only = gate.probe
    # Whether the fleet's failure count may be non-zero: only then does a success reset it.
    health_dirty = gate.failures > 0 or gate.probe
    while pending:
        group = pending.pop(0)
        try:
            request = vendor.build_request(group[0].operation, [c.payload for c in group])
        except ConfigurationError as exc:
            log.error("%s: %s; its deliveries wait", vendor.name, exc)
            _release(
                group + [c for g in pending for c in g],
                outcomes,
                CONFIG_ERROR_WAIT_SECONDS,
                str(exc),
            )
            return
        except Exception as exc:  # an adapter bug on one job must not stop the others
            log.exception("%s adapter failed to build a request", vendor.name)
            failed = _adapter_error(exc)
            for c in group:
                outcomes.append(_outcome(c, AttemptOutcome.RETRY, failed, utcnow(), policy))
            continue
        rate = vendor.settings.rate_limit
        if rate and redis_url and not _acquire(vendor.name, rate, redis_url):
            _release(group + [c for g in pending for c in g], outcomes, 1.0, "rate limit: waiting")
            return
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
            result = _adapter_error(exc)
        if len(group) > 1 and result.verdict is Verdict.DEAD:
            # The vendor refused the array: find the bad element by sending each on its own.
            pending = [[c] for c in group] + pending
            continue
        # The vendor has answered: its outcome is recorded before anything else can fail, or a
        # sent job would be released and sent again.
        if result.verdict is Verdict.CREDENTIALS:
            reason = result.reason or "credentials rejected"
            for c in group:
                outcomes.append(_outcome(c, AttemptOutcome.PARKED, result, started, policy))
            _release(
                [c for g in pending for c in g], outcomes, breaker.PARKED_RECHECK_SECONDS, reason
            )
            if redis_url:
                best_effort("park the vendor", breaker.park, vendor.name, reason, redis_url)
            log.error(
                "%s: vendor parked: %s. Fix %s's credentials, then run "
                "`eventrelay vendors resume %s`",
                vendor.name,
                reason,
                vendor.name,
                vendor.name,
            )
            return
        for c in group:
            outcomes.append(_outcome(c, _kind(result), result, started, policy))
        if result.verdict is not Verdict.DELIVERED or health_dirty:
            best_effort("track vendor health", _track_vendor_health, vendor.name, result, redis_url)
            health_dirty = result.verdict is not Verdict.DELIVERED
        failures_in_a_row = failures_in_a_row + 1 if result.verdict is Verdict.RETRY else 0
        no_answer = result.verdict is Verdict.RETRY and result.status_code is None
        if pending and (
            probe_only or no_answer or failures_in_a_row >= CONSECUTIVE_FAILURES_TO_STOP
        ):
            # A vendor that does not answer (timeout, refused), keeps failing, or is being
            # probed must not hold this worker process hostage: the rest wait, unspent.
            _release([c for g in pending for c in g], outcomes, 1.0, None)
            return


def _kind(result: SendResult) -> AttemptOutcome:
    return {
        Verdict.DELIVERED: AttemptOutcome.DELIVERED,
        Verdict.RETRY: AttemptOutcome.RETRY,
        Verdict.DEAD: AttemptOutcome.DEAD,
    }[result.verdict]


def _adapter_error(exc: Exception) -> SendResult:
    """An unexpected exception in a vendor adapter: retried, then dead-lettered with this."""
    return SendResult(
        Verdict.RETRY,
        None,
        0,
        error_class=type(exc).__name__,
        reason=f"adapter error {type(exc).__name__}: {redact(str(exc), 200)}",
    )


def _gate(vendor: str, redis_url: str | None) -> breaker.Gate:
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
        o.kind = AttemptOutcome.PARKED
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


def _release(
    claimed: Sequence[Claimed], outcomes: list[Outcome], wait_seconds: float, reason: str | None
) -> None:
    until = utcnow() + timedelta(seconds=wait_seconds)
    for c in claimed:
        outcomes.append(Outcome(c, None, next_attempt_at=until, reason=reason))
