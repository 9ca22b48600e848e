"""Gravity Field: store events (add to cart, purchase ...).

Docs: Gravity Field's public SDK API reference, "Store custom event" (`POST {base}/event`).
- `Authorization: Bearer <token>`; `sec` is the site's key (GRAVITYFIELD_SITE_KEY), filled in
  at send time when the job leaves it out, so the key is never stored with the job.
- No production base URL is published: GRAVITYFIELD_BASE_URL must be set.
- 200 and 204 are success; 403 and 422 are final; 5xx are retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictStr
from pydantic_settings import SettingsConfigDict

from eventrelay.worker.vendors.base import OutboundRequest, Vendor, VendorSettings


class GravityFieldSettings(VendorSettings):
    model_config = SettingsConfigDict(env_prefix="GRAVITYFIELD_", extra="ignore")

    token: SecretStr | None = None
    site_key: SecretStr | None = None


class User(BaseModel):
    model_config = ConfigDict(extra="allow")

    uid: StrictStr = Field(min_length=1)


class DataItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: StrictStr = Field(min_length=1)


class StoreEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sec: StrictStr | None = None
    user: User
    ctx: dict[str, Any] | None = None
    device: dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    data: list[DataItem] = Field(min_length=1)


class GravityField(Vendor):
    name = "gravityfield"
    operations = {"send_event": StoreEvent}
    settings_class = GravityFieldSettings

    def normalize(self, operation: str, payload: dict[str, Any]) -> dict[str, Any]:
        site_key = self.settings.site_key  # type: ignore[attr-defined]
        if site_key is not None and payload.get("sec") == site_key.get_secret_value():
            # Same as the configured key: drop it so the key is not stored; refilled at send.
            return {k: v for k, v in payload.items() if k != "sec"}
        return payload

    def build_request(self, operation: str, payloads: Sequence[dict[str, Any]]) -> OutboundRequest:
        (job,) = payloads
        body = dict(job)
        if not body.get("sec"):
            body = {"sec": self.require("site_key"), **body}
        return OutboundRequest(
            method="POST",
            url=self.base_url() + "/event",
            headers={
                "Authorization": f"Bearer {self.require('token')}",
                "Content-Type": "application/json",
            },
            json_body=body,
        )
