"""Acme Analytics: `POST {ACME_BASE_URL}/events`, `Authorization: Bearer <ACME_API_KEY>`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, SecretStr, StrictStr
from pydantic_settings import SettingsConfigDict

from eventrelay.worker.vendors.base import OutboundRequest, Vendor, VendorSettings


class AcmeSettings(VendorSettings):
    # ACME_BASE_URL, ACME_API_KEY, and every <VENDOR>_* setting: ACME_RATE_LIMIT, ...
    model_config = SettingsConfigDict(env_prefix="ACME_", extra="ignore")

    base_url: str | None = "https://api.acme.example/v1"
    api_key: SecretStr | None = None


class Event(BaseModel):
    """What Acme's API takes: any properties, typed where Acme is strict."""

    model_config = ConfigDict(extra="allow")

    event: StrictStr | None = None
    user_id: StrictStr | None = None


class Acme(Vendor):
    name = "acme"  # the entry point's name: queues eventrelay.acme and eventrelay.acme.retry
    operations = {"send_event": Event}
    settings_class = AcmeSettings

    def build_request(self, operation: str, payloads: Sequence[dict[str, Any]]) -> OutboundRequest:
        (payload,) = payloads
        return OutboundRequest(
            method="POST",
            url=self.base_url() + "/events",
            headers={
                "Authorization": f"Bearer {self.require('api_key')}",
                "Content-Type": "application/json",
            },
            json_body=payload,
        )
