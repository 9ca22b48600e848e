"""Engines and sessions, one engine per process.

Pooled connections must never cross `fork()` (SQLAlchemy pooling docs): the engine remembers
the pid that made it and a forked child builds its own. Celery's `worker_process_init` also
calls `reset_engine()`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event

_lock = threading.Lock()
_engines: dict[str, tuple[int, Engine]] = {}
# Producers (web apps) ping a pooled connection before use, so a database restart never
# surfaces as an error in a request. Workers turn it off (`worker_process_init`): every batch
# already retries on a dropped connection, and the ping is a round trip per transaction.
_pre_ping = True


def set_pre_ping(enabled: bool) -> None:
    global _pre_ping
    _pre_ping = enabled


SQLITE_BUSY_TIMEOUT_MAX_SECONDS = 30.0


# The settings engines are made with, given by worker/config.py, so the models read no
# setting of their own: the default URL of `get_engine()` and the lease the SQLite busy
# timeout follows. Each is called when first needed.
_default_url: Callable[[], str] | None = None
_lease_seconds: Callable[[], float] | None = None


def use_settings(*, database_url: Callable[[], str], lease_seconds: Callable[[], float]) -> None:
    """Give engines their default URL and lease (EVENTRELAY_DATABASE_URL, _LEASE_SECONDS)."""
    global _default_url, _lease_seconds
    _default_url, _lease_seconds = database_url, lease_seconds


def _given(source: Callable[[], Any] | None, what: str) -> Any:
    if source is None:
        raise RuntimeError(
            f"no {what}: pass one, or import eventrelay.worker.config (which gives the "
            "EVENTRELAY_ settings) first"
        )
    return source()


def _database_url() -> str:
    return str(_given(_default_url, "database URL"))


def sqlite_busy_timeout_seconds(lease_seconds: float | None = None) -> float:
    """How long a statement waits for another connection's SQLite write lock.

    A third of the lease (EVENTRELAY_LEASE_SECONDS): a worker's heartbeat renews its leases
    every third of it, and one blocked past the lease would let another worker take the
    deliveries it is still sending. Failing after a third leaves the next beat time to succeed.
    """
    if lease_seconds is None:
        lease_seconds = float(_given(_lease_seconds, "lease"))
    return min(SQLITE_BUSY_TIMEOUT_MAX_SECONDS, lease_seconds / 3)


def make_engine(url: str) -> Engine:
    """Create an engine with the options eventrelay relies on.

    `hide_parameters`: a failing statement's parameters are payloads (personal data); without
    it SQLAlchemy writes them into the exception's text, and so into every log of it.
    """
    if url.startswith("sqlite"):
        busy_ms = int(sqlite_busy_timeout_seconds() * 1000)
        engine = create_engine(url, connect_args={"timeout": busy_ms / 1000}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # pysqlite begins a transaction only before INSERT/UPDATE/DELETE, so a SELECT and
            # the UPDATE decided by it were two transactions; SQLAlchemy's pysqlite docs
            # ("Serializable isolation / Savepoints / Transactional DDL"): turn the driver's
            # BEGIN off and emit our own when SQLAlchemy begins (below).
            dbapi_conn.isolation_level = None
            # WAL lets the worker read while a producer writes; foreign keys are off by default.
            # synchronous=FULL: with WAL, NORMAL may roll back committed transactions on power
            # loss (SQLite's docs), and a job `enqueue` reported as stored must stay stored.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # IMMEDIATE takes the write lock at the start, waiting up to the busy timeout. A
            # deferred transaction that read first and writes later fails at once, without
            # waiting, if another connection committed in between (SQLITE_BUSY_SNAPSHOT).
            # SQLite has one writer at a time anyway; the cost is that a read-only
            # transaction (status, metrics) waits for a writer too, for milliseconds.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # pre_ping: a PostgreSQL restart costs one failed checkout, not a dead worker.
    return create_engine(
        url,
        pool_pre_ping=_pre_ping,
        pool_size=5,
        max_overflow=5,
        pool_recycle=1800,
        hide_parameters=True,
    )


def get_engine(url: str | None = None) -> Engine:
    """The engine for `url` (default: the one given by `use_settings`) in this process."""
    url = url or _database_url()
    pid = os.getpid()
    with _lock:
        entry = _engines.get(url)
        if entry is None or entry[0] != pid:
            if entry is not None:
                # Inherited from the parent: drop its connections without closing the parent's.
                entry[1].dispose(close=False)
            entry = (pid, make_engine(url))
            _engines[url] = entry
        return entry[1]


def reset_engine() -> None:
    """Forget every engine (after fork, or when settings change in tests)."""
    with _lock:
        for pid, engine in _engines.values():
            engine.dispose(close=pid == os.getpid())
        _engines.clear()
