"""A producer process whose broker (Redis) cannot be reached; times what enqueueing costs.

    python -m tests.apps.unreachable_broker_producer refused|silent api|django|flask N
    python -m tests.apps.unreachable_broker_producer outage api 3

`refused`: nothing listens on the broker's port. `silent`: a server accepts connections and
never answers. `outage`: the real broker (EVENTRELAY_BROKER_URL) behind a proxy, cut for the
second job only; the pause after a failure is shortened to 0.5 s, and the third job comes
after it (and after the doorbell's expiry, so it gets a message of its own). Enqueues N vtcdn jobs through the chosen path (`enqueue`; Django's `enqueue` in
`transaction.atomic()`; Flask's `eventrelay_enqueue` then `session.commit()`) and prints JSON:
for each job, the seconds spent publishing (in `publish_after_commit`, from the commit hook for
Django and Flask) and the seconds of the whole call, commit included.
EVENTRELAY_DATABASE_URL must name the tests' database (and EVENTRELAY_DJANGO_DATABASE_URL too).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.integration import jobs
from tests.integration.netfaults import SilentServer, TcpProxy

mode, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])


def timed_publish(spent: list[float]) -> None:
    """Record how long each `publish_after_commit` takes, wherever a path looks it up."""
    import eventrelay.worker.producer as producer
    import eventrelay.worker.producer.api as api

    original = producer.publish_after_commit

    @functools.wraps(original)
    def publish_after_commit(rows: Any) -> None:
        started = time.perf_counter()
        try:
            original(rows)
        finally:
            spent.append(time.perf_counter() - started)

    producer.publish_after_commit = publish_after_commit
    api.publish_after_commit = publish_after_commit


def enqueuer() -> Callable[[int], Any]:
    if path == "api":
        from eventrelay import enqueue

        return lambda i: enqueue("vtcdn", "send_event", jobs.vtcdn_update(name=f"api-{i}"))
    if path == "django":
        os.environ["DJANGO_SETTINGS_MODULE"] = "tests.apps.django_project.settings"
        import django

        django.setup()
        from django.db import transaction

        from eventrelay.worker.integrations.django import enqueue as django_enqueue

        def in_atomic(i: int) -> Any:
            with transaction.atomic():
                return django_enqueue("vtcdn", "send_event", jobs.vtcdn_update(name=f"dj-{i}"))

        return in_atomic
    from eventrelay.worker.integrations.flask import eventrelay_enqueue
    from tests.apps.flask_app import create_app, db

    app = create_app(os.environ["EVENTRELAY_DATABASE_URL"])
    app.app_context().push()

    def then_commit(i: int) -> Any:
        receipt = eventrelay_enqueue(
            db.session, "vtcdn", "send_event", jobs.vtcdn_update(name=f"flask-{i}")
        )
        db.session.commit()
        return receipt

    return then_commit


def outage() -> None:
    from urllib.parse import urlsplit

    from eventrelay.worker.producer import broker

    real = urlsplit(os.environ["EVENTRELAY_BROKER_URL"])
    proxy = TcpProxy(real.port or 6379)
    proxy.open()
    os.environ["EVENTRELAY_BROKER_URL"] = f"redis://127.0.0.1:{proxy.port}{real.path}"
    os.environ.pop("EVENTRELAY_REDIS_URL", None)
    broker.pause.seconds = 0.5
    enqueue_one = enqueuer()
    ids = [str(enqueue_one(0).delivery_id)]
    proxy.close()
    ids.append(str(enqueue_one(1).delivery_id))
    proxy.open()
    time.sleep(2.5)  # past the pause and the doorbell's RING_SECONDS
    ids.append(str(enqueue_one(2).delivery_id))
    proxy.close()
    print(json.dumps({"ids": ids}))


def main() -> None:
    if mode == "outage":
        outage()
        return
    with SilentServer() as silent:
        port = silent.port if mode == "silent" else 1
        os.environ["EVENTRELAY_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
        os.environ.pop("EVENTRELAY_REDIS_URL", None)  # the doorbell uses the broker's Redis
        publish_seconds: list[float] = []
        timed_publish(publish_seconds)
        enqueue_one = enqueuer()
        totals, ids = [], []
        for i in range(count):
            started = time.perf_counter()
            ids.append(str(enqueue_one(i).delivery_id))
            totals.append(time.perf_counter() - started)
    print(json.dumps({"publish": publish_seconds, "total": totals, "ids": ids}))


if __name__ == "__main__":
    main()
