"""A prefork child's own SIGTERM waits until the child is between jobs.

A SIGTERM that reaches a pool child directly (supervisord `stopasgroup=true`, systemd's default
control-group kill, `--autoscale` shrinking the pool) is turned by billiard into `SystemExit` at
once (`billiard.common._shutdown_cleanup`); the child's exit hook then drains the pump
(`worker_hooks._finish_in_flight`). Raised while the child holds a job, though (from billiard's
ACK for it, through the task, until its result is sent back), that `SystemExit` makes the main
process log a `WorkerLostError` with its traceback and hand the message to another worker, on
every rolling restart. So the signal is taken only where the child is waiting for its next job,
inside billiard's `receive` called from the worker loop; anywhere else it is held, and sent
again by a watcher thread once the main thread is back there (a `deliver` task only hands work
to the pump: it returns within half a second).

Where the child stands is read from the main thread's stack, not from `task_prerun` and
`task_postrun`: those leave out the steps before and after the task (the ACK, sending the
result), and a signal there is as costly.

Only in prefork children, where jobs run on the main thread: a threads or solo pool's main
process keeps Celery's own handler, which already waits for running tasks.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any

# How often the watcher looks whether a held signal can be taken, and for how long at most (a
# job that never returns is Celery's hard time limit's to end, not ours).
WATCH_EVERY_SECONDS = 0.01
WATCH_FOR_SECONDS = 300.0

_pool_child = False
_installed = False
_pending = False
_exiting = False


def in_pool_child(**_: Any) -> None:
    """worker_process_init: in a prefork child, take its SIGTERM only between jobs.

    The solo pool sends worker_process_init too, in the worker's main process, whose SIGTERM
    is Celery's warm shutdown and must stay as it is: a billiard child has an identity (its
    number in the pool), the main process none.
    """
    from billiard.process import current_process

    global _pool_child, _installed, _pending, _exiting
    _pool_child = bool(current_process()._identity)
    _installed, _pending, _exiting = False, False, False


def exiting() -> None:
    """The child has begun to exit and drain: a later SIGTERM (the group's, arriving after the
    main process's sentinel; the watcher's) must not cut the drain short with a second
    SystemExit. SIGKILL still ends it."""
    global _exiting
    _exiting = True
    if _pool_child and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def task_starting(**_: Any) -> None:
    """task_prerun: wrap billiard's SIGTERM handler (it installs it after worker_process_init,
    so this is done at the child's first task)."""
    global _installed
    if _installed or not _pool_child:
        return
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if callable(previous):
        signal.signal(signal.SIGTERM, partial(_on_sigterm, previous))
    _installed = True


def between_jobs(frame: FrameType | None) -> bool:
    """Whether a main thread stopped at `frame` waits for its next job: inside billiard's
    `receive`, called by the worker loop itself (not by its wait for a job's SYN, when the job
    is already taken)."""
    while frame is not None:
        code = frame.f_code
        if code.co_name == "receive" and "billiard" in code.co_filename:
            caller = frame.f_back
            return caller is not None and caller.f_code.co_name == "workloop"
        if code.co_name == "workloop":
            return False
        frame = frame.f_back
    return False


def _on_sigterm(
    previous: Callable[[int, FrameType | None], Any], signum: int, frame: FrameType | None
) -> None:
    global _pending
    if _exiting:
        return
    if between_jobs(frame):
        previous(signum, frame)
        return
    if not _pending:
        _pending = True
        threading.Thread(
            target=_resignal_between_jobs, name="eventrelay-sigterm", daemon=True
        ).start()


def _resignal_between_jobs() -> None:
    """Send the held SIGTERM again once the main thread waits for its next job."""
    global _pending
    main = threading.main_thread().ident
    waited = 0.0
    event = threading.Event()
    while waited < WATCH_FOR_SECONDS and not _exiting:
        frame = sys._current_frames().get(main) if main is not None else None
        if between_jobs(frame):
            _pending = False
            os.kill(os.getpid(), signal.SIGTERM)
            return
        event.wait(WATCH_EVERY_SECONDS)
        waited += WATCH_EVERY_SECONDS
    _pending = False
