"""The contract one vendor mock fills in, and the request and reply types it works with.

A vendor mock is one module beside this one (botsi.py, vtcdn.py, ...) holding one
`VendorMock` subclass: the vendor's routes, validation and answers. What every vendor
shares (HTTP framing, fault injection, the request log and counters, credentials, the CLI)
is server.py's, which mounts each subclass listed in its `VENDOR_MOCKS` under `/<name>/`.
A fifth vendor is one new module plus one line in that registry (README, "Adding a
vendor").

Standard library only, like the rest of the mock: it must not depend on the code it tests.
"""

from __future__ import annotations

import json
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol
from urllib.parse import unquote

# --------------------------------------------------------------------------- value checks


def is_int(value: Any) -> bool:
    # bool is a subclass of int in Python, but JSON true is not an integer to the vendors.
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def now_iso() -> str:
    """UTC timestamp the way the vendors print them: 2025-01-15T10:30:00.000Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def scheme_token(authorization: str | None, scheme: str) -> str | None:
    """The credential of `Authorization: <scheme> <credential>`; None for another scheme.

    Scheme names are case-insensitive (RFC 9110), credentials are not.
    """
    parts = (authorization or "").split(None, 1)
    if len(parts) == 2 and parts[0].lower() == scheme.lower():
        return parts[1].strip()
    return None


def _reject_constant(name: str) -> Any:
    # json.loads accepts NaN/Infinity by default; real JSON parsers (the vendors') do not.
    raise ValueError(f"{name} is not valid JSON")


def parse_json(raw: bytes) -> tuple[bool, Any]:
    """(is_json, value). An empty body is "not JSON", like a strict vendor parser sees it."""
    if not raw.strip():
        return False, None
    try:
        return True, json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, None


# --------------------------------------------------------------------------- fault knobs
# Parsers raise ValueError("must be ..."); the server prefixes the knob's name.


def parse_count(value: Any) -> int:
    if not is_int(value) or value < 0:
        raise ValueError("must be a non-negative integer")
    return int(value)


def parse_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def parse_identifiers(value: Any) -> frozenset[str]:
    if not isinstance(value, list | tuple | set | frozenset) or not all(
        isinstance(item, str) for item in value
    ):
        raise ValueError("must be a list of strings")
    return frozenset(value)


def _as_is(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Knob:
    """A fault knob only some vendors understand; the common ones are server.py's.

    Setting it for a vendor that does not declare it is refused as a typo.
    """

    parse: Callable[[Any], Any]
    default: Any  # immutable: every reset starts from this very value
    show: Callable[[Any], Any] = field(default=_as_is)  # its JSON form in GET /_mock/faults


# Users the vendor answers "not found" for, as if they were never registered with it.
UNKNOWN_USERS = Knob(parse_identifiers, frozenset(), show=sorted)


# --------------------------------------------------------------------------- request / reply


@dataclass
class Request:
    method: str
    raw_path: str
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    raw_body: bytes
    ts: float
    framing_error: tuple[int, str] | None = None  # the body could not be read: (status, why)
    vendor: str | None = None
    params: dict[str, str] = field(default_factory=dict)  # decoded named groups of the route
    is_json: bool = field(init=False)
    body: Any = field(init=False)

    def __post_init__(self) -> None:
        self.is_json, self.body = parse_json(self.raw_body)

    @property
    def path(self) -> str:
        return unquote(self.raw_path)


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON-serialisable; None sends no body
    raw_body: bytes | None = None  # sent instead of `body` (the success_body fault knob)
    headers: dict[str, str] = field(default_factory=dict)
    discarded: bool = False  # accepted but ignored by the vendor's own rules
    fault: str | None = None  # which knob/rule produced this reply, for the log
    dedupe_items: list[Any] | None = None  # units compared for duplicates; None: whole body


Handler = Callable[[Request], Reply]


@dataclass(frozen=True)
class Route:
    """A POST endpoint. `pattern` is matched against the raw, still percent-encoded path
    after `/<name>`, so an encoded "/" (%2F) inside a path parameter cannot split it; its
    named groups become `Request.params`, decoded only after the match."""

    pattern: str
    handler: Handler


# --------------------------------------------------------------------------- the contract


class MockHost(Protocol):
    """What a vendor mock may ask of the server it is mounted on."""

    @property
    def credentials(self) -> Mapping[str, str]: ...

    def knob(self, vendor: str, name: str) -> Any: ...


class VendorMock(ABC):
    """One vendor's API, mounted at `/<name>/`. One instance per server, called from many
    threads at once: state it keeps between requests is guarded by `_lock`.

    The server has already answered 404 (no route), 405 (not POST), 413 and framing errors,
    latency, hangs and injected failures before a handler runs, and it logs and counts the
    reply afterwards; a handler only checks credentials and the body, and answers.
    """

    name: ClassVar[str]  # first path segment; the key of the log, counters and faults
    title: ClassVar[str]  # as the vendor spells itself, for the CLI's help
    base_path: ClassVar[str]  # where <NAME>_BASE_URL points, e.g. "/vtcdn/v1"
    # Credential key -> the mock's default. Keys are "<name>_<field>": the worker reads
    # <NAME>_<FIELD> (its VendorSettings' env_prefix), so the server exports key.upper().
    default_credentials: ClassVar[Mapping[str, str]] = {}
    knobs: ClassVar[Mapping[str, Knob]] = {}  # fault knobs of this vendor's own

    def __init__(self, host: MockHost) -> None:
        self._host = host
        # Never held while asking the host for anything, so it never nests with the host's.
        self._lock = threading.Lock()
        self._routes = tuple((re.compile(route.pattern), route.handler) for route in self.routes())

    @abstractmethod
    def routes(self) -> Sequence[Route]:
        """The vendor's endpoints, tried in order."""

    def error_body(self, status: int, text: str) -> Any:
        """An error the server produces for this vendor (404, 405, 413, unreadable body),
        in the vendor's own error shape so that clients' error parsing is exercised."""
        return {"error": text}

    def reset(self) -> None:
        """Forget state kept between requests (`DELETE /_mock/received`, `reset()`)."""
        return None  # stateless unless the vendor keeps some

    def match(self, rest: str) -> tuple[Handler, dict[str, str]] | None:
        """The handler and decoded path parameters for the raw path after `/<name>`."""
        for pattern, handler in self._routes:
            found = pattern.fullmatch(rest)
            if found:
                return handler, {key: unquote(value) for key, value in found.groupdict().items()}
        return None

    def credential(self, key: str) -> str:
        return self._host.credentials[key]

    def knob(self, name: str) -> Any:
        """Current value of one of this vendor's `knobs`."""
        return self._host.knob(self.name, name)
