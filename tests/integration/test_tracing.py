"""The README's "Tracing" example, run as written: a Django view of the sample project enqueues
a job inside its request's span (the SDK's in-memory exporter in this process), a real worker
started by `opentelemetry-instrument` exports its attempt spans over OTLP to a receiver of
this test, and the mock vendor receives the attempt's `traceparent`: one trace throughout."""

from __future__ import annotations

import json
import re
import shlex
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _child_env
from tests.integration.helpers import delivery, wait_status
from tests.otel import in_memory_spans
from tests.support import ROOT, Proc, env_vars, wait_for

pytest.importorskip("opentelemetry.sdk", reason="pip install -e '.[test]' brings the SDK")
pytestmark = pytest.mark.usefixtures("clean")

SETTINGS_MODULE = "tests.apps.django_project.settings"
BIN = Path(sys.executable).parent  # opentelemetry-instrument and eventrelay, as installed


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section("Tracing"), flags=re.S)


class OtlpReceiver:
    """An OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf), keeping every span."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        self.spans: list[Any] = []
        received = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                export = ExportTraceServiceRequest.FromString(body)
                for resource in export.resource_spans:
                    for scope in resource.scope_spans:
                        received.extend(scope.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def attempt_of(self, delivery_id: Any) -> Any:
        """The worker's attempt span of a delivery, once exported."""
        for span in list(self.spans):
            attributes = {a.key: a.value for a in span.attributes}
            message_id = attributes.get("messaging.message.id")
            if message_id is not None and message_id.string_value == str(delivery_id):
                return span
        return None


def attribute(span: Any, key: str) -> Any:
    [value] = [a.value for a in span.attributes if a.key == key]
    return getattr(value, value.WhichOneof("value"))


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.server.shutdown()


@pytest.fixture(scope="module")
def traced_worker(
    database_url: str, mock_vendors: Any, receiver: OtlpReceiver, logs_dir: Path
) -> Iterator[Proc]:
    """The README's worker command, its exports as written, the endpoint this test's."""
    worker_block = _blocks("bash")[0]
    env: dict[str, str] = {}
    for line in worker_block.splitlines():
        if line.startswith("export "):
            env.update(dict(pair.split("=", 1) for pair in shlex.split(line)[1:]))
    assert env["OTEL_TRACES_EXPORTER"] == "otlp"
    env["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"] = receiver.url
    env["OTEL_BSP_SCHEDULE_DELAY"] = "100"  # export within 0.1 s, not the default 5 s
    [command] = [line for line in worker_block.splitlines() if line.startswith("opentelemetry")]
    args = shlex.split(command)
    assert args[:3] == ["opentelemetry-instrument", "eventrelay", "worker"]
    args = [str(BIN / args[0]), str(BIN / args[1]), *args[2:], "-n", "traced@%h"]
    worker = Proc(args, _child_env(**env), logs_dir / "traced-worker.log")
    wait_for(
        lambda: "ready." in worker.output() or worker.popen.poll() is not None,
        60,
        what="the traced worker to start",
    )
    assert worker.popen.poll() is None, worker.output()[-3000:]
    yield worker
    worker.kill()  # the module's checks are done: a warm stop only waits


@pytest.fixture(scope="module")
def traced_django(database_url: str) -> Iterator[None]:
    """The sample Django project on the test database, instrumented as the README says."""
    with env_vars(
        EVENTRELAY_DJANGO_DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE=SETTINGS_MODULE
    ):
        import django
        from django.db import connection

        django.setup()
        from tests.apps.shop.models import Order

        with connection.schema_editor() as editor:
            editor.execute(f"DROP TABLE IF EXISTS {Order._meta.db_table}")
            editor.create_model(Order)
        in_memory_spans()  # the app's SDK: this process's in-memory exporter
        [app_setup] = _blocks("python")
        exec(compile(app_setup, "README.md (Tracing: the app)", "exec"), {})  # noqa: S102
        yield
        from opentelemetry.instrumentation.django import DjangoInstrumentor

        DjangoInstrumentor().uninstrument()
        with connection.schema_editor() as editor:
            editor.delete_model(Order)
        connection.close()


def _traceparent_sent_for(mock_vendors: Any, vendor: str) -> str:
    [sent] = mock_vendors.received(vendor)
    return str(sent["headers"]["traceparent"])


def test_a_django_view_its_enqueue_the_workers_attempt_and_the_vendor_request_share_one_trace(
    traced_django: None, traced_worker: Proc, receiver: OtlpReceiver, mock_vendors: Any
) -> None:
    from django.test import Client
    from opentelemetry.trace import SpanKind

    spans = in_memory_spans()
    spans.clear()
    response = Client().post(
        "/orders",
        data=json.dumps({"number": "T-1", "email": "ana@example.com"}),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    delivery_id = response.json()["delivery_id"]
    [view] = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    trace_id = view.context.trace_id

    wait_status(delivery_id, "delivered", timeout=30)
    attempt = wait_for(lambda: receiver.attempt_of(delivery_id), 30, what="the attempt's span")

    assert delivery(delivery_id).trace_context["traceparent"].split("-")[1] == f"{trace_id:032x}"
    assert attempt.trace_id == trace_id.to_bytes(16, "big")
    assert attempt.parent_span_id == view.context.span_id.to_bytes(8, "big")
    assert attempt.name == "send_event vtcdn"
    assert attempt.kind == attempt.SPAN_KIND_CLIENT
    assert attribute(attempt, "eventrelay.vendor") == "vtcdn"
    assert attribute(attempt, "eventrelay.operation") == "send_event"
    assert attribute(attempt, "eventrelay.attempt") == 1
    assert attribute(attempt, "eventrelay.outcome") == "delivered"
    assert attribute(attempt, "http.response.status_code") == 200
    _, sent_trace, sent_parent, _ = _traceparent_sent_for(mock_vendors, "vtcdn").split("-")
    assert sent_trace == f"{trace_id:032x}"
    assert sent_parent == attempt.span_id.hex()


def test_eventrelay_send_under_a_traceparent_is_delivered_in_that_trace(
    traced_worker: Proc, receiver: OtlpReceiver, mock_vendors: Any, cli: Any
) -> None:
    block = _blocks("bash")[1].replace("\\\n", " ")
    args = shlex.split(block)
    assignment, command = args[0], args[1:]
    name, traceparent = assignment.split("=", 1)
    assert name == "TRACEPARENT" and command[0] == "eventrelay"
    _, trace_id, parent_id, _ = traceparent.split("-")

    done = cli(*command[1:], env=_child_env(TRACEPARENT=traceparent))

    delivery_id = json.loads(done.stdout)["delivery_id"]
    wait_status(delivery_id, "delivered", timeout=30)
    attempt = wait_for(lambda: receiver.attempt_of(delivery_id), 30, what="the attempt's span")
    assert attempt.trace_id.hex() == trace_id
    assert attempt.parent_span_id.hex() == parent_id
    _, sent_trace, sent_parent, _ = _traceparent_sent_for(mock_vendors, "vtcdn").split("-")
    assert (sent_trace, sent_parent) == (trace_id, attempt.span_id.hex())
