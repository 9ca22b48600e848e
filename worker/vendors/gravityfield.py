"""Gravity Field: store events (add to cart, purchase ...).

Docs: Gravity Field's public SDK API reference, "Store custom event" (`POST {base}/event`).
- `Authorization: Bearer <token>`; `sec` is the site's key (GRAVITYFIELD_SITE_KEY). A job's
  own `sec` is dropped at the door, whatever the producer's environment (producers usually
  lack the key), and the worker's key is filled in at send time: no key is ever stored.
- No production base URL is published: GRAVITYFIELD_BASE_URL must be set.
- 200 and 204 are success; 403 means the token (or `sec`) was refused and parks the vendor;
  422 is final; 5xx are retried.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictStr
from pydantic_settings import SettingsConfigDict

from eventrelay.worker.vendors.base import OutboundRequest, Vendor, VendorSettings, Verdict


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
        # `sec` is a secret: never stored, whatever it holds; build_request fills it in.
        return {k: v for k, v in payload.items() if k != "sec"}

    def build_request(self, operation: str, payloads: Sequence[dict[str, Any]]) -> OutboundRequest:
        (job,) = payloads
        # The worker's key, always: a `sec` in a row stored before it was dropped is ignored.
        body = {"sec": self.require("site_key"), **{k: v for k, v in job.items() if k != "sec"}}
        return OutboundRequest(
            method="POST",
            url=self.base_url() + "/event",
            headers={
                "Authorization": f"Bearer {self.require('token')}",
                "Content-Type": "application/json",
            },
            json_body=body,
        )

    def classify(
        self, status: int, body: Any, headers: Mapping[str, str]
    ) -> tuple[Verdict, str | None]:
        # Gravity Field's API reference lists no 401: a wrong token (or `sec`) is answered 403,
        # wrong for every job alike. Parking keeps the jobs until the key is fixed, where
        # dead-lettering would lose every one of them.
        if status == 403:
            return (
                Verdict.CREDENTIALS,
                f"credentials rejected (HTTP 403): {self.reason_from(body)}; check "
                f"{self.env_name('token')} and {self.env_name('site_key')}",
            )
        return super().classify(status, body, headers)
