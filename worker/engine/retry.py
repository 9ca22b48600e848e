"""The retry policy: exponential backoff with full jitter, Retry-After, and when to give up."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from tenacity import wait_random_exponential

from eventrelay.worker.config import Settings
from eventrelay.worker.vendors.base import Vendor


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    max_age_seconds: float
    backoff_base_seconds: float
    backoff_cap_seconds: float

    @classmethod
    def for_vendor(cls, vendor: Vendor, settings: Settings) -> RetryPolicy:
        """Process defaults (EVENTRELAY_*), overridden by the vendor's own (<VENDOR>_*)."""
        vs = vendor.settings

        def pick(name: str) -> Any:
            own = getattr(vs, name, None)
            return own if own is not None else getattr(settings, name)

        return cls(
            max_attempts=pick("max_attempts"),
            max_age_seconds=pick("max_age_seconds"),
            backoff_base_seconds=pick("backoff_base_seconds"),
            backoff_cap_seconds=pick("backoff_cap_seconds"),
        )

    def backoff_seconds(self, attempt: int) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(cap, base·2^(n-1))]."""
        wait = wait_random_exponential(
            multiplier=self.backoff_base_seconds, max=self.backoff_cap_seconds
        )
        return float(wait(SimpleNamespace(attempt_number=attempt)))  # type: ignore[arg-type]

    def delay_seconds(self, attempt: int, retry_after: float | None) -> float:
        """The wait before the next attempt; a vendor's Retry-After wins, up to the cap."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.backoff_cap_seconds)
        return self.backoff_seconds(attempt)

    def give_up_reason(
        self, attempt_in_window: int, window_started_at: datetime, next_at: datetime
    ) -> str | None:
        """Why no further attempt is made, or None to retry at `next_at`."""
        if attempt_in_window >= self.max_attempts:
            return f"gave up after {attempt_in_window} attempts"
        if next_at - window_started_at > timedelta(seconds=self.max_age_seconds):
            return f"gave up: next attempt would be past the {self.max_age_seconds:g}s age limit"
        return None
