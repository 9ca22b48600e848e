"""OpenTelemetry's SDK for tests: one in-memory exporter per process (a process has one
global tracer provider, set once)."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def in_memory_spans() -> Any:
    """The exporter every finished span of this process goes to (synchronously)."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


def client_spans(exporter: Any) -> list[Any]:
    from opentelemetry.trace import SpanKind

    return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.CLIENT]


def traceparent(span_context: Any) -> str:
    flags = int(span_context.trace_flags)
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}"
