"""A producer never waits for Redis: the job is already durable in the outbox, so a broker that
refuses connections or hangs costs the first enqueue a short timeout and later ones nothing,
and the scheduler publishes the jobs once it can.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from typing import Any

import pytest
from sqlalchemy import select

from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from tests.support import ROOT

FIRST_FAILED_PUBLISH_SECONDS = 0.25
LATER_PUBLISH_SECONDS = 0.005
# The whole later call (database insert and commit included) only guards against a wait
# moved elsewhere; a generous bound for a shared machine.
LATER_CALL_SECONDS = 0.1
JOBS = 4


def _run_producer(
    child_env: Any, database_url: str, mode: str, path: str, jobs: int = JOBS
) -> dict[str, Any]:
    env = child_env(EVENTRELAY_DJANGO_DATABASE_URL=database_url)
    done = subprocess.run(
        [sys.executable, "-m", "tests.apps.unreachable_broker_producer", mode, path, str(jobs)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("path", ["api", "django", "flask"])
@pytest.mark.parametrize("mode", ["refused", "silent"])
def test_enqueueing_with_the_broker_unreachable_costs_one_short_timeout_then_nothing(
    mode: str, path: str, child_env: Any, database_url: str
) -> None:
    from eventrelay.worker.engine.scheduler import Scheduler

    timings = _run_producer(child_env, database_url, mode, path)

    first, *later = timings["publish"]
    assert first <= FIRST_FAILED_PUBLISH_SECONDS, timings
    assert all(seconds <= LATER_PUBLISH_SECONDS for seconds in later), timings
    assert all(seconds <= LATER_CALL_SECONDS for seconds in timings["total"][1:]), timings

    # Every job is stored, waiting for the scheduler, which publishes it once it can.
    ids = [uuid.UUID(i) for i in timings["ids"]]
    with get_engine().connect() as conn:
        rows = conn.execute(
            select(Delivery.status, Delivery.dispatched_at).where(Delivery.id.in_(ids))
        ).all()
    assert [(str(status), dispatched) for status, dispatched in rows] == [("pending", None)] * JOBS
    assert Scheduler().tick().dispatched == JOBS


@pytest.mark.usefixtures("clean")
def test_after_an_outage_the_producer_publishes_again_without_a_restart(
    child_env: Any, database_url: str, redis_client: Any
) -> None:
    before, during, after = (
        uuid.UUID(i) for i in _run_producer(child_env, database_url, "outage", "api", 3)["ids"]
    )

    with get_engine().connect() as conn:
        dispatched = dict(conn.execute(select(Delivery.id, Delivery.dispatched_at)).all())
    assert dispatched[during] is None  # left to the scheduler
    published = [  # the delivery ids in the messages waiting for the vtcdn workers
        delivery_id
        for raw in redis_client.lrange("eventrelay.vtcdn", 0, -1)
        for delivery_id in json.loads(_body(raw))[0][1]
    ]
    assert sorted(published) == sorted([str(before), str(after)])
    assert dispatched[before] and dispatched[after]


def _body(raw: bytes) -> str:
    return base64.b64decode(json.loads(raw)["body"]).decode()
