"""The outbox a test sees: every job the code under test enqueued and committed.

The jobs are read from eventrelay's own tables, so what the outbox holds is what a worker
would deliver: a rolled-back transaction left no row and captures nothing; a duplicate (same
idempotency key, a second vtcdn confirmation of an order) is one job; a throttled vtcdn
`email_open` is there, `suppressed`. Publishing is replaced by the outbox (the producer's
`publish.capture` seam), so nothing needs Redis or a worker.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from eventrelay.testing.answers import Script
    from eventrelay.testing.delivering import DrainReport
    from eventrelay.worker.producer import Receipt

DATABASE_ENV = "EVENTRELAY_DATABASE_URL"
_MISSING = object()


@dataclass(frozen=True)
class CapturedJob:
    """One enqueued job, as stored (the payload after the vendor's normalisation)."""

    delivery_id: uuid.UUID
    vendor: str
    operation: str
    payload: dict[str, Any]
    idempotency_key: str | None
    status: str  # pending, suppressed (or delivered, dead once drained)
    reason: str | None
    attempts: int = 0

    def matches(
        self,
        vendor: str | None = None,
        operation: str | None = None,
        payload: Mapping[str, Any] | None = None,
        idempotency_key: Any = _MISSING,
    ) -> bool:
        """Whether this job is to `vendor`/`operation` and its payload contains `payload`
        (a subset: nested objects compared key by key, lists element by element)."""
        return (
            (vendor is None or self.vendor == vendor)
            and (operation is None or self.operation == operation)
            and (payload is None or contains(self.payload, payload))
            and (idempotency_key is _MISSING or self.idempotency_key == idempotency_key)
        )

    def __str__(self) -> str:
        key = f" idempotency_key={self.idempotency_key!r}" if self.idempotency_key else ""
        state = self.status + (f": {self.reason}" if self.reason else "")
        return f"{self.vendor} {self.operation} {_json(self.payload)}{key} [{state}]"


def contains(actual: Any, expected: Any) -> bool:
    """`expected` is a part of `actual`: dicts by their keys, lists of the same length item by
    item, anything else by equality."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and contains(actual[k], v) for k, v in expected.items()
        )
    if isinstance(expected, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(actual) == len(expected)
            and all(contains(a, e) for a, e in zip(actual, expected, strict=True))
        )
    return bool(actual == expected)


class Outbox(Sequence[CapturedJob]):
    """The jobs enqueued during this test, oldest first (a list, like anymail's
    `mail.outbox`), with assertion helpers and `drain()`."""

    def __init__(self, database_url: str) -> None:
        #: The database eventrelay writes to in this test; give it to an app that enqueues
        #: in its own transaction (Flask-SQLAlchemy, `record_jobs`) on the same database.
        self.database_url = database_url
        #: Delivery ids producers would have published, in order (the broker's view).
        self.published: list[uuid.UUID] = []
        self._lock = threading.Lock()

    # ---- the list -----------------------------------------------------------------------

    @property
    def jobs(self) -> list[CapturedJob]:
        """What is in the outbox now, read from the database (committed jobs only)."""
        from sqlalchemy import Text, cast, select

        from eventrelay.models.delivery import DELIVERIES as D
        from eventrelay.models.session import get_engine

        with get_engine().connect() as conn:
            rows = conn.execute(
                select(
                    D.c.id,
                    D.c.vendor,
                    D.c.operation,
                    cast(D.c.payload, Text),
                    D.c.idempotency_key,
                    D.c.status,
                    D.c.reason,
                    D.c.attempts,
                ).order_by(D.c.created_at, D.c.id)
            ).all()
        return [
            CapturedJob(r[0], r[1], r[2], json.loads(r[3]), r[4], str(r[5]), r[6], r[7])
            for r in rows
        ]

    @overload
    def __getitem__(self, index: int) -> CapturedJob: ...
    @overload
    def __getitem__(self, index: slice) -> list[CapturedJob]: ...
    def __getitem__(self, index: int | slice) -> CapturedJob | list[CapturedJob]:
        return self.jobs[index]

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[CapturedJob]:
        return iter(self.jobs)

    def __repr__(self) -> str:
        return f"<eventrelay outbox: {describe(self.jobs)}>"

    def __eq__(self, other: object) -> bool:
        # `assert eventrelay_outbox == []`, as with anymail's `mail.outbox`.
        if isinstance(other, list | tuple):
            return self.jobs == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    # ---- assertions ---------------------------------------------------------------------

    def find(
        self,
        vendor: str | None = None,
        operation: str | None = None,
        payload: Mapping[str, Any] | None = None,
        idempotency_key: Any = _MISSING,
    ) -> list[CapturedJob]:
        """The jobs to `vendor`/`operation` whose payload contains `payload` (see `contains`)."""
        return [j for j in self.jobs if j.matches(vendor, operation, payload, idempotency_key)]

    def assert_enqueued(
        self,
        vendor: str | None = None,
        operation: str | None = None,
        payload: Mapping[str, Any] | None = None,
        *,
        idempotency_key: Any = _MISSING,
        count: int = 1,
    ) -> CapturedJob:
        """Exactly `count` such jobs were enqueued; returns the first. The failure says what was
        expected and lists every job that was enqueued."""
        __tracebackhide__ = True
        jobs = self.jobs
        found = [j for j in jobs if j.matches(vendor, operation, payload, idempotency_key)]
        if len(found) != count:
            wanted = _wanted(vendor, operation, payload, idempotency_key)
            raise AssertionError(
                f"expected {count} job(s) {wanted}, found {len(found)}; {describe(jobs)}"
            )
        return found[0]

    def assert_not_enqueued(
        self,
        vendor: str | None = None,
        operation: str | None = None,
        payload: Mapping[str, Any] | None = None,
        *,
        idempotency_key: Any = _MISSING,
    ) -> None:
        """No such job was enqueued (with no arguments: nothing at all)."""
        __tracebackhide__ = True
        jobs = self.jobs
        found = [j for j in jobs if j.matches(vendor, operation, payload, idempotency_key)]
        if found:
            wanted = _wanted(vendor, operation, payload, idempotency_key)
            raise AssertionError(f"expected no job {wanted}, found {len(found)}; {describe(jobs)}")

    def job_of(self, receipt: Receipt | uuid.UUID | str) -> CapturedJob:
        """The job an `enqueue` receipt (or a delivery id) names."""
        wanted = getattr(receipt, "delivery_id", receipt)
        wanted = wanted if isinstance(wanted, uuid.UUID) else uuid.UUID(str(wanted))
        jobs = self.jobs
        for job in jobs:
            if job.delivery_id == wanted:
                return job
        raise AssertionError(f"no job with delivery id {wanted}; {describe(jobs)}")

    # ---- the rest -----------------------------------------------------------------------

    def drain(
        self, answers: Mapping[str, Script] | None = None, *, max_rounds: int = 200
    ) -> DrainReport:
        """Deliver the jobs in this process against scripted answers (see `delivering.drain`)."""
        from eventrelay.testing.delivering import drain

        return drain(self, answers, max_rounds=max_rounds)

    def clear(self) -> None:
        """Forget every job (and idempotency key, throttle window, Botsi profile) so far."""
        from eventrelay.models.session import get_engine

        with get_engine().begin() as conn:
            _empty_tables(conn)
        with self._lock:
            self.published.clear()

    def _captured(self, rows: Sequence[tuple[uuid.UUID, str, Any]]) -> None:
        with self._lock:
            self.published.extend(r[0] for r in rows)


def describe(jobs: Sequence[CapturedJob]) -> str:
    if not jobs:
        return "nothing was enqueued"
    lines = "\n".join(f"  {n}. {job}" for n, job in enumerate(jobs, 1))
    return f"enqueued ({len(jobs)}):\n{lines}"


def _wanted(
    vendor: str | None, operation: str | None, payload: Mapping[str, Any] | None, key: Any
) -> str:
    parts = [vendor or "any vendor", operation or "any operation"]
    if payload is not None:
        parts.append(f"with payload containing {_json(payload)}")
    if key is not _MISSING:
        parts.append(f"idempotency_key={key!r}")
    return "to " + " ".join(parts)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


# ---- the database and the seam --------------------------------------------------------------

_schema_ready: set[tuple[int, str]] = set()
_schema_lock = threading.Lock()


@contextmanager
def open_outbox(kit_folder: Path) -> Iterator[Outbox]:
    """Point eventrelay at the app's test database (EVENTRELAY_DATABASE_URL), or at a SQLite
    file of the kit's own in `kit_folder`; empty eventrelay's tables; capture what producers
    publish. Everything is put back afterwards."""
    from eventrelay.models.session import get_engine, reset_engine
    from eventrelay.testing.delivering import set_current
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.producer import publish
    from eventrelay.worker.producer.broker import pause

    given = os.environ.get(DATABASE_ENV)
    url = given or f"sqlite:///{kit_folder / 'eventrelay.db'}"
    if not given:
        os.environ[DATABASE_ENV] = url
    # Settings and engines may have been made with another database before this test.
    get_settings.cache_clear()
    reset_engine()
    previous_capture = publish.capture
    try:
        if not given:
            _throwaway(get_engine())
        _ensure_schema(url, made_here=not given)
        _load_worker()
        outbox = Outbox(url)
        with get_engine().begin() as conn:
            _empty_tables(conn)
        pause.succeeded()  # a broker failure before this test must not change what it sees
        publish.capture = outbox._captured
        set_current(outbox)
        yield outbox
    finally:
        set_current(None)
        publish.capture = previous_capture
        if not given:
            os.environ.pop(DATABASE_ENV, None)
        get_settings.cache_clear()
        reset_engine()


def load_everything() -> None:
    """Every module the fixture and drain() may import, on either database."""
    import sqlalchemy.dialects.postgresql.psycopg  # noqa: F401
    import sqlalchemy.dialects.sqlite.pysqlite  # noqa: F401

    import eventrelay.models  # noqa: F401
    import eventrelay.models.session  # noqa: F401
    import eventrelay.testing.answers  # noqa: F401
    import eventrelay.testing.delivering  # noqa: F401
    import eventrelay.worker.ops.migrate  # noqa: F401

    _load_worker()


def _load_worker() -> None:
    """Import what producers and drain() use, and read the vendors' entry points, in the
    fixture's setup: once per process, ~0.3 s that would otherwise land in the first test."""
    import eventrelay.worker.engine.pump.recorder  # noqa: F401
    import eventrelay.worker.engine.pump.request  # noqa: F401
    import eventrelay.worker.producer  # noqa: F401
    from eventrelay.worker.vendors import vendor_names

    vendor_names()


def _throwaway(engine: Any) -> None:
    """The kit's own SQLite file lives for one test run: no fsync per commit (eventrelay's
    default, FULL, is for jobs that must survive a power loss; 50 retries took 1.6 s)."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_sync(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=OFF")
        cur.close()


def _ensure_schema(url: str, made_here: bool) -> None:
    """The schema: the kit's own SQLite file is made from the models (70 ms; Alembic's
    revisions take 3 s, and a unit test holds models = migrations); the app's test database is
    migrated as `eventrelay migrate` would, once per process."""
    __tracebackhide__ = True  # pytest would print `url`, and a URL may carry a password
    key = (os.getpid(), url)
    with _schema_lock:
        if made_here:
            # Every time (a few ms when the tables are there): pytest may have emptied its
            # temporary folder since, as each in-process pytester run does.
            import eventrelay.models  # noqa: F401 (every table registers with the metadata)
            from eventrelay.models.base import Base
            from eventrelay.models.session import get_engine

            Base.metadata.create_all(get_engine(url))
            return
        if key in _schema_ready:
            return
        from sqlalchemy.exc import OperationalError

        from eventrelay.worker.ops.migrate import upgrade

        try:
            upgrade(url)
        except OperationalError as exc:
            # Never the URL itself: it may carry a password.
            first = (str(exc.orig or exc).strip().splitlines() or [""])[0]
            raise RuntimeError(
                f"eventrelay_outbox: the database {DATABASE_ENV} names cannot be reached "
                f"({first}); point it at your test database, or unset it to use a SQLite "
                "file of the kit's own"
            ) from None
        _schema_ready.add(key)


def _empty_tables(conn: Any) -> None:
    from sqlalchemy import delete

    from eventrelay.models.base import Base

    for table in reversed(Base.metadata.sorted_tables):
        conn.execute(delete(table))
