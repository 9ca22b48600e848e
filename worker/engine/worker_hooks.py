"""What the worker's processes run around their work, connected when the worker imports this
module at start (the app's `include`, fleet/celery_app.py), before `worker_init` is sent and
before the pool forks its children."""

from __future__ import annotations

from typing import Any

from celery.signals import (
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
    worker_shutdown,
)

from eventrelay.worker.engine import shutdown


@worker_init.connect
def _check_before_taking_work(sender: Any = None, **_: Any) -> None:
    # The main process, before the pool forks and before a message is taken: a bad setting
    # found later, in a fork hook or a pump thread, is only logged and the worker delivers
    # nothing (README, "What a bad setting does"). Ends the process with exit 2.
    from eventrelay.worker.engine.startup import refuse_bad_start

    refuse_bad_start("worker", getattr(sender, "pool_cls", None))


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # Pooled connections must not cross fork() (SQLAlchemy pooling docs).
    from eventrelay.models.session import reset_engine, set_pre_ping
    from eventrelay.worker.vendors import get_vendor, vendor_names

    set_pre_ping(False)
    reset_engine()
    for name in vendor_names():
        get_vendor(name)  # registers every vendor's secrets for redaction before any log line


@worker_process_shutdown.connect
@worker_shutdown.connect
def _finish_in_flight(**_: Any) -> None:
    # Warm shutdown: requests already sent finish and are recorded before the process exits,
    # so nothing is left claimed and nothing is sent twice (README, "Stopping a worker").
    # Every path ends here: a prefork child leaving its loop (the main process's SIGTERM, or
    # its own SIGTERM from a group kill or --autoscale's shrink: billiard turns that into
    # SystemExit, whose `finally` sends worker_process_shutdown), and the main process of a
    # threads or solo pool, whose pump lives there (worker_shutdown, after the pool stopped
    # taking tasks). The pump logs "drained N, left M to the lease"; a process without a
    # pump has nothing to drain.
    from eventrelay.worker.engine.pump import drain_pump

    shutdown.exiting()  # a later SIGTERM must not cut the drain short
    drain_pump()


# A child's own SIGTERM waits until the child is between jobs (engine/shutdown.py).
worker_process_init.connect(shutdown.in_pool_child)
task_prerun.connect(shutdown.task_starting)
