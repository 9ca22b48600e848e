"""A worker whose broker went away for a moment is back on it within a fraction of a second,
not after kombu's default reconnect schedule (2 s, then 4 s more, ...)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from eventrelay.worker.producer import enqueue_many
from tests.integration import jobs
from tests.integration.helpers import wait_status
from tests.integration.netfaults import TcpProxy
from tests.support import REDIS_HOST, TEST_REDIS_DB, start_worker

pytestmark = pytest.mark.usefixtures("clean")

OUTAGE_SECONDS = 2.5


def _batch(tag: str) -> list[dict[str, Any]]:
    return [  # a full message's worth: published whatever the doorbell says
        {
            "vendor": "vtcdn",
            "operation": "send_event",
            "payload": jobs.vtcdn_update(f"{tag}{i}@x.io"),
        }
        for i in range(20)
    ]


def test_a_worker_is_back_on_its_broker_soon_after_the_broker_is(
    tmp_path: Path, child_env: Any, mock_vendors: Any
) -> None:
    proxy = TcpProxy(int(REDIS_HOST.rsplit(":", 1)[1]))
    proxy.open()
    url = f"redis://127.0.0.1:{proxy.port}/{TEST_REDIS_DB}"
    worker = start_worker(
        child_env(EVENTRELAY_BROKER_URL=url, EVENTRELAY_REDIS_URL=url),
        tmp_path / "worker.log",
        concurrency=1,
    )
    try:
        for receipt in enqueue_many(_batch("before")):
            wait_status(receipt.delivery_id, "delivered")
        proxy.close()  # refused, and the worker's connections cut
        time.sleep(OUTAGE_SECONDS)
        proxy.open()
        back = time.monotonic()
        receipts = enqueue_many(_batch("after"))
        for receipt in receipts:
            wait_status(receipt.delivery_id, "delivered", timeout=20)
        took = time.monotonic() - back
    finally:
        worker.stop()
        proxy.close()
    assert took < 2.0, f"delivered {took:.1f} s after the broker was back"
