"""Fleet-wide rate limits, shared by every worker process through Redis.

Celery's own `rate_limit` counts per worker process, not per fleet (celery/celery#5732), so a
vendor's account limit (Infobip: 250 requests/second) is kept with a moving window in Redis
(`limits`). A 429 from the vendor sets a cooldown every process respects.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from worker.redis_client import get_redis

COOLDOWN_KEY = "eventrelay:ratelimit:{vendor}:cooldown"
DEFAULT_COOLDOWN_SECONDS = 1.0
_limiters: dict[str, MovingWindowRateLimiter] = {}


def rate_item(per_second: float) -> RateLimitItem:
    """A limit item for a possibly fractional rate (0.5/s becomes 1 per 2 s)."""
    if per_second >= 1:
        return RateLimitItemPerSecond(int(per_second))
    return RateLimitItemPerSecond(1, multiples=math.ceil(1 / per_second))


def _limiter(url: str) -> MovingWindowRateLimiter:
    limiter = _limiters.get(url)
    if limiter is None:
        limiter = MovingWindowRateLimiter(storage_from_string(url))
        _limiters[url] = limiter
    return limiter


def acquire(vendor: str, per_second: float, max_wait_seconds: float, redis_url: str) -> bool:
    """Wait for one request slot for `vendor`; False if none came within `max_wait_seconds`."""
    client = get_redis(redis_url)
    limiter = _limiter(redis_url)
    item = rate_item(per_second)
    deadline = time.monotonic() + max_wait_seconds
    while True:
        cooldown_ms = client.pttl(COOLDOWN_KEY.format(vendor=vendor))
        if isinstance(cooldown_ms, int) and cooldown_ms > 0:
            wait = cooldown_ms / 1000
        elif limiter.hit(item, "eventrelay", vendor):
            return True
        else:
            reset = limiter.get_window_stats(item, "eventrelay", vendor).reset_time
            wait = max(0.002, reset - time.time())
        if time.monotonic() + wait > deadline:
            return False
        time.sleep(wait)


def back_off(vendor: str, seconds: float | None, redis_url: str) -> None:
    """The vendor said 429: every process pauses this vendor for `seconds`."""
    seconds = seconds if seconds and seconds > 0 else DEFAULT_COOLDOWN_SECONDS
    get_redis(redis_url).set(
        COOLDOWN_KEY.format(vendor=vendor), "1", px=max(1, int(seconds * 1000))
    )
