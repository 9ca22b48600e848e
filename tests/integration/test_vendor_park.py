"""`eventrelay vendors park NAME --reason TEXT`: an operator stops a vendor by hand."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from eventrelay.worker.fleet import breaker
from eventrelay.worker.producer import enqueue
from tests.conftest import TEST_ENV
from tests.integration import jobs
from tests.integration.helpers import delivery, wait_status

pytestmark = pytest.mark.usefixtures("clean", "pipeline")


def test_a_parked_vendor_gets_nothing_until_it_is_resumed(cli: Any, mock_vendors: Any) -> None:
    out = cli("vendors", "park", "vtcdn", "--reason", "vendor incident INC-42").stdout
    assert "parked" in out
    assert (
        breaker.parked_reason("vtcdn", TEST_ENV["EVENTRELAY_REDIS_URL"]) == "vendor incident INC-42"
    )
    status = json.loads(cli("status", "--json").stdout)["vendors"]["vtcdn"]
    assert status["circuit"] == "parked" and status["parked_reason"] == "vendor incident INC-42"

    receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update())
    time.sleep(1.5)
    assert str(delivery(receipt.delivery_id).status) == "pending"
    assert mock_vendors.received("vtcdn") == []

    assert "unparked" in cli("vendors", "resume", "vtcdn").stdout
    wait_status(receipt.delivery_id, "delivered")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["vendors", "park", "nope", "--reason", "x"], "valid vendors: botsi"),
        (["vendors", "park", "vtcdn", "--reason", "  "], "say why"),
        (["vendors", "park", "vtcdn"], "--reason"),
    ],
)
def test_park_refuses_an_unknown_vendor_or_no_reason(cli: Any, args: list[str], says: str) -> None:
    result = cli(*args, check=False)
    assert result.returncode == 2 and says in result.stderr
    assert breaker.parked_reason("vtcdn", TEST_ENV["EVENTRELAY_REDIS_URL"]) is None
