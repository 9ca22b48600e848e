"""Starting and stopping eventrelay's processes: one launcher for the demo, the tests, the
fault suite and the benchmarks.

Each process runs in a session of its own, so a signal reaches the children it forks (a
Celery worker's pool) as a process manager's stop would; its output goes to a log file, which
is also how readiness is seen ("ready." for a Celery worker).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A child process with its output in a log file."""

    def __init__(
        self, args: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
    ) -> None:
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop())
        self.popen = subprocess.Popen(
            args,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        """Send `sig` to the process and its children."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (a warm shutdown for Celery), then SIGKILL after `timeout` seconds."""
        if self.popen.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.popen.wait(5)
        self._log.close()

    def kill(self) -> None:
        """SIGKILL to the process and its children, for one whose end no longer matters (a
        test's fleet once its checks are done): a warm stop only waits, 2 s for an idle
        Celery worker."""
        self.signal(signal.SIGKILL)
        self.popen.wait(10)
        self._log.close()

    def wait_for_output(self, text: str, timeout: float, what: str) -> None:
        """Return once `text` is in the log.

        Raises:
            RuntimeError: the process exited or `timeout` passed first (with the log's end).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            if self.popen.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{what} did not start; its log ends:\n{self.output()[-3000:]}")


def celery_worker_args(
    app: str,
    concurrency: int,
    name: str,
    *,
    queues: str | None = None,
    pool: str = "prefork",
    loglevel: str = "INFO",
    events: bool = True,
) -> list[str]:
    """`celery worker` for `app`; no gossip or mingle, which only slow a start down here."""
    args = [sys.executable, "-m", "celery", "-A", app, "worker", "-P", pool]
    args += ["-c", str(concurrency), "-l", loglevel, "-n", f"{name}@%h"]
    args += ["--without-gossip", "--without-mingle"] + (["-E"] if events else [])
    return args + (["-Q", queues] if queues else [])


def start_worker(
    env: dict[str, str],
    log_path: Path,
    concurrency: int = 2,
    queues: str | None = None,
    name: str = "w1",
    pool: str = "prefork",
    *,
    app: str = "eventrelay.worker",
    loglevel: str = "INFO",
    events: bool = True,
    wait: bool = True,
    cwd: Path | None = None,
) -> Process:
    """A Celery worker; with `wait`, once it says it is ready."""
    args = celery_worker_args(
        app, concurrency, name, queues=queues, pool=pool, loglevel=loglevel, events=events
    )
    proc = Process(args, env, log_path, cwd)
    if wait:
        proc.wait_for_output("ready.", 60, f"worker {name}")
    return proc


def start_scheduler(
    env: dict[str, str], log_path: Path, interval: float = 0.2, cwd: Path | None = None
) -> Process:
    return Process(
        [sys.executable, "-m", "eventrelay", "scheduler", "--interval", str(interval)],
        env,
        log_path,
        cwd,
    )


def start_redis(folder: Path, port: int | None = None) -> tuple[Process, int]:
    """A private redis-server keeping nothing on disk, once it answers; (process, port)."""
    import redis

    port = port or free_port()
    proc = Process(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", str(folder)],
        dict(os.environ),
        folder / f"redis-{port}-{time.time():.0f}.log",
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if redis.Redis(port=port, socket_connect_timeout=0.3).ping():
                return proc, port
        except redis.RedisError:
            time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"redis-server did not start on port {port}:\n{proc.output()[-2000:]}")
