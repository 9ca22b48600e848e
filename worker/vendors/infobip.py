"""Infobip People: custom person events.

Docs: Infobip People API, "Send Event"
(`POST /peopleevents/2/persons/{personId}/definitions/{definitionId}/events`).
- Every account has its own base URL (`https://xxxxx.api.infobip.com`): no default.
- `Authorization: App <api key>`.
- personId / definitionId go into the path (URL-encoded: emails carry `+` and `@`),
  identifierType into the query; the body is only `{"properties": {...} | null}`.
- 201 is success; 400/403/404 are final; 429 and 5xx are retried. 401 parks the vendor.
- 250 requests/second per account, for the whole fleet (INFOBIP_RATE_LIMIT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictStr
from pydantic_settings import SettingsConfigDict

from eventrelay.worker.vendors.base import OutboundRequest, Vendor, VendorSettings

DEFAULT_RATE_LIMIT_PER_SECOND = 250.0

IdentifierType = Literal[
    "ID",
    "EXTERNAL_ID",
    "PHONE",
    "EMAIL",
    "LINE",
    "FACEBOOK",
    "TELEGRAM",
    "PUSH",
    "WEB_PUSH",
    "LIVE_CHAT",
    "VIBER_BOTS",
    "INSTAGRAM",
    "INSTAGRAM_DM",
    "TWITTER",
    "APPLE_BUSINESS_CHAT",
    "KAKAO_SANGDAM",
    "GOOGLE_BUSINESS_MESSAGES",
]


class InfobipSettings(VendorSettings):
    model_config = SettingsConfigDict(env_prefix="INFOBIP_", extra="ignore")

    api_key: SecretStr | None = None
    rate_limit: float | None = DEFAULT_RATE_LIMIT_PER_SECOND


class SendEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    personId: StrictStr = Field(min_length=1)
    identifierType: IdentifierType
    definitionId: StrictStr = Field(min_length=1)
    properties: dict[str, Any] | None = None


class Infobip(Vendor):
    name = "infobip"
    operations = {"send_event": SendEvent}
    settings_class = InfobipSettings

    def build_request(self, operation: str, payloads: Sequence[dict[str, Any]]) -> OutboundRequest:
        (job,) = payloads
        url = (
            f"{self.base_url()}/peopleevents/2/persons/{quote(job['personId'], safe='')}"
            f"/definitions/{quote(job['definitionId'], safe='')}/events"
            f"?identifierType={quote(job['identifierType'], safe='')}"
        )
        return OutboundRequest(
            method="POST",
            url=url,
            headers={
                "Authorization": f"App {self.require('api_key')}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            json_body={"properties": job.get("properties")},
        )

    def reason_from(self, body: Any) -> str:
        if isinstance(body, dict):
            exc = (body.get("requestError") or {}).get("serviceException")
            if isinstance(exc, dict):
                return ": ".join(str(exc[k]) for k in ("messageId", "text") if exc.get(k))
        return super().reason_from(body)
