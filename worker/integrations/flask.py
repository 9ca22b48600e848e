"""Enqueue jobs from a Flask app that uses Flask-SQLAlchemy (or any SQLAlchemy session).

    from eventrelay.worker.integrations.flask import eventrelay_enqueue

    @app.post("/orders")
    def create_order():
        db.session.add(order := Order(...))
        eventrelay_enqueue(db.session, "vtcdn", "send_event", {...})
        db.session.commit()    # the order and the job commit together, then the job is published

**Same database** (`eventrelay_enqueue`, `eventrelay_enqueue_many`): the job rows are written
on the session's own connection (`session.connection()`), so they commit or roll back with the
app's rows, including a rolled-back `begin_nested()` savepoint. Publishing waits for the
session's commit (its `after_commit` event); if the process dies before that, the scheduler
publishes the job. The session's default bind must be the database eventrelay's workers use
(`EVENTRELAY_DATABASE_URL`).

**Separate databases** (`enqueue_after_commit`, `enqueue_many_after_commit`): jobs are
validated at once and given to `worker.producer.enqueue_many` after the session commits. A
crash between the two loses the job; use the same database to avoid it. An error in that late
enqueue is logged (logger `eventrelay.integrations`), not raised: SQLAlchemy's `after_commit`
hook cannot raise without leaving the session half-closed, and the app's rows are committed.
"""

from __future__ import annotations

import copy
import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, scoped_session

from eventrelay.worker.integrations import job_dict, prepare_jobs

if TYPE_CHECKING:
    from eventrelay.worker.producer import Receipt

log = logging.getLogger("eventrelay.integrations")

_PENDING = "eventrelay.after_commit"  # key in `Session.info`: [(transaction, callback)]

AnySession = Session | scoped_session[Any]


def eventrelay_enqueue(
    session: AnySession,
    vendor: str,
    operation: str,
    payload: Mapping[str, Any],
    idempotency_key: str | None = None,
) -> Receipt:
    """Write one job in the session's transaction; publish it after the session commits.

    Raises:
        InvalidJob: the job is bad; nothing is written.
    """
    return eventrelay_enqueue_many(
        session, [job_dict(vendor, operation, payload, idempotency_key)]
    )[0]


def eventrelay_enqueue_many(
    session: AnySession, jobs: Iterable[Mapping[str, Any]]
) -> list[Receipt]:
    """Write jobs in the session's transaction (all or nothing); publish after it commits."""
    from eventrelay.worker.producer import publish_after_commit, record_jobs

    prepared = prepare_jobs(jobs)
    if not prepared:
        return []
    real = _session(session)
    receipts, to_publish = record_jobs(real.connection(), prepared)
    if to_publish:
        _after_commit(real, functools.partial(publish_after_commit, to_publish))
    return receipts


def enqueue_after_commit(
    session: AnySession,
    vendor: str,
    operation: str,
    payload: Mapping[str, Any],
    idempotency_key: str | None = None,
) -> None:
    """Validate one job now; `worker.producer.enqueue` it after the session commits.

    For apps whose database is not eventrelay's. Nothing happens if the session rolls back.
    With no transaction in progress there is nothing to wait for: the job is enqueued at once.
    """
    enqueue_many_after_commit(session, [job_dict(vendor, operation, payload, idempotency_key)])


def enqueue_many_after_commit(session: AnySession, jobs: Iterable[Mapping[str, Any]]) -> None:
    """Validate jobs now (raises `InvalidJob`); enqueue them all after the session commits."""
    from eventrelay.worker.producer import enqueue_many

    jobs = list(jobs)
    prepare_jobs(jobs)
    # A copy: the app may change its dicts before the commit; the job is what was validated.
    checked = copy.deepcopy([dict(job) for job in jobs])
    if not checked:
        return
    real = _session(session)
    if not real.in_transaction():
        enqueue_many(checked)
        return
    _after_commit(real, functools.partial(enqueue_many, checked))


def _session(session: AnySession) -> Session:
    # Flask-SQLAlchemy's `db.session` is a scoped_session; events need the Session itself.
    return session() if isinstance(session, scoped_session) else session


def _after_commit(session: Session, callback: Callable[[], Any]) -> None:
    """Run `callback` once the session's outermost transaction commits; drop it on rollback.

    Tied to the innermost transaction open now, so rolling back a `begin_nested()` savepoint
    drops what was deferred inside it, while the rest still runs at the commit.
    """
    here = session.get_nested_transaction() or session.get_transaction()
    session.info.setdefault(_PENDING, []).append((here, callback))
    if not event.contains(session, "after_commit", _run_pending):
        event.listen(session, "after_commit", _run_pending)
        event.listen(session, "after_soft_rollback", _drop_rolled_back)
        event.listen(session, "after_transaction_end", _drop_at_end)


def _run_pending(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        # SQLAlchemy fires after_commit for a released savepoint too; that is not the commit.
        return
    pending = session.info.pop(_PENDING, [])
    for _, callback in pending:
        try:
            callback()
        except Exception:
            # The app's transaction is committed; raising here would leave the session
            # half-closed. publish_after_commit never raises; a late enqueue_many may.
            log.exception("eventrelay: could not enqueue after commit")


def _drop_rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    pending = session.info.get(_PENDING)
    if pending:
        pending[:] = [
            (trans, cb) for trans, cb in pending if not _within(trans, previous_transaction)
        ]


def _drop_at_end(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended without `after_commit` (closed or rolled back).
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def _within(trans: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while trans is not None:
        if trans is ancestor:
            return True
        trans = trans.parent
    return False


__all__ = [
    "eventrelay_enqueue",
    "eventrelay_enqueue_many",
    "enqueue_after_commit",
    "enqueue_many_after_commit",
]
