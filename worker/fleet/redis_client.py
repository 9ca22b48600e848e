"""One Redis client per process for the fleet-wide state (limiter, breaker, parking)."""

from __future__ import annotations

import os

import redis

from eventrelay.worker.config import get_settings
from eventrelay.worker.errors import ConfigurationError

_clients: dict[tuple[int, str], redis.Redis] = {}


def get_redis(url: str | None = None) -> redis.Redis:
    url = url or get_settings().effective_redis_url
    if not url:
        raise ConfigurationError(
            "no Redis for fleet-wide state: set EVENTRELAY_REDIS_URL (or use a redis:// "
            "EVENTRELAY_BROKER_URL)",
            env_var="EVENTRELAY_REDIS_URL",
        )
    pid = os.getpid()
    client = _clients.get((pid, url))
    if client is None:
        # Forget only what a parent process left us: clearing on every new URL would rebuild
        # the pools on each call when the broker and the fleet state use different Redis URLs.
        for stale in [k for k in _clients if k[0] != pid]:
            del _clients[stale]
        client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30
        )
        _clients[(pid, url)] = client
    return client
