"""Producers: validate a job at the door, write it to the outbox, publish it.

    validate.py   refuse bad input before anything is stored
    storable.py   strings the database and the requests can take (no NUL, valid Unicode)
    outbox.py     the delivery rows, idempotency keys and ordering, in the caller's transaction
    publish.py    messages to the vendor queues (ids only), by task name
    broker.py     the producer never waits for Redis: short timeouts, a pause after a failure
    api.py        `enqueue` / `enqueue_many`: the three in a row
"""

from __future__ import annotations

from eventrelay.worker.errors import EventRelayError, InvalidJob
from eventrelay.worker.producer.api import enqueue, enqueue_many
from eventrelay.worker.producer.outbox import Receipt, record_jobs
from eventrelay.worker.producer.publish import publish_after_commit
from eventrelay.worker.producer.validate import prepare_jobs, validate_job

__all__ = [
    "EventRelayError",
    "InvalidJob",
    "Receipt",
    "enqueue",
    "enqueue_many",
    "prepare_jobs",
    "publish_after_commit",
    "record_jobs",
    "validate_job",
]
