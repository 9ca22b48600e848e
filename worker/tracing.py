"""Traces across the outbox, with OpenTelemetry (`pip install 'eventrelay[otel]'`).

A job is enqueued inside the app's trace (a web request's span) and sent much later, by
another process; Celery's own instrumentation loses the trace across that hop
(opentelemetry-python-contrib#609). So, as Debezium's outbox does, the trace context is a
column of the job's row: at enqueue the active span's W3C `traceparent` (and `tracestate`) is
stored in `deliveries.trace_context`; each attempt is then a CLIENT span whose parent is that
stored context, and the vendor's request carries a `traceparent` of the attempt's span.

Only the W3C trace context is read and written (`TraceContextTextMapPropagator`), never the
globally configured propagators: their W3C baggage is the app's own data and must reach
neither our database nor a vendor.

Without OpenTelemetry, or with `OTEL_SDK_DISABLED=true`, nothing of it is imported: each hook
below is a check of one module global (README, "Tracing": the cost measured). Whether it is
on is decided once per process, at first use (a prefork child inherits its parent's answer).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from eventrelay.worker.redact import redact

if TYPE_CHECKING:
    from eventrelay.worker.engine.pump.request import SentGroup
    from eventrelay.worker.engine.state import Claimed
    from eventrelay.worker.vendors.base import OutboundRequest, SendResult, Vendor

# OpenTelemetry's environment-variable carrier (the "Environment Variables as Context
# Propagation Carriers" specification): a process started inside a trace gets it in these.
ENV_CARRIER = {"traceparent": "TRACEPARENT", "tracestate": "TRACESTATE"}
INSTRUMENTATION_NAME = "eventrelay"
REASON_MAX_CHARS = 200  # a span's status description: a reason, not a response body

_enabled: bool | None = None  # None: not decided yet in this process
_propagator: Any = None
_tracer: Any = None


def enabled() -> bool:
    """Whether this process traces: the OpenTelemetry API importable and not disabled."""
    global _enabled, _propagator
    if _enabled is None:
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            _enabled = False
        else:
            try:
                from opentelemetry.trace.propagation.tracecontext import (
                    TraceContextTextMapPropagator,
                )
            except ImportError:
                _enabled = False
            else:
                _propagator = TraceContextTextMapPropagator()
                _enabled = True
    return _enabled


def reset() -> None:
    """Decide again at next use (tests switch OpenTelemetry on and off)."""
    global _enabled, _propagator, _tracer
    _enabled = _propagator = _tracer = None


def current_context() -> dict[str, str] | None:
    """The active span's trace context as a W3C carrier to store with a job, or None (no
    active span, or tracing off)."""
    if not (_enabled or (_enabled is None and enabled())):
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)  # writes nothing without a valid active span
    return carrier or None


@contextmanager
def environment_context() -> Iterator[None]:
    """Within: the trace context of `TRACEPARENT` / `TRACESTATE` is the current one (for a
    command that a traced process started, e.g. `eventrelay send` in a traced CI job)."""
    if "TRACEPARENT" not in os.environ or not enabled():
        yield
        return
    from opentelemetry import context

    carrier = {key: os.environ[name] for key, name in ENV_CARRIER.items() if name in os.environ}
    token = context.attach(_propagator.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


class _Untraced:
    """The attempt of a process that does not trace: does nothing, costs one call."""

    __slots__ = ()

    def answered(self, result: SendResult) -> SendResult:
        return result

    def end(self, out: SentGroup) -> None:
        return None


UNTRACED = _Untraced()


def start_attempt(
    vendor: Vendor, group: Sequence[Claimed], request: OutboundRequest
) -> tuple[OutboundRequest, Attempt | _Untraced]:
    """Start the attempt's spans (one per delivery in the request, each in its job's trace);
    returns the request with the `traceparent` of the first one, and the spans' handle.

    A request carries one `traceparent`, so a batched request (Botsi's event arrays) names
    the span of its first delivery; every delivery's trace still has its own attempt span.
    """
    if not (_enabled or (_enabled is None and enabled())):
        return request, UNTRACED
    if not _sdk_installed():
        # The API alone (a library pulled it in, no SDK set up): every span would be a no-op,
        # so none is made; the job's context is passed on unchanged, as W3C asks of a party
        # that does not trace.
        return _passed_on(request, group[0].trace_context), UNTRACED
    traced = Attempt(vendor, group, request)
    return traced.request, traced


def _sdk_installed() -> bool:
    """Whether spans would record: a tracer provider other than the API's placeholders is set
    (asked at each attempt: an app may set its provider after the worker's first request)."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def _passed_on(request: OutboundRequest, stored: Mapping[str, str] | None) -> OutboundRequest:
    """`request` with the job's stored trace context (read and written as W3C's own)."""
    if not stored:
        return request
    from opentelemetry.context import Context

    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=_propagator.extract(stored, Context()))
    if not carrier:
        return request
    return dataclasses.replace(request, headers={**request.headers, **carrier})


class Attempt:
    """The spans of one request to a vendor, ended once its outcomes are known."""

    def __init__(self, vendor: Vendor, group: Sequence[Claimed], request: OutboundRequest):
        from opentelemetry import trace
        from opentelemetry.context import Context

        global _tracer
        if _tracer is None:
            from eventrelay import __version__

            _tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__)
        self._answered_ns: int | None = None
        self._result: SendResult | None = None
        attributes = _request_attributes(vendor, request, len(group))
        self._spans = []
        masked_url: str | None = None
        for c in group:
            # A fresh context, not the thread's: the parent is the job's, or none (a root).
            parent = _propagator.extract(c.trace_context or {}, context=Context())
            span = _tracer.start_span(
                f"{c.operation} {vendor.name}",
                context=parent,
                kind=trace.SpanKind.CLIENT,
                attributes={**attributes, **_delivery_attributes(c)},
            )
            if span.is_recording():  # masking costs more than the rest: only for a real span
                masked_url = masked_url or _masked_url(request.url)
                span.set_attribute("url.full", masked_url)
            self._spans.append((c, span))
        first_claimed, first = self._spans[0]
        if first.get_span_context().is_valid:
            carrier: dict[str, str] = {}
            _propagator.inject(carrier, context=trace.set_span_in_context(first))
            self.request = dataclasses.replace(request, headers={**request.headers, **carrier})
        else:  # no span of ours after all (a provider that makes none): as without an SDK
            self.request = _passed_on(request, first_claimed.trace_context)

    def answered(self, result: SendResult) -> SendResult:
        """Note the vendor's answer (its time ends the spans) and return it."""
        self._answered_ns = time.time_ns()
        self._result = result
        return result

    def end(self, out: SentGroup) -> None:
        """End every span with its delivery's outcome."""
        from opentelemetry.trace import Status, StatusCode

        result = self._result
        outcomes = {o.claimed.id: o for o in out.outcomes}
        for c, span in self._spans:
            o = outcomes.get(c.id)
            outcome = str(o.kind) if o is not None and o.kind is not None else None
            if o is None and out.resend:
                outcome = "split"  # the vendor refused the array: each element goes alone
            status_code = o.status_code if o is not None else None
            if o is None and result is not None:
                status_code = result.status_code
            if span.is_recording():
                if status_code is not None:
                    span.set_attribute("http.response.status_code", status_code)
                span.set_attribute("eventrelay.outcome", outcome or "released")
                if outcome != "delivered":
                    error_class = o.error_class if o is not None else None
                    span.set_attribute(
                        "error.type", str(status_code) if status_code else error_class or "_OTHER"
                    )
                    reason = o.reason if o is not None else None
                    span.set_status(Status(StatusCode.ERROR, redact(reason, REASON_MAX_CHARS)))
            span.end(end_time=self._answered_ns)


