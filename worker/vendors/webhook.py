"""Webhooks: POST a job's JSON object to an endpoint of yours, signed per Standard Webhooks.

Spec: the Standard Webhooks specification 1.0.0 ("Signature scheme", "Webhook headers",
"Delivery success and failure"); receivers verify with its reference libraries
(`standardwebhooks` on PyPI).
- Each endpoint is a vendor of its own: `WEBHOOK_<NAME>_URL` and `WEBHOOK_<NAME>_SECRET` make
  the vendor `webhook_<name>` (lower case), with its own queues, limits and circuit breaker
  and every `WEBHOOK_<NAME>_*` vendor setting (`WEBHOOK_PARTNER_RATE_LIMIT`). `WEBHOOK_URL`
  and `WEBHOOK_SECRET` make the vendor `webhook`.
- One operation, `send_event`: the payload, any JSON object, is the body as it is.
- Headers: `webhook-id` is the delivery id (the same on every retry: receivers use it as an
  idempotency key), `webhook-timestamp` the attempt's Unix time, `webhook-signature`
  `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per secret, space-separated.
- The secret is `whsec_` + base64 of the key; several secrets, space-separated, are all signed
  with (the spec's zero-downtime rotation). It is read by workers only, never stored.
- 2xx is delivered; 410 Gone ("stop sending it messages") parks the vendor until
  `eventrelay vendors resume`; 429 and 5xx are retried (with `Retry-After`); redirects and
  other 4xx are dead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from eventrelay.worker.errors import ConfigurationError
from eventrelay.worker.vendors.base import OutboundRequest, Vendor, VendorSettings, Verdict

SECRET_PREFIX = "whsec_"
FAMILY = "webhook"
# WEBHOOK_<NAME>_URL / WEBHOOK_<NAME>_SECRET, or WEBHOOK_URL / WEBHOOK_SECRET.
_ENDPOINT_VARIABLE = re.compile(r"WEBHOOK(?:_([A-Z0-9]+(?:_[A-Z0-9]+)*))?_(URL|SECRET)")
# WEBHOOK_BASE_URL is the `webhook` vendor's base_url setting (every vendor has one), not an
# endpoint called "base".
_NOT_AN_ENDPOINT = frozenset({"BASE"})


def signing_keys(secret: str) -> list[bytes]:
    """The keys of a `whsec_...` secret (several, space-separated, while rotating).

    Raises:
        ValueError: one is not `whsec_` followed by non-empty base64 (the message never
            repeats the secret).
    """
    keys = []
    for part in secret.split():
        encoded = part.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(encoded, validate=True) if part != encoded else b""
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            raise ValueError(
                "must be whsec_ followed by the base64 of the signing key (Standard Webhooks), "
                "several separated by spaces while rotating"
            )
        keys.append(key)
    if not keys:
        raise ValueError("is empty")
    return keys


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of `{msg_id}.{timestamp}.{body}` (the spec's signed content)."""
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookSettings(VendorSettings):
    model_config = SettingsConfigDict(env_prefix="WEBHOOK_", extra="ignore")

    url: str | None = Field(default=None, description="the endpoint's http:// or https:// URL")
    secret: SecretStr | None = Field(
        default=None, description="whsec_ followed by the base64 signing key, Standard Webhooks"
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("secret")
    @classmethod
    def _standard_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value():
            signing_keys(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _url_is_the_base_url(self) -> WebhookSettings:
        # Whatever reads any vendor's base URL (start checks, tools) sees the endpoint.
        if self.url and not self.base_url:
            self.base_url = self.url
        return self


class AnyObject(BaseModel):
    """Any JSON object: the receiver's format is its own."""

    model_config = ConfigDict(extra="allow")


class Webhook(Vendor):
    name = FAMILY
    operations = {"send_event": AnyObject}
    settings_class = WebhookSettings

    def __init__(self, settings: VendorSettings | None = None) -> None:
        super().__init__(settings)
        self._url_env, self._secret_env = self.env_name("url"), self.env_name("secret")
        self._defined_by = self._defining_values()

    def _defining_values(self) -> tuple[str | None, str | None]:
        return os.environ.get(self._url_env), os.environ.get(self._secret_env)

    def settings_changed(self) -> bool:
        # Two dictionary look-ups per get_vendor(): an endpoint's URL or secret set anew (a
        # test, a reconfigured process) makes a new instance instead of signing with the old.
        return self._defining_values() != self._defined_by

    def build_request(
        self,
        operation: str,
        payloads: Sequence[dict[str, Any]],
        delivery_ids: Sequence[uuid.UUID | str] | None = None,
        timestamp: int | None = None,
    ) -> OutboundRequest:
        """The signed POST of one job. `delivery_ids` gives the `webhook-id` (the worker
        passes the delivery's id; without one, a fresh id is made)."""
        (payload,) = payloads
        self.check_operation(operation)
        msg_id = str(delivery_ids[0]) if delivery_ids else f"msg_{uuid.uuid4().hex}"
        when = int(time.time()) if timestamp is None else timestamp
        unsigned = OutboundRequest(
            method="POST",
            url=self.require("url"),
            headers={"Content-Type": "application/json"},
            json_body=payload,
        )
        body = unsigned.body()  # the exact bytes `send` posts
        signatures = " ".join(signature(k, msg_id, when, body) for k in self.keys())
        return replace(
            unsigned,
            headers={
                **unsigned.headers,
                "webhook-id": msg_id,
                "webhook-timestamp": str(when),
                "webhook-signature": signatures,
            },
        )

    def build_request_for(
        self,
        operation: str,
        delivery_ids: Sequence[uuid.UUID],
        payloads: Sequence[dict[str, Any]],
    ) -> OutboundRequest:
        return self.build_request(operation, payloads, delivery_ids=delivery_ids)

    def keys(self) -> list[bytes]:
        """The signing keys, or a ConfigurationError naming the variable (never its value)."""
        env = self.env_name("secret")
        try:
            return signing_keys(self.require("secret"))
        except ValueError as exc:
            raise ConfigurationError(f"{env} {exc}", env_var=env) from None

    def classify(
        self, status: int, body: Any, headers: Mapping[str, str]
    ) -> tuple[Verdict, str | None]:
        if 200 <= status < 300:
            return Verdict.DELIVERED, None
        if status == 410:
            # "The server is no longer interested in receiving webhooks from this source.
            # Sender should disable the webhook endpoint": park it (every job waits, none is
            # lost) until an operator resumes it.
            return (
                Verdict.CREDENTIALS,
                f"endpoint gone (HTTP 410): {self.reason_from(body)}; the receiver asked for no "
                f"more webhooks: fix {self.env_name('url')} or the receiver, then "
                f"`eventrelay vendors resume {self.name}`",
            )
        if status == 429 or status >= 500:
            return Verdict.RETRY, f"HTTP {status}: {self.reason_from(body)}"
        if 300 <= status < 400:
            return Verdict.DEAD, f"HTTP {status}: unexpected redirect (not followed); check the URL"
        return Verdict.DEAD, f"HTTP {status}: {self.reason_from(body)}"

    def secret_values(self) -> list[str]:
        # The whole variable, each secret and each one's base64 part: any of them may show up
        # in a receiver's echo or a traceback.
        values = super().secret_values()
        given = getattr(self.settings, "secret", None)
        secret = given.get_secret_value() if isinstance(given, SecretStr) else ""
        for part in secret.split():
            values += [part, part.removeprefix(SECRET_PREFIX)]
        return values


@cache
def webhook_vendor(name: str | None = None) -> type[Webhook]:
    """The vendor class of endpoint `name` (`WEBHOOK_<NAME>_*`), or of `WEBHOOK_*` for None."""
    vendor = FAMILY if not name else f"{FAMILY}_{name.lower()}"
    title = "".join(p.title() for p in vendor.split("_"))
    settings_class = type(
        f"{title}Settings",
        (WebhookSettings,),
        {
            "__module__": __name__,
            "model_config": SettingsConfigDict(env_prefix=vendor.upper() + "_", extra="ignore"),
        },
    )
    return type(
        title,
        (Webhook,),
        {"__module__": __name__, "name": vendor, "settings_class": settings_class},
    )


def endpoint_names(environ: Mapping[str, str]) -> list[str | None]:
    """Endpoints named by the environment: None for WEBHOOK_URL/SECRET, else each <NAME>."""
    names: set[str | None] = set()
    for key in environ:
        # Environment names are read case-insensitively, as pydantic-settings reads them.
        match = _ENDPOINT_VARIABLE.fullmatch(key.upper())
        if match and match.group(1) not in _NOT_AN_ENDPOINT:
            names.add(match.group(1))
    return sorted(names, key=lambda n: n or "")


def unknown_endpoint_hint(vendor: str) -> str | None:
    """What to set for a webhook vendor this process does not know (a producer or scheduler
    started without the endpoint's URL), or None if `vendor` is no webhook name."""
    if vendor != FAMILY and not vendor.startswith(FAMILY + "_"):
        return None
    return f"{vendor.upper()}_URL names that endpoint: set it in this process's environment too"


def configured_webhooks() -> list[type[Webhook]]:
    """The entry point `webhook`: one vendor per endpoint configured in the environment."""
    return [webhook_vendor(name) for name in endpoint_names(os.environ)]
