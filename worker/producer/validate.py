"""Validation at the door: a job is checked completely before anything is stored."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from eventrelay.worker.config import Settings, get_settings
from eventrelay.worker.errors import FieldError, InvalidJob
from eventrelay.worker.producer.storable import payload_text_problems, text_problem
from eventrelay.worker.vendors import get_vendor
from eventrelay.worker.vendors.base import PreparedJob

MAX_KEY_CHARS = 255
# Deeper JSON than any vendor body needs; past this, recursion in encoders is the risk.
MAX_NESTING_DEPTH = 32
THROTTLE_PREFIX = "~throttle:"
JOB_FIELDS = ("vendor", "operation", "payload", "idempotency_key")


def validate_job(
    vendor: Any,
    operation: Any,
    payload: Any,
    idempotency_key: Any = None,
    settings: Settings | None = None,
) -> PreparedJob:
    """Check one job completely; raises `InvalidJob` listing every problem found."""
    settings = settings or get_settings()
    errors: list[FieldError] = []
    if not isinstance(vendor, str) or not vendor:
        raise InvalidJob([FieldError("vendor", "must be a vendor name (a string)")])
    adapter = get_vendor(vendor)  # raises InvalidJob listing the valid vendors
    adapter.check_operation(operation)
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str)
        or not idempotency_key.strip()
        or len(idempotency_key) > MAX_KEY_CHARS
        or idempotency_key.startswith(THROTTLE_PREFIX)
    ):
        errors.append(
            FieldError(
                "idempotency_key",
                f"must be a non-empty string of at most {MAX_KEY_CHARS} "
                f"characters, not starting with {THROTTLE_PREFIX!r}",
            )
        )
    elif idempotency_key is not None and (problem := text_problem(idempotency_key)):
        errors.append(FieldError("idempotency_key", problem))
    if _depth(payload) > MAX_NESTING_DEPTH:
        raise InvalidJob(
            [FieldError("payload", f"is nested deeper than {MAX_NESTING_DEPTH} levels")]
        )
    try:
        encoded = json.dumps(payload, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidJob([FieldError("payload", f"must be plain JSON data: {exc}")]) from None
    if len(encoded.encode()) > settings.max_payload_bytes:
        errors.append(
            FieldError(
                "payload",
                f"is {len(encoded.encode())} bytes; the limit is "
                f"{settings.max_payload_bytes} (EVENTRELAY_MAX_PAYLOAD_BYTES)",
            )
        )
    errors.extend(payload_text_problems(payload))
    if errors:
        raise InvalidJob(errors)
    job = adapter.prepare(operation, json.loads(encoded), idempotency_key)
    _check_column_lengths(job)
    return job


def _check_column_lengths(job: PreparedJob) -> None:
    """What a vendor rule derived must fit its column too. Vendor models bound the fields they
    derive from (with their field path); this catches a rule that would still overflow."""
    for name, value in (("idempotency_key", job.idempotency_key), ("user_ref", job.user_ref)):
        if value is not None and len(value) > MAX_KEY_CHARS:
            raise InvalidJob(
                [
                    FieldError(
                        "payload",
                        f"gives a {name} of {len(value)} characters; at most "
                        f"{MAX_KEY_CHARS} can be stored",
                    )
                ]
            )


def _depth(value: Any) -> int:
    """Nesting depth of lists/dicts, without recursion (hostile input can be very deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if deepest > MAX_NESTING_DEPTH:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


def prepare_jobs(jobs: Iterable[Any], settings: Settings | None = None) -> list[PreparedJob]:
    """Validate every job before anything is stored.

    Raises:
        InvalidJob: listing every problem of the first bad job, `.index` naming it.
    """
    settings = settings or get_settings()
    return [prepare_job(i, job, settings) for i, job in enumerate(jobs)]


def prepare_job(index: int, job: Any, settings: Settings) -> PreparedJob:
    """One job dict (`vendor`, `operation`, `payload`, optional `idempotency_key`)."""
    if not isinstance(job, Mapping):
        raise InvalidJob(
            [FieldError("", "a job must be an object with vendor, operation, payload")], index
        )
    unknown = sorted(set(job) - set(JOB_FIELDS))
    missing = [k for k in JOB_FIELDS[:3] if k not in job]
    if unknown or missing:
        raise InvalidJob(
            [FieldError(k, "unknown job field") for k in unknown]
            + [FieldError(k, "required") for k in missing],
            index,
        )
    try:
        return validate_job(
            job["vendor"], job["operation"], job["payload"], job.get("idempotency_key"), settings
        )
    except InvalidJob as exc:
        raise InvalidJob(exc.errors, index) from None
