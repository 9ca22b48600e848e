"""Fault knobs every vendor mock has (a vendor's own ones are its VendorMock.knobs), and the
per-vendor counters: what `POST /_mock/faults` sets and `GET /_mock/stats` shows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from eventrelay.worker.dev.mock.base import VendorMock, is_int, is_number, is_text, parse_count
from eventrelay.worker.dev.mock.http import MAX_BODY_BYTES
from eventrelay.worker.dev.mock.vendors import VENDOR_MOCKS

MAX_HANG_SECONDS = 60.0


def format_retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value  # an HTTP date, passed through as given
    return str(int(value)) if float(value).is_integer() else str(value)


def _parse_fraction(value: Any) -> float:
    if not is_number(value) or not 0 <= value <= 1:
        raise ValueError("must be a number between 0 and 1")
    return float(value)


def _parse_non_negative(value: Any) -> float:
    if not is_number(value) or value < 0:
        raise ValueError("must be a non-negative number")
    return float(value)


def _parse_hang(value: Any) -> float:
    # Bounded so a forgotten knob cannot wedge a suite for longer than a minute.
    return min(_parse_non_negative(value), MAX_HANG_SECONDS)


def _parse_status(value: Any) -> int:
    if not is_int(value) or not 200 <= value <= 599:
        raise ValueError("must be an HTTP status code between 200 and 599")
    return int(value)


def _parse_status_list(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise ValueError("must be a list of HTTP status codes")
    return [_parse_status(status) for status in value]


def _parse_success_body(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string (the raw body) or null")
    if len(value.encode()) > MAX_BODY_BYTES:
        raise ValueError(f"must be at most {MAX_BODY_BYTES} bytes")
    return value


def _parse_error_body(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("must be a string (the raw body) or null")
    # surrogatepass: a lone surrogate goes out as the bytes a broken vendor would send.
    if len(value.encode("utf-8", "surrogatepass")) > MAX_BODY_BYTES:
        raise ValueError(f"must be at most {MAX_BODY_BYTES} bytes")
    return value


def _parse_retry_after(value: Any) -> float | str | None:
    if value is None or is_text(value):
        return cast("str | None", value)
    return _parse_non_negative(value)


_COMMON_KNOBS: dict[str, Callable[[Any], Any]] = {
    "error_rate": _parse_fraction,
    "error_status": _parse_status,
    "latency_ms": _parse_non_negative,
    "hang_seconds": _parse_hang,
    "retry_after": _parse_retry_after,
    "retry_after_count": parse_count,
    "fail_next": _parse_status_list,
    "success_body": _parse_success_body,
    "error_body": _parse_error_body,
}

# Which vendors declare each vendor-only knob, so that setting one elsewhere reads as a typo.
_KNOB_OWNERS: dict[str, frozenset[str]] = {
    name: frozenset(owner.name for owner in VENDOR_MOCKS if name in owner.knobs)
    for mock in VENDOR_MOCKS
    for name in mock.knobs
}


@dataclass
class Faults:
    vendor: type[VendorMock]
    error_rate: float = 0.0
    error_status: int = 500
    latency_ms: float = 0.0
    hang_seconds: float = 0.0
    retry_after: float | str | None = None
    retry_after_count: int = 1
    retry_after_remaining: int = 0
    fail_next: list[int] = field(default_factory=list)
    success_body: str | None = None
    error_body: str | None = None
    own: dict[str, Any] = field(init=False)  # the vendor's own knobs, by name

    def __post_init__(self) -> None:
        self.own = {name: knob.default for name, knob in self.vendor.knobs.items()}

    def _parser(self, name: str) -> Callable[[Any], Any]:
        if name in _COMMON_KNOBS:
            return _COMMON_KNOBS[name]
        if name in self.vendor.knobs:
            return self.vendor.knobs[name].parse
        if name in _KNOB_OWNERS:
            raise ValueError(f"fault knob {name!r} applies only to {sorted(_KNOB_OWNERS[name])}")
        known = sorted({*_COMMON_KNOBS, *_KNOB_OWNERS})
        raise ValueError(f"unknown fault knob {name!r}; known: {known}")

    def update(self, knobs: dict[str, Any]) -> None:
        """Validate every knob first, then apply them all: a bad knob changes nothing."""
        parsed: dict[str, Any] = {}
        for name, value in knobs.items():
            parser = self._parser(name)
            try:
                parsed[name] = parser(value)
            except ValueError as exc:
                raise ValueError(f"fault knob {name!r} {exc}") from None
        if "retry_after" in parsed and "retry_after_count" not in parsed:
            # Each arming of retry_after covers its own count, default 1, not a stale one.
            parsed["retry_after_count"] = 1
        for name, value in parsed.items():
            if name in _COMMON_KNOBS:
                setattr(self, name, value)
            else:
                self.own[name] = value
        if "retry_after_count" in parsed:
            self.retry_after_remaining = (
                self.retry_after_count if self.retry_after is not None else 0
            )

    def snapshot(self) -> dict[str, Any]:
        own = {name: knob.show(self.own[name]) for name, knob in self.vendor.knobs.items()}
        return {
            "error_rate": self.error_rate,
            "error_status": self.error_status,
            "latency_ms": self.latency_ms,
            "hang_seconds": self.hang_seconds,
            "retry_after": self.retry_after,
            "retry_after_count": self.retry_after_count,
            "retry_after_remaining": self.retry_after_remaining,
            "fail_next": list(self.fail_next),
            "success_body": self.success_body,
            "error_body": self.error_body,
            **own,
        }


@dataclass
class Stats:
    requests: int = 0
    accepted: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    rate_limited: int = 0
    discarded: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "accepted": self.accepted,
            "by_status": dict(self.by_status),
            "duplicates": self.duplicates,
            "rate_limited": self.rate_limited,
            "discarded": self.discarded,
        }
