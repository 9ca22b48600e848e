"""Scripted vendor answers, given at the HTTP layer: everything above `requests` is real.

`drain()` mounts a `ScriptedTransport` (a `requests` transport adapter, as `responses` and
`requests-mock` do) on the worker's own HTTP Session, so the vendor's adapter builds its real
request, the real pipeline reads the answer (`vendors.base.send`: classify, `Retry-After`,
size cap) and the real retry policy decides. Nothing leaves the process.

    from eventrelay.testing import rate_limited, timeout

    outbox.drain({"infobip": [rate_limited(retry_after=30), 201]})   # 429, then 201
    outbox.drain({"vtcdn": 500})                                     # every request: 500
    outbox.drain({"botsi": [timeout(), 200]})                        # a read timeout, then 200
"""

from __future__ import annotations

import io
import itertools
import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias, cast

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict


@dataclass(frozen=True)
class Answer:
    """One scripted answer: a status with a JSON body and headers, or a network error."""

    status: int = 200
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Raised instead of answering (a timeout, a refused connection); `status` is then unused.
    error: type[requests.RequestException] | None = None

    @classmethod
    def of(cls, value: AnswerLike) -> Answer:
        """An answer from what a script holds: an `Answer`; an HTTP status (with a small JSON
        body: `{}` for 2xx, an error otherwise); `{"status": 429, "headers": {...}, "json":
        ...}`; `"timeout"` or `"connection_refused"`; a `requests` exception (class or
        instance), raised instead of answering."""
        if isinstance(value, Answer):
            return value
        if isinstance(value, Mapping):
            return cls(**value)
        if isinstance(value, str) and value in _NAMED_ERRORS:
            return cls(error=_NAMED_ERRORS[value])
        if isinstance(value, requests.RequestException):
            return cls(error=type(value))
        if isinstance(value, type) and issubclass(value, requests.RequestException):
            return cls(error=value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(
                f"a scripted answer is an Answer, an HTTP status, a dict of Answer's fields, "
                f"{' or '.join(map(repr, _NAMED_ERRORS))} or a requests exception; got {value!r}"
            )
        body: Any = {} if 200 <= value < 300 else {"error": f"scripted HTTP {value}"}
        return cls(status=value, json=body)

    def __str__(self) -> str:
        if self.error is not None:
            return self.error.__name__
        extra = "".join(f" {k}: {v}" for k, v in self.headers.items())
        return f"{self.status}{extra}"


_NAMED_ERRORS: dict[str, type[requests.RequestException]] = {
    "timeout": requests.exceptions.ReadTimeout,
    "connection_refused": requests.exceptions.ConnectionError,
}

AnswerLike: TypeAlias = (
    "Answer | int | str | Mapping[str, Any] | requests.RequestException "
    "| type[requests.RequestException]"
)
# What `drain()` takes per vendor: one answer for every request, a list answered in order
# (then the vendor's usual success), or a function of the request.
Script: TypeAlias = "AnswerLike | Sequence[AnswerLike] | Callable[[SentRequest], AnswerLike]"


def rate_limited(retry_after: float | str = 1, status: int = 429) -> Answer:
    """A 429 with `Retry-After` (seconds, or an HTTP date as text)."""
    if isinstance(retry_after, float) and retry_after.is_integer():
        retry_after = int(retry_after)
    return Answer(
        status=status,
        json={"error": "too many requests (scripted)"},
        headers={"Retry-After": str(retry_after)},
    )


def timeout() -> Answer:
    """The vendor never answers: `requests` raises ReadTimeout (at once: nobody waits)."""
    return Answer(error=requests.exceptions.ReadTimeout)


def connection_refused() -> Answer:
    """Nothing listens at the vendor's address."""
    return Answer(error=requests.exceptions.ConnectionError)


@dataclass(frozen=True)
class SentRequest:
    """What a vendor received: the request exactly as the adapter built it, and the answer."""

    vendor: str
    method: str
    url: str
    # As the adapter built them, secrets included (the kit's own test values unless the
    # test's environment set real ones); `headers_redacted` masks them.
    headers: Mapping[str, str]
    json: Any
    body: bytes
    delivery_ids: tuple[uuid.UUID, ...]
    answer: Answer

    @property
    def path(self) -> str:
        from urllib.parse import urlsplit

        return urlsplit(self.url).path

    def headers_redacted(self) -> dict[str, str]:
        from eventrelay.worker.redact import redact

        return {k: redact(v, 10_000) for k, v in self.headers.items()}

    def __str__(self) -> str:
        return f"{self.vendor}: {self.method} {self.url} -> {self.answer}"


def default_answer(vendor: str, operation: str, payload: Any, number: int) -> Answer:
    """The vendor's usual success, as its documentation shows it (README, "Jobs")."""
    if vendor == "botsi" and operation == "create_profile":
        user = payload.get("customerUserId") if isinstance(payload, dict) else None
        profile = {"profileId": f"botsi-profile-{number}", "customerUserId": user}
        return Answer(200, {"data": profile})
    if vendor == "infobip":
        return Answer(201, {})
    if vendor == "gravityfield":
        return Answer(204)
    return Answer(200, {})


class ScriptedTransport(BaseAdapter):
    """A `requests` transport adapter that answers from the scripts and records every request."""

    def __init__(self, scripts: Mapping[str, Script] | None = None) -> None:
        super().__init__()
        self._scripts: dict[str, Callable[[SentRequest], AnswerLike | None]] = {
            vendor: _as_function(script) for vendor, script in (scripts or {}).items()
        }
        self.sent: list[SentRequest] = []
        # Set by drain() before each request: who is sending, for which deliveries.
        self.vendor = ""
        self.operation = ""
        self.delivery_ids: tuple[uuid.UUID, ...] = ()
        self.payloads: Sequence[Any] = ()
        self._numbers = itertools.count(1)

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, **_: Any
    ) -> requests.Response:
        raw = request.body or b""
        body = raw.encode() if isinstance(raw, str) else bytes(raw)
        try:
            parsed: Any = json.loads(body) if body else None
        except ValueError:
            parsed = None
        pending = SentRequest(
            vendor=self.vendor,
            method=str(request.method),
            url=str(request.url),
            headers=dict(request.headers),
            json=parsed,
            body=body,
            delivery_ids=self.delivery_ids,
            answer=Answer(),
        )
        script = self._scripts.get(self.vendor)
        given = script(pending) if script is not None else None
        number = next(self._numbers)
        answer = (
            Answer.of(given)
            if given is not None
            else default_answer(
                self.vendor, self.operation, self.payloads[0] if self.payloads else None, number
            )
        )
        sent = SentRequest(**{**pending.__dict__, "answer": answer})
        self.sent.append(sent)
        if answer.error is not None:
            raise answer.error(f"scripted {answer.error.__name__}", request=request)
        return _response(request, answer)

    def close(self) -> None:
        return None


def _is_one_answer(script: Any) -> bool:
    return isinstance(script, Answer | int | str | Mapping | requests.RequestException) or (
        isinstance(script, type) and issubclass(script, requests.RequestException)
    )


def _as_function(script: Script) -> Callable[[SentRequest], AnswerLike | None]:
    if _is_one_answer(script):
        always = cast("AnswerLike", script)
        return lambda _request: always
    if callable(script):
        return cast("Callable[[SentRequest], AnswerLike | None]", script)
    queue: Iterator[AnswerLike] = iter(list(cast("Sequence[AnswerLike]", script)))
    # The script answered in order; past its end the vendor's usual success (None).
    return lambda _request: next(queue, None)


def _response(request: requests.PreparedRequest, answer: Answer) -> requests.Response:
    response = requests.Response()
    response.status_code = answer.status
    response.reason = "scripted"
    response.url = str(request.url)
    response.request = request
    content = b"" if answer.json is None else json.dumps(answer.json).encode()
    headers = {"Content-Type": "application/json"} if content else {}
    response.headers = CaseInsensitiveDict({**headers, **answer.headers})
    response.raw = io.BytesIO(content)
    response.encoding = "utf-8"
    return response
