"""vtcdn: user events.

Docs: vtcdn's public pages "How to send events via API" and "API Overview"
(base `https://api.vtcdn.net/v1`).
- `POST {base}/event` with no trailing slash: "/something is NOT the same as /something/".
- `Authorization` carries the API key itself.
- Confirmations are limited by orderId ("if a second event with the same orderId comes, it is
  discarded"): a derived key stops the second one here, whatever key the producer gave.
- Email opens: "limited at one each 20 minutes"; later ones are recorded as suppressed.
- A 400 carries `errors[]` with message and description: that becomes the dead-letter reason.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic_settings import SettingsConfigDict

from eventrelay.worker.vendors.base import OutboundRequest, Vendor, VendorSettings
from eventrelay.worker.vendors.derived_keys import derived_key

EMAIL_OPEN_WINDOW_SECONDS = 20 * 60
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class VtcdnSettings(VendorSettings):
    model_config = SettingsConfigDict(env_prefix="VTCDN_", extra="ignore")

    base_url: str | None = "https://api.vtcdn.net/v1"
    api_key: SecretStr | None = None


class User(BaseModel):
    # No populate_by_name: the identifier is `_id` on the wire ("User: object with email or _id
    # as identifier"), and an `id` accepted by its Python name would be sent as it was given.
    model_config = ConfigDict(extra="allow")

    email: StrictStr | None = None
    id: StrictStr | StrictInt | None = Field(default=None, alias="_id")
    # Only ever refused: vtcdn would take it as an unknown attribute, the user unidentified.
    id_without_underscore: Any = Field(default=None, alias="id")

    @field_validator("id_without_underscore", mode="before")
    @classmethod
    def _not_id(cls, value: Any) -> Any:
        raise ValueError("vtcdn's user identifier is spelled `_id` (with an underscore)")

    @field_validator("email", "id", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        # Left out is fine (the other identifier is used); an explicit null would be sent to
        # vtcdn as null and breaks the email-open rule, which reads the identifier.
        if value is None:
            raise ValueError("must not be null: leave it out and give the other identifier")
        return value

    @model_validator(mode="after")
    def _one_identifier(self) -> User:
        if (self.email is None) == (self.id is None):
            raise ValueError("give exactly one identifier: email or _id")
        if self.email is not None and not _EMAIL.match(self.email):
            raise ValueError("email is not an email address")
        return self


class GenericBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    event_name: StrictStr = Field(min_length=1)


class GenericEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    generic: GenericBody


class Confirmation(BaseModel):
    model_config = ConfigDict(extra="allow")

    orderId: StrictStr | StrictInt


class Event(BaseModel):
    """`{<type>: {...}}`, exactly one type; standard types vtcdn adds later pass through."""

    model_config = ConfigDict(extra="allow")

    update: dict[str, Any] | None = None
    login: dict[str, Any] | None = None
    generic: GenericEvent | None = None
    confirmation: Confirmation | None = None
    email_open: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_type(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if len(value) != 1:
                raise ValueError(
                    "must hold exactly one event type (e.g. {'update': {...}}), "
                    f"got {len(value)}"
                )
            ((name, body),) = value.items()
            if not isinstance(body, dict):
                raise ValueError(f"event {name!r} must be an object")
        return value


class SendEvent(BaseModel):
    model_config = ConfigDict(extra="allow")

    user: User
    event: Event


def _event_type(payload: dict[str, Any]) -> str:
    return str(next(iter(payload["event"])))


def _user_identity(payload: dict[str, Any]) -> str:
    user = payload["user"]
    return f"email:{user['email'].lower()}" if "email" in user else f"id:{user['_id']}"


class Vtcdn(Vendor):
    name = "vtcdn"
    operations = {"send_event": SendEvent}
    settings_class = VtcdnSettings

    def idempotency_key(
        self, operation: str, payload: dict[str, Any], given: str | None
    ) -> str | None:
        if _event_type(payload) == "confirmation":
            # vtcdn discards a second confirmation for an orderId; never send one.
            return derived_key("confirmation", payload["event"]["confirmation"]["orderId"])
        return given

    def throttle(self, operation: str, payload: dict[str, Any]) -> tuple[str, float] | None:
        if _event_type(payload) == "email_open":
            return derived_key("email_open", _user_identity(payload)), EMAIL_OPEN_WINDOW_SECONDS
        return None

    def build_request(self, operation: str, payloads: Sequence[dict[str, Any]]) -> OutboundRequest:
        (body,) = payloads
        return OutboundRequest(
            method="POST",
            url=self.base_url() + "/event",
            headers={"Authorization": self.require("api_key"), "Content-Type": "application/json"},
            json_body=body,
        )

    def reason_from(self, body: Any) -> str:
        if isinstance(body, dict) and isinstance(body.get("errors"), list):
            parts = []
            for err in body["errors"]:
                if isinstance(err, dict):
                    text = ": ".join(str(err[k]) for k in ("message", "description") if err.get(k))
                    parts.append(text or str(err))
                else:
                    parts.append(str(err))
            if parts:
                return "; ".join(parts)
        return super().reason_from(body)
