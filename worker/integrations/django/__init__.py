"""Enqueue jobs from a Django app, inside its own `transaction.atomic()` blocks; and the
operator's console in Django's admin.

**The admin** (this package is also a Django app, label `eventrelay`):

    INSTALLED_APPS += ["eventrelay.worker.integrations.django"]

gives `/admin/eventrelay/delivery/`, `/admin/eventrelay/deadletter/` (actions `replay` and
`purge`) and `/admin/eventrelay/vendor/` (park, resume), read-only otherwise; see `admin.py`.
Its models are unmanaged views of eventrelay's own tables: Django never migrates them.

**Enqueueing:**

    from django.db import transaction
    from eventrelay.worker.integrations.django import enqueue

    with transaction.atomic():
        order = Order.objects.create(...)
        enqueue("vtcdn", "send_event", {...}, idempotency_key=f"order-{order.pk}")

**Same database** (`enqueue`, `enqueue_many`): the job rows are written through Django's own
database connection, in Django's current transaction, so they commit or roll back with the
app's rows. The job is published from `transaction.on_commit`; if the process dies before
that, the scheduler publishes it. Needs `django.db.backends.postgresql` with psycopg 3, on the
database eventrelay's workers use (`EVENTRELAY_DATABASE_URL`).

How the write joins Django's transaction: eventrelay's SQL is built by SQLAlchemy, so it runs
on a SQLAlchemy engine whose only connection is Django's psycopg connection, wrapped so that
SQLAlchemy can run statements on it but can never end Django's transaction or close the
connection. That wrapper matters: SQLAlchemy rolls a connection back when it first connects
(dialect initialisation) and again whenever it releases one; on Django's raw connection either
would silently undo the app's uncommitted rows. Django alone commits or rolls back.

**Separate databases** (`enqueue_on_commit`, `enqueue_many_on_commit`): the jobs are validated
at once and given to `worker.producer.enqueue_many` from `transaction.on_commit`. A crash
between the app's commit and that call loses the job; use the same database to avoid it.
"""

from __future__ import annotations

import copy
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from django.db import connections, transaction

from eventrelay.worker.errors import ConfigurationError, InvalidJob
from eventrelay.worker.integrations import job_dict, prepare_jobs

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from eventrelay.worker.producer import Receipt

_lock = threading.Lock()
_engines: dict[str, Engine] = {}


class _DjangoOwnedConnection:
    """Django's psycopg connection as SQLAlchemy sees it: statements yes, endings no.

    SQLAlchemy calls `rollback()` when it first connects and when it releases a connection,
    and `close()` when its pool lets go; here both leave Django's transaction and connection
    alone. `commit()` is refused: only Django commits. Django's psycopg adapters stay in force
    (jsonb loads as text), which is fine: `record_jobs` reads no JSON column.
    """

    def __init__(self, raw: Any) -> None:
        self._raw = raw

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        return self._raw.cursor(*args, **kwargs)

    def commit(self) -> NoReturn:
        raise RuntimeError("eventrelay never commits Django's transaction; Django does")

    def rollback(self) -> None:
        # A failed statement still fails the caller's atomic block, which Django rolls back.
        return None

    def close(self) -> None:
        return None

    def add_notice_handler(self, _handler: Callable[..., Any]) -> None:
        # SQLAlchemy adds one per checkout; on a long-lived Django connection they would pile up.
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _django_connection(using: str) -> Any:
    conn = connections[using]
    driver = getattr(getattr(conn, "Database", None), "__name__", None)
    if conn.vendor != "postgresql" or driver != "psycopg":
        raise ConfigurationError(
            f"eventrelay's same-database enqueue needs Django database {using!r} to use "
            "django.db.backends.postgresql with psycopg 3 installed "
            f"(it uses {conn.vendor!r} with {driver!r}); use enqueue_on_commit otherwise"
        )
    return conn


