from __future__ import annotations

from eventrelay.worker.redact import mask_pii, redact, register_secrets


def test_emails_phones_and_ips_are_masked() -> None:
    text = "user jane.doe+x@example.com from 192.168.1.1 phone +385 91 123 4567 id 42"
    masked = mask_pii(text)
    assert "jane.doe" not in masked and "192.168.1.1" not in masked and "123 4567" not in masked
    assert "example.com" in masked and "id 42" in masked


def test_registered_secrets_are_removed_and_text_is_truncated() -> None:
    register_secrets(["s3cr3t-value"])
    out = redact("auth failed for s3cr3t-value " + "x" * 1000, limit=100)
    assert "s3cr3t-value" not in out and len(out) == 100


def test_json_log_lines_carry_the_attempt_fields() -> None:
    import io
    import json
    import logging
    import uuid
    from datetime import UTC, datetime

    from eventrelay.models.delivery import AttemptOutcome, Lane
    from eventrelay.worker.engine.state import Claimed, Outcome
    from eventrelay.worker.logs import JsonFormatter, log_attempt

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("eventrelay.attempt")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        claimed = Claimed(
            uuid.uuid4(), "vtcdn", "send_event", {}, 3, datetime.now(UTC), 0, None, Lane.RETRY
        )
        log_attempt(
            Outcome(
                claimed,
                AttemptOutcome.DEAD,
                status_code=400,
                duration_ms=12,
                reason="HTTP 400: User not found: a@b.io",
            )
        )
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["delivery_id"] == str(claimed.id) and line["attempt"] == 3
    assert (line["vendor"], line["operation"], line["outcome"], line["status_code"]) == (
        "vtcdn",
        "send_event",
        "dead",
        400,
    )
    assert line["duration_ms"] == 12 and "a@b.io" not in stream.getvalue()


def test_dates_times_and_small_numbers_are_not_mistaken_for_personal_data() -> None:
    text = "2026-11-23 18:42:10,518 attempt=3 status=200 paywallId 42 duration_ms=1234"
    assert mask_pii(text) == text


def test_phone_and_ipv6_formats_are_masked() -> None:
    for value in (
        "(555) 123-4567",
        "555-123-4567",
        "+1 555 123 4567",
        "2001:db8::1",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "::1",
    ):
        assert value not in mask_pii(f"x {value} y"), value


def test_log_lines_keep_their_timestamp_and_mask_the_message() -> None:
    import logging

    from eventrelay.worker.logs import RedactingFormatter

    formatter = RedactingFormatter("%(asctime)s %(message)s")
    record = logging.makeLogRecord({"msg": "user %s", "args": ("ana@example.com",)})
    line = formatter.format(record)
    assert "ana@example.com" not in line and "a***@example.com" in line
    assert line[:4].isdigit() and "[phone]" not in line and "[ip]" not in line


def test_the_attempt_line_is_exact_and_its_reason_masked_once_in_plain_lines() -> None:
    import io
    import logging
    import uuid
    from datetime import UTC, datetime

    from eventrelay.models.delivery import AttemptOutcome, Lane
    from eventrelay.worker.engine.state import Claimed, Outcome
    from eventrelay.worker.logs import RedactingFormatter, log_attempt

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("eventrelay.attempt")
    logger.addHandler(handler)
    old_level = logger.level
    try:
        claimed = Claimed(
            uuid.uuid4(), "vtcdn", "send_event", {}, 2, datetime.now(UTC), 0, None, Lane.RETRY
        )
        logger.setLevel(logging.WARNING)  # delivered lines are INFO: not built, not written
        log_attempt(Outcome(claimed, AttemptOutcome.DELIVERED, status_code=200, duration_ms=7))
        assert stream.getvalue() == ""
        logger.setLevel(logging.INFO)
        log_attempt(Outcome(claimed, AttemptOutcome.DELIVERED, status_code=200, duration_ms=7))
        log_attempt(
            Outcome(claimed, AttemptOutcome.RETRY, status_code=503, duration_ms=9, reason="a@b.io")
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert stream.getvalue().splitlines() == [
        f"INFO delivery {claimed.id} vendor=vtcdn op=send_event attempt=2 outcome=delivered "
        "status=200 duration_ms=7",
        f"WARNING delivery {claimed.id} vendor=vtcdn op=send_event attempt=2 outcome=retry "
        "status=503 duration_ms=9 reason='a***@b.io'",
    ]


def test_a_batch_of_attempt_lines_is_written_at_once_and_reads_as_before() -> None:
    import io
    import logging
    import uuid
    from datetime import UTC, datetime

    from eventrelay.models.delivery import AttemptOutcome, Lane
    from eventrelay.worker.engine.state import Claimed, Outcome
    from eventrelay.worker.logs import BatchingStreamHandler, RedactingFormatter, batched_writes

    class CountedWrites(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            self.writes += 1
            return super().write(text)

    stream = CountedWrites()
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    root = logging.getLogger("eventrelay")
    saved = root.handlers[:], root.level
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    try:
        claimed = [
            Claimed(
                uuid.uuid4(), "vtcdn", "send_event", {}, 1, datetime.now(UTC), 0, None, Lane.FRESH
            )
            for _ in range(50)
        ]
        from eventrelay.worker.logs import log_attempt

        with batched_writes():
            for c in claimed:
                log_attempt(Outcome(c, AttemptOutcome.DELIVERED, status_code=200, duration_ms=3))
            assert stream.getvalue() == ""  # held until the batch ends
        logging.getLogger("eventrelay.worker").info("after the batch")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert stream.writes == 2  # the batch's 50 lines, then the next line on its own
    assert lines[:50] == [
        f"INFO delivery {c.id} vendor=vtcdn op=send_event attempt=1 outcome=delivered "
        "status=200 duration_ms=3"
        for c in claimed
    ]
    assert lines[50] == "INFO after the batch"
