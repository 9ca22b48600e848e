"""The producer API: validate, record durably, then publish.

    from eventrelay import enqueue
    receipt = enqueue("botsi", "send_event", {...}, idempotency_key="order-42")

A job is validated before anything is stored; an invalid one raises `InvalidJob` and stores
nothing. Once `enqueue` returns, the job is committed to the database (a transactional outbox):
if the broker is down at that moment the scheduler publishes it later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from eventrelay.models.session import get_engine
from eventrelay.worker.config import get_settings
from eventrelay.worker.producer.outbox import Receipt, record_jobs
from eventrelay.worker.producer.publish import publish_after_commit
from eventrelay.worker.producer.validate import prepare_jobs


def enqueue(
    vendor: str, operation: str, payload: Mapping[str, Any], idempotency_key: str | None = None
) -> Receipt:
    """Validate, record and publish one job. Raises `InvalidJob` (nothing stored) if it is bad."""
    return enqueue_many(
        [
            {
                "vendor": vendor,
                "operation": operation,
                "payload": payload,
                "idempotency_key": idempotency_key,
            }
        ]
    )[0]


def enqueue_many(jobs: Iterable[Mapping[str, Any]]) -> list[Receipt]:
    """Validate every job, then record them all in one transaction and publish.

    If any job is invalid, `InvalidJob` (with `.index`) is raised and nothing is stored.
    """
    settings = get_settings()
    prepared = prepare_jobs(jobs, settings)
    if not prepared:
        return []
    with get_engine().begin() as conn:
        receipts, to_publish = record_jobs(conn, prepared, settings)
    publish_after_commit(to_publish)
    return receipts