def _request_attributes(vendor: Vendor, request: OutboundRequest, size: int) -> dict[str, Any]:
    """The messaging and HTTP semantic conventions' attributes of the request."""
    url = urlsplit(request.url)
    attributes: dict[str, Any] = {
        "messaging.system": INSTRUMENTATION_NAME,
        "messaging.operation.type": "send",
        "messaging.destination.name": vendor.name,
        "http.request.method": request.method,
        "server.address": url.hostname or "",
        "eventrelay.vendor": vendor.name,
    }
    if url.port is not None:
        attributes["server.port"] = url.port
    else:
        attributes["server.port"] = 443 if url.scheme == "https" else 80
    if size > 1:
        attributes["messaging.batch.message_count"] = size
    return attributes


def _masked_url(url: str) -> str:
    """The URL with its path and query masked as log lines are (Infobip's path holds the
    person's email): the vendor's host stays readable."""
    parts = urlsplit(url)
    path = redact(unquote(parts.path), None)
    query = f"?{redact(unquote(parts.query), None)}" if parts.query else ""
    return f"{parts.scheme}://{parts.netloc}{path}{query}"


def _delivery_attributes(c: Claimed) -> Mapping[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.operation.name": c.operation,
        "messaging.message.id": str(c.id),
        "eventrelay.operation": c.operation,
        "eventrelay.attempt": c.attempt,
    }
    if c.attempt > 1:
        attributes["http.request.resend_count"] = c.attempt - 1
    return attributes
