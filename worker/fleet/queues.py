"""Names on the wire: one fresh and one retry queue per vendor, and the task names.

A slow vendor fills only its own queues, and fresh events never wait behind a backlog of
retries or a large replay (retries and replays take the `.retry` lane).
"""

from __future__ import annotations

from eventrelay.models.delivery import Lane

QUEUE_PREFIX = "eventrelay"

# Task names are part of the wire format: messages already waiting in Redis name them, so they
# never change with the code's layout. Producers send by name (no import of the task module).
TASK_NAME_DELIVER = "eventrelay.deliver"
TASK_NAME_INGEST = "eventrelay.ingest"


def queue_name(vendor: str, lane: Lane | str = Lane.FRESH) -> str:
    base = f"{QUEUE_PREFIX}.{vendor}"
    return base if Lane(lane) is Lane.FRESH else f"{base}.retry"


def vendor_queues(vendor: str) -> list[str]:
    return [queue_name(vendor, Lane.FRESH), queue_name(vendor, Lane.RETRY)]


# Remote producers (only Celery installed) send jobs here; a worker validates and records them.
INGEST_QUEUE = f"{QUEUE_PREFIX}.ingest"


def all_queues() -> list[str]:
    from eventrelay.worker.vendors import vendor_names

    return [q for v in vendor_names() for q in vendor_queues(v)] + [INGEST_QUEUE]
