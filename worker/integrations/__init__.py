"""Producers inside web apps: Django, Flask, and processes that have only Celery.

Three ways in, from strongest to weakest guarantee:

* **Same database** (`worker.integrations.django.enqueue`,
  `worker.integrations.flask.eventrelay_enqueue`): the job row is written in the app's own
  transaction, so it commits or rolls back with the app's rows (a transactional outbox). It is
  published once that transaction has committed; if the process dies in between, the
  scheduler publishes it.
* **Separate databases** (`...django.enqueue_on_commit`, `...flask.enqueue_after_commit`):
  the job is validated at once and handed to `worker.producer.enqueue` after the app's
  transaction commits. A crash between the two loses the job: prefer the same database.
* **Remote** (`worker.integrations.remote.send_jobs`): only Celery is installed; the worker's
  `eventrelay.ingest` task validates and records the jobs.

This package imports nothing at import time, so `remote` stays light.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventrelay.worker.vendors.base import PreparedJob


def job_dict(
    vendor: str, operation: str, payload: Mapping[str, Any], idempotency_key: str | None = None
) -> dict[str, Any]:
    """One job in the shape `enqueue_many` and the ingest task take."""
    return {
        "vendor": vendor,
        "operation": operation,
        "payload": payload,
        "idempotency_key": idempotency_key,
    }


def prepare_jobs(jobs: Iterable[Mapping[str, Any]]) -> list[PreparedJob]:
    """Validate every job before anything is stored.

    Raises:
        InvalidJob: listing every problem, with `.index` naming the job; nothing is stored.
    """
    from eventrelay.worker.producer.validate import prepare_jobs as validate_all

    return validate_all(jobs)


__all__ = ["job_dict", "prepare_jobs"]
