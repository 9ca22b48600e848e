"""Logging: one structured line per attempt, JSON on request, personal data masked."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that, inside `batched_writes()`, writes the lines its thread emits
    there in one write at the end (each line is still formatted as it is logged).

    The recorder logs a line per attempt, a batch of up to a hundred at once: a write and a
    flush per line were a system call each, and each let the GIL go to one of the sender
    threads, so the recorder waited for it back a hundred times a batch."""

    def __init__(self, stream: Any = None) -> None:
        super().__init__(stream)
        self._held = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        held: list[str] | None = getattr(self._held, "lines", None)
        if held is None:
            super().emit(record)
            return
        try:
            held.append(self.format(record) + self.terminator)
        except Exception:  # as StreamHandler.emit: a line that cannot be formatted is reported
            self.handleError(record)

    @contextmanager
    def batched_writes(self) -> Iterator[None]:
        if getattr(self._held, "lines", None) is not None:  # already batching: one write
            yield
            return
        self._held.lines = []
        try:
            yield
        finally:
            lines, self._held.lines = self._held.lines, None
            if lines:
                with self.lock or contextlib.nullcontext():
                    try:
                        self.stream.write("".join(lines))
                        self.flush()
                    except Exception:
                        self.handleError(logging.makeLogRecord({"msg": "(batched lines)"}))


@contextmanager
def batched_writes() -> Iterator[None]:
    """Within: eventrelay's own handler (`configure`) writes this thread's lines at once."""
    handlers = [
        h for h in logging.getLogger("eventrelay").handlers if isinstance(h, BatchingStreamHandler)
    ]
    with contextlib.ExitStack() as stack:
        for handler in handlers:
            stack.enter_context(handler.batched_writes())
        yield


def configure(json_lines: bool = False, level: int = logging.INFO) -> None:
    """Set up eventrelay's loggers (the worker's Celery logging is left to Celery)."""
    handler = BatchingStreamHandler(sys.stderr)
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
