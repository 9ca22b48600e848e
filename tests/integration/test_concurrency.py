"""Many producers racing on the same idempotency keys create exactly one delivery per key."""

from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any

import pytest
from sqlalchemy import func, select

from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from tests.integration import jobs
from tests.integration.helpers import wait_status
from tests.support import wait_for

pytestmark = pytest.mark.usefixtures("clean", "pipeline")

PRODUCERS = 8
KEYS = 40


def _produce(worker_no: int, barrier: Any, out: Any) -> None:
    from eventrelay.models.session import reset_engine
    from eventrelay.worker.producer import enqueue, enqueue_many

    reset_engine()
    barrier.wait()
    receipts = []
    # Overlapping keys, in a different order per producer, singly and in bulk.
    keys = list(range(KEYS))[worker_no % 3 :: 1] if worker_no % 2 else list(reversed(range(KEYS)))
    for k in keys[: KEYS // 2]:
        receipts.append(
            enqueue(
                "infobip",
                "send_event",
                jobs.infobip_event(transaction=f"t{k}"),
                idempotency_key=f"order-{k}",
            )
        )
    receipts += enqueue_many(
        {
            "vendor": "infobip",
            "operation": "send_event",
            "payload": jobs.infobip_event(transaction=f"t{k}"),
            "idempotency_key": f"order-{k}",
        }
        for k in keys[KEYS // 2 :]
    )
    out.put([(r.delivery_id.hex, r.duplicate) for r in receipts])


def test_eight_producers_on_overlapping_keys_make_one_delivery_each(mock_vendors: Any) -> None:
    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(PRODUCERS), ctx.Queue()
    procs = [ctx.Process(target=_produce, args=(n, barrier, out)) for n in range(PRODUCERS)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    with get_engine().connect() as conn:
        count = conn.execute(select(func.count()).select_from(Delivery)).scalar_one()
        keys = conn.execute(
            select(func.count(func.distinct(Delivery.idempotency_key)))
        ).scalar_one()
    assert count == keys  # never two deliveries for one key
    new = [r for batch in results for r in batch if not r[1]]
    assert len(new) == count  # each delivery was reported as new to exactly one producer
    wait_for(lambda: len(mock_vendors.received("infobip")) >= count, 60, what="all deliveries")
    assert mock_vendors.stats()["infobip"]["duplicates"] == 0
    assert len(mock_vendors.received("infobip")) == count
    assert os.getpid()  # the parent survived forking producers


def test_a_job_is_durable_when_the_broker_is_down_at_enqueue(cli: Any, child_env: Any) -> None:
    # This producer's broker is unreachable; the worker and scheduler use the real one.
    env = child_env(
        EVENTRELAY_BROKER_URL="redis://127.0.0.1:1/0", EVENTRELAY_REDIS_URL="redis://127.0.0.1:1/0"
    )
    result = cli(
        "send",
        "--vendor",
        "gravityfield",
        "--operation",
        "send_event",
        "--payload",
        '{"user": {"uid": "u-outbox"}, "data": [{"type": "purchase"}]}',
        env=env,
    )
    import json
    import uuid

    receipt = json.loads(result.stdout)
    assert "broker unavailable" in result.stderr
    wait_status(uuid.UUID(receipt["delivery_id"]), "delivered", timeout=30)
