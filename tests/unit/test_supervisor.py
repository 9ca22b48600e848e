"""The pump's supervisor: a role that raises is started again; one that keeps failing ends the
process (non-zero) so that Celery's pool replaces it."""

from __future__ import annotations

import threading
import time

import pytest

from eventrelay.worker.engine.pump import supervisor as supervising
from eventrelay.worker.engine.pump.sendpool import SendPool
from eventrelay.worker.engine.pump.supervisor import Supervisor


def _supervisor(monkeypatch: pytest.MonkeyPatch) -> tuple[Supervisor, threading.Event, list[str]]:
    monkeypatch.setattr(supervising, "RESTART_DELAY_SECONDS", 0.01)
    stopped = threading.Event()
    sup = Supervisor(stopped, SendPool(1, "test-send"))
    exits: list[str] = []
    sup.exit = exits.append
    return sup, stopped, exits


def test_a_role_that_raises_once_is_started_again_and_runs_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sup, stopped, exits = _supervisor(monkeypatch)
    runs: list[int] = []

    def loop() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("boom")
        stopped.wait()

    sup.start("record", loop)
    deadline = time.monotonic() + 5
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    stopped.set()
    sup.join(2)
    assert len(runs) == 2 and sup.restarts("record") == 1 and exits == []
    assert "pump record died unexpectedly" in caplog.text and "RuntimeError: boom" in caplog.text


def test_a_role_that_keeps_failing_ends_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervising, "MAX_RESTARTS", 3)
    sup, stopped, exits = _supervisor(monkeypatch)

    def loop() -> None:
        raise RuntimeError("always")

    sup.start("dispatch", loop)
    sup.join(5)
    stopped.set()
    assert exits == ["pump dispatch failed more than 3 times in 60 s"]


def test_a_send_thread_that_is_gone_is_replaced() -> None:
    pool = SendPool(4, "test-send")
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(2) and pool.threads == 1
    gone = threading.Thread(target=lambda: None)
    gone.start()
    gone.join()
    pool._threads.append(gone)  # as if a send thread had died
    assert pool.replace_dead() == 1
    assert pool.threads == 2
    again = threading.Event()
    pool.submit(again.set)
    assert again.wait(2)
    pool.shutdown()
