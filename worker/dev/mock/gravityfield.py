"""Mock Gravity Field: store an event (`POST /gravityfield/event`).

The client side, with the vendor's rules it relies on, is worker/vendors/gravityfield.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from eventrelay.worker.dev.mock.base import (
    Knob,
    Reply,
    Request,
    Route,
    VendorMock,
    is_text,
    parse_bool,
    scheme_token,
)


def problem(body: dict[str, Any]) -> str | None:
    """None when acceptable, else the text of the 422."""
    user = body.get("user")
    if not isinstance(user, dict) or "uid" not in user:
        return "user.uid is required"
    if not is_text(user["uid"]):
        return "user.uid must be a non-empty string"
    data = body.get("data")
    if not isinstance(data, list) or not data:
        return "data must be a non-empty array of events"
    for index, item in enumerate(data):
        if not isinstance(item, dict) or not is_text(item.get("type")):
            return f"data[{index}].type is required (string)"
    return None


class GravityFieldMock(VendorMock):
    name = "gravityfield"
    title = "Gravity Field"
    base_path = "/gravityfield"
    default_credentials = {
        "gravityfield_token": "mock-gf-token",
        "gravityfield_site_key": "mock-gf-site-key",
    }
    # 204 is the vendor's other success answer: this knob makes clients meet it.
    knobs = {"respond_204": Knob(parse_bool, False)}

    def routes(self) -> Sequence[Route]:
        return (Route(r"/event", self._event),)

    def _event(self, req: Request) -> Reply:
        token = scheme_token(req.headers.get("authorization"), "Bearer")
        if token != self.credential("gravityfield_token"):
            # The vendor answers a bad token with 403, not 401 (worker/vendors/gravityfield.py).
            return Reply(403, {"error": "Forbidden"})
        if not req.is_json:
            return Reply(400, {"error": "Request body is not valid JSON"})
        if not isinstance(req.body, dict):
            return Reply(422, {"error": "body must be a JSON object"})
        if req.body.get("sec") != self.credential("gravityfield_site_key"):
            return Reply(403, {"error": "Forbidden: sec is not this site's key"})
        rejected = problem(req.body)
        if rejected is not None:
            return Reply(422, {"error": rejected})
        if self.knob("respond_204"):
            return Reply(204)
        user = req.body["user"]
        session = user.get("ses") if is_text(user.get("ses")) else str(uuid.uuid4())
        body = {
            "user": {"uid": user["uid"], "ses": session, "segments": [], "conditions": {}},
            "campaigns": [],
        }
        return Reply(200, body)
