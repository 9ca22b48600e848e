"""Infobip People: custom person events.

Docs: Infobip People API, "Send Event"
(`POST /peopleevents/2/persons/{personId}/definitions/{definitionId}/events`).
- Every account has its own base URL (`https://xxxxx.api.infobip.com`): no default.
- `Authorization: App <api key>`.
- personId / definitionId go into the path (URL-encoded: emails carry `+` and `@`),
  identifierType into the query; the body is only `{"properties": {...} | null}`. Percent-
  encoding leaves "." and "..", which HTTP clients remove as dot segments (RFC 3986 5.2.4):
  `personId=".."` would post to another endpoint with the account key, so they are refused.
- 201 is success; 400/403/404 are final; 429 and 5xx are retried. 401 parks the vendor.
- 250 requests/second per account, for the whole fleet (INFOBIP_RATE_LIMIT).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StrictStr
from pydantic_settings import SettingsConfigDict

from eventrelay.worker.errors import Unsendable
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


DOT_SEGMENTS = frozenset({".", ".."})


def _not_a_dot_segment(value: str) -> str:
    if value in DOT_SEGMENTS:
        raise ValueError(
            f"must not be {value!r}: it goes into the request path, where {value!r} would "
            "send the event to another Infobip endpoint; give the real identifier"
        )
    return value


PathParameter = Annotated[StrictStr, Field(min_length=1), AfterValidator(_not_a_dot_segment)]


class SendEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    personId: PathParameter
    identifierType: IdentifierType
    definitionId: PathParameter
    properties: dict[str, Any] | None = None


class Infobip(Vendor):
    name = "infobip"
    operations = {"send_event": SendEvent}
    settings_class = InfobipSettings

    def build_request(self, operation: str, payloads: Sequence[dict[str, Any]]) -> OutboundRequest:
        (job,) = payloads
        url = (
            f"{self.base_url()}/peopleevents/2/persons/{_segment(job, 'personId')}"
            f"/definitions/{_segment(job, 'definitionId')}/events"
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


def _segment(job: dict[str, Any], field: str) -> str:
    """One path segment, percent-encoded; a dot segment stored before the door refused it
    raises (the delivery is never sent) rather than posting to another endpoint."""
    value = str(job[field])
    if value in DOT_SEGMENTS:
        raise Unsendable(f"{field} {value!r} would change the request path; not sent")
    return quote(value, safe="")
