"""The heartbeat: renews the lease of every row the process holds, on the database's clock,
so a live worker's slow request is never taken from it and a killed worker's rows come back
within EVENTRELAY_LEASE_SECONDS (README, "Guarantees")."""

from __future__ import annotations

import logging
import threading
import time

from sqlalchemy.exc import DBAPIError

from eventrelay.models.session import get_engine
from eventrelay.worker.config import Settings
from eventrelay.worker.engine.pump.claim import Ledger
from eventrelay.worker.engine.pump.recorder import RECORD_RETRY_SECONDS
from eventrelay.worker.engine.pump.request import LIMITER_MAX_WAIT_SECONDS
from eventrelay.worker.engine.state import renew_leases

log = logging.getLogger("eventrelay.worker")

HEARTBEAT_MIN_SECONDS = 0.2


class Heartbeat:
    def __init__(self, settings: Settings, ledger: Ledger, stopped: threading.Event) -> None:
        self._lease_seconds = settings.lease_seconds
        self._ledger = ledger
        self._stopped = stopped
        # Longer than any request and its recording can take: a row held longer is stuck (a
        # hung thread, a recorder that cannot write) and is let go to the rest of the fleet.
        self.max_hold_seconds = (
            settings.connect_timeout_seconds
            + settings.read_timeout_seconds
            + LIMITER_MAX_WAIT_SECONDS
            + RECORD_RETRY_SECONDS
            + 30.0
        )

    def loop(self) -> None:
        every = max(HEARTBEAT_MIN_SECONDS, self._lease_seconds / 3)
        while not self._stopped.wait(every):
            self.beat()

    def beat(self) -> None:
        held = self._ledger.renewable(time.monotonic() - self.max_hold_seconds)
        if not held:
            return
        for attempt in range(3):
            try:
                with get_engine().begin() as conn:
                    renew_leases(conn, held, self._lease_seconds)
                return
            except DBAPIError as exc:
                # A row that moved into history between the statement's snapshot and its
                # lock (40001): what is left is renewed at once, not a third of a lease on.
                if _is_serialization_failure(exc) and attempt < 2:
                    continue
                log.warning("could not renew leases (%s); retrying", type(exc).__name__)
                return
            except Exception as exc:
                log.warning("could not renew leases (%s); retrying", type(exc).__name__)
                return


def _is_serialization_failure(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) == "40001"
