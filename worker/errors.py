"""eventrelay's exceptions, drawn once.

    EventRelayError                 base of everything eventrelay raises on purpose
    ├── InvalidJob                  refused at the door, nothing stored (`.errors`: field paths)
    ├── ConfigurationError          a setting is missing or wrong (`.env_var` names what to set)
    ├── DeliveryNotFound            no delivery with that id
    └── Unsendable                  a stored job no request can be built from: dead at once

A failed delivery attempt is not an exception: `worker.vendors.base.send` returns a
`SendResult` whose `Verdict` (delivered / retry / dead / credentials) the worker records.
`requests` exceptions never leave `send`: they become a retry verdict there, with the class
name kept and the message redacted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class EventRelayError(Exception):
    """Base class of every error eventrelay raises on purpose."""


@dataclass(frozen=True)
class FieldError:
    """One problem in a job: where (`loc`, a dotted path) and what (`msg`)."""

    loc: str
    msg: str

    def __str__(self) -> str:
        return f"{self.loc}: {self.msg}" if self.loc else self.msg


class InvalidJob(EventRelayError):
    """A job was refused before anything was stored.

    `errors` lists every problem found, each with a dotted field path such as
    `payload.paywallId`, so a producer can fix all of them at once.
    """

    def __init__(self, errors: Sequence[FieldError], index: int | None = None) -> None:
        self.errors = list(errors)
        self.index = index
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"job #{self.index}: " if self.index is not None else ""
        return where + "invalid job: " + "; ".join(str(e) for e in self.errors)

    def as_dict(self) -> dict[str, object]:
        return {
            "error": "invalid_job",
            "index": self.index,
            "errors": [{"loc": e.loc, "msg": e.msg} for e in self.errors],
        }


class ConfigurationError(EventRelayError):
    """A setting is missing or invalid; `env_var` names the variable to set."""

    def __init__(self, message: str, env_var: str | None = None) -> None:
        self.env_var = env_var
        super().__init__(message)


class DeliveryNotFound(EventRelayError):
    """No delivery has that id."""


class Unsendable(EventRelayError):
    """A stored job that can never be sent as it is, raised by a vendor's `build_request`.

    The door refuses such jobs now, but rows stored before a rule existed (an Infobip `..`
    path parameter) are still in the database; retrying cannot change them, so the delivery
    is dead-lettered at once with this message as its reason.
    """
