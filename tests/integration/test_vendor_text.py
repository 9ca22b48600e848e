"""What a vendor sends back is input: an error text with a NUL or a lone surrogate in it is
recorded (cleaned), never refused by PostgreSQL, through a real worker and the real mock."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration import jobs
from tests.integration.helpers import attempts, wait_status

pytestmark = pytest.mark.usefixtures("clean", "pipeline")

# vtcdn's error shape; json.loads turns the escapes into a NUL and a lone surrogate.
POISON_ERROR = (
    '{"errors": [{"message": "Invalid\\u0000 user", "description": "cut emoji \\ud83d here"}]}'
)
# Not JSON: a raw NUL byte and a lone surrogate's bytes in the body itself (the excerpt).
POISON_TEXT = "upstream\x00 failed \ud83d"


def _storable(text: str | None) -> bool:
    return (
        text is not None
        and "\x00" not in text
        and not any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)
    )


def test_a_400_with_a_nul_and_a_lone_surrogate_is_a_dead_letter_with_a_readable_reason(
    mock_vendors: Any,
) -> None:
    mock_vendors.set_faults("vtcdn", fail_next=[400], error_body=POISON_ERROR)
    receipt = jobs_enqueue()
    row = wait_status(receipt.delivery_id, "dead", timeout=15)
    assert row.reason == "HTTP 400: Invalid user: cut emoji \ufffd here"
    [attempt] = attempts(receipt.delivery_id)
    assert attempt.status_code == 400 and _storable(attempt.response_excerpt)
    assert len(mock_vendors.received("vtcdn")) == 1  # sent once, recorded once


def test_a_503_with_a_nul_and_a_lone_surrogate_is_retried_then_delivered(
    mock_vendors: Any,
) -> None:
    mock_vendors.set_faults("vtcdn", fail_next=[503], error_body=POISON_ERROR)
    first = jobs_enqueue()
    row = wait_status(first.delivery_id, "delivered", timeout=15)
    assert row.attempts == 2
    retried, delivered = attempts(first.delivery_id)
    assert (str(retried.outcome), retried.status_code) == ("retry", 503)
    assert _storable(retried.response_excerpt) and str(delivered.outcome) == "delivered"

    mock_vendors.set_faults("vtcdn", fail_next=[503], error_body=POISON_TEXT)
    second = jobs_enqueue(email="bo@example.com")
    wait_status(second.delivery_id, "delivered", timeout=15)
    [raw, _] = attempts(second.delivery_id)
    # The surrogate's three bytes are not UTF-8: each became U+FFFD when the body was decoded.
    assert raw.status_code == 503 and raw.response_excerpt.startswith("upstream failed \ufffd")


def test_a_vendors_words_in_any_script_are_kept_as_they_were_said(mock_vendors: Any) -> None:
    # The recorder sends a batch's attempts to PostgreSQL as one JSON document: accents, emoji
    # (outside the BMP), quotes and backslashes come back out exactly as the vendor sent them.
    words = 'Café 🎉 "déjà" vu \\ 東京 Ünïcødé'
    body = json.dumps({"errors": [{"message": words, "description": "x"}]}, ensure_ascii=False)
    mock_vendors.set_faults("vtcdn", fail_next=[400], error_body=body)
    receipt = jobs_enqueue()
    row = wait_status(receipt.delivery_id, "dead", timeout=15)
    assert row.reason == f"HTTP 400: {words}: x"
    [attempt] = attempts(receipt.delivery_id)
    assert attempt.response_excerpt == body


def jobs_enqueue(email: str = "alex@example.com") -> Any:
    from eventrelay.worker.producer import enqueue

    return enqueue("vtcdn", "send_event", jobs.vtcdn_update(email=email))
