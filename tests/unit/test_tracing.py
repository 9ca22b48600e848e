"""Tracing with OpenTelemetry (worker/tracing.py): the trace of the code that enqueued a job
goes with it to the vendor. The worker's code runs in this process through the test kit's
drain(); the SDK's in-memory exporter holds the spans. No service at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import timeit
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eventrelay import enqueue
from eventrelay.testing import rate_limited
from tests.integration import jobs
from tests.otel import client_spans, in_memory_spans, traceparent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_services(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As tests/unit/test_testing_kit.py: the kit's own SQLite, nothing listening."""
    from eventrelay.worker import tracing
    from eventrelay.worker.config import get_settings

    for name in list(os.environ):
        if name.startswith("EVENTRELAY_") and not name.startswith("EVENTRELAY_TEST_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("EVENTRELAY_BROKER_URL", "redis://127.0.0.1:9/0")
    monkeypatch.setenv("EVENTRELAY_REDIS_URL", "redis://127.0.0.1:9/0")
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    get_settings.cache_clear()
    tracing.reset()
    yield
    get_settings.cache_clear()
    tracing.reset()


@pytest.fixture
def spans() -> Iterator[Any]:
    # In the test extra (CI has it); a checkout whose venv predates it skips, saying why.
    pytest.importorskip("opentelemetry.sdk", reason="pip install -e '.[test]' brings the SDK")
    exporter = in_memory_spans()
    exporter.clear()
    yield exporter
    exporter.clear()


def stored_context(delivery_id: Any) -> Any:
    from sqlalchemy import select

    from eventrelay.models.delivery import DELIVERIES
    from eventrelay.models.session import get_engine

    with get_engine().connect() as conn:
        return conn.execute(
            select(DELIVERIES.c.trace_context).where(DELIVERIES.c.id == delivery_id)
        ).scalar_one()


def test_a_job_enqueued_in_a_span_is_attempted_in_that_trace_and_the_vendor_gets_the_attempts_traceparent(
    eventrelay_outbox: Any, spans: Any
) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    with trace.get_tracer("shop").start_as_current_span("checkout") as checkout:
        receipt = enqueue("infobip", "send_event", jobs.infobip_event())
    parent = checkout.get_span_context()
    assert stored_context(receipt.delivery_id) == {"traceparent": traceparent(parent)}

    report = eventrelay_outbox.drain({"infobip": [201]})

    assert report[0].status == "delivered"
    [attempt] = client_spans(spans)
    assert attempt.kind is SpanKind.CLIENT
    assert attempt.context.trace_id == parent.trace_id
    assert attempt.parent.span_id == parent.span_id
    assert attempt.name == "send_event infobip"
    a = attempt.attributes
    assert a["eventrelay.vendor"] == "infobip"
    assert a["eventrelay.operation"] == "send_event"
    assert a["eventrelay.attempt"] == 1
    assert a["eventrelay.outcome"] == "delivered"
    assert a["messaging.system"] == "eventrelay"
    assert a["messaging.operation.type"] == "send"
    assert a["messaging.destination.name"] == "infobip"
    assert a["messaging.message.id"] == str(receipt.delivery_id)
    assert a["http.request.method"] == "POST"
    assert a["http.response.status_code"] == 201
    assert a["server.address"]
    # The person's email in Infobip's path is masked, as in the logs.
    assert a["url.full"].endswith(
        "/peopleevents/2/persons/j***@example.com/definitions/addToCart/events?identifierType=EMAIL"
    )
    assert a["url.full"].startswith("http://127.0.0.1:") or "://" in a["url.full"]
    assert "error.type" not in a
    [sent] = report.sent_to("infobip")
    assert sent.headers["traceparent"] == traceparent(attempt.context)
    assert "tracestate" not in sent.headers


def test_each_retry_is_its_own_attempt_span_in_the_jobs_trace_with_its_outcome(
    eventrelay_outbox: Any, spans: Any
) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import StatusCode

    with trace.get_tracer("shop").start_as_current_span("checkout") as checkout:
        enqueue("infobip", "send_event", jobs.infobip_event())

    report = eventrelay_outbox.drain({"infobip": [rate_limited(retry_after=30), 201]})

    assert report[0].status == "delivered"
    first, second = sorted(client_spans(spans), key=lambda s: s.attributes["eventrelay.attempt"])
    assert {first.context.trace_id, second.context.trace_id} == {
        checkout.get_span_context().trace_id
    }
    assert first.attributes["eventrelay.outcome"] == "retry"
    assert first.attributes["http.response.status_code"] == 429
    assert first.attributes["error.type"] == "429"
    assert first.status.status_code is StatusCode.ERROR
    assert second.attributes["eventrelay.attempt"] == 2
    assert second.attributes["http.request.resend_count"] == 1
    assert second.attributes["eventrelay.outcome"] == "delivered"
    assert [r.headers["traceparent"] for r in report.sent_to("infobip")] == [
        traceparent(first.context),
        traceparent(second.context),
    ]


def test_tracestate_is_kept_and_baggage_is_neither_stored_nor_sent(
    eventrelay_outbox: Any, spans: Any
) -> None:
    from opentelemetry import baggage, context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    remote = SpanContext(
        trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("shop", "checkout-7")]),
    )
    token = context.attach(baggage.set_baggage("user.email", "ana@example.com"))
    try:
        with trace.use_span(NonRecordingSpan(remote)):
            receipt = enqueue("infobip", "send_event", jobs.infobip_event())
    finally:
        context.detach(token)
    assert stored_context(receipt.delivery_id) == {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "shop=checkout-7",
    }

    report = eventrelay_outbox.drain({"infobip": [201]})

    [attempt] = client_spans(spans)
    assert attempt.parent.span_id == 0x00F067AA0BA902B7
    [sent] = report.sent_to("infobip")
    assert sent.headers["tracestate"] == "shop=checkout-7"
    assert "baggage" not in {k.lower() for k in sent.headers}


