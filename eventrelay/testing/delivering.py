"""`drain()`: deliver the outbox's jobs in this process, as a worker would, with no waiting.

rq's `SimpleWorker(burst=True)` and dramatiq's `StubBroker.join()` in one call: the worker's
own steps run in the test's thread, on the test's database:

    claim (engine/state.py) → dependencies → request step (engine/pump/request.py:
    build, send, classify, retry policy) → record (engine/pump/recorder.py, engine/state.py)

The vendors answer from scripts at the HTTP layer (`answers.py`). A retry is not waited for:
when nothing is due, the rows still pending are made due at once (the clock "advances"), so
a `Retry-After: 30` costs nothing. Not simulated: fleet-wide state in Redis (breaker, a 429's
pause, parking: a vendor that refuses its key is simply not asked again in this drain) and the
rate limit, which paces requests but decides no outcome.
"""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, overload

from eventrelay.testing.answers import Answer, Script, ScriptedTransport, SentRequest

if TYPE_CHECKING:
    from eventrelay.worker.engine.state import Claimed, Outcome
    from eventrelay.worker.producer import Receipt


@dataclass(frozen=True)
class Attempt:
    """One attempt of a job: what came of it and, for a retry, the wait the policy chose."""

    number: int
    outcome: str  # delivered, retry, dead, parked
    status_code: int | None
    reason: str | None
    error_class: str | None
    retry_in_seconds: float | None  # the wait that drain() skipped (Retry-After or backoff)

    def __str__(self) -> str:
        status = f" HTTP {self.status_code}" if self.status_code is not None else ""
        wait = f", next in {self.retry_in_seconds:.3g}s" if self.retry_in_seconds else ""
        why = f" ({self.reason})" if self.reason and self.outcome != "delivered" else ""
        return f"#{self.number} {self.outcome}{status}{why}{wait}"


@dataclass(frozen=True)
class JobResult:
    """How one job ended: delivered, dead (with `reason`), suppressed, or still pending."""

    delivery_id: uuid.UUID
    vendor: str
    operation: str
    payload: dict[str, Any]
    status: str
    reason: str | None
    attempts: int  # attempts made so far, as the delivery row counts them (and `show` prints)
    attempt_history: list[Attempt]  # those this drain made, in order
    requests: list[SentRequest]

    @property
    def delivered(self) -> bool:
        return self.status == "delivered"

    def __str__(self) -> str:
        tried = "; ".join(str(a) for a in self.attempt_history) or "no attempt"
        why = f": {self.reason}" if self.reason and self.status != "delivered" else ""
        return f"{self.vendor} {self.operation} {self.delivery_id}: {self.status}{why} ({tried})"


@dataclass
class DrainReport(Sequence[JobResult]):
    """What `drain()` did: every job's end, and every request each vendor received."""

    jobs: list[JobResult]
    requests: list[SentRequest]
    rounds: int
    # The waits drain() did not wait: the sum of the longest wait skipped per round.
    skipped_seconds: float = 0.0
    _by_id: dict[uuid.UUID, JobResult] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_id = {j.delivery_id: j for j in self.jobs}

    @overload
    def __getitem__(self, index: int) -> JobResult: ...
    @overload
    def __getitem__(self, index: slice) -> list[JobResult]: ...
    def __getitem__(self, index: int | slice) -> JobResult | list[JobResult]:
        return self.jobs[index]

    def __len__(self) -> int:
        return len(self.jobs)

    def sent_to(self, vendor: str) -> list[SentRequest]:
        """The requests `vendor` received, in order."""
        return [r for r in self.requests if r.vendor == vendor]

    @property
    def received(self) -> dict[str, list[SentRequest]]:
        """Vendor → the requests it received."""
        out: dict[str, list[SentRequest]] = {}
        for r in self.requests:
            out.setdefault(r.vendor, []).append(r)
        return out

    def job(self, receipt: Receipt | uuid.UUID | str) -> JobResult:
        """The result of the job an `enqueue` receipt (or delivery id) names."""
        wanted = getattr(receipt, "delivery_id", receipt)
        wanted = wanted if isinstance(wanted, uuid.UUID) else uuid.UUID(str(wanted))
        try:
            return self._by_id[wanted]
        except KeyError:
            raise AssertionError(f"no job {wanted} in this drain; {self}") from None

    def with_status(self, status: str) -> list[JobResult]:
        return [j for j in self.jobs if j.status == status]

    @property
    def delivered(self) -> list[JobResult]:
        return self.with_status("delivered")

    @property
    def dead(self) -> list[JobResult]:
        return self.with_status("dead")

    @property
    def suppressed(self) -> list[JobResult]:
        return self.with_status("suppressed")

    def __str__(self) -> str:
        jobs = "\n".join(f"  {j}" for j in self.jobs) or "  (no jobs)"
        sent = "\n".join(f"  {r}" for r in self.requests) or "  (none)"
        return f"drained {len(self.jobs)} job(s):\n{jobs}\nrequests:\n{sent}"

    __repr__ = __str__


