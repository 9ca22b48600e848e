"""One cache of Redis clients per process, for every caller: the fleet-wide state (limiter,
breaker, parking, doorbells) and the producer's doorbell.

Two kinds of client, one per URL each. The fleet's (workers, scheduler) wait seconds for a
busy Redis. A fail-fast one (producers, inside a web request) times out in
FAIL_FAST_TIMEOUT_SECONDS and never retries (redis-py retries a failed command three times with
backoff by default): the job is stored already and the scheduler publishes it.
"""

from __future__ import annotations

import os
import threading

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventrelay.worker.config import get_settings
from eventrelay.worker.errors import ConfigurationError

# Redis answers in well under a millisecond; a tenth of a second is a Redis in trouble.
FAIL_FAST_TIMEOUT_SECONDS = 0.1

_clients: dict[tuple[int, str, bool], redis.Redis] = {}
_lock = threading.Lock()


def get_redis(url: str | None = None, *, fail_fast: bool = False) -> redis.Redis:
    """This process's client for `url` (default: the fleet's Redis).

    Raises:
        ConfigurationError: no URL given and no Redis configured.
    """
    url = url or get_settings().effective_redis_url
    if not url:
        raise ConfigurationError(
            "no Redis for fleet-wide state: set EVENTRELAY_REDIS_URL (or use a redis:// "
            "EVENTRELAY_BROKER_URL)",
            env_var="EVENTRELAY_REDIS_URL",
        )
    pid = os.getpid()
    key = (pid, url, fail_fast)
    client = _clients.get(key)
    if client is not None:
        return client
    with _lock:
        client = _clients.get(key)
        if client is None:
            # Forget only what a parent process left us: clearing on every new URL would
            # rebuild the pools on each call when the broker and the fleet state use
            # different Redis URLs.
            for stale in [k for k in _clients if k[0] != pid]:
                del _clients[stale]
            client = _make_client(url, fail_fast)
            _clients[key] = client
        return client


def _make_client(url: str, fail_fast: bool) -> redis.Redis:
    if fail_fast:
        return redis.Redis.from_url(
            url,
            socket_timeout=FAIL_FAST_TIMEOUT_SECONDS,
            socket_connect_timeout=FAIL_FAST_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), 0),
        )
    return redis.Redis.from_url(
        url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
    )