def test_without_an_active_span_nothing_is_stored_and_the_attempt_starts_a_trace(
    eventrelay_outbox: Any, spans: Any
) -> None:
    receipt = enqueue("infobip", "send_event", jobs.infobip_event())
    assert stored_context(receipt.delivery_id) is None

    report = eventrelay_outbox.drain({"infobip": [201]})

    [attempt] = client_spans(spans)
    assert attempt.parent is None
    assert report.sent_to("infobip")[0].headers["traceparent"] == traceparent(attempt.context)


def test_a_request_of_several_jobs_has_an_attempt_span_in_each_jobs_trace_and_names_the_first(
    eventrelay_outbox: Any, spans: Any
) -> None:
    from opentelemetry import trace

    tracer = trace.get_tracer("app")
    enqueue("botsi", "create_profile", jobs.botsi_profile(user="u-1"))
    with tracer.start_as_current_span("first") as first:
        one = enqueue("botsi", "send_event", jobs.botsi_event(user="u-1", paywall=1))
    with tracer.start_as_current_span("second") as second:
        two = enqueue("botsi", "send_event", jobs.botsi_event(user="u-1", paywall=2))

    report = eventrelay_outbox.drain()

    profile_request, events_request = report.sent_to("botsi")
    assert len(events_request.json) == 2  # one array, one request
    by_delivery = {s.attributes["messaging.message.id"]: s for s in client_spans(spans)}
    for receipt, parent in ((one, first), (two, second)):
        span = by_delivery[str(receipt.delivery_id)]
        assert span.context.trace_id == parent.get_span_context().trace_id
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.attributes["messaging.batch.message_count"] == 2
        assert span.attributes["eventrelay.outcome"] == "delivered"
    # The request names one span: its first job's.
    assert events_request.headers["traceparent"] in {
        traceparent(by_delivery[str(r.delivery_id)].context) for r in (one, two)
    }
    first_id = events_request.delivery_ids[0]
    assert events_request.headers["traceparent"] == traceparent(by_delivery[str(first_id)].context)


