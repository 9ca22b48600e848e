"""Inspecting: `eventrelay status` (per vendor and state) and `eventrelay show` (one delivery)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

import click

from eventrelay.worker.errors import EventRelayError
from eventrelay.worker.ops.cli.output import EXIT_INVALID, age_text, fail, print_json

STATUS_COLUMNS: tuple[tuple[str, Literal["left", "right"]], ...] = (
    ("vendor", "left"),
    ("pend", "right"),
    ("sending", "right"),
    ("done", "right"),
    ("dead", "right"),
    ("supp", "right"),
    ("oldest", "right"),
    ("queued", "right"),
    ("circuit", "left"),
)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON (documented shape).")
def status(as_json: bool) -> None:
    """Deliveries per vendor and state, oldest pending age, queue depths, circuit state."""
    from eventrelay.models.session import get_engine
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.engine.retention import describe
    from eventrelay.worker.engine.scheduler import queue_depths
    from eventrelay.worker.fleet.queues import vendor_queues
    from eventrelay.worker.ops.operations import circuit, status_counts

    settings = get_settings()
    with get_engine().connect() as conn:
        vendors = status_counts(conn)
        retention = describe(conn, settings)
    depths = queue_depths(settings.broker_url)
    for name, entry in vendors.items():
        entry["queues"] = {q: (depths or {}).get(q) for q in vendor_queues(name)}
        entry.update(circuit(name, settings.effective_redis_url))
    data = {
        "generated_at": datetime.now(UTC).isoformat(),
        "vendors": vendors,
        "retention": retention,
    }
    if as_json:
        print_json(data)
        return
    _print_status_table(vendors, retention)


def _print_status_table(vendors: dict[str, Any], retention: dict[str, Any]) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # Short headers with a legend: at 80 columns rich would cut "pending", "delivering" and
    # "delivered" to the same "pendi…"/"deliv…". Padding on the right only: two spaces between
    # columns leave room for "cooling 30m" and seven-digit counts; 80 wide, the legend wraps
    # into two lines.
    table = Table(
        title="eventrelay status",
        box=box.SIMPLE_HEAD,
        min_width=80,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
        caption="pend: pending · sending: claimed by a worker · done: delivered · "
        "supp: suppressed · oldest: oldest pending · queued: messages in fresh/retry queues",
        caption_justify="left",
    )
    for col, justify in STATUS_COLUMNS:
        table.add_column(col, justify=justify, no_wrap=True)
    notes = []
    for name, entry in sorted(vendors.items()):
        c = entry["counts"]
        q = list(entry["queues"].values())
        if entry["parked_reason"]:
            notes.append(f"{name} is parked: {entry['parked_reason']}")
        table.add_row(
            name,
            *(str(c[s]) for s in ("pending", "delivering", "delivered", "dead", "suppressed")),
            age_text(entry["oldest_pending_age_seconds"]),
            "/".join("?" if v is None else str(v) for v in q),
            circuit_text(entry),
        )
    console = Console()
    console.print(table)
    for note in notes:
        console.print(note, soft_wrap=True)
    console.print(_retention_text(retention))


def _retention_text(info: dict[str, Any]) -> str:
    from eventrelay.worker.ops.operations import format_duration

    text = f"history: delivered and suppressed kept {format_duration(info['retention_seconds'])}"
    if "partition_seconds" in info:
        text += (
            f" (in {info['history_partitions']} partitions of "
            f"{format_duration(info['partition_seconds'])})"
        )
    oldest = info["oldest_row_created_at"]
    return text + (f"; oldest row kept: {oldest[:19]}Z" if oldest else "; no rows")


def circuit_text(entry: dict[str, Any]) -> str:
    """The circuit for a table: "closed", "cooling 12s", "-" when unknown."""
    if entry["circuit"] == "cooling" and entry["cooling_seconds_left"] is not None:
        return f"cooling {age_text(max(1.0, entry['cooling_seconds_left']))}"
    return str(entry["circuit"] or "-")


@click.command()
@click.argument("delivery_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (documented shape).")
def show(delivery_id: str, as_json: bool) -> None:
    """One delivery with its payload and attempts."""
    from eventrelay.models.session import get_engine
    from eventrelay.worker.ops.operations import show as show_delivery

    try:
        with get_engine().connect() as conn:
            data = show_delivery(conn, delivery_id)
    except EventRelayError as exc:
        fail(str(exc), EXIT_INVALID)
    if as_json:
        print_json(data)
        return
    for key in (
        "id",
        "vendor",
        "operation",
        "status",
        "attempts",
        "reason",
        "idempotency_key",
        "created_at",
        "next_attempt_at",
        "finished_at",
    ):
        click.echo(f"{key:>16}: {data[key]}")
    click.echo(f"{'payload':>16}: {json.dumps(data['payload'])}")
    for a in data["attempt_history"]:
        click.echo(
            f"  attempt {a['number']}: {a['outcome']} status={a['status_code']} "
            f"{a['duration_ms']}ms {a['error_class'] or ''} {a['response_excerpt'] or ''}"
        )
