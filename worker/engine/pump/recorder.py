"""The recorder: commits outcomes in micro-batches as answers arrive.

A batch is committed every RECORD_EVERY_SECONDS or RECORD_MAX_OUTCOMES answers, whichever
comes first, so a killed worker re-sends at most what was in flight and one interval's answers.

What the vendors answered must be kept: a lost write means sending again. So a batch whose
commit fails for a passing reason (connection lost, serialization failure, a partition just
made) is retried for RECORD_RETRY_SECONDS; one that fails for any other reason (a value the
database refuses, such as a NUL in a vendor's text) is split in halves until only the bad
outcome fails, and that one is stored without the vendor's text, with a reason saying so.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, PendingRollbackError
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from eventrelay.models.session import get_engine
from eventrelay.worker.config import get_settings
from eventrelay.worker.engine import retention
from eventrelay.worker.engine.pump.claim import Ledger
from eventrelay.worker.engine.state import Outcome, Recorded, record
from eventrelay.worker.logs import batched_writes, log_attempt
from eventrelay.worker.vendors import get_vendor

log = logging.getLogger("eventrelay.worker")

RECORD_EVERY_SECONDS = 0.05
RECORD_MAX_OUTCOMES = 100
RECORD_RETRY_SECONDS = 60.0
LAGS_KEPT = 1000
# SQLSTATEs that say "try again": serialization failure, deadlock detected.
_TRANSIENT_SQLSTATES = {"40001", "40P01"}


def is_transient(exc: BaseException) -> bool:
    """Whether the same write may succeed if tried again (the database was away or busy)."""
    if isinstance(exc, (OperationalError, InterfaceError, PendingRollbackError)):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or retention.is_missing_partition(exc):
            return True
        return getattr(exc.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES
    return False


@retry(
    retry=retry_if_exception(is_transient),
    wait=wait_exponential(multiplier=0.5, max=5),
    stop=stop_after_delay(RECORD_RETRY_SECONDS),
    reraise=True,
)
def record_with_retry(engine: Engine, outcomes: list[Outcome]) -> Recorded:
    """Record outcomes of any vendors in one transaction, retrying a lost database.

    A database restart costs a few seconds of retrying here; past that the lease expiry
    takes over.
    """
    retention.ensure_history_partition(engine, get_settings())
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


def record_all(engine: Engine, outcomes: list[Outcome]) -> tuple[list[Recorded], list[Outcome]]:
    """Record `outcomes`, isolating any that can never be stored; returns what was recorded
    and what was let go (to their leases). Raises only for a database that stays away."""
    try:
        return [record_with_retry(engine, outcomes)], []
    except Exception as exc:
        if is_transient(exc):
            raise
        if len(outcomes) > 1:
            half = len(outcomes) // 2
            first, lost_first = record_all(engine, outcomes[:half])
            second, lost_second = record_all(engine, outcomes[half:])
            return first + second, lost_first + lost_second
        return _record_without_vendor_text(engine, outcomes[0], exc)


def _record_without_vendor_text(
    engine: Engine, o: Outcome, exc: Exception
) -> tuple[list[Recorded], list[Outcome]]:
    plain = without_vendor_text(o, exc)
    log.error(
        "delivery %s (%s %s): its outcome could not be stored (%s); storing it without the "
        "vendor's text",
        o.claimed.id,
        o.claimed.vendor,
        o.claimed.operation,
        _describe(exc),
    )
    try:
        return [record_with_retry(engine, [plain])], []
    except Exception:
        log.exception("delivery %s: its outcome could not be stored at all", o.claimed.id)
        return [], [o]


def without_vendor_text(o: Outcome, exc: BaseException) -> Outcome:
    """`o` with nothing the vendor said (reason, excerpt, answer), and a reason saying why."""
    why = f"the vendor's answer could not be stored: {_describe(exc)}"
    if o.status_code is not None:
        why += f" (HTTP {o.status_code})"
    return dataclasses.replace(
        o,
        reason=why,
        excerpt=None,
        response_json=None,
        error_class=_printable(o.error_class) if o.error_class else None,
    )


def _describe(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return _printable(f"{type(exc).__name__}: {first_line}")[:200]


def _printable(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii").replace("\\x00", "\\0")


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
    with batched_writes():  # a batch's lines in one write
        for o in result.applied:
            if o.kind is not None:
                log_attempt(o)
        for o in result.zombies:
            log.warning(
                "delivery %s: lease was taken over by another worker; attempt %d result discarded",
                o.claimed.id,
                o.claimed.attempt,
            )


class Inbox:
    """Outcomes waiting for the recorder, gathered into batches.

    The recorder is woken when the first outcome of a batch arrives and when a batch is full,
    not for every outcome in between (a queue's `get` would wake it once per answer: a thread
    switch per delivery, paid in CPU by the whole process).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._items: list[Outcome] = []
        self._since = 0.0  # when the oldest waiting outcome arrived (monotonic)

    def put(self, outcomes: Sequence[Outcome]) -> None:
        with self._cond:
            before = len(self._items)
            if not before:
                self._since = time.monotonic()
            self._items.extend(outcomes)
            if not before or before < RECORD_MAX_OUTCOMES <= len(self._items):
                self._cond.notify()

    def gather(self, idle_seconds: float) -> list[Outcome]:
        """The next batch: what arrived within RECORD_EVERY_SECONDS of its oldest outcome, up
        to RECORD_MAX_OUTCOMES; [] if nothing came within `idle_seconds`."""
        with self._cond:
            if not self._items:
                self._cond.wait(idle_seconds)
                if not self._items:
                    return []
            deadline = self._since + RECORD_EVERY_SECONDS
            while len(self._items) < RECORD_MAX_OUTCOMES:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = self._items[:RECORD_MAX_OUTCOMES]
            del self._items[:RECORD_MAX_OUTCOMES]
            self._since = time.monotonic()  # what is left waits one more interval at most
            return batch