def test_traceparent_of_the_environment_is_the_trace_of_what_a_command_enqueues(
    eventrelay_outbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventrelay.worker import tracing

    monkeypatch.setenv("TRACEPARENT", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    monkeypatch.setenv("TRACESTATE", "ci=job-3")
    with tracing.environment_context():
        receipt = enqueue("infobip", "send_event", jobs.infobip_event())
    outside = enqueue("infobip", "send_event", jobs.infobip_event(transaction="other"))

    assert stored_context(receipt.delivery_id) == {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "tracestate": "ci=job-3",
    }
    assert stored_context(outside.delivery_id) is None


# Runs enqueue and a delivery (the kit's drain: the worker's send path) in a fresh process and
# prints the opentelemetry modules it then holds, and which modules imported them (other
# libraries may: redis-py's observability module imports OpenTelemetry's metrics if present).
_ENQUEUE_AND_DELIVER = """
import importlib.abc, json, os, sys
from pathlib import Path

importers = set()

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] != "opentelemetry":
            return None
        frame = sys._getframe(1)
        while frame.f_code.co_filename.startswith("<frozen importlib"):
            frame = frame.f_back
        importers.add(frame.f_globals.get("__name__", "?"))
        if os.environ["MODE"] == "absent":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Watch())
if os.environ["MODE"] == "on":
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    trace.set_tracer_provider(TracerProvider())
from eventrelay.testing.outbox import open_outbox
from tests.integration import jobs

with open_outbox(Path(os.environ["FOLDER"])) as outbox:
    from eventrelay import enqueue
    enqueue("infobip", "send_event", jobs.infobip_event())
    report = outbox.drain({"infobip": [201]})
    assert report[0].status == "delivered", str(report)
    sent = report.sent_to("infobip")[0]
    assert ("traceparent" in sent.headers) == (os.environ["MODE"] == "on"), sent.headers
print(json.dumps({
    "modules": sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"),
    "importers": sorted(importers),
}))
"""


def _after_a_delivery(mode: str, tmp_path: Path, **env: str) -> dict[str, list[str]]:
    run_env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith("EVENTRELAY_") or k.startswith("OTEL_"))
    }
    run_env.update(MODE=mode, FOLDER=str(tmp_path), PYTHONPATH=str(ROOT), **env)
    run_env.update(EVENTRELAY_BROKER_URL="redis://127.0.0.1:9/0")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_ENQUEUE_AND_DELIVER)],
        env=run_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found: dict[str, list[str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_without_opentelemetry_installed_nothing_of_it_is_imported(tmp_path: Path) -> None:
    assert _after_a_delivery("absent", tmp_path)["modules"] == []


def test_with_opentelemetry_disabled_eventrelay_imports_nothing_of_it(tmp_path: Path) -> None:
    found = _after_a_delivery("disabled", tmp_path, OTEL_SDK_DISABLED="true")
    # Other libraries may import it (here redis-py's observability module, for metrics).
    assert [m for m in found["importers"] if m.split(".")[0] == "eventrelay"] == []


def test_with_opentelemetry_on_the_same_run_imports_it_from_eventrelay(tmp_path: Path) -> None:
    """The control of the two tests above: they would see eventrelay's import."""
    pytest.importorskip("opentelemetry.sdk", reason="pip install -e '.[test]' brings the SDK")
    found = _after_a_delivery("on", tmp_path)
    assert "eventrelay.worker.tracing" in found["importers"]
    assert "opentelemetry.trace" in found["modules"]


_API_WITHOUT_SDK = """
import json, os
from pathlib import Path
from eventrelay.testing.outbox import open_outbox
from eventrelay.worker.tracing import environment_context
from tests.integration import jobs

with open_outbox(Path(os.environ["FOLDER"])) as outbox:
    from eventrelay import enqueue
    with environment_context():
        enqueue("infobip", "send_event", jobs.infobip_event())
    report = outbox.drain({"infobip": [201]})
    print(json.dumps(dict(report.sent_to("infobip")[0].headers)))
"""


def test_with_the_api_and_no_sdk_the_jobs_traceparent_is_passed_on_unchanged(
    tmp_path: Path,
) -> None:
    """A worker that does not trace (no SDK set up) still passes the job's trace on, as W3C
    asks of a party that does not take part."""
    pytest.importorskip("opentelemetry.trace", reason="pip install -e '.[test]' brings the API")
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTRELAY_", "OTEL_"))}
    run_env.update(FOLDER=str(tmp_path), PYTHONPATH=str(ROOT), TRACEPARENT=parent)
    run_env.update(TRACESTATE="ci=job-3", EVENTRELAY_BROKER_URL="redis://127.0.0.1:9/0")
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_API_WITHOUT_SDK)],
        env=run_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    headers = json.loads(done.stdout.strip().splitlines()[-1])
    assert (headers["traceparent"], headers["tracestate"]) == (parent, "ci=job-3")


def test_the_disabled_path_costs_a_few_hundred_nanoseconds_per_delivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a delivery pays for tracing when it is off: the enqueue's hook, the attempt's
    three calls. Measured here, the best of 5 runs of 100,000 (README, "Tracing")."""
    from eventrelay.worker import tracing

    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tracing.reset()
    assert tracing.current_context() is None
    request, vendor, out, result = object(), object(), object(), object()

    def one_delivery() -> None:
        tracing.current_context()
        _, traced = tracing.start_attempt(vendor, (), request)  # type: ignore[arg-type]
        traced.answered(result)  # type: ignore[arg-type]
        traced.end(out)  # type: ignore[arg-type]

    n = 100_000
    best = min(timeit.repeat(one_delivery, number=n, repeat=5)) / n
    print(f"tracing off: {best * 1e9:.0f} ns per delivery")
    assert best < 5e-6  # generous for a shared, loaded machine; ~0.3 us measured quiet
