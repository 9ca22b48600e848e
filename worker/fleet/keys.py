"""Every Redis key eventrelay writes, in one place (tests import these, never retype them).

Fleet-wide state lives under `eventrelay:`; the broker's own lists (kombu) are named after
the queues in `eventrelay.worker.fleet.queues`.
"""

from __future__ import annotations

PREFIX = "eventrelay"


def doorbell(vendor: str) -> str:
    """Set while a fresh-lane message for the vendor waits (see fleet/doorbell.py)."""
    return f"{PREFIX}:doorbell:{vendor}"


def breaker_failures(vendor: str) -> str:
    """Retryable failures in a row, fleet-wide."""
    return f"{PREFIX}:breaker:{vendor}:failures"


def breaker_open(vendor: str) -> str:
    """Exists while the circuit is open (its TTL is the time left)."""
    return f"{PREFIX}:breaker:{vendor}:open"


def breaker_probe(vendor: str) -> str:
    """Held by the one process sending the half-open probe."""
    return f"{PREFIX}:breaker:{vendor}:probe"


def parked(vendor: str) -> str:
    """Credentials were refused: JSON {reason, since} until `eventrelay vendors resume`."""
    return f"{PREFIX}:parked:{vendor}"


def rate_slot(vendor: str) -> str:
    """The next free send slot of the fleet-wide rate limiter (ms, Redis clock)."""
    return f"{PREFIX}:ratelimit:{vendor}:next-slot"


def cooldown(vendor: str) -> str:
    """Exists while the vendor's 429 Retry-After holds the whole fleet (TTL: time left, at most
    the vendor's backoff cap)."""
    return f"{PREFIX}:ratelimit:{vendor}:cooldown"


# Written once into an empty broker: its absence means Redis lost its queues (restart,
# FLUSHALL) and the scheduler republishes everything pending.
BROKER_EPOCH = f"{PREFIX}:broker-epoch"


def worker_heartbeat(hostname: str) -> str:
    """Unix time of the worker's last Celery heartbeat (fleet/liveness.py); expires when it
    stops beating."""
    return f"{PREFIX}:liveness:worker:{hostname}"


# Unix time of the last scheduler tick that completed (fleet/liveness.py).
SCHEDULER_HEARTBEAT = f"{PREFIX}:liveness:scheduler"