def drain(
    outbox: Jobs | None = None,
    answers: Mapping[str, Script] | None = None,
    *,
    max_rounds: int = 200,
) -> DrainReport:
    """Deliver every job in the outbox that is due or waiting, to the end (delivered, dead,
    suppressed), with the vendors answering from `answers` (vendor → script, see
    `answers.py`; a vendor without one answers with its usual success).

    Args:
        outbox: the test's outbox (default: the `eventrelay_outbox` of the running test).
        answers: e.g. `{"infobip": [rate_limited(retry_after=30), 201]}`.
        max_rounds: rounds of claim, send and record; a job still pending after them is
            reported `pending` (a vendor that keeps a job waiting, e.g. a missing profile).
    """
    from eventrelay.worker.config import get_settings

    box = outbox if outbox is not None else _current
    if box is None:
        raise RuntimeError("no eventrelay outbox to drain: use the `eventrelay_outbox` fixture")
    get_settings.cache_clear()  # the test may have changed EVENTRELAY_* since it enqueued
    ids = [j.delivery_id for j in box.jobs]
    transport = ScriptedTransport(answers)
    with _worker_settings(), _mounted(transport):
        trace, rounds, skipped = _run(ids, transport, max_rounds)
    return _report(box, ids, trace, transport.sent, rounds, skipped)


class StoredJob(Protocol):
    """What drain() reads of a job in the outbox (`outbox.CapturedJob`)."""

    @property
    def delivery_id(self) -> uuid.UUID: ...
    @property
    def vendor(self) -> str: ...
    @property
    def operation(self) -> str: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def attempts(self) -> int: ...


class Jobs(Protocol):
    """What drain() reads of an outbox (`outbox.Outbox`)."""

    @property
    def jobs(self) -> Sequence[StoredJob]: ...


_current: Jobs | None = None


def set_current(outbox: Jobs | None) -> None:
    """The outbox `drain()` drains when given none (the running test's)."""
    global _current
    _current = outbox


# ---- the rounds -----------------------------------------------------------------------------

RELEASE_ONLY_ROUNDS = 5  # rounds in a row that only gave rows back: nothing will change


