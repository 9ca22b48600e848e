"""Fleet-wide rate limits, shared by every worker process through Redis.

Celery's own `rate_limit` counts per worker process, not per fleet (celery/celery#5732).

Why not a window counter (`limits`' moving window, which we tried first): it admits a whole
second's quota at once, and the vendor counts *arrivals*, which jitter by milliseconds. Measured
against the mock's Infobip (20/s, sliding window over arrivals): 4 of 80 requests were answered
429. Here every process instead reserves the next send slot on one shared schedule (GCRA-style,
clocked by Redis `TIME`), so sends are spaced evenly at a hair under the limit: 0 of 80 were
refused in the same test.

A slot only keeps that promise if the request goes out at its time. A thread that wakes from
its sleep late (a busy process: 64 threads on one GIL, two cores shared with the database) would
send next to the slots after its own: with sends 1.05/rate apart, N + 1 arrivals fit in one
second once a send is ~50 ms late (CI saw one 429 in 80 this way). So a caller that finds itself
more than LATE_TOLERANCE_SECONDS past its slot gives the slot up unused and reserves another.

A 429 from the vendor anyway sets a cooldown that every process respects: its Retry-After, at
most the vendor's backoff cap (a `Retry-After: 100000000` must not pause a vendor for years).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from functools import cache
from importlib.resources import files
from typing import Any

from eventrelay.worker.config import get_settings
from eventrelay.worker.errors import InvalidJob
from eventrelay.worker.fleet import keys
from eventrelay.worker.fleet.redis_client import get_redis
from eventrelay.worker.vendors import get_vendor

log = logging.getLogger("eventrelay.worker")

DEFAULT_COOLDOWN_SECONDS = 1.0
# Spacing 5% wider than 1/rate keeps any one-second window of arrivals at or under the limit
# while arrivals jitter by up to 50 ms (threads of a busy process wake late from their sleep;
# measured at 2%: 4 of 80 requests over the mock's 20/s with 96 threads per process).
HEADROOM = 1.05
# The headroom leaves any one-second window (HEADROOM - 1) s = 50 ms of slack, whatever the rate:
# up to 20 ms of it for our own lateness, the rest for the trip to the vendor and its clock.
LATE_TOLERANCE_SECONDS = 0.02


def acquire(
    vendor: str, per_second: float, max_wait_seconds: float, redis_url: str | None
) -> bool:
    """Reserve one send slot for `vendor` and sleep until it; False if none is due within
    `max_wait_seconds`. True means: send now, you are on time for your slot.

    Without Redis (`redis_url` None) the schedule is this process's own: the limit then holds
    per worker process, not per fleet (README, "Without Redis").
    """
    interval_ms = 1000.0 * HEADROOM / per_second
    reserve = _reserve_script(os.getpid(), redis_url) if redis_url else None
    give_up_at = time.monotonic() + max_wait_seconds
    while True:
        patience_ms = max(0.0, give_up_at - time.monotonic()) * 1000
        if reserve is None:
            wait_ms = _reserve_here(vendor, interval_ms, patience_ms)
        else:
            wait_ms = float(
                reserve(
                    keys=[keys.rate_slot(vendor), keys.cooldown(vendor)],
                    args=[interval_ms, patience_ms],
                )
            )
        # Timed from the answer, so the round trip to Redis is not counted as lateness: every
        # process on the schedule pays it alike, which moves all sends and crowds no second.
        # What crowds one is a thread that oversleeps its slot, measured from here.
        answered = time.monotonic()
        if wait_ms < 0:
            return False
        slot = answered + wait_ms / 1000
        if wait_ms > 0:
            time.sleep(wait_ms / 1000)
        now = time.monotonic()
        if now - slot <= LATE_TOLERANCE_SECONDS:
            return True
        if now >= give_up_at:  # late, and out of patience: the caller waits and claims again
            return False


def back_off(
    vendor: str, seconds: float | None, redis_url: str, cap_seconds: float | None = None
) -> None:
    """The vendor said 429: every process pauses this vendor for `seconds` (its Retry-After),
    never longer than `cap_seconds`, by default the vendor's backoff cap."""
    seconds = seconds if seconds and seconds > 0 else DEFAULT_COOLDOWN_SECONDS
    cap = cap_seconds if cap_seconds is not None else cooldown_cap_seconds(vendor)
    seconds = min(seconds, cap)
    get_redis(redis_url).set(keys.cooldown(vendor), "1", px=max(1, int(seconds * 1000)))


def cooldown_cap_seconds(vendor: str) -> float:
    """<VENDOR>_BACKOFF_CAP_SECONDS, else EVENTRELAY_BACKOFF_CAP_SECONDS: the cap that
    RetryPolicy.for_vendor puts on retry delays (engine/ sits above fleet/, so not imported)."""
    try:
        own = get_vendor(vendor).settings.backoff_cap_seconds
    except InvalidJob:  # not a registered vendor: the process default
        own = None
    return float(own) if own is not None else get_settings().backoff_cap_seconds


_here_lock = threading.Lock()
_here_next_slot: dict[str, float] = {}  # vendor → this process's next free slot (monotonic)


def _reserve_here(vendor: str, interval_ms: float, patience_ms: float) -> float:
    """ratelimit.lua's reservation on this process's own schedule (no Redis, no 429 pause)."""
    with _here_lock:
        now = time.monotonic()
        slot = max(_here_next_slot.get(vendor, now), now)
        wait_ms = (slot - now) * 1000
        if wait_ms > patience_ms:
            return -wait_ms
        _here_next_slot[vendor] = slot + interval_ms / 1000
        return wait_ms


_warned_without_redis = False


def warn_without_fleet_state(**_: Any) -> None:
    """Say once per process that fleet-wide state is off because no Redis is configured.

    Called when a Celery worker is ready (its main process), so that a worker on a filesystem
    broker says so at start instead of silently going without.
    """
    global _warned_without_redis
    if _warned_without_redis or get_settings().effective_redis_url:
        return
    _warned_without_redis = True
    log.warning(
        "no Redis for fleet-wide state (EVENTRELAY_REDIS_URL is not set and "
        "EVENTRELAY_BROKER_URL is not redis://): each worker process keeps <VENDOR>_RATE_LIMIT "
        "on its own (N processes send up to N times it), and the circuit breaker, 429 pauses "
        "and vendor parking are off. Set EVENTRELAY_REDIS_URL to share them across the fleet."
    )


@cache
def _reserve_script(pid: int, redis_url: str) -> Any:
    # Sent once, then called by its SHA (EVALSHA), as dramatiq does with its Lua; `pid` keeps a
    # forked child from reusing its parent's client.
    source = files("eventrelay.worker.fleet").joinpath("ratelimit.lua").read_text()
    return get_redis(redis_url).register_script(source)
