"""Botsi: profiles and paywall events.

Docs: Botsi's public Web API pages "Create a Profile" and "Send Profile Event"
(`https://app.botsi.com/api/v1/web-api/profiles`, `.../events`).
- `Authorization: <secret key>` with no scheme word (Botsi's authentication page).
- `POST /events` takes a JSON array, so several due events share one request.
- `isExperiment` / `aiPricingModelId` must be exactly what Get Paywall returned: wrong or
  missing values "corrupt the AI model's training data", so they are strictly typed here.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)
from pydantic_settings import SettingsConfigDict
from sqlalchemy import Connection

from eventrelay.models.identity import BOTSI_PROFILES
from eventrelay.models.sql import insert_ignore
from eventrelay.worker.vendors.base import OutboundRequest, Vendor, VendorSettings
from eventrelay.worker.vendors.derived_keys import derived_key

Required = Field(min_length=1)
# Stored as the delivery's user_ref (a 255-character column) for the profile ordering rule.
USER_ID_MAX_CHARS = 255
UserId = Annotated[StrictStr | None, Field(max_length=USER_ID_MAX_CHARS)]


class BotsiSettings(VendorSettings):
    model_config = SettingsConfigDict(env_prefix="BOTSI_", extra="ignore")

    base_url: str | None = "https://app.botsi.com/api/v1/web-api"
    secret_key: SecretStr | None = None


class CreateProfile(BaseModel):
    """The profile body of the Create a Profile page, as is."""

    model_config = ConfigDict(extra="forbid")

    country: StrictStr = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2, e.g. US")
    device: StrictStr = Required
    os: StrictStr = Required
    platform: StrictStr = Required
    customerUserId: UserId = None
    locale: StrictStr | None = None
    currency: StrictStr | None = Field(default=None, pattern=r"^[A-Z]{3}$")
    storeCountry: StrictStr | None = None
    timezone: StrictStr | None = None
    ip: StrictStr | None = None
    appVersion: StrictStr | None = None
    appBuild: StrictStr | None = None
    osVersion: StrictStr | None = None
    advertisingId: StrictStr | None = None
    sessionId: StrictStr | None = None
    pushToken: StrictStr | None = None


class ProfileEvent(BaseModel):
    """One event object of the Send Profile Event page (the worker wraps it in the array)."""

    model_config = ConfigDict(extra="forbid")

    eventType: StrictStr = Required
    paywallId: StrictInt
    placementId: StrictStr = Required
    isExperiment: StrictBool
    aiPricingModelId: StrictInt
    profileId: StrictStr | None = None
    customerUserId: UserId = None

    @model_validator(mode="after")
    def _identified(self) -> ProfileEvent:
        if not self.profileId and not self.customerUserId:
            raise ValueError("provide profileId or customerUserId to identify the user")
        return self


class Botsi(Vendor):
    name = "botsi"
    operations = {"create_profile": CreateProfile, "send_event": ProfileEvent}
    settings_class = BotsiSettings
    batch_sizes = {"send_event": 50}
    keeps_answer_of = frozenset({"create_profile"})  # its data.profileId, see on_delivered

    def idempotency_key(
        self, operation: str, payload: dict[str, Any], given: str | None
    ) -> str | None:
        if given is not None or operation != "send_event":
            return given
        # "Paywall impressions are counted uniquely per user": the same impression is sent once.
        user = payload.get("customerUserId") or payload.get("profileId")
        return derived_key(
            "impression", user, payload["eventType"], payload["paywallId"], payload["placementId"]
        )

    def user_ref(self, operation: str, payload: dict[str, Any]) -> str | None:
        value = payload.get("customerUserId")
        return str(value) if value else None

    def follows_operation(self, operation: str) -> str | None:
        # An event for a user must not reach Botsi before that user's profile does.
        return "create_profile" if operation == "send_event" else None

    def build_request(self, operation: str, payloads: Sequence[dict[str, Any]]) -> OutboundRequest:
        json_body: dict[str, Any] | list[dict[str, Any]]
        if operation == "create_profile":
            (json_body,) = payloads
            path = "/profiles"
        else:
            path, json_body = "/events", list(payloads)
        return OutboundRequest(
            method="POST",
            url=self.base_url() + path,
            headers={
                "Authorization": self.require("secret_key"),
                "Content-Type": "application/json",
            },
            json_body=json_body,
        )

    def on_delivered(
        self, conn: Connection, delivery_id: uuid.UUID, operation: str, response_json: Any
    ) -> None:
        if operation != "create_profile" or not isinstance(response_json, dict):
            return
        data = response_json.get("data")
        if isinstance(data, dict) and isinstance(data.get("profileId"), str):
            insert_ignore(
                conn,
                BOTSI_PROFILES,
                [
                    {
                        "profile_id": data["profileId"],
                        "customer_user_id": data.get("customerUserId"),
                        "delivery_id": delivery_id,
                    }
                ],
                ["profile_id"],
            )
