"""The producer API: validate, record durably, then publish.

    from eventrelay import enqueue
    receipt = enqueue("botsi", "send_event", {...}, idempotency_key="order-42")

A job is validated before anything is stored; an invalid one raises `InvalidJob` and stores
nothing. Once `enqueue` returns, the job is committed to the database (a transactional outbox):
if the broker is down at that moment the scheduler publishes it later.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from eventrelay.models.session import get_engine
from eventrelay.worker.config import Settings, get_settings
from eventrelay.worker.producer.outbox import Receipt, record_jobs
from eventrelay.worker.producer.publish import publish_after_commit
from eventrelay.worker.producer.storable import text_problem
from eventrelay.worker.producer.validate import MAX_KEY_CHARS, prepare_jobs
from eventrelay.worker.vendors.base import PreparedJob


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
    return _record_and_publish(prepare_jobs(jobs, settings), settings)


def enqueue_ingested(jobs: Iterable[Mapping[str, Any]], message_id: str | None) -> list[Receipt]:
    """`enqueue_many` for the jobs of one ingest message (`eventrelay.ingest`).

    A broker delivers a message again when its worker died before acknowledging it, and a
    retried task keeps its id: a job with no key of its own (given, or derived by a vendor
    rule) gets one made of the message id and its place in the message, so the jobs of a
    message are recorded once however often it runs.
    """
    settings = get_settings()
    prepared = prepare_jobs(jobs, settings)
    if message_id:
        prepared = [
            job
            if job.idempotency_key is not None
            else dataclasses.replace(job, idempotency_key=ingest_key(message_id, i))
            for i, job in enumerate(prepared)
        ]
    return _record_and_publish(prepared, settings)


def ingest_key(message_id: str, index: int) -> str:
    """`ingest:<message id>:<index>`; the id hashed if it would not fit or not store."""
    key = f"ingest:{message_id}:{index}"
    if len(key) > MAX_KEY_CHARS or text_problem(message_id):
        digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()
        key = f"ingest:{digest}:{index}"
    return key


def _record_and_publish(prepared: Sequence[PreparedJob], settings: Settings) -> list[Receipt]:
    if not prepared:
        return []
    with get_engine().begin() as conn:
        receipts, to_publish = record_jobs(conn, prepared, settings)
    publish_after_commit(to_publish)
    return receipts
