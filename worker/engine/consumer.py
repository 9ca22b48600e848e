"""Celery's consumer, back on a broker that went away within a fraction of a second.

Celery's consumer reconnects through kombu's `ensure_connection` with kombu's defaults: after a
refused connection it waits 2 s, then 4 s more, 6 s more, up to 30 s apart. A Redis restart
takes milliseconds, but the consumer's first attempt comes within milliseconds of the loss,
usually before the new Redis listens; so a worker waited 2 s (6 s if the second attempt was
early too) while the messages the scheduler republished sat in Redis. Here the retries start
at RECONNECT_FIRST_SECONDS and grow by RECONNECT_STEP_SECONDS, never more than
RECONNECT_MAX_SECONDS apart: a few cheap connection attempts against a broker that is down.
"""

from __future__ import annotations

import functools
from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer

RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_STEP_SECONDS = 0.25
RECONNECT_MAX_SECONDS = 5.0


class Consumer(CeleryConsumer):  # type: ignore[misc]
    """`worker_consumer` of eventrelay's Celery app."""

    def ensure_connected(self, conn: Any) -> Any:
        if not getattr(conn, "_eventrelay_quick_retry", False):
            conn.ensure_connection = functools.partial(
                conn.ensure_connection,
                interval_start=RECONNECT_FIRST_SECONDS,
                interval_step=RECONNECT_STEP_SECONDS,
                interval_max=RECONNECT_MAX_SECONDS,
            )
            conn._eventrelay_quick_retry = True
        return super().ensure_connected(conn)
