"""Per-vendor circuit breaker and parking, shared by the fleet through Redis.

Breaker: after FAILURE_THRESHOLD retryable failures in a row the vendor is open for
OPEN_SECONDS: its deliveries wait without spending attempts. Then one probe request is let
through (half-open); success closes the breaker, failure opens it again.

Parking: a 401 (Gravity Field: 403) means our key is wrong for every job, so the vendor is
parked until an operator runs `eventrelay vendors resume NAME` (after fixing the key).

Cooling: a 429 paused the vendor for its Retry-After (fleet/ratelimit.py `back_off`); it shows
as its own state, with the seconds left, so that a paused vendor never reads "closed".
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import cast

from eventrelay.worker.fleet import keys
from eventrelay.worker.fleet.redis_client import get_redis

FAILURE_THRESHOLD = 5
OPEN_SECONDS = 15.0
PROBE_SECONDS = 30.0
PARKED_RECHECK_SECONDS = 300.0


@dataclass(frozen=True)
class Gate:
    """Whether a vendor may be sent to now."""

    allowed: bool
    wait_seconds: float = 0.0
    reason: str | None = None
    probe: bool = False  # half-open: send one request only
    # Failures counted so far: when 0, a success has nothing to reset (saves a round trip).
    failures: int = 0


def check(vendor: str, redis_url: str) -> Gate:
    client = get_redis(redis_url)
    pipe = client.pipeline()
    pipe.get(keys.parked(vendor))
    pipe.pttl(keys.breaker_open(vendor))
    pipe.get(keys.breaker_failures(vendor))
    pipe.pttl(keys.cooldown(vendor))
    parked, open_ms, failures, cooldown_ms = pipe.execute()
    if parked:
        info = json.loads(parked)
        return Gate(False, PARKED_RECHECK_SECONDS, f"vendor parked: {info.get('reason')}")
    if isinstance(cooldown_ms, int) and cooldown_ms > 0:
        # The vendor said 429 (with Retry-After): the whole fleet waits that long.
        return Gate(False, cooldown_ms / 1000, "vendor asked us to slow down (429)")
    if isinstance(open_ms, int) and open_ms > 0:
        return Gate(False, open_ms / 1000, "circuit open after repeated failures")
    if failures is not None and int(failures) >= FAILURE_THRESHOLD:
        # Half-open: exactly one process gets to probe.
        if client.set(keys.breaker_probe(vendor), "1", nx=True, px=int(PROBE_SECONDS * 1000)):
            return Gate(True, probe=True, failures=int(failures))
        return Gate(False, 1.0, "circuit half-open: a probe is in flight")
    return Gate(True, failures=int(failures or 0))


def give_back_probe(vendor: str, redis_url: str) -> None:
    """The probe claimed nothing it could send: the next check may probe (here or elsewhere)."""
    get_redis(redis_url).delete(keys.breaker_probe(vendor))


def record_success(vendor: str, redis_url: str) -> None:
    client = get_redis(redis_url)
    client.delete(keys.breaker_failures(vendor), keys.breaker_probe(vendor))


def record_failure(vendor: str, redis_url: str) -> bool:
    """Count a retryable failure; True if this opened the circuit."""
    client = get_redis(redis_url)
    failures_key = keys.breaker_failures(vendor)
    pipe = client.pipeline()
    pipe.incr(failures_key)
    pipe.expire(failures_key, int(OPEN_SECONDS * 8))
    failures, _ = pipe.execute()
    if int(failures) >= FAILURE_THRESHOLD:
        client.delete(keys.breaker_probe(vendor))
        return bool(
            client.set(keys.breaker_open(vendor), "1", px=int(OPEN_SECONDS * 1000), nx=True)
        )
    return False


def park(vendor: str, reason: str, redis_url: str) -> None:
    info = {"reason": reason, "since": time.time()}
    get_redis(redis_url).set(keys.parked(vendor), json.dumps(info))


def unpark(vendor: str, redis_url: str) -> bool:
    return bool(get_redis(redis_url).delete(keys.parked(vendor)))


def parked_reason(vendor: str, redis_url: str) -> str | None:
    raw = cast(bytes | None, get_redis(redis_url).get(keys.parked(vendor)))
    return str(json.loads(raw).get("reason")) if raw else None


@dataclass(frozen=True)
class Health:
    """What `status`, `vendors list` and the metrics show of a vendor's gate."""

    state: str  # closed / open / half-open / cooling / parked
    cooling_seconds_left: float | None = None  # set while cooling
    parked_reason: str | None = None  # set while parked


def health(vendor: str, redis_url: str) -> Health:
    """The vendor's state, read in one round trip; the order of precedence is check()'s."""
    pipe = get_redis(redis_url).pipeline()
    pipe.get(keys.parked(vendor))
    pipe.pttl(keys.breaker_open(vendor))
    pipe.get(keys.breaker_failures(vendor))
    pipe.pttl(keys.cooldown(vendor))
    parked, open_ms, failures, cooldown_ms = pipe.execute()
    if parked:
        return Health("parked", parked_reason=str(json.loads(parked).get("reason")))
    if isinstance(cooldown_ms, int) and cooldown_ms > 0:
        return Health("cooling", cooling_seconds_left=round(cooldown_ms / 1000, 1) or 0.1)
    if isinstance(open_ms, int) and open_ms > 0:
        return Health("open")
    if failures is not None and int(failures) >= FAILURE_THRESHOLD:
        return Health("half-open")
    return Health("closed")


def state(vendor: str, redis_url: str) -> str:
    """closed / open / half-open / cooling / parked, for `status`, metrics and the scheduler."""
    return health(vendor, redis_url).state