class Recorder:
    """The recorder role: one loop, one inbox of outcomes."""

    def __init__(
        self,
        ledger: Ledger,
        stopped: threading.Event,
        recorded: Callable[[set[str]], None],
    ) -> None:
        self._ledger = ledger
        self._stopped = stopped
        self._recorded = recorded  # told after each batch, with the vendors it woke work of
        self._inbox = Inbox()
        # How long the oldest outcome of each recent batch waited for its commit (seconds).
        self.lags: collections.deque[float] = collections.deque(maxlen=LAGS_KEPT)

    def submit(self, outcomes: Sequence[Outcome]) -> None:
        if outcomes:
            self._ledger.decided(outcomes)
            self._inbox.put(outcomes)

    def loop(self) -> None:
        while True:
            batch = self._inbox.gather(idle_seconds=0.2)
            if batch:
                self._record(batch)
            elif self._stopped.is_set():
                return

    def lag_ms(self) -> dict[str, float]:
        """The recent batches' lag, for `stats()` (Flower shows it with each deliver task)."""
        lags = sorted(self.lags)
        if not lags:
            return {}
        return {
            "p50": round(lags[len(lags) // 2] * 1000, 1),
            "p99": round(lags[int(len(lags) * 0.99)] * 1000, 1),
            "max": round(lags[-1] * 1000, 1),
        }

    def _record(self, batch: list[Outcome]) -> None:
        results: list[Recorded] = []
        try:
            results, lost = record_all(get_engine(), batch)
        except Exception as exc:
            # The database stayed away past the retry window: these are let go, so their
            # leases expire and the scheduler takes them back (README, "Guarantees").
            lost = batch
            log.error("could not record %d outcome(s): %s: %s", len(batch), type(exc).__name__, exc)
        finally:
            self.lags.append(self._ledger.backlog()[1])
            self._ledger.end(batch)
        if lost and results:
            log.error("let %d outcome(s) go to their leases", len(lost))
        woken: set[str] = set()
        for result in results:
            log_recorded(result)
            woken.update(v for _, v, _ in result.woken)
        self._recorded(woken)
