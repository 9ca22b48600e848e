"""Keeps the pump's threads alive: a role whose loop raises is logged and started again.

A worker process whose dispatcher or recorder died looks healthy from outside (it acks its
messages, Flower shows it green) and delivers nothing, so no role may end silently. A role
that keeps failing, or a thread that cannot be started, ends the process with a non-zero code
so that Celery's pool starts a fresh child (what the dead one held comes back with its leases).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from eventrelay.worker.engine.pump.sendpool import SendPool

log = logging.getLogger("eventrelay.worker")

RESTART_DELAY_SECONDS = 0.2
# More restarts than this within the window: the role cannot run here, so the process ends.
MAX_RESTARTS = 30
RESTART_WINDOW_SECONDS = 60.0
WATCH_EVERY_SECONDS = 1.0
EXIT_CODE = 70  # EX_SOFTWARE


def exit_process(why: str) -> None:
    """End this process at once, non-zero: its parent (Celery's pool) replaces it."""
    log.critical("%s; ending this worker process (exit %d) so it is replaced", why, EXIT_CODE)
    logging.shutdown()
    os._exit(EXIT_CODE)


class Supervisor:
    """Runs each role's loop in a thread of its own and watches the send pool's threads."""

    def __init__(self, stopped: threading.Event, pool: SendPool) -> None:
        self._stopped = stopped
        self._pool = pool
        self._threads: dict[str, threading.Thread] = {}
        self._loops: dict[str, Callable[[], None]] = {}
        self._restarts: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self.exit = exit_process  # a test may replace it to see the decision

    def start(self, role: str, loop: Callable[[], None]) -> None:
        """Run `loop` (it returns only once the pump stops) under supervision."""
        with self._lock:
            self._loops[role] = loop
            self._restarts[role] = []
            self._spawn(role)

    def start_watch(self) -> None:
        self.start("watch", self._watch)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))

    def restarts(self, role: str) -> int:
        with self._lock:
            return len(self._restarts.get(role, []))

    def _spawn(self, role: str) -> None:
        thread = threading.Thread(target=self._run, args=(role,), name=f"eventrelay-{role}")
        thread.daemon = True
        try:
            thread.start()
        except RuntimeError as exc:  # can't start new thread
            self.exit(f"pump {role}: could not start its thread ({exc})")
            return
        self._threads[role] = thread

    def _run(self, role: str) -> None:
        loop = self._loops[role]
        while not self._stopped.is_set():
            try:
                loop()
                return
            except BaseException:  # noqa: BLE001 - a role must never end silently
                log.exception("pump %s died unexpectedly; starting it again", role)
                if self._too_many_restarts(role):
                    self.exit(
                        f"pump {role} failed more than {MAX_RESTARTS} times in "
                        f"{RESTART_WINDOW_SECONDS:.0f} s"
                    )
                    return
                self._stopped.wait(RESTART_DELAY_SECONDS)

    def _too_many_restarts(self, role: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._restarts[role] if t > now - RESTART_WINDOW_SECONDS]
            recent.append(now)
            self._restarts[role] = recent
            return len(recent) > MAX_RESTARTS

    def _watch(self) -> None:
        """A role thread that ended while the pump runs is started again; so is a send thread."""
        while not self._stopped.wait(WATCH_EVERY_SECONDS):
            with self._lock:
                for role, thread in list(self._threads.items()):
                    if role != "watch" and not thread.is_alive() and not self._stopped.is_set():
                        log.error("pump %s thread is gone; starting it again", role)
                        self._spawn(role)
            dead = self._pool.replace_dead()
            if dead:
                log.error("%d send thread(s) were gone; started new ones", dead)
