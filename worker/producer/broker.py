"""The producer's view of the broker: short timeouts, and a pause after a failure.

A job is durable once its transaction commits; publishing it is an optimisation the scheduler
covers for (it publishes every pending row whose `dispatched_at` is NULL). So a producer (a web
request) never waits for Redis: its Redis calls time out in PRODUCER_TIMEOUT_SECONDS, and
after one fails the process stops trying for PAUSE_SECONDS and leaves its jobs to the
scheduler. The scheduler and the workers keep their own, longer timeouts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from eventrelay.worker.fleet.redis_client import FAIL_FAST_TIMEOUT_SECONDS

PRODUCER_TIMEOUT_SECONDS = FAIL_FAST_TIMEOUT_SECONDS
PAUSE_SECONDS = 10.0
# kombu's Redis transport, for the producer's publishes only: no reconnect loop (kombu's
# default retries a refused connection for seconds) and the short socket timeouts.
PRODUCER_TRANSPORT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": PRODUCER_TIMEOUT_SECONDS,
    "socket_timeout": PRODUCER_TIMEOUT_SECONDS,
    "max_retries": 0,
    "retry_on_timeout": False,
}


class PublishPause:
    """Closed: publish. After a failure: paused for `seconds`; then one caller tries again
    (others keep skipping while it does) and its outcome closes or re-opens the pause."""

    def __init__(self, seconds: float = PAUSE_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._until = 0.0  # 0: not paused
        self._lock = threading.Lock()

    def paused(self) -> bool:
        return self._until > self._clock()

    def may_publish(self) -> bool:
        """True if this caller should try; a caller let through after a pause holds the
        others back while it tries."""
        with self._lock:
            now = self._clock()
            if self._until > now:
                return False
            if self._until:
                self._until = now + self.seconds  # the probe: only this caller tries
            return True

    def failed(self) -> None:
        with self._lock:
            self._until = self._clock() + self.seconds

    def succeeded(self) -> None:
        with self._lock:
            self._until = 0.0


pause = PublishPause()
