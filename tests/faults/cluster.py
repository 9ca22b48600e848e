"""A private eventrelay fleet for fault tests: its own PostgreSQL and Redis servers on free ports
(so they can be killed and restarted without disturbing anyone), the mock vendors, workers and
a scheduler as real processes."""

from __future__ import annotations

import atexit
import functools
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from eventrelay.worker.dev.processes import Process, start_redis
from tests.support import Proc, free_port, start_worker, wait_for

PG_BIN = (
    Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
    if glob.glob("/usr/lib/postgresql/*/bin")
    else None
)


def _as_postgres(args: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PrivatePostgres:
    def __init__(self, root: Path, template: Path | None = None) -> None:
        """A server of its own in `root`: a copy of `template`'s data folder if given (a
        stopped server's), else a new one from initdb."""
        if PG_BIN is None:
            raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql")
        self.port = free_port()
        self.data = root / "pgdata"
        self.sock = root / "pgsock"
        self.log = root / "postgres.log"
        for path in (self.sock,):
            path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres")
            shutil.chown(self.sock, "postgres")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        if template is not None:
            # as the server's user, which must own its data folder (cp -a keeps the 0700 mode)
            subprocess.run(
                _as_postgres(["cp", "-a", str(template), str(self.data)]),
                check=True,
                capture_output=True,
            )
            return
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                    "-o",
                    opts,
                    "-w",
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]),
            capture_output=True,
        )

    def restart(self) -> None:
        self.stop("immediate")
        self.start()


@functools.cache
def migrated_data_folder() -> Path:
    """A PostgreSQL data folder made by initdb and migrated, once per session: each scenario's
    server starts from a copy of it (initdb and `eventrelay migrate` took 2 s a scenario)."""
    root = Path(tempfile.mkdtemp(prefix="eventrelay-faults-template-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    pg = PrivatePostgres(root)
    pg.start()
    try:
        migrate(pg.url)
    finally:
        pg.stop()
    return pg.data


def migrate(url: str) -> None:
    """The schema, through the real CLI."""
    subprocess.run(
        [sys.executable, "-m", "eventrelay", "migrate"],
        env={**os.environ, **vendor_env(), "EVENTRELAY_DATABASE_URL": url},
        check=True,
        capture_output=True,
    )


class PrivateRedis:
    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.root = root
        self.proc: Process | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc, _ = start_redis(self.root, self.port)

    def kill(self) -> None:
        if self.proc:
            self.proc.signal(signal.SIGKILL)
            self.proc.stop()

    def flushall(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()


class Cluster:
    """Everything one fault scenario needs; `close()` stops all of it."""

    def __init__(self, mock: Any, **env_overrides: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="eventrelay-faults-"))
        os.chmod(self.root, 0o777)
        self.pg = PrivatePostgres(self.root, migrated_data_folder())
        self.pg.start()
        self.redis = PrivateRedis(self.root)
        self.redis.start()
        self.mock = mock
        self.env = {
            **{k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"},
            **vendor_env(),
            "EVENTRELAY_DATABASE_URL": self.pg.url,
            "EVENTRELAY_BROKER_URL": self.redis.url,
            "EVENTRELAY_REDIS_URL": self.redis.url,
            "EVENTRELAY_BACKOFF_BASE_SECONDS": "0.2",
            "EVENTRELAY_BACKOFF_CAP_SECONDS": "3",
            "EVENTRELAY_READ_TIMEOUT_SECONDS": "1.5",
            "EVENTRELAY_CONNECT_TIMEOUT_SECONDS": "1",
            "EVENTRELAY_LEASE_SECONDS": "8",
            "EVENTRELAY_SCHEDULER_INTERVAL_SECONDS": "0.25",
            "INFOBIP_RATE_LIMIT": "250",
            **env_overrides,
        }
        self.procs: list[Process] = []
        self.engine = create_engine(self.pg.url, pool_pre_ping=True)

    def worker(self, name: str, concurrency: int = 2) -> Process:
        return self.workers(name, concurrency=concurrency)[0]

    def workers(self, *names: str, concurrency: int = 2) -> list[Process]:
        """Workers started side by side, returned once each says it is ready (a start is
        mostly imports: two at once take little longer than one)."""
        procs = [
            start_worker(
                self.env, self.root / f"worker-{n}.log", concurrency, name=n, wait=False
            )
            for n in names
        ]
        self.procs += procs
        for name, proc in zip(names, procs, strict=True):
            proc.wait_for_output("ready.", 60, f"worker {name}")
        return procs

    def scheduler(self) -> Proc:
        proc = Proc(
            [sys.executable, "-m", "eventrelay", "scheduler"], self.env, self.root / "scheduler.log"
        )
        self.procs.append(proc)
        return proc

    def produce(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Enqueue through the real CLI; returns the receipts."""
        path = self.root / f"jobs-{time.monotonic_ns()}.jsonl"
        path.write_text("\n".join(json.dumps(j) for j in jobs) + "\n")
        result = subprocess.run(
            [sys.executable, "-m", "eventrelay", "send", "--file", str(path)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"send failed: {result.stderr[-2000:]}")
        return [json.loads(line) for line in result.stdout.splitlines()]

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT status, count(*) FROM deliveries GROUP BY status")
            ).all()
        return {str(s): int(n) for s, n in rows}

    def scalar(self, sql: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql)).scalar()

    def wait_until_settled(self, timeout: float) -> None:
        def settled() -> bool:
            try:
                with self.engine.connect() as conn:
                    open_ = conn.execute(
                        text(
                            "SELECT count(*) FROM deliveries WHERE status IN ('pending', 'delivering')"
                        )
                    ).scalar()
            except Exception:
                return False
            return open_ == 0

        wait_for(settled, timeout, interval=0.5, what="every delivery to settle")

    def close(self) -> None:
        # The scenario's end state has been checked and nothing of this fleet is kept (its
        # PostgreSQL and Redis go next): a warm stop would only wait (it has tests of its own,
        # tests/integration/test_shutdown.py).
        for proc in reversed(self.procs):
            proc.kill()
        self.engine.dispose()
        self.redis.kill()
        self.pg.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def vendor_env() -> dict[str, str]:
    """The test vendors' base URLs and keys (the session's mock vendor server)."""
    from tests.conftest import TEST_ENV

    return {k: v for k, v in TEST_ENV.items() if k.endswith(("_KEY", "_TOKEN", "_BASE_URL"))}
