"""Fleet-wide rate limits, shared by every worker process through Redis.

Celery's own `rate_limit` counts per worker process, not per fleet (celery/celery#5732).

Why not a window counter (`limits`' moving window, which we tried first): it admits a whole
second's quota at once, and the vendor counts *arrivals*, which jitter by milliseconds. Measured
against the mock's Infobip (20/s, sliding window over arrivals): 4 of 80 requests were answered
429. Here every process instead reserves the next send slot on one shared schedule (GCRA-style,
clocked by Redis `TIME`), so sends are spaced evenly at a hair under the limit: 0 of 80 were
refused in the same test.

A 429 from the vendor anyway sets a cooldown that every process respects.
"""

from __future__ import annotations

import time
from typing import Any

from worker.redis_client import get_redis

SLOT_KEY = "eventrelay:ratelimit:{vendor}:next-slot"
COOLDOWN_KEY = "eventrelay:ratelimit:{vendor}:cooldown"
DEFAULT_COOLDOWN_SECONDS = 1.0
# Spacing 2% wider than 1/rate keeps any one-second window of arrivals at or under the limit,
# even when network jitter moves each arrival by a few milliseconds.
HEADROOM = 1.02

# Returns the milliseconds to wait for the reserved slot, or -wait if it is further away than
# the caller will wait (then nothing is reserved).
_RESERVE = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000 + tonumber(now_parts[2]) / 1000
local cooldown = redis.call('PTTL', KEYS[2])
local earliest = now
if cooldown > 0 then earliest = now + cooldown end
local slot = tonumber(redis.call('GET', KEYS[1]) or '0')
if slot < earliest then slot = earliest end
local wait = slot - now
if wait > tonumber(ARGV[2]) then return tostring(-wait) end
local interval = tonumber(ARGV[1])
redis.call('SET', KEYS[1], tostring(slot + interval), 'PX', math.ceil(interval + 60000))
return tostring(wait)
"""


def acquire(vendor: str, per_second: float, max_wait_seconds: float, redis_url: str) -> bool:
    """Reserve one send slot for `vendor` and sleep until it; False if it is too far away."""
    # redis-py's stubs differ between versions (sync/async unions): keep this call untyped.
    client: Any = get_redis(redis_url)
    interval_ms = 1000.0 * HEADROOM / per_second
    wait_ms = float(
        client.eval(
            _RESERVE,
            2,
            SLOT_KEY.format(vendor=vendor),
            COOLDOWN_KEY.format(vendor=vendor),
            interval_ms,
            max_wait_seconds * 1000,
        )
    )
    if wait_ms < 0:
        return False
    if wait_ms > 0:
        time.sleep(wait_ms / 1000)
    return True


def back_off(vendor: str, seconds: float | None, redis_url: str) -> None:
    """The vendor said 429: every process pauses this vendor for `seconds`."""
    seconds = seconds if seconds and seconds > 0 else DEFAULT_COOLDOWN_SECONDS
    get_redis(redis_url).set(
        COOLDOWN_KEY.format(vendor=vendor), "1", px=max(1, int(seconds * 1000))
    )
