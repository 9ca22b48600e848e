"""Celery tasks: thin. Decode the message, call plain functions, publish what follows."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from worker.batch import process_batch
from worker.celery_app import TASK_NAME_DELIVER, TASK_NAME_INGEST, app
from worker.config import get_settings
from worker.publish import publish_many

log = logging.getLogger("eventrelay.worker")


def decode_ids(raw: Any) -> list[uuid.UUID] | None:
    """Delivery ids from a message, or None if the message is malformed."""
    if not isinstance(raw, list) or not raw:
        return None
    try:
        return [uuid.UUID(str(i)) for i in raw]
    except (ValueError, TypeError, AttributeError):
        return None


@app.task(
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
    vendor: Any = None, delivery_ids: Any = None, *args: Any, **kwargs: Any
) -> dict[str, Any]:
    """Deliver some of `vendor`'s deliveries. The message carries ids only, never payloads."""
    from worker.vendors import VENDOR_CLASSES

    ids = decode_ids(delivery_ids)
    if not isinstance(vendor, str) or vendor not in VENDOR_CLASSES or ids is None or args or kwargs:
        # A malformed message can never succeed: drop it, keep the worker running.
        log.error(
            "dropping malformed deliver message (vendor=%r, ids=%.100r)", vendor, delivery_ids
        )
        return {"dropped": "malformed message"}
    size = get_settings().batch_size
    totals: dict[str, Any] = {"vendor": vendor}
    for start in range(0, len(ids), size):
        summary = process_batch(vendor, ids[start : start + size])
        if summary.woken:
            publish_many(summary.woken)
        for key, value in summary.as_dict().items():
            if key != "vendor":
                totals[key] = totals.get(key, 0) + value
    return totals


@app.task(name=TASK_NAME_INGEST, ignore_result=True)
def ingest(jobs: Any = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Validate and record jobs sent by a producer that has only Celery installed.

        celery_app.send_task("eventrelay.ingest", args=[[{"vendor": ..., "operation": ...,
                             "payload": {...}, "idempotency_key": ...}]], queue="eventrelay.ingest")

    Invalid jobs are refused whole (nothing stored) and logged with the reason; retrying
    cannot fix them, so the message is not retried.
    """
    from worker.errors import InvalidJob
    from worker.producer import enqueue_many

    if not isinstance(jobs, list) or args or kwargs:
        log.error("dropping malformed ingest message: expected one list of jobs")
        return {"error": "malformed message: expected one list of jobs"}
    try:
        receipts = enqueue_many(jobs)
    except InvalidJob as exc:
        log.error("refused ingested jobs: %s", exc)
        return exc.as_dict()
    return {"receipts": [r.as_dict() for r in receipts]}
