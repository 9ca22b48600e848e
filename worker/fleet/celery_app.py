"""The Celery application and every Celery setting, in one place.

Durability settings (Celery's docs and issue tracker):
- late acks + reject on worker lost: a message whose worker died is delivered again
  (celery/celery#3541); the delivery row's lease stops a double send.
- prefetch multiplier 1: a worker holds no more messages than it runs.
- visibility_timeout well above the longest task (celery/celery#2599): retries never use
  long countdowns; their time lives in the database (`next_attempt_at`).
- many requests in flight per process come from the pump's threads (engine/pump/), so
  prefork stays the pool and Celery's time limits keep working.

The app sits below the engine: producers publish on it by task name and never import the
worker's code. The worker finds its side through `include` (TASK_MODULES): the tasks, and
the hooks its processes run (engine/worker_hooks.py).
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, worker_ready
from kombu.entity import Queue

from eventrelay.worker.config import get_settings
from eventrelay.worker.fleet import liveness
from eventrelay.worker.fleet.queues import INGEST_QUEUE, TASK_NAME_INGEST, all_queues

# Imported by the worker at start (Celery's `include`), never by this module: the tasks use
# `shared_task`, so publishing code needs neither the task module nor a circle through it.
TASK_MODULES = ["eventrelay.worker.engine.tasks", "eventrelay.worker.engine.worker_hooks"]

TASK_SOFT_TIME_LIMIT_SECONDS = 120.0
TASK_TIME_LIMIT_SECONDS = 150.0

_app: Celery | None = None
_app_lock = threading.Lock()


def get_app() -> Celery:
    """The process's Celery app, built from the settings on first use (dramatiq's
    `get_broker()` pattern): importing eventrelay builds nothing and reads no setting."""
    global _app
    if _app is None:
        with _app_lock:
            if _app is None:
                _app = make_app()
    return _app


def reset_app() -> None:
    """Forget the app so the next `get_app()` reads the settings again (tests, the demo)."""
    global _app
    with _app_lock:
        _app = None


def make_app() -> Celery:
    settings = get_settings()
    app = Celery("eventrelay", broker=settings.broker_url, include=TASK_MODULES)
    after_setup_logger.connect(_eventrelay_logging)
    worker_ready.connect(_say_if_fleet_state_is_off)
    liveness.connect_worker_signals()  # heartbeats the metrics exporter reads (fleet/liveness.py)
    transport_options: dict[str, Any] = {
        "visibility_timeout": settings.visibility_timeout_seconds,
        "socket_connect_timeout": 3,
        "socket_timeout": 10,
    }
    if settings.broker_url.startswith("filesystem://"):
        transport_options = filesystem_transport_options(settings.broker_folder)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        # A deliver task only hands work to the process's pump; requests are bounded by the
        # HTTP timeouts and their leases by the pump's heartbeat, not by these.
        task_soft_time_limit=TASK_SOFT_TIME_LIMIT_SECONDS,
        task_time_limit=TASK_TIME_LIMIT_SECONDS,
        # Flower needs events; they carry task names and args (vendor, ids), never payloads.
        # No "task-sent" events: they would double every producer's publishes, and Flower
        # shows a task from its "received" event on.
        worker_send_task_events=True,
        task_send_sent_event=False,
        task_queues=[Queue(name) for name in all_queues()],
        task_default_queue="eventrelay.default",
        task_routes={TASK_NAME_INGEST: {"queue": INGEST_QUEUE}},
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_consumer="eventrelay.worker.engine.consumer:Consumer",  # reconnects in 0.1 s
    )
    return app


def filesystem_transport_options(folder: str) -> dict[str, Any]:
    """A serverless broker in a folder: producer and workers read and write the same one."""
    from pathlib import Path

    base = Path(folder)
    for sub in ("queue", "control"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(base / "queue"),
        "data_folder_out": str(base / "queue"),
        "control_folder": str(base / "control"),
    }


def _say_if_fleet_state_is_off(**_: Any) -> None:
    from eventrelay.worker.fleet.ratelimit import warn_without_fleet_state

    warn_without_fleet_state()


def _eventrelay_logging(**_: Any) -> None:
    # Celery leaves the root logger alone (worker_hijack_root_logger=False): give eventrelay's
    # loggers their own handler, JSON when EVENTRELAY_LOG_JSON is set.
    from eventrelay.worker.logs import configure

    configure(json_lines=get_settings().log_json)
