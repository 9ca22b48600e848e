"""Retention settings that would make too many partitions are refused with a fix to apply."""

from __future__ import annotations

import pytest

from eventrelay.worker.config import get_settings
from eventrelay.worker.errors import ConfigurationError
from eventrelay.worker.ops.operations import format_duration
from tests.support import env_vars


def test_a_retention_of_too_many_partitions_is_refused_naming_what_to_raise() -> None:
    get_settings.cache_clear()
    try:
        with (
            env_vars(EVENTRELAY_RETENTION_SECONDS="2592000", EVENTRELAY_PARTITION_SECONDS="60"),
            pytest.raises(ConfigurationError) as caught,
        ):
            get_settings()
    finally:
        get_settings.cache_clear()
    message = str(caught.value)
    assert "EVENTRELAY_PARTITION_SECONDS" in message and "43200" in message
    assert "Value error" not in message


def test_the_defaults_keep_thirty_days_in_daily_partitions() -> None:
    get_settings.cache_clear()
    try:
        settings = get_settings()
    finally:
        get_settings.cache_clear()
    assert settings.retention_seconds == 30 * 86400
    assert settings.partition_seconds == 86400
    assert format_duration(settings.retention_seconds) == "30d"
    assert format_duration(90) == "90s"
