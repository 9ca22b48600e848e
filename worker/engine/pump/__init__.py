"""Many requests in flight per worker process: the delivery pump.

Real vendors answer in 50-300 ms, so throughput is requests in flight / latency (Little's law),
not CPU per request. Each prefork child runs one pump, started by its first task:

    deliver task ──offer(vendor)──▶ dispatcher ──claim (DB)──▶ send pool (threads, a Session each)
                                        ▲                              │ answers
                                        └──── slot freed ◀─────────────┤
                                                                       ▼
                 heartbeat (renews leases of what is held)         recorder (commits every
                                                                   ~50 ms or N answers)

One role per module, each a loop in a thread of its own, kept alive by the supervisor:

* `dispatcher.py` gives free slots to vendors with due work, claims rows, starts requests;
* `sendpool.py` runs the requests (`request.py`: one request's work);
* `recorder.py` commits outcomes in micro-batches, isolating one that cannot be stored;
* `heartbeat.py` renews the leases of every row held (`claim.py`: the ledger of held rows);
* `supervisor.py` restarts a role that died, or ends the process so Celery replaces it.

The task only says "this vendor has due work" and returns, so the child's main thread takes
the next message at once, whatever vendor it is for: a slow vendor never idles a process.
Celery's soft and hard time limits still bound each task (claim and hand-off); each request is
bounded by the HTTP timeouts.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from eventrelay.worker.config import Settings, get_settings
from eventrelay.worker.engine.pump.claim import Key, Ledger
from eventrelay.worker.engine.pump.dispatcher import Dispatcher
from eventrelay.worker.engine.pump.heartbeat import Heartbeat
from eventrelay.worker.engine.pump.recorder import Recorder
from eventrelay.worker.engine.pump.sendpool import SendPool
from eventrelay.worker.engine.pump.supervisor import Supervisor

log = logging.getLogger("eventrelay.worker")

DRAIN_SECONDS = 30.0
# How long a task waits to report what its offer made the dispatcher claim (for Flower);
# past this the vendor is busy and the task returns without waiting further.
OFFER_REPORT_SECONDS = 0.5


@dataclass(frozen=True)
class Drained:
    """What a drain did: rows recorded while it waited, rows still held when it gave up
    (their leases expire and the scheduler takes them back). True if nothing was left."""

    drained: int
    left: int

    def __bool__(self) -> bool:
        return self.left == 0


class Pump:
    """The process's dispatcher, send pool, recorder and heartbeat (see the module doc)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stopped = threading.Event()
        self._drained: Drained | None = None
        self.ledger = Ledger()
        self.pool = SendPool(settings.max_in_flight, "eventrelay-send")
        self.recorder = Recorder(self.ledger, self._stopped, self._recorded)
        self.dispatcher = Dispatcher(
            settings, self.ledger, self.pool, self.recorder.submit, self._stopped
        )
        self.heartbeat = Heartbeat(settings, self.ledger, self._stopped)
        self.supervisor = Supervisor(self._stopped, self.pool)
        self.supervisor.start("dispatch", self.dispatcher.loop)
        self.supervisor.start("record", self.recorder.loop)
        self.supervisor.start("heartbeat", self.heartbeat.loop)
        self.supervisor.start_watch()

    def offer(self, vendor: str, wait_seconds: float = OFFER_REPORT_SECONDS) -> list[str]:
        """Say `vendor` may have due work; returns the ids the next claim took (for Flower),
        waiting at most `wait_seconds` for it."""
        return self.dispatcher.offer(vendor, wait_seconds)

    def drain(self, timeout: float = DRAIN_SECONDS) -> Drained:
        """Stop claiming, let what is in flight finish and be recorded (SIGTERM)."""
        if self._drained is not None:  # a second shutdown signal: already done
            return self._drained
        deadline = time.monotonic() + timeout
        self.dispatcher.stop_claiming()
        held = len(self.ledger)
        self.ledger.wait_empty(deadline)
        left = len(self.ledger)
        self._stopped.set()
        self.supervisor.join(max(0.0, deadline - time.monotonic()) + 1.0)
        self.pool.shutdown()
        self._drained = Drained(drained=max(0, held - left), left=left)
        log.info("pump: drained %d, left %d to the lease", held - left, left)
        return self._drained

    def held(self) -> list[Key]:
        """(id, attempt) of every row this process holds the lease of."""
        return self.ledger.renewable(float("-inf"))

    def stats(self) -> dict[str, Any]:
        return {**self.dispatcher.stats(), "recorder_lag_ms": self.recorder.lag_ms()}

    def _recorded(self, woken: set[str]) -> None:
        self.dispatcher.wake()  # it may have waited for the recorder
        for vendor in woken:
            self.dispatcher.offer(vendor, wait_seconds=0)


_pump: tuple[int, Pump] | None = None
_pump_lock = threading.Lock()


def get_pump() -> Pump:
    """This process's pump, started on first use (a forked child starts its own)."""
    global _pump
    pid = os.getpid()
    with _pump_lock:
        if _pump is None or _pump[0] != pid:
            _pump = (pid, Pump(get_settings()))
            collect_less()
        return _pump[1]


# Allocations (less deallocations) of container objects between two collections of the youngest
# generation; Python's default is 700.
YOUNG_COLLECTION_THRESHOLD = 10_000


def collect_less() -> None:
    """The garbage collector's share of a busy process, made small.

    Everything alive once the pump runs (modules, Celery, SQLAlchemy's tables and compiled
    statements, vendor classes) lives as long as the process: frozen, it is never traversed
    again by a full collection. A pump allocates tens of container objects per delivery,
    most freed within the request; collecting the youngest generation every 700 of them
    promoted whatever a few hundred requests in flight still held, and full collections then
    walked it all. Reference cycles (an exception and its traceback) are still collected,
    a little later (docs/latency.md has the before and after)."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)


def drain_pump(timeout: float = DRAIN_SECONDS) -> Drained:
    """Finish what this process has in flight (called when a worker process shuts down)."""
    with _pump_lock:
        current = _pump
    if current is None or current[0] != os.getpid():
        return Drained(0, 0)
    return current[1].drain(timeout)


__all__ = ["DRAIN_SECONDS", "Drained", "Pump", "drain_pump", "get_pump"]
