"""A prefork child takes its own SIGTERM only between jobs (worker/engine/shutdown.py): anywhere
else the main process would log the job as lost (WorkerLostError) and hand it on."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from eventrelay.worker.engine.shutdown import between_jobs

# The shape of billiard's worker loop (billiard/pool.py: Worker.workloop calls `receive` for
# the next job, then acknowledges it, waits for its SYN with `receive` again, runs it and sends
# its result back), compiled under billiard's file name as the real frames carry it.
WORKLOOP = """
def receive(check):
    return check(sys._getframe())

def wait_for_syn(check):
    return receive(check)

def job(check):
    return check(sys._getframe())

def workloop(check, step):
    if step == "waiting":
        return receive(check)
    if step == "syn":
        return wait_for_syn(check)
    if step == "job":
        return job(check)
    return check(sys._getframe())  # acknowledging it, or sending its result
"""


def _loop() -> Callable[[str], bool]:
    namespace: dict[str, Any] = {"sys": sys}
    exec(compile(WORKLOOP, "/venv/site-packages/billiard/pool.py", "exec"), namespace)

    def at(step: str) -> bool:
        result: bool = namespace["workloop"](between_jobs, step)
        return result

    return at


def test_a_child_waiting_for_its_next_job_takes_sigterm_at_once() -> None:
    assert _loop()("waiting")


def test_a_child_holding_a_job_keeps_sigterm_for_later() -> None:
    at = _loop()
    assert not at("job")
    assert not at("syn")  # the job is taken: its SYN is awaited
    assert not at("result")  # acknowledging it or sending its result back


def test_a_receive_outside_billiard_is_not_mistaken_for_the_worker_loop() -> None:
    def receive(check: Callable[[FrameType | None], bool]) -> bool:
        return check(sys._getframe())

    def workloop() -> bool:
        return receive(between_jobs)

    assert not workloop()
    assert not between_jobs(None)
