"""What every command shares: JSON output, failing with an exit code, times and ages."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

import click

from eventrelay.worker.errors import EventRelayError

EXIT_INVALID = 2


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, sort_keys=True, default=str))


def fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"eventrelay: {message}", err=True)
    sys.exit(code)


def parse_when(value: str | None) -> datetime | None:
    """An ISO time (naive means UTC) or an age before now (30m, 12h, 7d)."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        from eventrelay.worker.ops.operations import parse_duration

        try:
            return datetime.now(UTC) - parse_duration(value)
        except EventRelayError:
            raise click.BadParameter(
                f"{value!r}: give an ISO time (2026-11-23T10:00) or an age (30m, 12h, 7d)"
            ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"
