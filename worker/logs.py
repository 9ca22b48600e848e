"""Logging: one structured line per attempt, JSON on request, personal data masked."""

from __future__ import annotations

import json
import logging
import sys
from typing import TYPE_CHECKING, Any

from eventrelay.worker.redact import redact

if TYPE_CHECKING:
    from eventrelay.worker.engine.state import Outcome

attempt_log = logging.getLogger("eventrelay.attempt")

_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _redacted_message(record: logging.LogRecord) -> str:
    """The record's message with secrets and personal data masked, unless the code that
    logged it built it from safe fields and redacted parts (`_redacted`, the attempt line)."""
    message = record.getMessage()
    return message if getattr(record, "_redacted", False) else redact(message, None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the `extra=` fields become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _redacted_message(record),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                data[key] = value
        if record.exc_info:
            data["exc"] = redact(self.formatException(record.exc_info), 2000)
        return json.dumps(data, default=str)


class RedactingFormatter(logging.Formatter):
    """Plain lines; the message and any traceback are redacted, the timestamp is not."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = _redacted_message(record)
        return super().formatMessage(record)

    def formatException(self, ei: Any) -> str:  # noqa: N802
        return redact(super().formatException(ei), None)


def configure(json_lines: bool = False, level: int = logging.INFO) -> None:
    """Set up eventrelay's loggers (the worker's Celery logging is left to Celery)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    )
    root = logging.getLogger("eventrelay")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def log_attempt(o: Outcome) -> None:
    """The line operators grep: delivery, vendor, operation, attempt, outcome, status, time.

    Built only when its level is on. Its fields are ids, registered names and numbers, and the
    reason is redacted here once, so the formatters do not scan the line again (`_redacted`).
    """
    delivered = o.kind is not None and str(o.kind) == "delivered"
    level = logging.INFO if delivered else logging.WARNING
    if not attempt_log.isEnabledFor(level):
        return
    c = o.claimed
    fields: dict[str, Any] = {
        "delivery_id": str(c.id),
        "vendor": c.vendor,
        "operation": c.operation,
        "attempt": c.attempt,
        "outcome": str(o.kind),
        "status_code": o.status_code,
        "duration_ms": o.duration_ms,
        "_redacted": True,
    }
    message = (
        f"delivery {c.id} vendor={c.vendor} op={c.operation} attempt={c.attempt} "
        f"outcome={o.kind} status={o.status_code} duration_ms={o.duration_ms}"
    )
    if o.reason and o.kind is not None and not delivered:
        reason = redact(o.reason)
        fields["reason"] = reason
        message += f" reason={reason!r}"
    attempt_log.log(level, message, extra=fields)
