"""The `eventrelay` command line, run as a real process."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from tests.integration import jobs
from tests.integration.helpers import wait_status

pytestmark = pytest.mark.usefixtures("clean")


def _count() -> int:
    with get_engine().connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Delivery)).scalar_one())


def test_send_with_flags_prints_a_json_receipt(cli: Any) -> None:
    out = cli(
        "send",
        "--vendor",
        "vtcdn",
        "--operation",
        "send_event",
        "--payload",
        json.dumps(jobs.vtcdn_update()),
        "--idempotency-key",
        "k-1",
    ).stdout
    receipt = json.loads(out)
    assert set(receipt) == {"delivery_id", "vendor", "operation", "duplicate", "status"}
    assert receipt["duplicate"] is False and receipt["status"] == "pending"
    again = json.loads(
        cli(
            "send",
            "--json",
            json.dumps(
                {
                    "vendor": "vtcdn",
                    "operation": "send_event",
                    "payload": jobs.vtcdn_update(),
                    "idempotency_key": "k-1",
                }
            ),
        ).stdout
    )
    assert again["delivery_id"] == receipt["delivery_id"] and again["duplicate"] is True


def test_send_reads_json_lines_from_stdin_one_receipt_per_job(cli: Any) -> None:
    lines = "\n".join(
        json.dumps(
            {
                "vendor": "gravityfield",
                "operation": "send_event",
                "payload": jobs.gravityfield_event(uid=f"u{i}"),
            }
        )
        for i in range(3)
    )
    out = cli("send", input=lines + "\n\n").stdout.splitlines()
    assert len(out) == 3 and _count() == 3


def test_send_from_a_file(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(
        json.dumps(
            {"vendor": "infobip", "operation": "send_event", "payload": jobs.infobip_event()}
        )
        + "\n"
    )
    assert len(cli("send", "--file", str(path)).stdout.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (
            ["--vendor", "botsi", "--operation", "send_event", "--payload", '{"paywallId": "42"}'],
            None,
            "payload.paywallId",
        ),
        (["--vendor", "nope", "--operation", "x", "--payload", "{}"], None, "valid vendors: botsi"),
        (
            ["--vendor", "botsi", "--operation", "send_event", "--payload", "{not json"],
            None,
            "not valid JSON",
        ),
        (
            [],
            '{"vendor": "infobip", "operation": "send_event", "payload": {}}\nnot json\n',
            "line 2",
        ),
        (
            [],
            json.dumps(
                {
                    "vendor": "gravityfield",
                    "operation": "send_event",
                    "payload": {"user": {"uid": "u"}, "data": [{"type": "t"}]},
                }
            )
            + "\n"
            + json.dumps(
                {"vendor": "gravityfield", "operation": "send_event", "payload": {"user": {}}}
            )
            + "\n",
            "job #1",
        ),
    ],
)
def test_invalid_input_exits_2_with_the_reason_and_stores_nothing(
    cli: Any, args: list[str], stdin: str | None, message: str
) -> None:
    result = cli("send", *args, input=stdin, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "nothing was stored" in result.stderr
    assert result.stdout == ""
    assert _count() == 0


@pytest.mark.usefixtures("pipeline")
def test_status_and_show_report_in_their_documented_json_shapes(cli: Any) -> None:
    receipt = json.loads(
        cli(
            "send",
            "--vendor",
            "gravityfield",
            "--operation",
            "send_event",
            "--payload",
            json.dumps(jobs.gravityfield_event()),
        ).stdout
    )
    wait_status(uuid.UUID(receipt["delivery_id"]), "delivered")
    status = json.loads(cli("status", "--json").stdout)
    gf = status["vendors"]["gravityfield"]
    assert gf["counts"] == {
        "pending": 0,
        "delivering": 0,
        "delivered": 1,
        "dead": 0,
        "suppressed": 0,
    }
    assert gf["queues"] == {"eventrelay.gravityfield": 0, "eventrelay.gravityfield.retry": 0}
    assert gf["circuit"] == "closed" and gf["oldest_pending_age_seconds"] is None
    assert set(status["vendors"]) == {"botsi", "vtcdn", "infobip", "gravityfield"}

    shown = json.loads(cli("show", receipt["delivery_id"], "--json").stdout)
    assert shown["status"] == "delivered" and shown["payload"] == jobs.gravityfield_event()
    [attempt] = shown["attempt_history"]
    assert attempt["outcome"] == "delivered" and attempt["status_code"] == 200
    assert attempt["duration_ms"] >= 0 and attempt["number"] == 1


def test_show_unknown_delivery_exits_2(cli: Any) -> None:
    result = cli("show", str(uuid.uuid4()), check=False)
    assert result.returncode == 2 and "no delivery" in result.stderr


def test_dlq_purge_deletes_only_old_dead_letters(cli: Any) -> None:
    from datetime import timedelta

    from sqlalchemy import update

    from eventrelay.models.base import utcnow
    from eventrelay.worker.producer import enqueue_many

    old, recent, alive = enqueue_many(
        {
            "vendor": "gravityfield",
            "operation": "send_event",
            "payload": jobs.gravityfield_event(uid=u),
        }
        for u in ("old", "recent", "alive")
    )
    with get_engine().begin() as conn:
        for r, age in ((old, timedelta(days=40)), (recent, timedelta(days=1))):
            conn.execute(
                update(Delivery)
                .where(Delivery.id == r.delivery_id)
                .values(status="dead", finished_at=utcnow() - age, reason="test")
            )
    assert (
        json.loads(cli("dlq", "purge", "--older-than", "30d", "--dry-run", "--json").stdout)[
            "count"
        ]
        == 1
    )
    assert _count() == 3
    assert json.loads(cli("dlq", "purge", "--older-than", "30d", "--json").stdout)["count"] == 1
    with get_engine().connect() as conn:
        left = set(conn.execute(select(Delivery.id)).scalars())
    assert left == {recent.delivery_id, alive.delivery_id}


def test_dlq_replay_requires_ids_or_a_filter(cli: Any) -> None:
    result = cli("dlq", "replay", check=False)
    assert result.returncode == 2 and "--all" in result.stderr


def test_worker_command_runs_celery_with_events_and_the_chosen_queues(cli: Any) -> None:
    help_text = cli("worker", "--help").stdout
    for option in ("--queues", "--vendors", "--concurrency"):
        assert option in help_text
    bad = cli("worker", "--vendors", "nope", check=False)
    assert bad.returncode == 2 and "valid vendors" in bad.stderr


def test_a_database_without_tables_says_to_run_migrate(
    cli: Any, child_env: Any, tmp_path: Path
) -> None:
    env = child_env(EVENTRELAY_DATABASE_URL=f"sqlite:///{tmp_path / 'empty.db'}")
    result = cli("status", env=env, check=False)
    assert result.returncode == 1
    assert "run `eventrelay migrate`" in result.stderr and "Traceback" not in result.stderr


def test_status_table_fits_an_80_column_terminal_with_every_header_whole(cli: Any) -> None:
    from eventrelay.worker.ops.cli.status import STATUS_COLUMNS
    from tests.conftest import _child_env

    cli(
        "send",
        "--vendor",
        "vtcdn",
        "--operation",
        "send_event",
        "--payload",
        json.dumps(jobs.vtcdn_update()),
    )
    out = cli("status", env=_child_env(COLUMNS="80", LINES="40")).stdout
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, out
    assert "…" not in out, out  # nothing cut short, headers nor cells
    header = next(line for line in lines if "vendor" in line)
    for name, _ in STATUS_COLUMNS:
        assert name in header, (name, out)
    assert "pend: pending" in out and "done: delivered" in out  # the legend explains them
    row = next(line for line in lines if line.lstrip("│ ").startswith("vtcdn"))
    assert " 1 " in row  # the pending job is counted
