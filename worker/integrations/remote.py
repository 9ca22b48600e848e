"""Send jobs to eventrelay from a process that has only Celery installed.

    from celery import Celery
    from eventrelay.worker.integrations.remote import job, send_jobs

    producer = Celery(broker="redis://broker:6379/0")
    send_jobs(producer, [job("vtcdn", "send_event", {...}, idempotency_key="signup-42")])

An eventrelay worker's `eventrelay.ingest` task validates the jobs, records them and publishes
them, as `worker.producer.enqueue_many` does. It is fire and forget: there is no receipt, and
a batch with any invalid job is refused whole (nothing stored) and logged by the worker.
Until a worker has recorded the message, the job lives only in the broker.

This file imports nothing of eventrelay or SQLAlchemy, and Celery only for type checking, so
a producer without eventrelay installed can copy it as it is. Imported from an installed
eventrelay (`eventrelay.worker.integrations.remote`) it is just as light: importing eventrelay
builds no Celery app, reads no setting and imports neither SQLAlchemy nor pydantic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

INGEST_TASK = "eventrelay.ingest"  # eventrelay.worker.fleet.queues.TASK_NAME_INGEST
INGEST_QUEUE = "eventrelay.ingest"  # eventrelay.worker.fleet.queues.INGEST_QUEUE


def job(
    vendor: str, operation: str, payload: Mapping[str, Any], idempotency_key: str | None = None
) -> dict[str, Any]:
    """One job, as the ingest task takes it."""
    return {
        "vendor": vendor,
        "operation": operation,
        "payload": dict(payload),
        "idempotency_key": idempotency_key,
    }


def send_jobs(celery_app: Celery, jobs: Iterable[Mapping[str, Any]]) -> Any:
    """Publish one ingest message carrying `jobs`; returns Celery's `AsyncResult`.

    The message is JSON whatever the producer app's default serializer: eventrelay's workers
    accept nothing else. Raises whatever Celery raises if the broker cannot be reached.

    The payloads travel in the message, through the broker (Redis), until a worker records
    them. Task events, and so Flower, show only their count (`argsrepr`), not the payloads.
    """
    batch = [dict(j) for j in jobs]
    return celery_app.send_task(
        INGEST_TASK,
        args=[batch],
        queue=INGEST_QUEUE,
        serializer="json",
        argsrepr=f"[<{len(batch)} jobs>]",
        kwargsrepr="{}",
    )


__all__ = ["INGEST_QUEUE", "INGEST_TASK", "job", "send_jobs"]
