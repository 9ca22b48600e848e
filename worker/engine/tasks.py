"""Celery tasks: thin. Decode the message, call plain functions, publish what follows."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import shared_task
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from eventrelay.models.delivery import Lane
from eventrelay.worker.config import get_settings
from eventrelay.worker.engine.batch import best_effort, process_batch
from eventrelay.worker.fleet import doorbell
from eventrelay.worker.fleet.queues import TASK_NAME_DELIVER, TASK_NAME_INGEST, queue_name
from eventrelay.worker.producer.publish import chunked, publish, publish_many

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
    """Deliver some of `vendor`'s deliveries. The message carries ids only, never payloads."""
    from eventrelay.worker.vendors import VENDOR_CLASSES

    ids = decode_ids(delivery_ids)
    if not isinstance(vendor, str) or vendor not in VENDOR_CLASSES or ids is None or args or kwargs:
        # A malformed message can never succeed: drop it, keep the worker running.
        log.error(
            "dropping malformed deliver message (vendor=%r, ids=%.100r)", vendor, delivery_ids
        )
        return {"dropped": "malformed message"}
    settings = get_settings()
    fresh = (self.request.delivery_info or {}).get("routing_key") == queue_name(vendor, Lane.FRESH)
    redis_url = settings.effective_redis_url
    if fresh and redis_url:
        best_effort("answer the doorbell", doorbell.answer, vendor, redis_url)
    size = settings.batch_size
    totals: dict[str, Any] = {"vendor": vendor}
    summary = None
    for chunk in chunked(ids, size):
        summary = process_batch(vendor, chunk, top_up=fresh)
        if summary.woken:
            publish_many(summary.woken)
        for key, value in summary.as_dict().items():
            if isinstance(value, list):
                totals[key] = totals.get(key, []) + value
            elif key != "vendor":
                totals[key] = totals.get(key, 0) + value
    # A full topped-up batch: more fresh deliveries are due than one batch holds; keep draining.
    more_due = summary is not None and summary.batch_full and redis_url
    if more_due and best_effort("ring the doorbell", doorbell.ring, vendor, redis_url):
        publish(vendor, Lane.FRESH, [])
    return totals


@shared_task(name=TASK_NAME_INGEST, ignore_result=True)
def ingest(jobs: Any = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Validate and record jobs sent by a producer that has only Celery installed.

        celery_app.send_task("eventrelay.ingest", args=[[{"vendor": ..., "operation": ...,
                             "payload": {...}, "idempotency_key": ...}]], queue="eventrelay.ingest")

    Invalid jobs are refused whole (nothing stored) and logged with the reason; retrying
    cannot fix them, so the message is not retried.
    """
    from eventrelay.worker.errors import InvalidJob
    from eventrelay.worker.producer import enqueue_many

    if not isinstance(jobs, list) or args or kwargs:
        log.error("dropping malformed ingest message: expected one list of jobs")
        return {"error": "malformed message: expected one list of jobs"}
    try:
        receipts = enqueue_many(jobs)
    except InvalidJob as exc:
        log.error("refused ingested jobs: %s", exc)
        return exc.as_dict()
    return {"receipts": [r.as_dict() for r in receipts]}
