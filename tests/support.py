"""Test helpers: real services, real processes, polling with deadlines."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import create_engine, make_url, text

from eventrelay.worker.dev import processes
from eventrelay.worker.dev.processes import Process

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")
# The one launcher (worker/dev/processes.py), as the tests have always called it.
free_port = processes.free_port
start_worker = processes.start_worker
start_scheduler = processes.start_scheduler

PG_ADMIN_URL = os.environ.get(
    "EVENTRELAY_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# Under pytest-xdist (`-n N`, as .ci/run does) each worker gets a database and a Redis DB of
# its own: gw0 the names given, gwK the database `<name>_gwK` and Redis DB number + K.
XDIST_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
TEST_DB_NAME = os.environ.get("EVENTRELAY_TEST_DB_NAME", "eventrelay_test") + (
    f"_gw{XDIST_WORKER}" if XDIST_WORKER else ""
)
TEST_REDIS_DB = int(os.environ.get("EVENTRELAY_TEST_REDIS_DB", "13")) + XDIST_WORKER
REDIS_HOST = os.environ.get("EVENTRELAY_TEST_REDIS_HOST", "127.0.0.1:6379")


def pg_url(db: str) -> str:
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + db


def ensure_database(name: str, fresh: bool = False) -> str:
    """Create (or recreate) a PostgreSQL database of the tests' own; returns its URL."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
        ).first()
        if exists and fresh:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE "{name}"'))
            exists = None
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return pg_url(name)


@functools.cache
def missing_services() -> str | None:
    """None when PostgreSQL and Redis both accept connections, else which are unreachable."""
    pg = make_url(PG_ADMIN_URL)
    wanted = {
        "PostgreSQL": (pg.host or "127.0.0.1", pg.port or 5432),
        "Redis": (REDIS_HOST.rpartition(":")[0], int(REDIS_HOST.rpartition(":")[2])),
    }
    missing = []
    for name, (host, port) in wanted.items():
        try:
            socket.create_connection((host, port), timeout=2).close()
        except OSError as exc:
            missing.append(f"{name} unreachable at {host}:{port} ({exc.strerror or exc})")
    return "; ".join(missing) or None


def loopback_is_up() -> bool:
    """Whether this process can reach a socket of its own on 127.0.0.1."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        try:
            socket.create_connection(server.getsockname(), timeout=2).close()
        except OSError:
            return False
        return True


def bring_loopback_up() -> bool:
    """Bring up a loopback that is down, as it is in a network namespace just made with
    `unshare -n` (how "no service reachable" is tested). The in-process mock vendor server
    needs loopback, not any service; a namespace of our own is ours to configure. True if
    loopback works afterwards."""
    if loopback_is_up():
        return True
    try:
        subprocess.run(["ip", "link", "set", "lo", "up"], capture_output=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return False
    return loopback_is_up()


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll until `predicate()` is truthy; fail the test with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value: {last!r})")


class Proc(Process):
    """A child process of the tests (worker/dev/processes.py), run from the repository's root
    so that `python -m tests.apps...` finds the tests' package."""

    def __init__(
        self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path = ROOT
    ) -> None:
        super().__init__(args, env, log_path, cwd)


@contextmanager
def env_vars(**values: str | None) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