def _engine(using: str) -> Engine:
    """A SQLAlchemy engine whose connection, in each thread, is that thread's Django one."""
    with _lock:
        engine = _engines.get(using)
        if engine is None:
            from sqlalchemy import create_engine
            from sqlalchemy.pool import NullPool

            def borrow() -> Any:
                conn = _django_connection(using)
                conn.ensure_connection()
                return _DjangoOwnedConnection(conn.connection)

            engine = create_engine(
                "postgresql+psycopg://",
                creator=borrow,
                # NullPool: the connection is borrowed per use, never cached across Django's
                # reconnects or threads (Django's connections are per thread).
                poolclass=NullPool,
                pool_reset_on_return=None,
                # hstore lookup would need psycopg's own connection type; eventrelay has none.
                use_native_hstore=False,
                # A failing statement's parameters are payloads: keep them out of its error.
                hide_parameters=True,
            )
            _engines[using] = engine
        return engine


def enqueue(
    vendor: str,
    operation: str,
    payload: Mapping[str, Any],
    idempotency_key: str | None = None,
    using: str = "default",
) -> Receipt:
    """Write one job in Django's current transaction; publish it once that commits.

    Outside any `atomic()` block the job is committed at once, like `worker.producer.enqueue`.

    Raises:
        InvalidJob: the job is bad; nothing is stored.
        ConfigurationError: database `using` is not PostgreSQL with psycopg 3.
    """
    return enqueue_many([job_dict(vendor, operation, payload, idempotency_key)], using=using)[0]


def enqueue_many(jobs: Iterable[Mapping[str, Any]], using: str = "default") -> list[Receipt]:
    """Write jobs in Django's current transaction (all or nothing); publish after commit."""
    from eventrelay.worker.producer import publish_after_commit, record_jobs

    prepared = prepare_jobs(jobs)
    if not prepared:
        return []
    connection = _django_connection(using)
    refused: InvalidJob | None = None
    # savepoint=False: a failure marks the caller's block for rollback, as Django's own
    # multi-statement saves do; outside any block this is the transaction and commits here.
    with transaction.atomic(using=using, savepoint=False):
        # The same TransactionManagementError Django's ORM raises after an error in the block.
        connection.validate_no_broken_transaction()
        with _engine(using).connect() as conn:
            try:
                receipts, to_publish = record_jobs(conn, prepared)
            except InvalidJob as exc:
                # record_jobs took back what it wrote: the app's transaction is intact, so the
                # refusal is raised outside the block, which would otherwise be marked broken.
                refused = exc
        if refused is None and to_publish:
            transaction.on_commit(functools.partial(publish_after_commit, to_publish), using=using)
    if refused is not None:
        raise refused
    return receipts


def enqueue_on_commit(
    vendor: str,
    operation: str,
    payload: Mapping[str, Any],
    idempotency_key: str | None = None,
    using: str = "default",
) -> None:
    """Validate one job now; `worker.producer.enqueue` it after Django's transaction commits.

    For apps whose database is not eventrelay's. Nothing happens if the transaction rolls
    back. An error while enqueueing after the commit propagates, as Django's `on_commit` does.
    """
    enqueue_many_on_commit([job_dict(vendor, operation, payload, idempotency_key)], using=using)


def enqueue_many_on_commit(jobs: Iterable[Mapping[str, Any]], using: str = "default") -> None:
    """Validate jobs now (raises `InvalidJob`); enqueue them all after Django commits."""
    from eventrelay.worker.producer import enqueue_many as enqueue_now

    jobs = list(jobs)
    prepare_jobs(jobs)
    # A copy: the app may change its dicts before the commit; the job is what was validated.
    checked = copy.deepcopy([dict(job) for job in jobs])
    if checked:
        transaction.on_commit(functools.partial(enqueue_now, checked), using=using)


__all__ = ["enqueue", "enqueue_many", "enqueue_on_commit", "enqueue_many_on_commit"]
