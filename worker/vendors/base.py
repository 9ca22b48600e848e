"""The vendor contract and the HTTP pipeline every vendor shares.

A vendor module fills in the blanks of a fixed pipeline (django-anymail's shape):

    validate (enqueue time) → build_request → post → classify → on_delivered

and overrides a step only for a documented quirk. `requests` exceptions are translated here
and nowhere else.
"""

from __future__ import annotations

import email.utils
import enum
import functools
import json
import os
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

import annotated_types
import requests
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from requests.structures import CaseInsensitiveDict
from sqlalchemy import Connection

from eventrelay.worker.errors import ConfigurationError, FieldError, InvalidJob
from eventrelay.worker.redact import EXCERPT_CHARS, redact, register_secrets

if TYPE_CHECKING:
    from eventrelay.worker.vendors.deadline import Deadline


class VendorSettings(BaseSettings):
    """What every vendor can be given through `<VENDOR>_*` environment variables.

    Subclasses set `env_prefix`, a default `base_url` where the vendor documents one, and their
    secrets as `SecretStr` fields (masked in `repr`, never stored). The bounds below hold for
    every vendor, also where a subclass overrides a default (Infobip's rate limit): a worker
    refuses to start with a value outside them (README, "What a bad setting does").
    """

    # No inf or nan: an infinite rate limit or cap would parse as a float and break the maths.
    model_config = SettingsConfigDict(extra="ignore", allow_inf_nan=False)

    base_url: str | None = None
    # Requests per second for the whole fleet; None or 0 means unlimited. A negative rate
    # would read as "unlimited" too, so it is refused.
    rate_limit: float | None = Field(default=None, ge=0, description="0: unlimited")
    # Requests in flight to this vendor per worker process (some vendors limit concurrent
    # connections); None: 3/4 of EVENTRELAY_MAX_IN_FLIGHT.
    max_in_flight: int | None = Field(default=None, ge=1)
    # Retry-policy overrides: 0 attempts would dead-letter every job at once, a backoff of 0
    # retries in a hot loop, and a cap of 0 turns a 429's Retry-After into no pause at all.
    max_attempts: int | None = Field(default=None, ge=1)
    max_age_seconds: float | None = Field(default=None, gt=0)
    backoff_base_seconds: float | None = Field(default=None, gt=0)
    backoff_cap_seconds: float | None = Field(default=None, gt=0)

    @field_validator(
        "rate_limit",
        "max_in_flight",
        "max_attempts",
        "max_age_seconds",
        "backoff_base_seconds",
        "backoff_cap_seconds",
    )
    @classmethod
    def _within_common_bounds(cls, value: Any, info: ValidationInfo) -> Any:
        # A subclass that redeclares a field (to change its default) drops the Field bounds
        # above; they are checked here again from this class's declaration.
        if value is None or info.field_name is None:
            return value
        for rule in VendorSettings.model_fields[info.field_name].metadata:
            if not isinstance(rule, annotated_types.BaseMetadata):
                continue
            low_gt, low_ge = getattr(rule, "gt", None), getattr(rule, "ge", None)
            if low_gt is not None and not value > low_gt:
                raise ValueError(f"must be > {low_gt}")
            if low_ge is not None and not value >= low_ge:
                raise ValueError(f"must be >= {low_ge}")
        return value


