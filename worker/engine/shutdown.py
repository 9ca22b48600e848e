"""A prefork child's own SIGTERM waits for the task it is running.

A SIGTERM that reaches a pool child directly (supervisord `stopasgroup=true`, systemd's default
control-group kill, `--autoscale` shrinking the pool) is turned by billiard into `SystemExit` at
once (`billiard.common._shutdown_cleanup`); the child's exit hook then drains the pump
(`celery_app._finish_in_flight`). Raised in the middle of a task, though, that `SystemExit`
makes the main process log a `WorkerLostError` with its traceback and hand the message to
another worker, on every rolling restart. So while a task runs, the signal is held, and taken
the way billiard takes it once the task has returned (a `deliver` task only hands work to the
pump: it returns within half a second).

Only in prefork children, where tasks run on the main thread: a threads or solo pool's main
process keeps Celery's own handler, which already waits for running tasks.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any

# After a held signal's task returns, its result still has to reach the main process (right
# after task_postrun); the signal is sent again a moment later, when the child waits for work.
RESIGNAL_AFTER_SECONDS = 0.05

_pool_child = False
_installed = False
_running = False
_pending = False
_exiting = False


def in_pool_child(**_: Any) -> None:
    """worker_process_init: this process is a prefork child."""
    global _pool_child, _installed, _running, _pending, _exiting
    _pool_child, _installed, _running, _pending, _exiting = True, False, False, False, False


def exiting() -> None:
    """The child has begun to exit and drain: a later SIGTERM (the group's, arriving after the
    main process's sentinel; one re-sent by task_finished) must not cut the drain short with a
    second SystemExit. SIGKILL still ends it."""
    global _exiting
    _exiting = True
    if _pool_child and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def task_starting(**_: Any) -> None:
    """task_prerun: hold a SIGTERM until the task has returned."""
    global _installed, _running
    if not _pool_child or threading.current_thread() is not threading.main_thread():
        return
    if not _installed:
        # billiard installs its handler after worker_process_init, so it is wrapped here, at
        # the child's first task.
        previous = signal.getsignal(signal.SIGTERM)
        if callable(previous):
            signal.signal(signal.SIGTERM, partial(_on_sigterm, previous))
        _installed = True
    _running = True


def task_finished(**_: Any) -> None:
    """task_postrun: take a SIGTERM that came during the task, now that it is done."""
    global _running
    if not _pool_child or threading.current_thread() is not threading.main_thread():
        return
    _running = False
    if _pending and not _exiting:
        timer = threading.Timer(RESIGNAL_AFTER_SECONDS, os.kill, (os.getpid(), signal.SIGTERM))
        timer.daemon = True
        timer.start()


def _on_sigterm(
    previous: Callable[[int, FrameType | None], Any], signum: int, frame: FrameType | None
) -> None:
    global _pending
    if _exiting:
        return
    if _running:
        _pending = True  # taken by task_finished
        return
    previous(signum, frame)
