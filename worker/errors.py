"""eventrelay's exceptions, drawn once.

    EventRelayError                 base of everything eventrelay raises on purpose
    ├── InvalidJob                  refused at the door, nothing stored (`.errors`: field paths)
    ├── ConfigurationError          a setting is missing or wrong (`.env_var` names what to set)
    ├── DeliveryNotFound            no delivery with that id
    └── DeliveryFailed              one attempt to hand a job to its vendor failed
        ├── Retryable               try again later (`.retry_after` seconds when the vendor said)
        ├── Permanent               the vendor refused the job; retrying cannot help
        └── CredentialsRejected     the vendor refused our key: every job of that vendor would fail

`requests` exceptions never leave `worker.vendors.base`: they are translated into `Retryable`
there, with the class name kept and the message redacted.
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


class DeliveryFailed(EventRelayError):
    """One attempt to hand a job to its vendor failed.

    Carries what an operator needs and nothing secret: the vendor, the HTTP status (None when
    no response came) and a short, redacted excerpt of the vendor's answer.
    """

    def __init__(
        self,
        reason: str,
        *,
        vendor: str = "",
        status_code: int | None = None,
        error_class: str | None = None,
        excerpt: str = "",
    ) -> None:
        self.reason = reason
        self.vendor = vendor
        self.status_code = status_code
        self.error_class = error_class
        self.excerpt = excerpt
        super().__init__(reason)

    def __str__(self) -> str:
        status = f" HTTP {self.status_code}" if self.status_code is not None else ""
        return f"{self.vendor}{status}: {self.reason}"


class Retryable(DeliveryFailed):
    """Worth trying again; `retry_after` is the vendor's own wait in seconds, if it gave one."""

    def __init__(self, reason: str, *, retry_after: float | None = None, **kw: object) -> None:
        self.retry_after = retry_after
        super().__init__(reason, **kw)  # type: ignore[arg-type]


class Permanent(DeliveryFailed):
    """The vendor refused this job; it is dead-lettered with the vendor's reason."""


class CredentialsRejected(DeliveryFailed):
    """The vendor refused our credentials (401): the vendor is parked, not the job killed."""
