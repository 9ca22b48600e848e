"""Settings, read once from the environment.

Environment names are a contract other tools rely on (see the README's configuration table).
Vendor settings (base URL, keys, rate limit, retry overrides) belong to each vendor module:
`worker.vendors.base.VendorSettings` is their common part.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from eventrelay.worker.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///eventrelay.db"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
MAX_PARTITIONS = 1000


def is_redis_url(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


class Settings(BaseSettings):
    """Process-wide settings; every field is `EVENTRELAY_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="EVENTRELAY_", extra="ignore")

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
        problems = "; ".join(
            f"EVENTRELAY_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            if err["loc"]
            else str(err["msg"]).removeprefix("Value error, ")  # a rule over several settings
            for err in exc.errors(include_url=False, include_input=False)
        )
        first = exc.errors()[0]["loc"] if exc.errors() else ()
        raise ConfigurationError(
            f"invalid eventrelay setting(s): {problems}",
            env_var=f"EVENTRELAY_{'_'.join(str(p) for p in first).upper()}" if first else None,
        ) from None
