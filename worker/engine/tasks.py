"""Celery tasks: thin. Decode the message, call plain functions, publish what follows."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import shared_task
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from eventrelay.worker.fleet.queues import TASK_NAME_DELIVER, TASK_NAME_INGEST

log = logging.getLogger("eventrelay.worker")


def decode_ids(raw: Any) -> list[uuid.UUID] | None:
    """Delivery ids from a message (an empty list: "drain"), or None if it is malformed."""
    if not isinstance(raw, list):
        return None
    try:
        return [uuid.UUID(str(i)) for i in raw]
    except (ValueError, TypeError, AttributeError):
        return None


@shared_task(
    bind=True,
    name=TASK_NAME_DELIVER,
    ignore_result=True,
    # The database or Redis went away before anything was sent: try the message again soon
    # (a short countdown, far below the visibility timeout) instead of waiting for the
    # scheduler's orphan sweep.
    autoretry_for=(DBAPIError, RedisError),
    retry_backoff=1,
    retry_backoff_max=10,
    retry_jitter=True,
    max_retries=8,
)
def deliver(
    self: Any, vendor: Any = None, delivery_ids: Any = None, *args: Any, **kwargs: Any
) -> dict[str, Any]:
    """Tell this process's pump that `vendor` has due deliveries. The message carries ids only,
    never payloads; the pump claims due work itself (its own ids and any other due rows)."""
    from eventrelay.worker.engine.pump import get_pump
    from eventrelay.worker.vendors import VENDOR_CLASSES

    ids = decode_ids(delivery_ids)
    if not isinstance(vendor, str) or vendor not in VENDOR_CLASSES or ids is None or args or kwargs:
        # A malformed message can never succeed: drop it, keep the worker running.
        log.error(
            "dropping malformed deliver message (vendor=%r, ids=%.100r)", vendor, delivery_ids
        )
        return {"dropped": "malformed message"}
    pump = get_pump()
    claimed = pump.offer(vendor)
    # Shown by Flower: what the claim this message caused took (its own ids and topped-up
    # ones), and how busy the process is. Outcomes are in `eventrelay show` and the logs.
    return {
        "vendor": vendor,
        "offered": len(ids),
        "claimed": len(claimed),
        "delivery_ids": claimed,
        **pump.stats(),
    }


# Errors that say "the database or Redis is away", not "this message is bad": retried.
TRANSIENT_ERRORS = (OperationalError, InterfaceError, PoolTimeout, RedisError)
# The message is the jobs' only copy: retry through an outage of about half an hour (full
# jitter under a 30 s cap averages 15 s a try) rather than drop it.
INGEST_RETRY_BACKOFF_MAX_SECONDS = 30
INGEST_MAX_RETRIES = 120


@shared_task(bind=True, name=TASK_NAME_INGEST, ignore_result=True)
def ingest(self: Any, jobs: Any = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Validate and record jobs sent by a producer that has only Celery installed.

        celery_app.send_task("eventrelay.ingest", args=[[{"vendor": ..., "operation": ...,
                             "payload": {...}, "idempotency_key": ...}]], queue="eventrelay.ingest")

    Invalid jobs are refused whole (nothing stored) and logged with the reason; retrying
    cannot fix them, so the message is not retried. A database or Redis outage is retried with
    backoff; the same message recorded twice (a retry, a redelivery) stores its jobs once.
    """
    from celery.utils.time import get_exponential_backoff_interval

    from eventrelay.worker.errors import InvalidJob
    from eventrelay.worker.producer.api import enqueue_ingested

    if not isinstance(jobs, list) or args or kwargs:
        log.error("dropping malformed ingest message: expected one list of jobs")
        return {"error": "malformed message: expected one list of jobs"}
    try:
        receipts = enqueue_ingested(jobs, self.request.id)
    except InvalidJob as exc:
        log.error("refused ingested jobs: %s", exc)
        return exc.as_dict()
    except TRANSIENT_ERRORS as exc:
        countdown = get_exponential_backoff_interval(
            factor=1,
            retries=self.request.retries,
            maximum=INGEST_RETRY_BACKOFF_MAX_SECONDS,
            full_jitter=True,
        )
        # The retry is a new message: it must show a count in events and Flower, as the
        # producer's did (remote.send_jobs), not Celery's default repr of the payloads.
        raise self.retry(
            exc=exc,
            countdown=countdown,
            max_retries=INGEST_MAX_RETRIES,
            argsrepr=f"[<{len(jobs)} jobs>]",
            kwargsrepr="{}",
        ) from exc
    return {"receipts": [r.as_dict() for r in receipts]}
