"""Coalescing publishes for producers that enqueue one job at a time.

One Celery message per job costs ~2 ms of Celery overhead per delivery (README, "Benchmark").
Instead, a producer "rings" a vendor's doorbell (SET NX with a short expiry) and publishes a
message only if nobody rang before it; a worker answers (DEL) when it starts the task and then
also claims other due fresh deliveries of that vendor ("top-up"), up to the batch size. Under
load one message carries many deliveries; when idle every job still gets its own message.

Nothing depends on the doorbell for correctness: a row that got no message of its own is taken
by the next task's top-up, or by the scheduler's orphan sweep.
"""

from __future__ import annotations

from eventrelay.worker.fleet import keys
from eventrelay.worker.fleet.redis_client import get_redis

# Bounds how long a lost message can keep producers from publishing.
RING_SECONDS = 2.0


def ring(vendor: str, redis_url: str, *, fail_fast: bool = False) -> bool:
    """True if this caller should publish (nobody else has a message waiting).

    `fail_fast`: the producer's short-timeout client (fleet/redis_client.py). Raises if Redis
    cannot answer.
    """
    client = get_redis(redis_url, fail_fast=fail_fast)
    return bool(client.set(keys.doorbell(vendor), "1", nx=True, px=int(RING_SECONDS * 1000)))


def answer(vendor: str, redis_url: str) -> None:
    """A worker has started on the vendor's message: the next producer must ring again."""
    get_redis(redis_url).delete(keys.doorbell(vendor))


def keep_rung(vendor: str, redis_url: str) -> None:
    """A worker is pumping the vendor's due work: producers need not publish meanwhile.

    Expires by itself, so a killed worker holds producers back for RING_SECONDS at most (the
    scheduler's orphan sweep sends what they enqueued in that window).
    """
    get_redis(redis_url).set(keys.doorbell(vendor), "1", px=int(RING_SECONDS * 1000))
