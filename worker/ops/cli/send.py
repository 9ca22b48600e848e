"""`eventrelay send`: enqueue jobs from flags, a JSON job, or JSON lines."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import click

from eventrelay.worker.errors import EventRelayError, InvalidJob
from eventrelay.worker.ops.cli.output import EXIT_INVALID, fail, print_json


class _LineError(Exception):
    def __init__(self, lineno: int, message: str) -> None:
        self.lineno = lineno
        super().__init__(f"line {lineno}: {message}")


@click.command()
@click.option("--vendor", help="Vendor of a single job.")
@click.option("--operation", help="Operation of a single job.")
@click.option("--payload", help="Payload of a single job, as JSON.")
@click.option("--idempotency-key", help="Idempotency key of a single job.")
@click.option(
    "--json", "job_json", help="A whole job as JSON: {vendor, operation, payload, idempotency_key}."
)
@click.option(
    "-f", "--file", "file_", type=click.File("r"), help="JSON lines of jobs ('-' for stdin)."
)
def send(
    vendor: str | None,
    operation: str | None,
    payload: str | None,
    idempotency_key: str | None,
    job_json: str | None,
    file_: Any,
) -> None:
    """Enqueue jobs; prints one JSON receipt per job.

    All jobs are validated first: if any is invalid, nothing is stored and the exit code is 2.
    With OpenTelemetry installed, the trace in TRACEPARENT (and TRACESTATE) is the jobs' trace.
    """
    from eventrelay.worker.producer import enqueue_many
    from eventrelay.worker.tracing import environment_context

    try:
        jobs = _jobs(vendor, operation, payload, idempotency_key, job_json, file_)
        with environment_context():  # TRACEPARENT: the trace that started this command
            receipts = enqueue_many(jobs)
    except _LineError as exc:
        fail(f"invalid input: {exc}; nothing was stored", EXIT_INVALID)
    except InvalidJob as exc:
        fail(f"{exc}; nothing was stored", EXIT_INVALID)
    except EventRelayError as exc:
        fail(str(exc))
    for receipt in receipts:
        print_json(receipt.as_dict())


def _jobs(
    vendor: str | None,
    operation: str | None,
    payload: str | None,
    idempotency_key: str | None,
    job_json: str | None,
    file_: Any,
) -> list[Any]:
    """The jobs the options name: a file, one JSON job, one job from flags, or stdin."""
    if file_ is not None:
        return [job for _, job in _jobs_from_lines(file_)]
    if job_json is not None:
        return [_loads(job_json, "--json")]
    if vendor or operation or payload:
        missing = [
            n
            for n, v in (("--vendor", vendor), ("--operation", operation), ("--payload", payload))
            if not v
        ]
        if missing:
            fail(f"a single job needs {', '.join(missing)} too", EXIT_INVALID)
        job = {"vendor": vendor, "operation": operation, "payload": _loads(payload, "--payload")}
        if idempotency_key is not None:
            job["idempotency_key"] = idempotency_key
        return [job]
    if not sys.stdin.isatty():
        return [job for _, job in _jobs_from_lines(sys.stdin)]
    fail("nothing to send: give --vendor/--operation/--payload, --json, or --file", EXIT_INVALID)


def _jobs_from_lines(stream: Any) -> Iterator[tuple[int, Any]]:
    for lineno, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise _LineError(lineno, f"not valid JSON ({type(exc).__name__}: {exc})") from None


def _loads(text: str | None, what: str) -> Any:
    try:
        return json.loads(text or "")
    except (ValueError, RecursionError) as exc:
        raise _LineError(0, f"{what} is not valid JSON ({exc})") from None