class Verdict(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    DEAD = "dead"
    CREDENTIALS = "credentials"  # our key was refused: park the vendor, keep the job


@dataclass(frozen=True)
class OutboundRequest:
    """One HTTP request to a vendor. `headers` may hold secrets: never log or store them."""

    method: str
    url: str
    headers: Mapping[str, str]
    json_body: Any

    def __repr__(self) -> str:  # keep secrets out of tracebacks and debuggers' reprs
        return f"OutboundRequest({self.method} {self.url})"

    def body(self) -> bytes:
        """The body as sent: a vendor that signs its request signs exactly these bytes."""
        return json.dumps(self.json_body, separators=(",", ":")).encode()


# Longest vendor text kept per field: a reason is read by people, an excerpt is for debugging.
REASON_MAX_CHARS = 500
ERROR_CLASS_MAX_CHARS = 128  # the attempt's error_class column
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def storable(text: str | None, limit: int) -> str | None:
    """Text a vendor sent (or an exception's message) as any database can store it.

    A vendor's words are input: a NUL (`\\u0000` in a JSON error, or a raw byte) is refused by
    PostgreSQL, and a lone surrogate (a cut emoji, `\\ud83d`) cannot be encoded as UTF-8:
    either fails the commit of every outcome recorded with it. NULs are dropped, lone surrogates
    become U+FFFD (a pair never reaches here: `json.loads` joins it into one character), and
    the text is cut to `limit` characters.
    """
    if text is None:
        return None
    text = _LONE_SURROGATE.sub("\ufffd", text.replace("\x00", ""))
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class SendResult:
    """What came of one request: the verdict, and what we record about it (redacted).

    Every text field is made storable here, whoever builds the result (the HTTP pipeline, an
    adapter error), so nothing a vendor says can fail the record of it.
    """

    verdict: Verdict
    status_code: int | None
    duration_ms: int
    reason: str | None = None
    retry_after_seconds: float | None = None
    error_class: str | None = None
    excerpt: str = ""
    response_json: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", storable(self.reason, REASON_MAX_CHARS))
        object.__setattr__(self, "error_class", storable(self.error_class, ERROR_CLASS_MAX_CHARS))
        object.__setattr__(self, "excerpt", storable(self.excerpt, EXCERPT_CHARS) or "")


@dataclass(frozen=True)
class PreparedJob:
    """A job that passed validation, with what the vendor's rules derived from it."""

    vendor: str
    operation: str
    payload: dict[str, Any]
    idempotency_key: str | None
    user_ref: str | None = None
    # (key, window seconds): at most one job per key per window; later ones are suppressed.
    throttle: tuple[str, float] | None = None
    # This job waits until the user's latest delivery of that operation is delivered.
    follows_operation: str | None = None


RETRYABLE_STATUSES = frozenset({408, 425, 429})


class Vendor(ABC):
    """One vendor: its operations, payload models, request shape and response rules."""

    name: ClassVar[str]
    # operation name → pydantic model of the job payload for it
    operations: ClassVar[Mapping[str, type[BaseModel]]]
    settings_class: ClassVar[type[VendorSettings]]
    # operation → how many jobs may share one request (vendors that take arrays)
    batch_sizes: ClassVar[Mapping[str, int]] = {}
    # operations whose answer `on_delivered` keeps; for the others it is not called at all
    # (each call costs the recorder a savepoint, two database round trips per delivery)
    keeps_answer_of: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: VendorSettings | None = None) -> None:
        self.settings = settings if settings is not None else self.settings_class()
        register_secrets(self.secret_values())

    # ---- enqueue time -------------------------------------------------------------------

    def check_operation(self, operation: Any) -> type[BaseModel]:
        """The payload model of `operation`, or InvalidJob listing the valid operations."""
        model = self.operations.get(operation) if isinstance(operation, str) else None
        if model is None:
            valid = ", ".join(sorted(self.operations))
            raise InvalidJob(
                [
                    FieldError(
                        "operation",
                        f"unknown operation {operation!r} for vendor "
                        f"{self.name!r}; valid operations: {valid}",
                    )
                ]
            )
        return model

    def prepare(self, operation: str, payload: Any, idempotency_key: str | None) -> PreparedJob:
        """Validate a job against the operation's model and apply the vendor's rules."""
        model = self.check_operation(operation)
        if not isinstance(payload, dict):
            raise InvalidJob([FieldError("payload", "must be a JSON object")])
        try:
            model.model_validate(payload)
        except ValidationError as exc:
            raise InvalidJob(_field_errors(exc)) from None
        return PreparedJob(
            vendor=self.name,
            operation=operation,
            payload=self.normalize(operation, payload),
            idempotency_key=self.idempotency_key(operation, payload, idempotency_key),
            user_ref=self.user_ref(operation, payload),
            throttle=self.throttle(operation, payload),
            follows_operation=self.follows_operation(operation),
        )

    def idempotency_key(
        self, operation: str, payload: dict[str, Any], given: str | None
    ) -> str | None:
        """The job's idempotency key: the producer's, or one a vendor's dedup rule derives."""
        return given

    def normalize(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload as stored; a vendor may drop what must not be stored (secrets)."""
        return payload

    def user_ref(self, operation: str, payload: dict[str, Any]) -> str | None:
        return None

    def throttle(self, operation: str, payload: dict[str, Any]) -> tuple[str, float] | None:
        return None

    def follows_operation(self, operation: str) -> str | None:
        return None

    def followed_operations(self) -> frozenset[str]:
        """Operations that some other operation waits for (their deliveries wake others)."""
        return frozenset(
            op for op in (self.follows_operation(o) for o in self.operations) if op is not None
        )

    # ---- send time ----------------------------------------------------------------------

    @abstractmethod
    def build_request(self, operation: str, payloads: Sequence[dict[str, Any]]) -> OutboundRequest:
        """The request for one job, or for several when `batch_sizes` allows it."""

    def build_request_for(
        self,
        operation: str,
        delivery_ids: Sequence[uuid.UUID],
        payloads: Sequence[dict[str, Any]],
    ) -> OutboundRequest:
        """What the worker calls: the request for these deliveries (ids and payloads in the
        same order). Most vendors need the payloads only; one that names a request after its
        delivery (a webhook's `webhook-id`, the same on every retry) overrides this."""
        return self.build_request(operation, payloads)

    def classify(
        self, status: int, body: Any, headers: Mapping[str, str]
    ) -> tuple[Verdict, str | None]:
        """Map a response to a verdict and a reason. Override for a vendor's documented codes."""
        if 200 <= status < 300:
            return Verdict.DELIVERED, None
        if status == 401:
            return Verdict.CREDENTIALS, f"credentials rejected (HTTP 401): {self.reason_from(body)}"
        if status in RETRYABLE_STATUSES or status >= 500:
            return Verdict.RETRY, f"HTTP {status}: {self.reason_from(body)}"
        if 300 <= status < 400:
            return (
                Verdict.DEAD,
                f"HTTP {status}: unexpected redirect (not followed); check the base URL",
            )
        return Verdict.DEAD, f"HTTP {status}: {self.reason_from(body)}"

    def reason_from(self, body: Any) -> str:
        """The vendor's own words from an error body; overridden per vendor's error shape."""
        if isinstance(body, dict):
            for key in ("error", "message", "detail", "description"):
                if isinstance(body.get(key), str):
                    return body[key]  # type: ignore[no-any-return]
        if body is None:
            return "no response body"
        # An unknown error shape may echo the job back: say so without repeating it (the
        # attempt's redacted excerpt keeps the start of the body for debugging).
        return f"no error message in the vendor's answer ({type(body).__name__} body)"

    def on_delivered(  # noqa: B027 (an optional hook, not abstract)
        self, conn: Connection, delivery_id: uuid.UUID, operation: str, response_json: Any
    ) -> None:
        """Record what the vendor returned (e.g. ids) in the transaction marking it delivered.

        Called only for the operations in `keeps_answer_of`. Most vendors return nothing worth
        keeping, so the default does nothing.
        """

    # ---- settings -----------------------------------------------------------------------

    def settings_changed(self) -> bool:
        """Whether the environment this instance was configured from has changed since; such
        an instance is made again. Settings are read once per process, so by default never;
        a vendor made from configuration (webhooks) watches the variables that define it."""
        return False

    def env_name(self, field_name: str) -> str:
        prefix = self.settings.model_config.get("env_prefix", "")
        return f"{prefix}{field_name}".upper()

    def require(self, field_name: str) -> str:
        """A setting's value, or a ConfigurationError naming the variable to set."""
        value = getattr(self.settings, field_name, None)
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not value:
            env = self.env_name(field_name)
            raise ConfigurationError(
                f"{env} is not set: set it to the {self.name} {field_name.replace('_', ' ')} "
                "in the worker's environment",
                env_var=env,
            )
        return str(value)

    def base_url(self) -> str:
        return self.require("base_url").rstrip("/")

    def secret_values(self) -> list[str]:
        values = []
        for name in type(self.settings).model_fields:
            value = getattr(self.settings, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                values.append(value.get_secret_value())
        return values


def _field_errors(exc: ValidationError) -> list[FieldError]:
    errors = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in ("payload", *err["loc"]))
        errors.append(FieldError(loc, err["msg"]))
    return errors


# ---- the HTTP pipeline ----------------------------------------------------------------------

_local = threading.local()
# One Session per thread (requests does not document a Session as thread-safe), each with a
# pool per vendor host; a thread sends one request at a time, so one connection per host is
# all it can use and urllib3 never discards one as "pool is full".
POOL_CONNECTIONS = 8
POOL_MAXSIZE = 1


def http_session() -> requests.Session:
    """This thread's keep-alive Session (a forked child never reuses its parent's sockets).

    `send` uses it only for its transport adapters (mounted per scheme; the test kit mounts
    its own): the request is prepared and handed to the adapter directly (`_prepared`)."""
    pid = os.getpid()
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None or getattr(_local, "pid", None) != pid:
        # Imported here: importing the vendor registry loads no module but this one.
        from eventrelay.worker.vendors.deadline import DeadlineAdapter

        session = requests.Session()
        adapter = DeadlineAdapter(
            pool_connections=POOL_CONNECTIONS, pool_maxsize=POOL_MAXSIZE, max_retries=0
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.trust_env = False  # a job never picks a proxy from the environment
        _local.session, _local.pid = session, pid
    return session


# The headers a requests Session sends unless a request sets its own (User-Agent, Accept,
# Accept-Encoding, Connection): a vendor sees the same request it always saw.
_SESSION_HEADERS = tuple(requests.utils.default_headers().items())


@functools.lru_cache(maxsize=1024)
def _prepared_url(url: str) -> str:
    """The URL as requests sends it (IDNA host, percent-encoded path); vendors post to a few
    URLs, so each is parsed once."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, None)
    return str(prepared.url)


def _prepared(request: OutboundRequest, body: bytes) -> requests.PreparedRequest:
    """The request as `Session.request` would prepare it for a vendor POST, without what that
    does on every call and a vendor request never uses (merging the session's settings,
    cookies, hooks, auth, the environment's proxies and CA bundle; measured in
    docs/latency.md): the headers are the session's defaults with the vendor's on top, the
    body is the bytes given, and http.client still refuses a header with a line break."""
    prepared = requests.PreparedRequest()
    prepared.method = request.method.upper()
    prepared.url = _prepared_url(request.url)
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(_SESSION_HEADERS)
    headers.update(request.headers)
    headers["Content-Length"] = str(len(body))
    prepared.headers = headers
    prepared.body = body
    return prepared


# The longest a request may take in all (EVENTRELAY_REQUEST_DEADLINE_SECONDS's default).
DEFAULT_REQUEST_DEADLINE_SECONDS = 30.0


def send(
    vendor: Vendor,
    request: OutboundRequest,
    *,
    connect_timeout: float,
    read_timeout: float,
    max_response_bytes: int,
    deadline_seconds: float = DEFAULT_REQUEST_DEADLINE_SECONDS,
) -> SendResult:
    """Send one request and classify the answer. Never raises for network trouble.

    The request ends after `deadline_seconds` in all, however the vendor trickles its answer:
    without a status it is retried (`DeadlineExceeded`); with one, the status decides and the
    body is what had arrived.
    """
    from eventrelay.worker.vendors.deadline import watch

    started = time.perf_counter()
    try:
        with watch(deadline_seconds) as deadline:
            prepared = _prepared(request, request.body())
            adapter = http_session().get_adapter(str(prepared.url))
            # Redirects are not followed: the adapter sends exactly one request.
            response = adapter.send(
                prepared,
                stream=True,
                timeout=(connect_timeout, read_timeout),
                verify=True,
                cert=None,
                proxies={},
            )
            try:
                raw = _read_capped(response, max_response_bytes, deadline)
            finally:
                response.close()
    except requests.RequestException as exc:
        if deadline.fired:
            return SendResult(
                verdict=Verdict.RETRY,
                status_code=None,
                duration_ms=_ms_since(started),
                reason=f"no answer within the request deadline of {deadline_seconds:g} s "
                "(EVENTRELAY_REQUEST_DEADLINE_SECONDS)",
                error_class="DeadlineExceeded",
            )
        # Connection refused, DNS, TLS, timeouts: the vendor may be fine a moment later.
        return SendResult(
            verdict=Verdict.RETRY,
            status_code=None,
            duration_ms=_ms_since(started),
            reason=f"{type(exc).__name__}: {redact(str(exc), 200)}",
            error_class=type(exc).__name__,
        )
    duration_ms = _ms_since(started)
    text = raw.decode("utf-8", errors="replace")
    body = _parse_json(text)
    verdict, reason = vendor.classify(response.status_code, body, response.headers)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return SendResult(
        verdict=verdict,
        status_code=response.status_code,
        duration_ms=duration_ms,
        reason=redact(reason, REASON_MAX_CHARS) if reason else None,
        retry_after_seconds=retry_after,
        error_class=None if verdict is Verdict.DELIVERED else f"HTTP{response.status_code}",
        excerpt=redact(text),
        response_json=body,
    )


def _read_capped(response: requests.Response, limit: int, deadline: Deadline) -> bytes:
    chunks, size = [], 0
    try:
        for chunk in response.iter_content(chunk_size=16384):
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except requests.RequestException:
        if not deadline.fired:
            raise
        # Cut at the deadline after the status arrived: the status decides, not the body.
    return b"".join(chunks)[:limit]


def _parse_json(text: str) -> Any:
    """The body as JSON, or as text when it is not JSON. Never raises: the status code decides
    the outcome, so a 2xx whose body cannot be parsed (too deeply nested, cut at the size cap,
    not JSON at all) is still delivered, never sent again."""
    if not text:
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return text


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds)
