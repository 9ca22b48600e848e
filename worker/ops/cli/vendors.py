"""`eventrelay vendors`: the registered vendors and their gate; park one by hand, resume one."""

from __future__ import annotations

import click

from eventrelay.worker.ops.cli.output import EXIT_INVALID, fail, print_json
from eventrelay.worker.ops.cli.status import circuit_text


@click.group()
def vendors() -> None:
    """Vendor state: list, park by hand, resume a parked vendor."""


@vendors.command("list")
@click.option("--json", "as_json", is_flag=True)
def vendors_list(as_json: bool) -> None:
    """Registered vendors, their operations and circuit (cooling, parked, ...)."""
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.ops.operations import circuit
    from eventrelay.worker.vendors import VENDOR_CLASSES, broken_vendors

    data = {name: sorted(cls.operations) for name, cls in sorted(VENDOR_CLASSES.items())}
    redis_url = get_settings().effective_redis_url
    circuits = {name: circuit(name, redis_url) for name in data}
    broken = broken_vendors()  # plugins that failed to load, by entry point name
    if as_json:
        print_json({"vendors": data, "circuits": circuits, "broken": broken})
        return
    for name, why in broken.items():
        click.echo(f"{name}: not loaded: {why}", err=True)
    for name, ops in data.items():
        state = circuits[name]
        line = f"{name}: {', '.join(ops)}"
        if state["circuit"]:
            line += f" ({circuit_text(state)})"
        if state["parked_reason"]:
            line += (
                f": {state['parked_reason']}; fix the key, then `eventrelay vendors resume {name}`"
            )
        click.echo(line)


@vendors.command("resume")
@click.argument("vendor")
def vendors_resume(vendor: str) -> None:
    """Unpark a vendor after fixing its credentials; its waiting deliveries go out now."""
    from eventrelay.models.session import get_engine
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.errors import EventRelayError
    from eventrelay.worker.ops.operations import resume

    try:
        with get_engine().begin() as conn:
            done = resume(conn, vendor, get_settings().effective_redis_url)
    except EventRelayError as exc:
        fail(str(exc), EXIT_INVALID)
    click.echo(
        f"{vendor}: {'unparked' if done.was_parked else 'was not parked'}; "
        f"{len(done.due_now)} waiting deliveries are due now (the scheduler publishes them)"
    )


@vendors.command("park")
@click.argument("vendor")
@click.option("--reason", required=True, help="Why, as `status` and the consoles will show it.")
def vendors_park(vendor: str, reason: str) -> None:
    """Stop sending to a vendor until `eventrelay vendors resume` (its deliveries wait)."""
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.errors import EventRelayError
    from eventrelay.worker.ops.operations import park

    try:
        park(vendor, reason, get_settings().effective_redis_url)
    except EventRelayError as exc:
        fail(str(exc), EXIT_INVALID)
    click.echo(f"{vendor}: parked ({reason.strip()}); `eventrelay vendors resume {vendor}` to undo")
