"""`eventrelay dlq`: list, replay and purge dead letters."""

from __future__ import annotations

from typing import Any

import click

from eventrelay.worker.errors import EventRelayError
from eventrelay.worker.ops.cli.output import EXIT_INVALID, fail, parse_when, print_json


def _dead_filter(
    ids: tuple[str, ...],
    vendor: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
) -> Any:
    from eventrelay.worker.ops.operations import DeadFilter

    return DeadFilter(
        ids=ids, vendor=vendor, reason=reason, since=parse_when(since), until=parse_when(until)
    )


_filter_options = [
    click.option("--vendor", help="Only this vendor."),
    click.option("--reason", help="Only reasons containing this text (case-insensitive)."),
    click.option("--since", help="Dead-lettered at/after: ISO time or age (12h, 7d)."),
    click.option("--until", help="Dead-lettered before: ISO time or age."),
]


def _with_filters(func: Any) -> Any:
    for option in reversed(_filter_options):
        func = option(func)
    return func


@click.group()
def dlq() -> None:
    """Dead letters: list, replay, purge."""


@dlq.command("list")
@_with_filters
@click.option("--limit", default=100, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (documented shape).")
def dlq_list(
    vendor: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List dead deliveries, newest first, with their reasons."""
    from eventrelay.models.session import get_engine
    from eventrelay.worker.ops.operations import count_dead, dead_letters

    flt = _dead_filter((), vendor, reason, since, until)
    with get_engine().connect() as conn:
        rows = dead_letters(conn, flt, limit)
        total = count_dead(conn, flt)
    if as_json:
        print_json({"total": total, "dead_letters": rows})
        return
    for r in rows:
        click.echo(f"{r['id']}  {r['vendor']}/{r['operation']}  {r['finished_at']}  {r['reason']}")
    click.echo(f"{len(rows)} shown of {total} dead letters")


@dlq.command("replay")
@click.argument("ids", nargs=-1)
@_with_filters
@click.option("--all", "all_", is_flag=True, help="Replay every dead letter matching the filters.")
@click.option("--dry-run", is_flag=True, help="Only say how many would be replayed.")
@click.option("--json", "as_json", is_flag=True)
def dlq_replay(
    ids: tuple[str, ...],
    vendor: str | None,
    reason: str | None,
    since: str | None,
    until: str | None,
    all_: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Send dead deliveries again (by id, or --all matching filters). Never re-sends delivered."""
    from eventrelay.models.session import get_engine
    from eventrelay.worker.ops.operations import count_dead, replay
    from eventrelay.worker.producer import publish_after_commit

    if not ids and not (all_ or vendor or reason or since or until):
        fail(
            "name delivery ids, or use --all / --vendor / --reason / --since / --until",
            EXIT_INVALID,
        )
    try:
        flt = _dead_filter(ids, vendor, reason, since, until)
        with get_engine().begin() as conn:
            if dry_run:
                count = count_dead(conn, flt)
                rows = []
            else:
                rows = replay(conn, flt)
                count = len(rows)
    except EventRelayError as exc:
        fail(str(exc), EXIT_INVALID)
    if rows:
        publish_after_commit(rows)
    if as_json:
        print_json({"dry_run": dry_run, "count": count})
    else:
        click.echo(
            f"{count} dead letter(s) {'would be' if dry_run else ''} replayed".replace("  ", " ")
        )


@dlq.command("purge")
@click.option(
    "--older-than", required=True, help="Age, e.g. 30d: delete dead letters older than it."
)
@click.option("--dry-run", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def dlq_purge(older_than: str, dry_run: bool, as_json: bool) -> None:
    """Delete dead letters (and their attempts) that died longer ago than --older-than."""
    from eventrelay.models.session import get_engine
    from eventrelay.worker.ops.operations import parse_duration, purge_dead

    try:
        age = parse_duration(older_than)
    except EventRelayError as exc:
        fail(str(exc), EXIT_INVALID)
    with get_engine().begin() as conn:
        count = purge_dead(conn, age, dry_run)
    if as_json:
        print_json({"dry_run": dry_run, "count": count})
    else:
        click.echo(f"{count} dead letter(s) {'would be ' if dry_run else ''}purged")