def _run(
    ids: Sequence[uuid.UUID], transport: ScriptedTransport, max_rounds: int
) -> tuple[dict[uuid.UUID, list[Attempt]], int, float]:
    from eventrelay.models.session import get_engine
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.engine.pump.recorder import log_recorded, record_all
    from eventrelay.worker.engine.pump.request import (
        apply_dependencies,
        groups_of,
        release,
        send_group,
    )
    from eventrelay.worker.engine.state import claim, dependency_states
    from eventrelay.worker.vendors import get_vendor

    settings = get_settings()
    engine = get_engine()
    trace: dict[uuid.UUID, list[Attempt]] = {i: [] for i in ids}
    parked: set[str] = set()
    skipped = 0.0
    idle = 0
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        spent = False
        claimed_any = False
        for vendor_name, vendor_ids in _pending_by_vendor(engine, ids).items():
            if vendor_name in parked:
                continue
            with engine.begin() as conn:
                claimed = claim(conn, vendor_name, vendor_ids, settings.lease_seconds)
            if not claimed:
                continue
            claimed_any = True
            vendor = get_vendor(vendor_name)
            outcomes: list[Outcome] = []
            deps: dict[uuid.UUID, Any] = {}
            if any(c.depends_on for c in claimed):
                with engine.begin() as conn:
                    deps = dependency_states(conn, [c.depends_on for c in claimed if c.depends_on])
            groups = groups_of(vendor, apply_dependencies(claimed, deps, outcomes))
            while groups:
                group = groups.pop(0)
                sent = _send(transport, vendor, group, settings, send_group)
                groups.extend(sent.resend)
                answered = {o.claimed.id for o in sent.outcomes}
                answered.update(c.id for part in sent.resend for c in part)
                outcomes.extend(sent.outcomes)
                # What the worker's dispatcher does with rows a request left without an end.
                outcomes.extend(release([c for c in group if c.id not in answered], 1.0, None))
            results, _lost = record_all(engine, outcomes)
            for result in results:
                log_recorded(result)
            for o in outcomes:
                if o.kind is None:
                    continue
                spent = True
                trace[o.claimed.id].append(_attempt(o))
                if o.kind.value == "parked":
                    parked.add(vendor_name)
        if claimed_any:
            idle = 0 if spent else idle + 1
            if idle < RELEASE_ONLY_ROUNDS:
                continue
            break
        waited = _make_due(engine, ids, parked)
        if waited is None:
            break  # nothing pending: every job has ended
        skipped += waited
    return trace, rounds, skipped


def _send(
    transport: ScriptedTransport, vendor: Any, group: list[Claimed], settings: Any, send: Any
) -> Any:
    transport.vendor = vendor.name
    transport.operation = group[0].operation
    transport.delivery_ids = tuple(c.id for c in group)
    transport.payloads = [c.payload for c in group]
    # No Redis: no fleet-wide breaker, pause or parking (the worker does the same without it).
    return send(vendor, group, settings, None)


def _attempt(o: Outcome) -> Attempt:
    assert o.kind is not None
    wait = None
    if o.next_attempt_at is not None and o.kind.value == "retry":
        wait = max(0.0, (o.next_attempt_at - o.started_at).total_seconds())
    return Attempt(
        number=o.claimed.attempt,
        outcome=o.kind.value,
        status_code=o.status_code,
        reason=o.reason,
        error_class=o.error_class,
        retry_in_seconds=wait,
    )


def _pending_by_vendor(engine: Any, ids: Sequence[uuid.UUID]) -> dict[str, list[uuid.UUID]]:
    from sqlalchemy import select

    from eventrelay.models.delivery import DELIVERIES as D
    from eventrelay.models.delivery import DeliveryStatus

    out: dict[str, list[uuid.UUID]] = {}
    if not ids:
        return out
    with engine.connect() as conn:
        rows = conn.execute(
            select(D.c.id, D.c.vendor)
            .where(D.c.id.in_(ids), D.c.status == DeliveryStatus.PENDING)
            .order_by(D.c.created_at, D.c.id)
        ).all()
    for delivery_id, vendor in rows:
        out.setdefault(vendor, []).append(delivery_id)
    return out


def _make_due(engine: Any, ids: Sequence[uuid.UUID], parked: set[str]) -> float | None:
    """Nothing is due: make the pending rows due now (the clock moves on to the latest of
    their waits); returns the seconds skipped, or None if nothing is pending any more."""
    from sqlalchemy import func, select, update

    from eventrelay.models.delivery import DELIVERIES as D
    from eventrelay.models.delivery import DeliveryStatus
    from eventrelay.worker.engine.state import IS_LIVE, db_now

    if not ids:
        return None
    with engine.begin() as conn:
        waiting = (
            D.c.id.in_(ids),
            IS_LIVE,
            D.c.status == DeliveryStatus.PENDING,
            D.c.vendor.not_in(sorted(parked)) if parked else D.c.id.is_not(None),
        )
        latest = conn.execute(select(func.max(D.c.next_attempt_at)).where(*waiting)).scalar()
        if latest is None:
            return None
        now = db_now(conn)
        if not isinstance(now, datetime):  # PostgreSQL's clock, as the claim reads it
            now = conn.execute(select(now)).scalar()
        conn.execute(update(D).where(*waiting).values(next_attempt_at=db_now(conn)))
    return max(0.0, (_aware(latest) - _aware(now)).total_seconds())


