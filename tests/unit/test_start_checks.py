"""The start check's lines: the variable, what it must be, the value only where it is safe."""

from __future__ import annotations

import pytest
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.concurrency.solo import TaskPool as SoloPool
from celery.concurrency.thread import TaskPool as ThreadPool

from eventrelay.worker.engine.startup import check_pool, check_settings
from tests.support import env_vars


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("INFOBIP_RATE_LIMIT", "fast", "must be a number >= 0 (0: unlimited), got 'fast'"),
        ("VTCDN_RATE_LIMIT", "-1", "must be a number >= 0 (0: unlimited), got '-1'"),
        ("BOTSI_MAX_IN_FLIGHT", "0", "must be a whole number >= 1, got '0'"),
        ("GRAVITYFIELD_MAX_AGE_SECONDS", "nan", "must be a number > 0, got 'nan'"),
        ("EVENTRELAY_LOG_JSON", "maybe", "must be true or false, got 'maybe'"),
        ("EVENTRELAY_BATCH_SIZE", "0", "must be a whole number >= 1 and <= 500, got '0'"),
    ],
)
def test_each_bad_value_is_one_line_naming_the_variable_and_the_rule(
    variable: str, value: str, line: str
) -> None:
    with env_vars(**{variable: value}):
        refused = check_settings().refused
    assert refused == [f"{variable}: {line}"]


def test_zero_stays_an_unlimited_rate_and_a_missing_secret_only_waits() -> None:
    with env_vars(VTCDN_RATE_LIMIT="0", INFOBIP_API_KEY=""):
        found = check_settings()
    assert found.refused == []
    assert any(w.startswith("INFOBIP_API_KEY is not set") for w in found.waiting)


def test_the_scheduler_is_not_told_about_secrets_it_never_uses() -> None:
    with env_vars(INFOBIP_API_KEY=""):
        assert check_settings(sends=False).waiting == []


@pytest.mark.parametrize("pool", ["prefork", "processes", "threads", "solo"])
def test_pools_that_stop_warmly_are_accepted_by_alias(pool: str) -> None:
    assert check_pool(pool) is None


@pytest.mark.parametrize("pool", [PreforkPool, ThreadPool, SoloPool])
def test_pools_that_stop_warmly_are_accepted_by_class(pool: type) -> None:
    assert check_pool(pool) is None


@pytest.mark.parametrize(
    "pool", ["gevent", "eventlet", "custom", "celery.concurrency.gevent:TaskPool"]
)
def test_other_pools_are_refused_with_what_to_use(pool: str) -> None:
    refused = check_pool(pool) or ""
    assert "is not supported" in refused and "-P prefork" in refused
