"""Stopping a worker under load costs nothing: rolling restarts on every accepted pool and with
every way a process manager sends SIGTERM (README, "Stopping a worker").

A real worker under a steady load of slow (300 ms) vtcdn requests is stopped while a second
worker keeps going: every job reaches the vendor exactly once, no `lost` attempt is recorded
(nothing waits for a lease to expire) and the stopped worker logs what its drain did.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from eventrelay.models.delivery import Attempt, Delivery
from eventrelay.models.session import get_engine
from eventrelay.worker.producer import enqueue, enqueue_many
from tests.integration import jobs
from tests.support import Proc, start_scheduler, start_worker, wait_for

QUEUES = "eventrelay.vtcdn,eventrelay.vtcdn.retry"
LATENCY_MS = 300
JOBS_PER_SECOND = 40
LOAD_SECONDS = 8.0
STOP_AFTER_SECONDS = 3.0
DRAIN_LINE = re.compile(r"drained (\d+), left (\d+) to the lease")
# A deliver task's result, as the worker logs it: how many requests its process's pump holds.
IN_FLIGHT = re.compile(r"'in_flight': (\d+)")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return sorted(found)


class Load:
    """Enqueue vtcdn jobs one at a time at a steady rate, as a web app does."""

    def __init__(self, prefix: str) -> None:
        self.emails: list[str] = []
        self._prefix = prefix
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._error: BaseException | None = None

    def start(self) -> Load:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            started = time.monotonic()
            n = 0
            while time.monotonic() - started < LOAD_SECONDS:
                email = f"{self._prefix}-{n}@example.com"
                enqueue("vtcdn", "send_event", jobs.vtcdn_update(email=email))
                self.emails.append(email)
                n += 1
                time.sleep(max(0.0, started + n / JOBS_PER_SECOND - time.monotonic()))
        except BaseException as exc:  # reported by join()
            self._error = exc

    def join(self) -> list[str]:
        self._thread.join(LOAD_SECONDS + 30)
        if self._error:
            raise self._error
        return self.emails


def _count(*conditions: Any, table: Any = Delivery) -> int:
    with get_engine().connect() as conn:
        return int(
            conn.execute(select(func.count()).select_from(table).where(*conditions)).scalar()
        )


def _assert_cost_nothing(mock_vendors: Any, emails: list[str], stopped: Proc) -> None:
    wait_for(
        lambda: _count(Delivery.vendor == "vtcdn", Delivery.status == "delivered") == len(emails),
        60,
        what=f"all {len(emails)} jobs delivered",
    )
    sent = Counter(r["body"]["user"]["email"] for r in mock_vendors.received("vtcdn"))
    twice = {email: n for email, n in sent.items() if n > 1}
    assert not twice, f"{len(twice)} jobs reached the vendor more than once: {list(twice)[:5]}"
    assert set(sent) == set(emails)
    assert _count(Attempt.outcome == "lost", table=Attempt) == 0, "a lease had to expire"
    drains = [tuple(map(int, m)) for m in DRAIN_LINE.findall(stopped.output())]
    assert drains, f"no drain line in the stopped worker's log:\n{stopped.output()[-3000:]}"
    # How many a drain finished depends on when the signal lands: the pump goes on sending
    # what it holds while the main process stops, and may be between claims when its child
    # exits. That nothing was sent twice and no lease expired (above) is what it must show.
    assert all(left == 0 for _, left in drains), drains
    # A child signalled in the middle of a task would make the main process log the task as
    # lost with a traceback, on every restart.
    assert "WorkerLostError" not in stopped.output(), stopped.output()[-3000:]


def _rolling_restart(
    mock_vendors: Any,
    logs_dir: Path,
    child_env: Any,
    name: str,
    stop: Any,
    pool: str = "prefork",
    concurrency: int = 2,
) -> None:
    mock_vendors.set_faults("vtcdn", latency_ms=LATENCY_MS)
    env = child_env()
    stays = start_worker(env, logs_dir / f"{name}-stays.log", 1, QUEUES, f"{name}-stays")
    stopped = start_worker(
        env, logs_dir / f"{name}-stopped.log", concurrency, QUEUES, f"{name}-stopped", pool
    )
    scheduler = start_scheduler(env, logs_dir / f"{name}-scheduler.log")
    try:
        load = Load(name).start()
        time.sleep(STOP_AFTER_SECONDS)
        _wait_in_flight(stopped)
        stop(stopped)
        try:
            stopped.popen.wait(45)
        except Exception:
            raise AssertionError(
                f"the worker did not stop within 45 s:\n{stopped.output()[-3000:]}"
            ) from None
        emails = load.join()
        _assert_cost_nothing(mock_vendors, emails, stopped)
    finally:
        scheduler.kill()
        stays.kill()
        stopped.kill()


def _wait_in_flight(proc: Proc | None = None) -> None:
    """Requests in flight, and (with `proc`) some held by that worker: its last task result
    in its log says how many its pump holds (beside another worker, it may hold none)."""

    def holding() -> bool:
        if _count(Delivery.status == "delivering") < 3:
            return False
        if proc is None:
            return True
        held = IN_FLIGHT.findall(proc.output())
        return bool(held) and int(held[-1]) > 0

    wait_for(holding, 10, 0.02, "requests in flight")


def _sigterm_main(proc: Proc) -> None:
    # docker stop, Kubernetes, systemd with KillMode=mixed: only the main process
    proc.popen.send_signal(signal.SIGTERM)


def _sigterm_group(proc: Proc) -> None:
    # supervisord stopasgroup=true, systemd's default KillMode=control-group: every process
    os.killpg(proc.popen.pid, signal.SIGTERM)


@pytest.mark.usefixtures("clean")
def test_a_rolling_restart_with_sigterm_to_the_main_process_sends_nothing_twice_and_waits_for_no_lease(  # noqa: E501
    mock_vendors: Any, logs_dir: Path, child_env: Any
) -> None:
    _rolling_restart(mock_vendors, logs_dir, child_env, "main-term", _sigterm_main)


@pytest.mark.usefixtures("clean")
def test_a_rolling_restart_with_sigterm_to_the_whole_process_group_drains_every_child(
    mock_vendors: Any, logs_dir: Path, child_env: Any
) -> None:
    _rolling_restart(mock_vendors, logs_dir, child_env, "group-term", _sigterm_group)


@pytest.mark.parametrize("pool", ["threads", "solo"])
@pytest.mark.usefixtures("clean")
def test_a_worker_on_a_non_prefork_pool_drains_on_sigterm_too(
    pool: str, mock_vendors: Any, logs_dir: Path, child_env: Any
) -> None:
    _rolling_restart(
        mock_vendors, logs_dir, child_env, f"{pool}-term", _sigterm_group, pool, concurrency=4
    )


@pytest.mark.usefixtures("clean")
def test_a_child_sent_sigterm_alone_drains_before_it_exits_and_is_replaced(
    mock_vendors: Any, logs_dir: Path, child_env: Any
) -> None:
    # What --autoscale's shrink does (billiard's terminate_controlled), and `kill CHILD_PID`.
    # One child, so the one signalled is the one holding the work.
    mock_vendors.set_faults("vtcdn", latency_ms=LATENCY_MS)
    env = child_env()
    worker = start_worker(env, logs_dir / "child-term.log", 1, QUEUES, "child-term")
    scheduler = start_scheduler(env, logs_dir / "child-term-scheduler.log")
    try:
        [child] = wait_for(lambda: _children(worker.popen.pid), 10, what="the pool child")
        load = Load("child-term").start()
        time.sleep(STOP_AFTER_SECONDS)
        _wait_in_flight()
        os.kill(child, signal.SIGTERM)
        wait_for(lambda: _gone(child), 45, what="the child to exit")
        emails = load.join()
        _assert_cost_nothing(mock_vendors, emails, worker)
        assert worker.popen.poll() is None  # the worker lives on...
        assert len(_children(worker.popen.pid)) == 1  # ...with a new child
    finally:
        scheduler.kill()
        worker.kill()


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not yet reaped
    except OSError:
        return True


@pytest.mark.usefixtures("clean")
def test_autoscale_shrinking_the_pool_drains_the_child_it_stops(
    mock_vendors: Any, logs_dir: Path, child_env: Any
) -> None:
    # Few slots per process, so the backlog outlasts the autoscaler's idle wait and the child
    # it stops still has requests in flight.
    mock_vendors.set_faults("vtcdn", latency_ms=LATENCY_MS)
    env = child_env(AUTOSCALE_KEEPALIVE="1", EVENTRELAY_MAX_IN_FLIGHT="8")
    args = [
        sys.executable, "-m", "celery", "-A", "eventrelay.worker", "worker", "--autoscale=2,1",
        "-l", "INFO", "-n", "autoscale@%h", "--without-gossip", "--without-mingle", "-Q", QUEUES,
    ]  # fmt: skip
    worker = Proc(args, env, logs_dir / "autoscale.log")
    scheduler = start_scheduler(env, logs_dir / "autoscale-scheduler.log")
    try:
        wait_for(lambda: "ready." in worker.output(), 60, what="the worker to start")
        receipts = enqueue_many(
            {
                "vendor": "vtcdn",
                "operation": "send_event",
                "payload": jobs.vtcdn_update(f"as{n}@example.com"),
            }
            for n in range(300)
        )
        wait_for(lambda: "Scaling up" in worker.output(), 20, what="the pool to grow")
        wait_for(lambda: "Scaling down" in worker.output(), 30, what="the pool to shrink")
        drained = wait_for(lambda: DRAIN_LINE.findall(_after_shrink(worker)), 45, 0.2, "drain")
        assert int(drained[0][0]) > 0 and int(drained[0][1]) == 0, drained
        emails = [f"as{n}@example.com" for n in range(300)]
        wait_for(
            lambda: _count(Delivery.status == "delivered") == len(receipts), 60, what="delivery"
        )
        sent = Counter(r["body"]["user"]["email"] for r in mock_vendors.received("vtcdn"))
        assert sorted(sent) == sorted(emails) and set(sent.values()) == {1}
        assert _count(Attempt.outcome == "lost", table=Attempt) == 0
        assert "WorkerLostError" not in worker.output() and worker.popen.poll() is None
    finally:
        scheduler.kill()
        worker.kill()


def _after_shrink(worker: Proc) -> str:
    return worker.output().split("Scaling down", 1)[1]
