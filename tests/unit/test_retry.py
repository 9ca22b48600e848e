from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eventrelay.worker.engine.retry import RetryPolicy
from eventrelay.worker.vendors.base import parse_retry_after

POLICY = RetryPolicy(
    max_attempts=5, max_age_seconds=3600, backoff_base_seconds=2, backoff_cap_seconds=60
)


def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    for attempt, ceiling in [(1, 2), (2, 4), (3, 8), (6, 60), (30, 60)]:
        samples = [POLICY.backoff_seconds(attempt) for _ in range(300)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > ceiling * 0.7  # spread over the whole range, not a fixed wait
        assert min(samples) < ceiling * 0.3


def test_retry_after_wins_over_backoff_but_not_over_the_cap() -> None:
    assert POLICY.delay_seconds(1, 17) == 17
    assert POLICY.delay_seconds(1, 7200) == 60


def test_gives_up_after_max_attempts_or_max_age() -> None:
    start = datetime.now(UTC)
    assert POLICY.give_up_reason(4, start, start + timedelta(seconds=1)) is None
    assert "5 attempts" in (POLICY.give_up_reason(5, start, start) or "")
    assert "age limit" in (POLICY.give_up_reason(1, start, start + timedelta(hours=2)) or "")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("soon", None),
        (None, None),
    ],
)
def test_retry_after_seconds(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_http_date() -> None:
    now = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Mon, 23 Nov 2026 12:01:30 GMT", now) == 90.0
    assert parse_retry_after("Mon, 23 Nov 2026 11:00:00 GMT", now) == 0.0


def test_defaults_retry_within_seconds_cap_at_30_minutes_give_up_after_24_hours() -> None:
    from eventrelay.worker.config import Settings
    from eventrelay.worker.vendors.vtcdn import Vtcdn, VtcdnSettings

    policy = RetryPolicy.for_vendor(
        Vtcdn(VtcdnSettings()),
        Settings(
            _env_file=None, backoff_base_seconds=2, backoff_cap_seconds=1800, max_age_seconds=86400
        ),
    )
    assert policy.backoff_seconds(1) <= 2
    assert policy.backoff_cap_seconds == 1800 and policy.max_age_seconds == 86400


def test_a_vendor_can_override_the_retry_policy() -> None:
    from eventrelay.worker.config import Settings
    from eventrelay.worker.vendors.infobip import Infobip, InfobipSettings

    policy = RetryPolicy.for_vendor(
        Infobip(InfobipSettings(max_attempts=3)), Settings(max_attempts=50)
    )
    assert policy.max_attempts == 3
