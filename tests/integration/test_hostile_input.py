"""Hostile or broken input: refused clearly, never crashes, never stores half a job, never takes
the worker down. Secrets appear nowhere but in the outgoing request header."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, text

from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from eventrelay.worker.errors import InvalidJob
from eventrelay.worker.fleet import keys
from eventrelay.worker.ops.cli import cli
from eventrelay.worker.producer import enqueue, enqueue_many
from tests.conftest import SECRETS, TEST_ENV
from tests.integration import jobs
from tests.integration.helpers import wait_status
from tests.unit.test_properties import json_values


def _count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Delivery)).scalar_one())


job_like = (
    st.fixed_dictionaries(
        {},
        optional={
            "vendor": st.sampled_from(["botsi", "vtcdn", "infobip", "gravityfield"]) | json_values,
            "operation": st.sampled_from(["send_event", "create_profile"]) | json_values,
            "payload": json_values,
            "idempotency_key": json_values,
        },
    )
    | json_values
)


@pytest.mark.usefixtures("clean")
# Each example is a database round trip: at most 150, whatever the profile says.
@settings(
    max_examples=min(150, settings().max_examples),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batch=st.lists(job_like, min_size=1, max_size=4))
def test_enqueue_many_with_arbitrary_json_stores_all_or_nothing(batch: list[Any]) -> None:
    before = _count()
    valid = {
        "vendor": "gravityfield",
        "operation": "send_event",
        "payload": jobs.gravityfield_event(),
    }
    try:
        receipts = enqueue_many([valid, *batch])
    except InvalidJob as exc:
        assert exc.index is not None and exc.index >= 1
        assert _count() == before  # not even the valid first job
    else:
        assert _count() == before + sum(not r.duplicate for r in receipts)


@pytest.mark.usefixtures("clean")
# Each example runs the CLI's reader: at most 100, whatever the profile says.
@settings(
    max_examples=min(100, settings().max_examples),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(lines=st.lists(json_values.map(json.dumps) | st.text(max_size=40), min_size=1, max_size=4))
def test_cli_json_lines_reader_exits_0_or_2_and_never_crashes(lines: list[str]) -> None:
    before = _count()
    result = CliRunner().invoke(cli, ["send", "--file", "-"], input="\n".join(lines) + "\n")
    assert result.exit_code in (0, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    if result.exit_code == 2:
        assert _count() == before and "nothing was stored" in result.output


@pytest.mark.usefixtures("clean")
def test_deeply_nested_input_is_refused_not_crashing(cli: Any) -> None:
    deep = (
        '{"vendor": "vtcdn", "operation": "send_event", "payload": '
        + "[" * 100_000
        + "]" * 100_000
        + "}"
    )
    result = cli("send", input=deep + "\n", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    with pytest.raises(InvalidJob, match="nested deeper"):
        payload: Any = {}
        for _ in range(50):
            payload = {"x": payload}
        enqueue(
            "gravityfield",
            "send_event",
            {"user": {"uid": "u"}, "data": [{"type": "t", "p": payload}]},
        )


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize(("field", "value"), [("personId", ".."), ("definitionId", ".")])
def test_an_infobip_dot_segment_is_refused_by_send_and_nothing_is_stored(
    cli: Any, field: str, value: str
) -> None:
    # Sent as is, the segment would be removed by urllib3 and the event posted elsewhere.
    result = cli(
        "send",
        "--vendor",
        "infobip",
        "--operation",
        "send_event",
        "--payload",
        json.dumps(jobs.infobip_event() | {field: value}),
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"payload.{field}" in result.stderr and "nothing was stored" in result.stderr
    assert _count() == 0


@pytest.mark.usefixtures("clean", "pipeline")
def test_poison_messages_are_dropped_and_the_worker_keeps_delivering(
    pipeline: dict[str, Any], mock_vendors: Any, redis_client: Any
) -> None:
    from eventrelay.worker.fleet.celery_app import get_app

    app = get_app()

    for args in (
        ["nope", ["x"]],
        ["vtcdn", "not-a-list"],
        ["vtcdn", [1, 2]],
        [],
        ["vtcdn", [str(uuid.uuid4())], 3],
    ):
        app.send_task("eventrelay.deliver", args=args, queue="eventrelay.vtcdn")
    app.send_task("eventrelay.unknown_task", args=[1], queue="eventrelay.vtcdn")
    with app.producer_or_acquire() as producer:  # bytes that are not even a Celery message
        producer.publish(
            b"\x00garbage",
            routing_key="eventrelay.vtcdn",
            exchange="",
            content_type="application/x-garbage",
            content_encoding="binary",
        )
    receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update())
    wait_status(receipt.delivery_id, "delivered")
    assert pipeline["worker"].popen.poll() is None
    assert "dropping malformed deliver message" in pipeline["worker"].output()


@pytest.mark.usefixtures("clean", "pipeline")
def test_a_success_answer_too_deeply_nested_to_parse_is_delivered_and_not_sent_again(
    mock_vendors: Any,
) -> None:
    mock_vendors.set_faults("vtcdn", success_body="[" * 100_000)
    receipt = enqueue("vtcdn", "send_event", jobs.vtcdn_update())
    row = wait_status(receipt.delivery_id, "delivered", timeout=15)
    assert row.attempts == 1
    time.sleep(0.5)  # a retry, if one were scheduled, would be on its way by now
    assert len(mock_vendors.received("vtcdn")) == 1


@pytest.mark.usefixtures("clean", "pipeline")
def test_secrets_appear_nowhere_but_in_the_request_headers(
    pipeline: dict[str, Any], mock_vendors: Any, redis_client: Any, cli: Any
) -> None:
    mock_vendors.set_faults("botsi", fail_next=[500])
    mock_vendors.set_faults("vtcdn", unknown_users=["ghost@example.com"])
    receipts = enqueue_many(
        [
            {
                "vendor": "botsi",
                "operation": "create_profile",
                "payload": jobs.botsi_profile("sec-user"),
            },
            {
                "vendor": "vtcdn",
                "operation": "send_event",
                "payload": jobs.vtcdn_update(email="ghost@example.com"),
            },
            {"vendor": "infobip", "operation": "send_event", "payload": jobs.infobip_event()},
            # A producer that put the site key into the job: it is dropped, never stored.
            {
                "vendor": "gravityfield",
                "operation": "send_event",
                "payload": {**jobs.gravityfield_event(), "sec": TEST_ENV["GRAVITYFIELD_SITE_KEY"]},
            },
        ]
    )
    for r in receipts:
        wait_status(r.delivery_id, "delivered", "dead")
    mock_vendors.credentials["infobip_api_key"] = "rotated"  # a 401 too: parks, with a reason
    try:
        parked = enqueue("infobip", "send_event", jobs.infobip_event(transaction="after-rotation"))
        from tests.support import wait_for

        wait_for(lambda: redis_client.exists(keys.parked("infobip")), 20, what="parking")
    finally:
        mock_vendors.credentials["infobip_api_key"] = TEST_ENV["INFOBIP_API_KEY"]
        cli("vendors", "resume", "infobip")
    wait_status(parked.delivery_id, "delivered")

    # The vendor did receive the secrets, in headers only.
    sent = mock_vendors.received()
    assert any(r["headers"].get("authorization") == TEST_ENV["BOTSI_SECRET_KEY"] for r in sent)
    gf = [r for r in sent if r["vendor"] == "gravityfield"][0]
    assert gf["body"]["sec"] == TEST_ENV["GRAVITYFIELD_SITE_KEY"]  # filled in at send time

    dump = subprocess.run(
        [
            "pg_dump",
            "--data-only",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            TEST_ENV["EVENTRELAY_DATABASE_URL"].rsplit("/", 1)[1],
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    redis_dump = []
    for key in redis_client.scan_iter():
        kind = redis_client.type(key).decode()
        value: Any = {
            "string": redis_client.get,
            "list": lambda k: redis_client.lrange(k, 0, -1),
            "hash": redis_client.hgetall,
            "set": redis_client.smembers,
            "zset": lambda k: redis_client.zrange(k, 0, -1),
        }.get(kind, lambda k: b"")(key)
        redis_dump.append(repr((key, value)))
    logs = pipeline["worker"].output() + pipeline["scheduler"].output()
    for secret in SECRETS:
        assert secret not in dump, "a secret reached the database"
        assert secret not in "".join(redis_dump), "a secret reached Redis"
        assert secret not in logs, "a secret reached the logs"
    with get_engine().connect() as conn:
        reasons = (
            conn.execute(text("SELECT reason FROM deliveries WHERE reason IS NOT NULL"))
            .scalars()
            .all()
        )
    assert reasons and all(
        "ghost@example.com" not in r for r in reasons
    )  # PII stays out of reasons
