"""Settings, read once from the environment.

Environment names are a contract other tools rely on (see the README's configuration table).
Vendor settings (base URL, keys, rate limit, retry overrides) belong to each vendor module:
`worker.vendors.base.VendorSettings` is their common part.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import annotated_types
from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventrelay.models import session
from eventrelay.worker.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///eventrelay.db"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
MAX_PARTITIONS = 1000


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


class Settings(BaseSettings):
    """Process-wide settings; every field is `EVENTRELAY_<NAME>` in the environment."""

    # No inf or nan: `EVENTRELAY_LEASE_SECONDS=inf` would parse as a float and hold every lease
    # for ever.
    model_config = SettingsConfigDict(env_prefix="EVENTRELAY_", extra="ignore", allow_inf_nan=False)

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    # Only for a `filesystem://` broker (the demo without Redis): where messages are kept.
    broker_folder: str = ".eventrelay-broker"
    # Where the fleet-wide rate limiter, circuit breaker and parking live. Defaults to the broker
    # when the broker is Redis.
    redis_url: str | None = None

    # Retry policy; each vendor may override these with <VENDOR>_MAX_ATTEMPTS etc.
    max_attempts: int = Field(default=50, ge=1)
    max_age_seconds: float = Field(default=24 * 3600, gt=0)
    backoff_base_seconds: float = Field(default=2.0, gt=0)
    backoff_cap_seconds: float = Field(default=30 * 60, gt=0)

    connect_timeout_seconds: float = Field(default=3.05, gt=0)
    read_timeout_seconds: float = Field(default=10.0, gt=0)
    # A request's whole time, however slowly the vendor answers (the timeouts above bound each
    # read only). At most 60 s: the pump holds a row for the timeouts plus 95 s before it lets
    # it go to the fleet, and a request must end well before another worker may send it again.
    request_deadline_seconds: float = Field(default=30.0, gt=0, le=60)
    max_response_bytes: int = Field(default=64 * 1024, gt=0)

    # Redis transport: an unacknowledged message is delivered again after this long. It must
    # exceed the longest task (the lease); retry delays never rely on it (celery#2599).
    visibility_timeout_seconds: float = Field(default=3600.0, gt=0)
    # A claimed delivery is held this long past its worker's last heartbeat (every third of
    # it): a killed worker's deliveries go out again after about this long.
    lease_seconds: float = Field(default=10.0, gt=0)
    # Requests one worker process keeps in flight, shared by the vendors it serves; a vendor
    # may hold at most <VENDOR>_MAX_IN_FLIGHT of them (default 3/4). See README, "Tuning".
    max_in_flight: int = Field(default=256, ge=1, le=2000)
    # Delivery ids per published message.
    batch_size: int = Field(default=20, ge=1, le=500)
    max_payload_bytes: int = Field(default=256 * 1024, gt=0)
    idempotency_ttl_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    # A pending delivery published this long ago and still not claimed is published again
    # (its message may have been lost with the broker).
    redispatch_after_seconds: float = Field(default=300.0, gt=0)
    scheduler_interval_seconds: float = Field(default=1.0, gt=0)
    # Delivered and suppressed deliveries (and their attempts) are removed this long after they
    # finished; dead letters and pending work never are. See README, "Retention".
    retention_seconds: float = Field(default=30 * 24 * 3600, gt=0)
    # PostgreSQL: history is kept in one partition per this much time, so removing it is a
    # DROP, never a DELETE; rows stay up to one interval past the retention.
    partition_seconds: float = Field(default=24 * 3600, ge=1)

    log_json: bool = False

    @model_validator(mode="after")
    def _partitions_stay_few(self) -> Settings:
        # Every partition costs the planner on each statement that reads all history.
        if self.retention_seconds / self.partition_seconds > MAX_PARTITIONS:
            raise ValueError(
                f"EVENTRELAY_RETENTION_SECONDS / EVENTRELAY_PARTITION_SECONDS is "
                f"{self.retention_seconds / self.partition_seconds:.0f}: that many partitions per "
                f"table is too many (at most {MAX_PARTITIONS}); raise EVENTRELAY_PARTITION_SECONDS"
            )
        return self

    @model_validator(mode="after")
    def _retention_spans_a_partition(self) -> Settings:
        # Shorter, every retention pass would drop the partition it had just made (churn), and
        # an interrupted DETACH would then stop every record batch; see README, "Retention".
        if self.retention_seconds < self.partition_seconds:
            raise ValueError(
                f"EVENTRELAY_RETENTION_SECONDS ({self.retention_seconds:g}) is shorter than "
                f"EVENTRELAY_PARTITION_SECONDS ({self.partition_seconds:g}): history is kept in "
                "partitions of that length, so the retention must be at least one of them; "
                "raise EVENTRELAY_RETENTION_SECONDS or lower EVENTRELAY_PARTITION_SECONDS"
            )
        return self

    @property
    def effective_redis_url(self) -> str | None:
        if self.redis_url:
            return self.redis_url
        if is_redis_url(self.broker_url):
            return self.broker_url
        return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read on first use (cached; tests call
    `get_settings.cache_clear()`).

    Raises:
        ConfigurationError: naming every `EVENTRELAY_*` variable that holds a bad value.
    """
    try:
        return Settings()
    except ValidationError as exc:
        problems = describe_errors(exc, Settings, "EVENTRELAY_")
        raise ConfigurationError(
            f"invalid eventrelay setting(s): {'; '.join(text for _, text in problems)}",
            env_var=problems[0][0] if problems else None,
        ) from None


