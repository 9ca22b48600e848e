"""The dispatcher: gives free slots to vendors with due work, claims rows and starts requests.

* Max-min fairness: free slots go to the vendor with demand that holds the fewest; one vendor
  holds at most `<VENDOR>_MAX_IN_FLIGHT` (default 3/4 of `EVENTRELAY_MAX_IN_FLIGHT`), so a
  hanging vendor always leaves room for the others.
* Slow start: a vendor starts with a few requests in flight, doubling them with each answer and
  halving them with each failure, so a cold start against a refused key or an outage sends a
  few requests, not a burst; a healthy vendor reaches its cap within one round trip.
* While a vendor's claims come back full, it keeps claiming as slots free (no new message
  needed) and keeps the vendor's doorbell rung, so producers publish nothing meanwhile. A
  short claim clears the demand, answers the doorbell, then claims once more (a row committed
  before the doorbell was answered is never left without a message).
* It claims nothing while the recorder is behind, so a kill never re-sends more than what is
  in flight and about one recording interval's answers.

A vendor's bookkeeping (slots in flight, demand, the half-open probe) changes only here, in
`_send` and `_claim_for`, each in a `finally`: no exception can leave a slot taken or a
probe flag set.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eventrelay.models.session import get_engine
from eventrelay.worker.config import Settings
from eventrelay.worker.engine.pump.claim import Claim, Ledger, Send
from eventrelay.worker.engine.pump.recorder import RECORD_EVERY_SECONDS, RECORD_MAX_OUTCOMES
from eventrelay.worker.engine.pump.request import (
    CONFIG_ERROR_WAIT_SECONDS,
    SentGroup,
    apply_dependencies,
    best_effort,
    claim_limit,
    gate_for,
    groups_of,
    release,
    send_group,
)
from eventrelay.worker.engine.pump.sendpool import SendPool
from eventrelay.worker.engine.state import Claimed, Outcome, claim, dependency_states
from eventrelay.worker.fleet import breaker, doorbell
from eventrelay.worker.fleet.breaker import Gate
from eventrelay.worker.vendors import get_vendor

log = logging.getLogger("eventrelay.worker")

CLAIM_MIN_ROOM = 8
CLAIM_GATHER_SECONDS = 0.005
# A vendor's open gate is believed this long without asking Redis again (when nothing failed).
GATE_TRUST_SECONDS = 0.2
# The recorder is behind when this many outcomes wait for it, or the oldest has waited this
# long: then nothing more is claimed until it catches up.
RECORDER_BEHIND_OUTCOMES = RECORD_MAX_OUTCOMES
RECORDER_BEHIND_SECONDS = 4 * RECORD_EVERY_SECONDS
# Rows of a vendor whose adapter cannot be made are given back at most this many at a time.
BROKEN_GIVE_BACK_ROWS = 200


@dataclass
class VendorState:
    cap: int  # slots it may hold
    broken: str | None = None  # its adapter could not be made (a bad setting): why
    inflight: int = 0  # requests being sent: slots held
    demand: bool = False  # some due work may be waiting; cleared by a short claim
    offers: int = 0  # counts offers, so a claim can tell whether one came in meanwhile
    probing: bool = False  # half-open: one probe request and nothing else
    blocked_until: float = 0.0  # monotonic; the gate said wait
    dirty: bool = False  # the fleet's failure count may be non-zero: a success resets it
    gate_open_until: float = 0.0  # monotonic; the gate was open and nothing failed since
    rung_until: float = 0.0  # monotonic; the doorbell was refreshed recently
    window: int = 4  # requests it may have in flight now (slow start)
    # Offers waiting to hear what the next claim took: (the offer's number, its event).
    claimed_for: list[tuple[int, threading.Event]] = field(default_factory=list)
    last_claimed: list[str] = field(default_factory=list)

    def room(self) -> int:
        return min(self.cap, self.window) - self.inflight

    def wake_offers(self, ids: list[str], generation: int | None = None) -> None:
        """Tell the waiting offers what a claim took. With `generation` (the offers counted
        when the claim began) only the offers made before it hear: a claim already under way
        when an offer came may not have seen the rows that offer announced, and the next claim
        (the demand stays) tells the others."""
        self.last_claimed = ids
        still: list[tuple[int, threading.Event]] = []
        for number, event in self.claimed_for:
            if generation is None or number <= generation:
                event.set()
            else:
                still.append((number, event))
        self.claimed_for = still


class Dispatcher:
    """The dispatcher role (see the module doc); `loop` is its thread."""

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger,
        pool: SendPool,
        give: Callable[[Sequence[Outcome]], None],
        stopped: threading.Event,
    ) -> None:
        self.settings = settings
        self.max_in_flight = settings.max_in_flight
        self.redis_url = settings.effective_redis_url
        self.cond = threading.Condition()
        self.claiming = True
        # Held for the whole of a claim (query, ledger, hand-off to the send pool), so that
        # stop_claiming() returns only once a claim under way holds its rows.
        self._claim_lock = threading.Lock()
        self._vendors: dict[str, VendorState] = {}
        self._total = 0
        self._ledger = ledger
        self._pool = pool
        self._give = give
        self._stopped = stopped

    # ---- what tasks and the other roles call ----------------------------------------------

    def offer(self, vendor: str, wait_seconds: float) -> list[str]:
        """Say `vendor` may have due work; returns the ids the next claim took (for Flower),
        waiting at most `wait_seconds` for it."""
        claimed = threading.Event()
        with self.cond:
            st = self.state(vendor)
            st.demand = True
            st.offers += 1
            st.blocked_until = 0.0  # news for the vendor: look at its gate again
            if st.room() <= 0 or self._total >= self.max_in_flight:
                wait_seconds = 0.0  # busy: no claim is coming soon, do not hold the message
            else:
                st.claimed_for.append((st.offers, claimed))
            self.cond.notify_all()
        if wait_seconds > 0 and claimed.wait(wait_seconds):
            with self.cond:
                return list(st.last_claimed)
        return []

    def stop_claiming(self) -> None:
        """Claim nothing more; returns once a claim under way (if any) has handed its rows on,
        so that whoever waits for the held rows next sees all of them."""
        with self.cond:
            self.claiming = False
            self.cond.notify_all()
        # A claim already under way commits its rows before the ledger holds them: a drain that
        # counted the ledger then would see none, exit, and leave them sent but unrecorded, to
        # their leases (8 rows in a group-SIGTERM rolling restart, test_shutdown.py).
        with self._claim_lock:
            pass

    def wake(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def stats(self) -> dict[str, object]:
        with self.cond:
            return {
                "in_flight": self._total,
                "vendors": {v: s.inflight for v, s in self._vendors.items() if s.inflight},
            }

    def state(self, vendor: str) -> VendorState:
        st = self._vendors.get(vendor)
        if st is None:
            st = self._vendors[vendor] = self._new_state(vendor)
        return st

    def _new_state(self, vendor: str) -> VendorState:
        try:
            return VendorState(cap=self.vendor_cap(vendor))
        except Exception as exc:  # a bad vendor setting: that vendor waits, the others go on
            why = f"{vendor}: its settings could not be read ({type(exc).__name__}: {exc})"
            log.error("%s; its deliveries wait, the other vendors deliver", why)
            return VendorState(cap=1, broken=why)

    def vendor_cap(self, vendor: str) -> int:
        """Slots one vendor may hold: its own setting, else 3/4 of the process's; for a
        rate-limited vendor at most one second of its fleet-wide rate (more would only wait
        for send slots, holding threads)."""
        settings = get_vendor(vendor).settings
        cap = settings.max_in_flight or max(1, (self.max_in_flight * 3) // 4)
        if settings.rate_limit:
            cap = min(cap, max(1, math.ceil(settings.rate_limit)))
        return max(1, min(self.max_in_flight, cap))

    # ---- the loop -------------------------------------------------------------------------

    def loop(self) -> None:
        while not self._stopped.is_set():
            picked = self._next()
            if picked is None:
                continue
            vendor, room, generation = picked
            try:
                with self._claim_lock:
                    if self.claiming:  # not stopped since it was picked
                        self._claim_for(vendor, room, generation)
            except Exception as exc:  # the database or Redis is away: try again shortly
                log.warning(
                    "%s: could not claim deliveries (%s: %s); retrying",
                    vendor,
                    type(exc).__name__,
                    exc,
                )
                with self.cond:
                    self.state(vendor).blocked_until = time.monotonic() + 1.0

    def _next(self) -> tuple[str, int, int] | None:
        with self.cond:
            picked = self._pick()
            if picked is None:
                self.cond.wait(0.25 if not self.recorder_behind() else RECORD_EVERY_SECONDS / 5)
                return None
            if picked[1] < CLAIM_MIN_ROOM and self.state(picked[0]).inflight:
                # Slots free one by one as answers arrive: gather a few before claiming,
                # so a claim (a database round trip) serves several requests.
                self.cond.wait(CLAIM_GATHER_SECONDS)
                picked = self._pick()
            return picked

    def recorder_behind(self) -> bool:
        waiting, oldest_seconds = self._ledger.backlog()
        return waiting >= RECORDER_BEHIND_OUTCOMES or oldest_seconds >= RECORDER_BEHIND_SECONDS

    def _pick(self) -> tuple[str, int, int] | None:
        """The vendor with demand and room that holds the fewest slots (max-min fairness)."""
        now = time.monotonic()
        free = self.max_in_flight - self._total
        if free <= 0 or not self.claiming or self.recorder_behind():
            return None
        best: tuple[int, str] | None = None
        for name, st in self._vendors.items():
            if not st.demand or st.probing or st.blocked_until > now or st.room() <= 0:
                continue
            if best is None or st.inflight < best[0]:
                best = (st.inflight, name)
        if best is None:
            return None
        name = best[1]
        st = self._vendors[name]
        return name, min(free, st.room()), st.offers

    # ---- claiming -------------------------------------------------------------------------

    def _gate(self, vendor_name: str) -> Gate:
        with self.cond:
            st = self.state(vendor_name)
            if not st.dirty and st.gate_open_until > time.monotonic():
                return Gate(True)
        gate = gate_for(vendor_name, self.redis_url)
        if gate.allowed and not gate.probe and not gate.failures:
            with self.cond:
                self.state(vendor_name).gate_open_until = time.monotonic() + GATE_TRUST_SECONDS
        return gate

    def _claim_for(self, vendor_name: str, room: int, generation: int) -> None:
        with self.cond:
            broken = self.state(vendor_name).broken
        if broken:
            self._give_back_broken(vendor_name, broken)
            return
        gate = self._gate(vendor_name)
        if not gate.allowed:
            with self.cond:
                st = self.state(vendor_name)
                st.blocked_until = time.monotonic() + max(0.2, gate.wait_seconds)
                st.wake_offers([])
            return
        if gate.probe:
            with self.cond:
                self.state(vendor_name).probing = True
        sent_probe = False
        try:
            sent_probe = self._claim_and_start(vendor_name, room, generation, gate)
        finally:
            if gate.probe and not sent_probe:
                self._probe_given_back(vendor_name)

    def _claim_and_start(self, vendor_name: str, room: int, generation: int, gate: Gate) -> bool:
        """Claim for `vendor_name` and start its requests; True if a probe request started."""
        vendor = get_vendor(vendor_name)
        limit = 1 if gate.probe else claim_limit(vendor, room)
        with Claim(vendor_name, self._claim(vendor_name, limit), self._give) as claimed:
            if len(claimed) < limit and not gate.probe:
                claimed.add(self._settle(vendor_name, generation, limit - len(claimed)))
            elif len(claimed):
                self._keep_rung(vendor_name)
            with self.cond:
                st = self.state(vendor_name)
                st.dirty = st.dirty or gate.failures > 0 or gate.probe
                st.wake_offers([str(c.id) for c in claimed.rows], generation)
            if not len(claimed):
                if gate.probe:
                    with self.cond:
                        self.state(vendor_name).demand = False  # nothing due to probe with
                return False
            rows = claimed.rows
            deps = {}
            if any(c.depends_on for c in rows):
                with get_engine().begin() as conn:
                    deps = dependency_states(conn, [c.depends_on for c in rows if c.depends_on])
            waiting: list[Outcome] = []
            ready = apply_dependencies(rows, deps, waiting)
            claimed.settle(waiting)
            groups = groups_of(vendor, ready)
            for group in groups[: max(1, room)]:
                self._start(claimed.take(group, probe=gate.probe))
            if len(claimed):
                # More requests than free slots: the rest is due again at once and claimed as
                # slots free (the demand stays, whatever the claim's length said).
                claimed.settle(release(claimed.rows, 0.0, None))
                with self.cond:
                    self.state(vendor_name).demand = True
            return gate.probe and claimed.sends > 0

    def _keep_rung(self, vendor_name: str) -> None:
        """More is due than this claim took: keep producers from publishing meanwhile
        (refreshed a few times per doorbell lifetime, not on every claim)."""
        with self.cond:
            st = self.state(vendor_name)
            if not self.redis_url or time.monotonic() < st.rung_until:
                return
            st.rung_until = time.monotonic() + doorbell.RING_SECONDS / 4
        best_effort("keep the doorbell rung", doorbell.keep_rung, vendor_name, self.redis_url)

    def _claim(self, vendor: str, limit: int) -> list[Claimed]:
        with get_engine().begin() as conn:
            claimed = claim(conn, vendor, [], self.settings.lease_seconds, top_up=limit)
        self._ledger.hold(claimed)
        return claimed

    def _settle(self, vendor: str, generation: int, limit: int) -> list[Claimed]:
        """Nothing more is due: clear the demand and answer the doorbell, then look once more
        (a row committed before the doorbell was answered got no message of its own)."""
        with self.cond:
            st = self.state(vendor)
            if st.offers != generation:
                return []  # an offer came in meanwhile: keep the demand, claim again
            st.demand = False
            st.rung_until = 0.0
        if self.redis_url:
            best_effort("answer the doorbell", doorbell.answer, vendor, self.redis_url)
        late = self._claim(vendor, limit)
        if late:
            with self.cond:
                self.state(vendor).demand = True
        return late

    def _probe_given_back(self, vendor_name: str) -> None:
        """The probe claimed nothing it could send (it waits for its dependency, that one is
        dead, the lookup failed): the next row probes, here or in another process."""
        if self.redis_url:
            best_effort("give the probe back", breaker.give_back_probe, vendor_name, self.redis_url)
        with self.cond:
            self.state(vendor_name).probing = False
            self.cond.notify_all()

    def _give_back_broken(self, vendor_name: str, why: str) -> None:
        """The vendor's adapter cannot be made: its due rows wait, with the reason to read."""
        with Claim(vendor_name, self._claim(vendor_name, BROKEN_GIVE_BACK_ROWS), self._give) as c:
            c.settle(release(c.rows, CONFIG_ERROR_WAIT_SECONDS, why))
        with self.cond:
            st = self.state(vendor_name)
            st.blocked_until = time.monotonic() + CONFIG_ERROR_WAIT_SECONDS
            st.wake_offers([])

    # ---- sending --------------------------------------------------------------------------

    def _start(self, send: Send) -> None:
        """Hand `send` to the send pool; from here on `_ended` ends its rows, whatever happens."""
        with self.cond:
            st = self.state(send.vendor)
            st.inflight += 1
            self._total += 1
        try:
            self._pool.submit(self._send, send)
        except Exception:  # the pool is shut down (a drain): the request ends unsent
            log.warning(
                "%s: %d row(s) given back unsent: the pump is stopping", send.vendor, len(send.rows)
            )
            self._ended(send, None, set())

    def _send(self, send: Send) -> None:
        sent: SentGroup | None = None
        handed: set[uuid.UUID] = set()  # rows with an outcome, or in a request of their own
        try:
            vendor = get_vendor(send.vendor)
            # Read without the lock every sender shares: a flag another request sets just now
            # is seen by the next request, and a success reported once more changes nothing.
            dirty = self._vendors[send.vendor].dirty
            sent = send_group(vendor, send.rows, self.settings, self.redis_url, health_dirty=dirty)
            self._give(sent.outcomes)
            handed.update(o.claimed.id for o in sent.outcomes)
            for part in sent.resend:
                self._start(Send(send.vendor, part, probe=False))
                handed.update(c.id for c in part)
        except Exception:  # never lose a claimed delivery: it is given back, unspent
            log.exception("%s: sending failed unexpectedly; giving its rows back", send.vendor)
        finally:
            self._ended(send, sent, handed)

    def _ended(self, send: Send, sent: SentGroup | None, handed: set[uuid.UUID]) -> None:
        """A request is over, whichever way: its rows not handed on are given back and its
        vendor's slot (and probe) is freed. The only place a slot is freed."""
        try:
            self._give(release([c for c in send.rows if c.id not in handed], 1.0, None))
        finally:
            with self.cond:
                st = self.state(send.vendor)
                # The dispatcher waits for a slot only when none was free (for the vendor or
                # the process): a slot freed beside others is seen at its next look, within
                # CLAIM_GATHER_SECONDS, without a thread switch for every answer.
                was_full = st.room() <= 0 or self._total >= self.max_in_flight
                st.inflight -= 1
                self._total -= 1
                if sent is not None:
                    st.dirty = sent.health_dirty
                    if sent.succeeded:
                        st.window = min(st.cap, st.window * 2)
                    elif sent.failed:
                        st.window = max(1, st.window // 2)
                    if st.dirty:
                        st.gate_open_until = 0.0
                    if sent.pause_seconds:
                        st.blocked_until = time.monotonic() + sent.pause_seconds
                if send.probe:
                    st.probing = False
                if was_full or not st.inflight or send.probe or sent is None or not sent.succeeded:
                    self.cond.notify_all()
            if send.probe and (sent is None or not sent.reached_vendor) and self.redis_url:
                best_effort(
                    "give the probe back", breaker.give_back_probe, send.vendor, self.redis_url
                )
