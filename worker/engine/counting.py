"""What the running totals (`delivery_counters`) count, and the deltas a write adds to them.

Everything that finishes a delivery or writes an attempt adds its deltas in the same
transaction, so the totals are exact and a status read or metrics scrape costs one small
SELECT however much history there is (issue 13).
"""

from __future__ import annotations

import uuid
from bisect import bisect_left
from collections import Counter
from datetime import datetime

from eventrelay.models.delivery import AttemptOutcome, DeliveryStatus

DELIVERED = "delivered"
SUPPRESSED = "suppressed"
DEAD = "dead"  # times a delivery was dead-lettered (a replayed one that dies again counts twice)
FINISHED_STATES = (DeliveryStatus.DELIVERED, DeliveryStatus.SUPPRESSED)
LATENCY_SUM_MS = "latency_sum_ms"
# Upper bounds of the accepted → delivered histogram's buckets.
LATENCY_BUCKETS_SECONDS = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    1800,
    3600,
    86400,
)


def attempts_name(outcome: AttemptOutcome | str) -> str:
    return f"attempts.{outcome}"


def latency_bucket_name(index: int) -> str:
    """Bucket `index` counts latencies in (bound[index-1], bound[index]]; the last is +Inf."""
    return f"latency.{index}"


class Deltas(Counter[tuple[str, str]]):
    """(vendor, counter name) → how much to add."""

    def delivered(self, vendor: str, delivery_id: uuid.UUID, now: datetime) -> None:
        self[(vendor, DELIVERED)] += 1
        accepted = accepted_at_ms(delivery_id)
        if accepted is None:
            return
        latency_ms = max(0, int(now.timestamp() * 1000) - accepted)
        index = bisect_left(LATENCY_BUCKETS_SECONDS, latency_ms / 1000)
        self[(vendor, latency_bucket_name(index))] += 1
        self[(vendor, LATENCY_SUM_MS)] += latency_ms

    def dead(self, vendor: str) -> None:
        self[(vendor, DEAD)] += 1

    def suppressed(self, vendor: str) -> None:
        self[(vendor, SUPPRESSED)] += 1

    def attempt(self, vendor: str, outcome: AttemptOutcome) -> None:
        self[(vendor, attempts_name(outcome))] += 1


def accepted_at_ms(delivery_id: uuid.UUID) -> int | None:
    """When the delivery was accepted, read from its UUIDv7 id (ms since the epoch): the
    recorder knows the id, and reading `created_at` back would cost a column per claim."""
    if delivery_id.version != 7:
        return None
    return delivery_id.int >> 80
