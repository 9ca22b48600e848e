"""The producer's view of the broker: short timeouts, and a pause after a failure.

A job is durable once its transaction commits; publishing it is an optimisation the scheduler
covers for (it publishes every pending row whose `dispatched_at` is NULL). So a producer (a web
request) never waits for Redis: its Redis calls time out in PRODUCER_TIMEOUT_SECONDS, and
after one fails the process stops trying for PAUSE_SECONDS and leaves its jobs to the
scheduler. The scheduler and the workers keep their own, longer timeouts.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventrelay.worker.fleet import keys
from eventrelay.worker.fleet.doorbell import RING_SECONDS

# Redis answers in well under a millisecond; a tenth of a second is a broker in trouble.
PRODUCER_TIMEOUT_SECONDS = 0.1
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

_clients: dict[tuple[int, str], redis.Redis] = {}
_clients_lock = threading.Lock()


def producer_redis(url: str) -> redis.Redis:
    """A Redis client for the producer's doorbell: short timeouts, no retries (redis-py
    retries a failed command three times with backoff by default)."""
    key = (os.getpid(), url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = redis.Redis.from_url(
                url,
                socket_timeout=PRODUCER_TIMEOUT_SECONDS,
                socket_connect_timeout=PRODUCER_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 0),
            )
            _clients[key] = client
        return client


def ring_doorbell(vendor: str, url: str) -> bool:
    """`fleet.doorbell.ring` on the producer's short-timeout client: True if this caller
    should publish (no message for the vendor is waiting). Raises if Redis cannot answer."""
    return bool(
        producer_redis(url).set(keys.doorbell(vendor), "1", nx=True, px=int(RING_SECONDS * 1000))
    )