def describe_errors(
    exc: ValidationError, model: type[BaseModel], prefix: str
) -> list[tuple[str | None, str]]:
    """One `(variable, line)` per problem in settings read from the environment:
    `INFOBIP_RATE_LIMIT: must be a number >= 0 (0: unlimited), got 'fast'`.

    The value given is repeated only for numbers and flags: a URL may carry a password and a
    secret must never reach a log.
    """
    out: list[tuple[str | None, str]] = []
    for err in exc.errors(include_url=False):
        if not err["loc"]:  # a rule over several settings says it all itself
            out.append((None, str(err["msg"]).removeprefix("Value error, ")))
            continue
        name = str(err["loc"][0])
        env = f"{prefix}{name}".upper()
        field = model.model_fields.get(name)
        if field is None:
            out.append((env, f"{env}: {err['msg']}"))
            continue
        kind, shown = _kind_of(field.annotation)
        declared = _declared(model, name)
        bounds = [
            f"{op} {_number(getattr(m, attr))}"
            for m in declared.metadata
            for attr, op in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))
            if isinstance(m, annotated_types.BaseMetadata) and hasattr(m, attr)
        ]
        text = f"{env}: must be {kind}" + (" " + " and ".join(bounds) if bounds else "")
        if declared.description:
            text += f" ({declared.description})"
        if shown and "input" in err:
            text += f", got {str(err['input'])!r}"
        out.append((env, text))
    return out


def _declared(model: type[BaseModel], name: str) -> Any:
    """The field as first declared with its bounds: a subclass that only changes a default
    (Infobip's rate limit) keeps its base class's rule, and the message says it."""
    for cls in model.__mro__:
        fields = cls.__dict__.get("__pydantic_fields__")
        if (
            isinstance(fields, dict)
            and name in fields
            and (fields[name].metadata or fields[name].description)
        ):
            return fields[name]
    return model.model_fields[name]


def _kind_of(annotation: Any) -> tuple[str, bool]:
    """What a value of this type is called in a message, and whether the given value may be
    shown (never for text: URLs carry passwords, secrets are text)."""
    args = set(getattr(annotation, "__args__", ()) or (annotation,)) - {type(None)}
    if SecretStr in args or str in args:
        return "text", False
    if bool in args:
        return "true or false", True
    if int in args and float not in args:
        return "a whole number", True
    if float in args:
        return "a number", True
    return "valid", False


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# models/session reads no setting: what its engines need is given from here.
session.use_settings(
    database_url=lambda: get_settings().database_url,
    lease_seconds=lambda: get_settings().lease_seconds,
)
