"""One request's work: (claimed) → dependencies → build → rate limit → send → outcomes.

Plain functions over claimed rows; the dispatcher (`dispatcher.py`) runs many at once in the
send pool, and nothing here touches the pump's bookkeeping.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from eventrelay.models.base import utcnow
from eventrelay.models.delivery import AttemptOutcome, DeliveryStatus
from eventrelay.worker.config import Settings
from eventrelay.worker.engine.retry import RetryPolicy
from eventrelay.worker.engine.state import Claimed, Outcome
from eventrelay.worker.errors import ConfigurationError, Unsendable
from eventrelay.worker.fleet import breaker, ratelimit
from eventrelay.worker.redact import redact
from eventrelay.worker.tracing import start_attempt
from eventrelay.worker.vendors.base import OutboundRequest, SendResult, Vendor, Verdict, send

log = logging.getLogger("eventrelay.worker")

DEPENDENCY_WAIT_SECONDS = 30.0  # a fallback: dependents are woken as soon as the profile lands
CONFIG_ERROR_WAIT_SECONDS = 60.0
LIMITER_MAX_WAIT_SECONDS = 5.0
# Rows one claim may take: enough for a vendor's largest array (Botsi takes 50 events).
CLAIM_MAX_ROWS = 200

T = TypeVar("T")


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

    @property
    def reached_vendor(self) -> bool:
        """Whether the vendor was asked at all (a half-open probe that was not is given back)."""
        return self.succeeded or self.failed or bool(self.resend)


def claim_limit(vendor: Vendor, free_slots: int) -> int:
    """Rows to claim for `free_slots` requests. A request of an operation that takes arrays
    carries up to its batch size of rows, so a vendor with one claims that many per free slot
    (up to CLAIM_MAX_ROWS): due events fill one array even while slow start allows a vendor
    only a few requests. What a claim took beyond its slots' requests (single-row operations
    of such a vendor) is given back due at once by the dispatcher, never sent past the cap."""
    per_request = max(vendor.batch_sizes.values(), default=1)
    return max(1, min(CLAIM_MAX_ROWS, free_slots * per_request))


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
    request = _build(vendor, group, policy, out)
    if request is None:
        return out
    rate = vendor.settings.rate_limit
    if rate and not _acquire(vendor.name, rate, redis_url):
        out.outcomes = release(group, 1.0, "rate limit: waiting")
        out.pause_seconds = 0.5
        return out
    started = utcnow()
    # The attempt's spans, and their traceparent on the request (a no-op when not tracing).
    request, traced = start_attempt(vendor, group, request)
    result = traced.answered(_call(vendor, request, settings))
    if len(group) > 1 and result.verdict is Verdict.DEAD:
        out.resend = [[c] for c in group]
        traced.end(out)
        return out
    # The vendor has answered: the outcome is decided before any bookkeeping can fail, or a
    # sent job would be released and sent again.
    if result.verdict is Verdict.CREDENTIALS:
        _refused_key(vendor, group, result, started, policy, redis_url, out)
    else:
        _answered(vendor, group, result, started, policy, redis_url, out)
    traced.end(out)
    return out


def _build(
    vendor: Vendor, group: list[Claimed], policy: RetryPolicy, out: SentGroup
) -> OutboundRequest | None:
    """The vendor's request for `group`, or None with every member's outcome in `out`."""
    try:
        return vendor.build_request_for(
            group[0].operation, [c.id for c in group], [c.payload for c in group]
        )
    except Unsendable as exc:  # retrying cannot change a stored payload
        if len(group) > 1:
            out.resend = [[c] for c in group]  # find the one that cannot go
        else:
            reason = f"cannot be sent: {redact(str(exc), 500)}"
            out.outcomes = [
                Outcome(group[0], AttemptOutcome.DEAD, error_class="Unsendable", reason=reason)
            ]
    except ConfigurationError as exc:
        log.error("%s: %s; its deliveries wait", vendor.name, exc)
        out.outcomes = release(group, CONFIG_ERROR_WAIT_SECONDS, str(exc))
        out.pause_seconds = CONFIG_ERROR_WAIT_SECONDS
    except Exception as exc:  # an adapter bug on one job must not stop the others
        log.exception("%s adapter failed to build a request", vendor.name)
        failed = adapter_error(exc)
        out.outcomes = [_outcome(c, AttemptOutcome.RETRY, failed, utcnow(), policy) for c in group]
    return None


def _call(vendor: Vendor, request: OutboundRequest, settings: Settings) -> SendResult:
    try:
        return send(
            vendor,
            request,
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            max_response_bytes=settings.max_response_bytes,
            deadline_seconds=settings.request_deadline_seconds,
        )
    except Exception as exc:  # an adapter bug: retried, then dead with its summary
        log.exception("%s adapter raised while handling a response", vendor.name)
        return adapter_error(exc)


def _refused_key(
    vendor: Vendor,
    group: list[Claimed],
    result: SendResult,
    started: datetime,
    policy: RetryPolicy,
    redis_url: str | None,
    out: SentGroup,
) -> None:
    """Our key was refused: nothing of this vendor can be sent until an operator fixes it."""
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


def _answered(
    vendor: Vendor,
    group: list[Claimed],
    result: SendResult,
    started: datetime,
    policy: RetryPolicy,
    redis_url: str | None,
    out: SentGroup,
) -> None:
    out.outcomes = [_outcome(c, _kind(result), result, started, policy) for c in group]
    out.succeeded = result.verdict in (Verdict.DELIVERED, Verdict.DEAD)  # the vendor is up
    out.failed = result.verdict is Verdict.RETRY
    if result.verdict is not Verdict.DELIVERED or out.health_dirty:
        best_effort("track vendor health", _track_vendor_health, vendor.name, result, redis_url)
        out.health_dirty = result.verdict is not Verdict.DELIVERED


def release(claimed: Sequence[Claimed], wait_seconds: float, reason: str | None) -> list[Outcome]:
    """Outcomes that give deliveries back without spending their attempt."""
    until = utcnow() + timedelta(seconds=wait_seconds)
    return [Outcome(c, None, next_attempt_at=until, reason=reason) for c in claimed]


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


def _acquire(vendor: str, rate: float, redis_url: str | None) -> bool:
    """A fleet-wide send slot; if Redis cannot give one, wait (nothing is sent, nothing spent)."""
    try:
        return ratelimit.acquire(vendor, rate, LIMITER_MAX_WAIT_SECONDS, redis_url)
    except Exception as exc:
        log.warning(
            "%s: rate limiter unavailable (%s); deliveries wait", vendor, type(exc).__name__
        )
        return False


def best_effort(what: str, fn: Callable[..., T], *args: Any) -> T | None:
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
    c: Claimed, kind: AttemptOutcome, result: SendResult, started: datetime, policy: RetryPolicy
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