def _aware(value: Any) -> datetime:
    from datetime import UTC

    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(when, datetime)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _report(
    box: Jobs,
    ids: Sequence[uuid.UUID],
    trace: dict[uuid.UUID, list[Attempt]],
    sent: list[SentRequest],
    rounds: int,
    skipped: float,
) -> DrainReport:
    wanted = set(ids)
    jobs = [
        JobResult(
            delivery_id=j.delivery_id,
            vendor=j.vendor,
            operation=j.operation,
            payload=j.payload,
            status=j.status,
            reason=j.reason,
            attempts=j.attempts,
            attempt_history=trace.get(j.delivery_id, []),
            requests=[r for r in sent if j.delivery_id in r.delivery_ids],
        )
        for j in box.jobs
        if j.delivery_id in wanted
    ]
    return DrainReport(jobs=jobs, requests=list(sent), rounds=rounds, skipped_seconds=skipped)


# ---- the worker's environment ---------------------------------------------------------------

TEST_BASE_URL = "https://{vendor}.eventrelay.test"
TEST_SECRET = "test-{vendor}-{field}"


def secret_for_tests(vendor: str, field: str) -> str:
    """The kit's value for a secret the test's environment leaves unset. A webhook's secret
    must be `whsec_` + base64 (Standard Webhooks): the same words, encoded so."""
    value = TEST_SECRET.format(vendor=vendor, field=field)
    from eventrelay.worker.vendors.webhook import FAMILY, SECRET_PREFIX

    if field == "secret" and (vendor == FAMILY or vendor.startswith(FAMILY + "_")):
        return SECRET_PREFIX + base64.b64encode(value.encode()).decode()
    return value


@contextmanager
def _worker_settings() -> Iterator[None]:
    """Vendor settings a worker needs and a test does not give (base URLs, keys) get test
    values, and rate limits are off, while the drain runs; the environment is put back after.
    """
    from pydantic import SecretStr

    from eventrelay.worker.vendors import VENDOR_CLASSES, get_vendor

    added: dict[str, str | None] = {}

    def put(name: str, value: str) -> None:
        if name not in added:
            added[name] = os.environ.get(name)
        os.environ[name] = value

    try:
        for name, cls in VENDOR_CLASSES.items():
            prefix = str(cls.settings_class.model_config.get("env_prefix", "")).upper()
            current = cls.settings_class()
            for field_name, info in type(current).model_fields.items():
                value = getattr(current, field_name)
                is_secret = SecretStr in getattr(info.annotation, "__args__", (info.annotation,))
                is_url = field_name in ("base_url", "url")  # a webhook's endpoint is its url
                if value not in (None, "") or not (is_url or is_secret):
                    continue
                put(
                    f"{prefix}{field_name}".upper(),
                    TEST_BASE_URL.format(vendor=name)
                    if is_url
                    else secret_for_tests(name, field_name),
                )
            if "rate_limit" in type(current).model_fields:
                put(f"{prefix}RATE_LIMIT", "0")
        get_vendor.cache_clear()
        yield
    finally:
        for env, old in added.items():
            if old is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = old
        get_vendor.cache_clear()


@contextmanager
def _mounted(transport: ScriptedTransport) -> Iterator[None]:
    """The scripted transport on this thread's worker Session (`vendors.base.http_session`)."""
    from eventrelay.worker.vendors.base import http_session

    session = http_session()
    saved = dict(session.adapters)
    session.mount("https://", transport)
    session.mount("http://", transport)
    try:
        yield
    finally:
        session.adapters.clear()
        session.adapters.update(saved)


__all__ = ["Answer", "Attempt", "DrainReport", "JobResult", "SentRequest", "drain"]
