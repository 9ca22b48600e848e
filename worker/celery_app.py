"""The Celery application and every Celery setting, in one place.

Durability settings (PITFALLS.md, Celery docs):
- late acks + reject on worker lost: a message whose worker died is delivered again
  (celery/celery#3541); the delivery row's lease stops a double send.
- prefetch multiplier 1: a worker holds no more messages than it runs.
- visibility_timeout well above the longest task (celery/celery#2599): retries never use
  long countdowns; their time lives in the database (`next_attempt_at`).
- time limits above the HTTP timeouts times the batch size, below the lease.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.signals import worker_process_init
from kombu.entity import Queue

from worker.config import get_settings
from worker.queues import all_queues

TASK_NAME_DELIVER = "eventrelay.deliver"


def make_app() -> Celery:
    settings = get_settings()
    app = Celery("eventrelay", broker=settings.broker_url)
    # Below the lease, so a task is stopped before another worker may take its deliveries.
    soft_limit = settings.lease_seconds * 0.8
    hard_limit = settings.lease_seconds * 0.9
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_seconds,
            "socket_connect_timeout": 3,
            "socket_timeout": 10,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3,
        task_soft_time_limit=soft_limit,
        task_time_limit=hard_limit,
        # Flower needs events; they carry task names and args (vendor, ids), never payloads.
        worker_send_task_events=True,
        task_send_sent_event=True,
        task_queues=[Queue(name) for name in all_queues()],
        task_default_queue="eventrelay.default",
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


app = make_app()


@worker_process_init.connect
def _fresh_connections_after_fork(**_: Any) -> None:
    # Pooled connections must not cross fork() (SQLAlchemy pooling docs).
    from models.session import reset_engine

    reset_engine()


import worker.tasks  # noqa: E402,F401  (registers the tasks on `app`)
