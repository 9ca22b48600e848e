"""Many requests in flight per worker process: the delivery pump.

Real vendors answer in 50-300 ms, so throughput is requests in flight / latency (Little's law),
not CPU per request. Each prefork child runs one pump, started by its first task:

    deliver task ──offer(vendor)──▶ dispatcher ──claim (DB)──▶ send pool (threads, a Session each)
                                        ▲                              │ answers
                                        └──── slot freed ◀─────────────┤
                                                                       ▼
                 heartbeat (renews leases of what is held)         recorder (commits every
                                                                   ~50 ms or N answers)

* The task only says "this vendor has due work" and returns, so the child's main thread takes
  the next message at once, whatever vendor it is for: a slow vendor never idles a process.
* The dispatcher gives free slots to the vendor with demand that holds the fewest: one vendor
  may hold at most `<VENDOR>_MAX_IN_FLIGHT` (default 3/4 of `EVENTRELAY_MAX_IN_FLIGHT`), so a
  hanging vendor always leaves room for the others.
* While a vendor's claims come back full, the dispatcher keeps claiming as slots free (no new
  message needed) and keeps the vendor's doorbell rung, so producers publish nothing meanwhile.
  A short claim clears the demand, answers the doorbell, then claims once more (a row committed
  before the doorbell was answered is never left without a message).
* Outcomes are committed in micro-batches as answers arrive: a killed worker re-sends at most
  what was in flight and what was answered in the last interval.
* The heartbeat renews the lease of every delivery this process holds (from the database's
  clock), so a live worker's slow request is never taken from it, and a killed worker's
  deliveries come back within `EVENTRELAY_LEASE_SECONDS` (README, "Guarantees").

Celery's soft and hard time limits still bound each task (claim and hand-off); each request is
bounded by the HTTP connect and read timeouts.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError

from eventrelay.models.session import get_engine
from eventrelay.worker.config import Settings, get_settings
from eventrelay.worker.engine.batch import (
    LIMITER_MAX_WAIT_SECONDS,
    RECORD_RETRY_SECONDS,
    apply_dependencies,
    claim_limit,
    gate_for,
    groups_of,
    log_recorded,
    record_with_retry,
    release,
    send_group,
)
from eventrelay.worker.engine.state import Claimed, Outcome, claim, dependency_states, renew_leases
from eventrelay.worker.fleet import doorbell
from eventrelay.worker.fleet.breaker import Gate
from eventrelay.worker.vendors import get_vendor

log = logging.getLogger("eventrelay.worker")

RECORD_EVERY_SECONDS = 0.05
RECORD_MAX_OUTCOMES = 100
DRAIN_SECONDS = 30.0
# How long a task waits to report what its offer made the dispatcher claim (for Flower);
# past this the vendor is busy and the task returns without waiting further.
OFFER_REPORT_SECONDS = 0.5
CLAIM_MIN_ROOM = 8
CLAIM_GATHER_SECONDS = 0.005
# A vendor's open gate is believed this long without asking Redis again (when nothing failed).
GATE_TRUST_SECONDS = 0.2


@dataclass
class _VendorState:
    inflight: int = 0  # requests being sent: slots held
    demand: bool = False  # some due work may be waiting; cleared by a short claim
    offers: int = 0  # counts offers, so a claim can tell whether one came in meanwhile
    probing: bool = False  # half-open: one probe request and nothing else
    blocked_until: float = 0.0  # monotonic; the gate said wait
    dirty: bool = False  # the fleet's failure count may be non-zero: a success resets it
    gate_open_until: float = 0.0  # monotonic; the gate was open and nothing failed since
    rung_until: float = 0.0  # monotonic; the doorbell was refreshed recently
    window: int = 4  # requests it may have in flight now (slow start, see Pump._room)
    claimed_for: list[threading.Event] = field(default_factory=list)
    last_claimed: list[str] = field(default_factory=list)


class Pump:
    """The process's dispatcher, send pool, recorder and heartbeat (see the module doc)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.max_in_flight = settings.max_in_flight
        self.redis_url = settings.effective_redis_url
        self._cond = threading.Condition()
        self._vendors: dict[str, _VendorState] = {}
        self._total = 0
        self._held: dict[uuid.UUID, Claimed] = {}
        self._held_since: dict[uuid.UUID, float] = {}
        self._held_lock = threading.Lock()
        self._outcomes: queue.Queue[list[Outcome]] = queue.Queue()
        self._max_hold_seconds = (
            settings.connect_timeout_seconds
            + settings.read_timeout_seconds
            + LIMITER_MAX_WAIT_SECONDS
            + RECORD_RETRY_SECONDS
            + 30.0
        )
        self._claiming = True
        self._stopped = threading.Event()
        self._pool = SendPool(self.max_in_flight, "eventrelay-send")
        self._threads = [
            threading.Thread(target=self._dispatch_loop, name="eventrelay-dispatch", daemon=True),
            threading.Thread(target=self._record_loop, name="eventrelay-record", daemon=True),
            threading.Thread(target=self._heartbeat_loop, name="eventrelay-heartbeat", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # ---- what tasks call ------------------------------------------------------------------

    def offer(self, vendor: str, wait_seconds: float = OFFER_REPORT_SECONDS) -> list[str]:
        """Say `vendor` may have due work; returns the ids the next claim took (for Flower),
        waiting at most `wait_seconds` for it."""
        claimed = threading.Event()
        with self._cond:
            st = self._state(vendor)
            st.demand = True
            st.offers += 1
            st.blocked_until = 0.0  # news for the vendor: look at its gate again
            if self._room(vendor, st) <= 0 or self._total >= self.max_in_flight:
                wait_seconds = 0.0  # busy: no claim is coming soon, do not hold the message
            else:
                st.claimed_for.append(claimed)
            self._cond.notify_all()
        if wait_seconds > 0 and claimed.wait(wait_seconds):
            with self._cond:
                return list(st.last_claimed)
        return []

    def drain(self, timeout: float = DRAIN_SECONDS) -> bool:
        """Stop claiming, let what is in flight finish and be recorded (SIGTERM). True if
        everything held was recorded within `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            self._claiming = False
            self._cond.notify_all()
        while time.monotonic() < deadline:
            with self._held_lock:
                if not self._held:
                    break
            time.sleep(0.02)
        self._stopped.set()
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()) + 1.0)
        self._pool.shutdown()
        with self._held_lock:
            return not self._held

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "in_flight": self._total,
                "vendors": {v: s.inflight for v, s in self._vendors.items() if s.inflight},
            }

    # ---- dispatcher -----------------------------------------------------------------------

    def _state(self, vendor: str) -> _VendorState:
        st = self._vendors.get(vendor)
        if st is None:
            st = self._vendors[vendor] = _VendorState()
        return st

    def vendor_cap(self, vendor: str) -> int:
        """Slots one vendor may hold: its own setting, else 3/4 of the process's; for a
        rate-limited vendor at most one second of its fleet-wide rate (more would only wait
        for send slots, holding threads)."""
        settings = get_vendor(vendor).settings
        cap = settings.max_in_flight or max(1, (self.max_in_flight * 3) // 4)
        if settings.rate_limit:
            cap = min(cap, max(1, math.ceil(settings.rate_limit)))
        return max(1, min(self.max_in_flight, cap))

    def _room(self, vendor: str, st: _VendorState) -> int:
        """Free slots for the vendor: its cap, narrowed by its window (slow start: a vendor
        starts with a few requests in flight, doubling them with each answer and halving them
        with each failure, so a cold start against a refused key or an outage sends a few
        requests, not a burst; a healthy vendor reaches its cap within one round trip)."""
        return min(self.vendor_cap(vendor), st.window) - st.inflight

    def _pick(self) -> tuple[str, int, int] | None:
        """The vendor with demand and room that holds the fewest slots (max-min fairness)."""
        now = time.monotonic()
        free = self.max_in_flight - self._total
        if free <= 0 or not self._claiming:
            return None
        if len(self._held) >= self.max_in_flight + RECORD_MAX_OUTCOMES:
            # The recorder is behind: claim nothing more until it catches up, so a kill never
            # re-sends more than what is in flight and one recording interval's answers.
            return None
        best: tuple[int, str] | None = None
        for name, st in self._vendors.items():
            if not st.demand or st.probing or st.blocked_until > now:
                continue
            if self._room(name, st) <= 0:
                continue
            if best is None or st.inflight < best[0]:
                best = (st.inflight, name)
        if best is None:
            return None
        name = best[1]
        st = self._vendors[name]
        return name, min(free, self._room(name, st)), st.offers

    def _dispatch_loop(self) -> None:
        while not self._stopped.is_set():
            with self._cond:
                picked = self._pick()
                if picked is None:
                    self._cond.wait(0.25)
                    continue
                if picked[1] < CLAIM_MIN_ROOM and self._state(picked[0]).inflight:
                    # Slots free one by one as answers arrive: gather a few before claiming,
                    # so a claim (a database round trip) serves several requests.
                    self._cond.wait(CLAIM_GATHER_SECONDS)
                    picked = self._pick()
                    if picked is None:
                        continue
            vendor, room, generation = picked
            try:
                self._claim_and_send(vendor, room, generation)
            except Exception as exc:  # the database or Redis is away: try again shortly
                log.warning(
                    "%s: could not claim deliveries (%s: %s); retrying",
                    vendor,
                    type(exc).__name__,
                    exc,
                )
                with self._cond:
                    self._state(vendor).blocked_until = time.monotonic() + 1.0

    def _gate(self, vendor_name: str) -> Gate:
        with self._cond:
            st = self._state(vendor_name)
            if not st.dirty and st.gate_open_until > time.monotonic():
                return Gate(True)
        gate = gate_for(vendor_name, self.redis_url)
        if gate.allowed and not gate.probe and not gate.failures:
            with self._cond:
                self._state(vendor_name).gate_open_until = time.monotonic() + GATE_TRUST_SECONDS
        return gate

    def _claim_and_send(self, vendor_name: str, room: int, generation: int) -> None:
        vendor = get_vendor(vendor_name)
        gate = self._gate(vendor_name)
        if not gate.allowed:
            with self._cond:
                st = self._state(vendor_name)
                st.blocked_until = time.monotonic() + max(0.2, gate.wait_seconds)
                self._wake_offers(st, [])
            return
        limit = 1 if gate.probe else claim_limit(vendor, room)
        claimed = self._claim(vendor_name, limit)
        short = len(claimed) < limit
        if short and not gate.probe:
            claimed += self._settle(vendor_name, generation, limit - len(claimed))
        elif claimed and self.redis_url and time.monotonic() >= self._state(vendor_name).rung_until:
            # More is due than this claim took: keep producers from publishing meanwhile
            # (refreshed a few times per doorbell lifetime, not on every claim).
            _best_effort(doorbell.keep_rung, vendor_name, self.redis_url)
            self._state(vendor_name).rung_until = time.monotonic() + doorbell.RING_SECONDS / 4
        with self._cond:
            st = self._state(vendor_name)
            st.probing = gate.probe and bool(claimed)
            st.dirty = st.dirty or gate.failures > 0 or gate.probe
            self._wake_offers(st, [str(c.id) for c in claimed])
        if not claimed:
            return
        try:
            deps = {}
            if any(c.depends_on for c in claimed):
                with get_engine().begin() as conn:
                    deps = dependency_states(conn, [c.depends_on for c in claimed if c.depends_on])
        except Exception:
            # Never strand a claim: rows held here are heartbeated, so nobody else would take
            # them. Give them back unspent; the recorder retries while the database is away.
            self._submit_outcomes(release(claimed, 1.0, None))
            raise
        waiting: list[Outcome] = []
        ready = apply_dependencies(claimed, deps, waiting)
        if waiting:
            self._submit_outcomes(waiting)
        for group in groups_of(vendor, ready):
            self._start(vendor_name, group)

    def _claim(self, vendor: str, limit: int) -> list[Claimed]:
        with get_engine().begin() as conn:
            claimed = claim(conn, vendor, [], self.settings.lease_seconds, top_up=limit)
        now = time.monotonic()
        with self._held_lock:
            for c in claimed:
                self._held[c.id] = c
                self._held_since[c.id] = now
        return claimed

    def _settle(self, vendor: str, generation: int, limit: int) -> list[Claimed]:
        """Nothing more is due: clear the demand and answer the doorbell, then look once more
        (a row committed before the doorbell was answered got no message of its own)."""
        with self._cond:
            st = self._state(vendor)
            if st.offers != generation:
                return []  # an offer came in meanwhile: keep the demand, claim again
            st.demand = False
            st.rung_until = 0.0
        if self.redis_url:
            _best_effort(doorbell.answer, vendor, self.redis_url)
        late = self._claim(vendor, limit)
        if late:
            with self._cond:
                self._state(vendor).demand = True
        return late

    @staticmethod
    def _wake_offers(st: _VendorState, ids: list[str]) -> None:
        st.last_claimed = ids
        for event in st.claimed_for:
            event.set()
        st.claimed_for.clear()

    # ---- senders --------------------------------------------------------------------------

    def _start(self, vendor: str, group: list[Claimed]) -> None:
        with self._cond:
            st = self._state(vendor)
            st.inflight += 1
            self._total += 1
        self._pool.submit(self._send, vendor, group)

    def _send(self, vendor_name: str, group: list[Claimed]) -> None:
        vendor = get_vendor(vendor_name)
        try:
            with self._cond:
                dirty = self._state(vendor_name).dirty
            sent = send_group(vendor, group, self.settings, self.redis_url, health_dirty=dirty)
            with self._cond:
                st = self._state(vendor_name)
                st.dirty = sent.health_dirty
                if sent.succeeded:
                    st.window = min(self.vendor_cap(vendor_name), st.window * 2)
                elif sent.failed:
                    st.window = max(1, st.window // 2)
                if st.dirty:
                    st.gate_open_until = 0.0
                if sent.pause_seconds:
                    st.blocked_until = time.monotonic() + sent.pause_seconds
            for part in sent.resend:
                self._start(vendor_name, part)
            self._submit_outcomes(sent.outcomes)
        except Exception:  # never lose a claimed delivery: it is released, unspent
            log.exception("%s: sending failed unexpectedly; releasing its deliveries", vendor_name)
            self._submit_outcomes(release(group, 1.0, None))
        finally:
            with self._cond:
                st = self._state(vendor_name)
                st.inflight -= 1
                st.probing = False
                self._total -= 1
                self._cond.notify_all()

    # ---- recorder -------------------------------------------------------------------------

    def _submit_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        if outcomes:
            self._outcomes.put(list(outcomes))

    def _record_loop(self) -> None:
        while True:
            try:
                first = self._outcomes.get(timeout=0.2)
            except queue.Empty:
                if self._stopped.is_set():
                    return
                continue
            batch = list(first)
            deadline = time.monotonic() + RECORD_EVERY_SECONDS
            while len(batch) < RECORD_MAX_OUTCOMES:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    batch.extend(self._outcomes.get(timeout=remaining))
                except queue.Empty:
                    break
            self._record(batch)

    def _record(self, batch: list[Outcome]) -> None:
        try:
            result = record_with_retry(get_engine(), batch)
        except Exception as exc:
            # Past the retry window (or a bug): the recorder must live on. These are let go,
            # so their leases expire and the scheduler takes them back (README, "Guarantees").
            log.error("could not record %d outcome(s): %s: %s", len(batch), type(exc).__name__, exc)
            result = None
        with self._held_lock:
            for o in batch:
                self._held.pop(o.claimed.id, None)
                self._held_since.pop(o.claimed.id, None)
        with self._cond:
            self._cond.notify_all()  # the dispatcher may have waited for the recorder
        if result is None:
            return
        log_recorded(result)
        for vendor in {v for _, v, _ in result.woken}:
            self.offer(vendor, wait_seconds=0)

    # ---- heartbeat ------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        every = max(0.2, self.settings.lease_seconds / 3)
        while not self._stopped.wait(every):
            oldest = time.monotonic() - self._max_hold_seconds
            with self._held_lock:
                # Renew only what can still be in progress: a delivery held longer than any
                # request and its recording can take is let go, so a stuck thread or recorder
                # never keeps a delivery from the rest of the fleet.
                held = [
                    (c.id, c.attempt)
                    for c in self._held.values()
                    if self._held_since.get(c.id, 0.0) >= oldest
                ]
            if not held:
                continue
            for attempt in range(3):
                try:
                    with get_engine().begin() as conn:
                        renew_leases(conn, held, self.settings.lease_seconds)
                    break
                except DBAPIError as exc:
                    # A row that moved into history between the statement's snapshot and its
                    # lock (40001): what is left is renewed at once, not a third of a lease on.
                    if _is_serialization_failure(exc) and attempt < 2:
                        continue
                    log.warning("could not renew leases (%s); retrying", type(exc).__name__)
                    break
                except Exception as exc:
                    log.warning("could not renew leases (%s); retrying", type(exc).__name__)
                    break


def _is_serialization_failure(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "40001"


class SendPool:
    """Threads that run the requests: one more is started whenever work comes and none is
    idle, up to `max_threads`; they live as long as the process (each keeps its Session).

    Not `concurrent.futures.ThreadPoolExecutor`: it counts a thread as idle each time it
    finishes an item, even when it goes straight on to the next queued one, so once work has
    queued it stops adding threads. Measured in the pump at 0 ms: 46 threads for 90 requests
    in flight, each request waiting 54 ms in the queue before being sent.
    """

    def __init__(self, max_threads: int, name: str) -> None:
        self.max_threads = max_threads
        self._name = name
        self._work: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._idle = 0  # threads waiting for work that no submitted item is promised to
        self._threads: list[threading.Thread] = []
        self._closed = False

    @property
    def threads(self) -> int:
        with self._lock:
            return len(self._threads)

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("send pool is shut down")
            if self._idle > 0:
                self._idle -= 1  # one idle thread takes it
            elif len(self._threads) < self.max_threads:
                thread = threading.Thread(
                    target=self._run, name=f"{self._name}_{len(self._threads)}", daemon=True
                )
                self._threads.append(thread)
                thread.start()
            # else: every thread is busy; the item waits for the first one to finish
            self._work.put((fn, args))

    def shutdown(self) -> None:
        """Stop every thread once it is idle; work still queued is dropped (the pump has
        waited for what it holds, and what it drops comes back when its lease expires)."""
        with self._lock:
            self._closed = True
            count = len(self._threads)
        for _ in range(count):
            self._work.put(None)

    def _run(self) -> None:
        while True:
            item = self._work.get()
            if item is None or self._closed:
                return
            fn, args = item
            try:
                fn(*args)
            except Exception:  # the pump's own work catches everything; this is a backstop
                log.exception("a send thread's work raised")
            with self._lock:
                self._idle += 1


def _best_effort(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.warning("fleet bookkeeping failed (%s: %s)", type(exc).__name__, exc)


_pump: tuple[int, Pump] | None = None
_pump_lock = threading.Lock()


def get_pump() -> Pump:
    """This process's pump, started on first use (a forked child starts its own)."""
    global _pump
    pid = os.getpid()
    with _pump_lock:
        if _pump is None or _pump[0] != pid:
            _pump = (pid, Pump(get_settings()))
        return _pump[1]


def drain_pump(timeout: float = DRAIN_SECONDS) -> bool:
    """Finish what this process has in flight (called when a worker process shuts down)."""
    with _pump_lock:
        current = _pump
    if current is None or current[0] != os.getpid():
        return True
    return current[1].drain(timeout)
