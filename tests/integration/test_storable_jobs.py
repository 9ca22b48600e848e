"""Validation refuses everything the database or the request would refuse.

A job that passes `validate_job` must be storable in PostgreSQL (string columns have lengths;
text and JSON cannot hold NUL; text must be valid UTF-8) and must become a request. Anything
else is refused at the door, with a field path, and nothing is stored.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from eventrelay.models.delivery import Delivery
from eventrelay.models.session import get_engine
from eventrelay.worker.errors import InvalidJob
from eventrelay.worker.producer import enqueue, record_jobs, validate_job
from tests.integration import jobs
from tests.unit.test_properties import _configured

# Every code point, lone surrogates and control characters included (JSON can carry "\ud800"
# and "\u0000"), now and then exactly the characters PostgreSQL refuses, and some strings longer
# than any column.
any_char = st.characters(exclude_categories=())
hostile_text = (
    st.text(any_char, max_size=12)
    | st.text(any_char, min_size=250, max_size=300)
    | st.sampled_from(["\x00", "a\x00b", "x\ud800", "\udc00y"])
)
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_text
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3),
    max_leaves=8,
)

SAMPLES = [
    ("botsi", "create_profile", jobs.botsi_profile()),
    ("botsi", "send_event", jobs.botsi_event()),
    ("vtcdn", "send_event", jobs.vtcdn_update()),
    ("vtcdn", "send_event", jobs.vtcdn_generic()),
    (
        "vtcdn",
        "send_event",
        {"user": {"_id": "u-1"}, "event": {"confirmation": {"orderId": "A-1"}}},
    ),
    ("vtcdn", "send_event", {"user": {"email": "a@b.co"}, "event": {"email_open": {}}}),
    ("infobip", "send_event", jobs.infobip_event()),
    ("gravityfield", "send_event", jobs.gravityfield_event()),
]


@st.composite
def mutated(draw: st.DrawFn, value: Any) -> Any:
    """A valid payload with some strings replaced, some values nulled, some keys added."""
    if isinstance(value, dict):
        out = {k: draw(mutated(v)) for k, v in value.items()}
        if draw(st.integers(0, 4)) == 0:
            out[draw(hostile_text)] = draw(json_values)
        return out
    if isinstance(value, list):
        return [draw(mutated(v)) for v in value]
    choice = draw(st.integers(0, 9))
    if choice == 0 and isinstance(value, str):
        return draw(hostile_text)
    if choice == 1:
        return None
    return value


@st.composite
def candidate_jobs(draw: st.DrawFn) -> tuple[str, str, Any, str | None]:
    vendor, operation, sample = draw(st.sampled_from(SAMPLES))
    key = draw(st.none() | hostile_text)
    return vendor, operation, draw(mutated(sample)), key


@pytest.mark.usefixtures("clean")
@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(candidate=candidate_jobs())
def test_every_job_that_passes_validation_can_be_stored_and_sent(
    candidate: tuple[str, str, Any, str | None],
) -> None:
    vendor, operation, payload, key = candidate
    try:
        job = validate_job(vendor, operation, payload, key)
    except InvalidJob as exc:
        assert exc.errors and all(e.loc and e.msg for e in exc.errors)
        event("refused")
        return
    event(f"accepted: {vendor}/{operation}")
    with get_engine().connect() as conn, conn.begin() as transaction:
        (receipt,), _ = record_jobs(conn, [job])
        stored = conn.execute(
            select(Delivery.payload).where(Delivery.id == receipt.delivery_id)
        ).scalar_one()
        assert stored == job.payload
        transaction.rollback()  # each example starts from an empty database
    request = _configured(vendor).build_request(operation, [job.payload])
    assert request.method == "POST"
    json.dumps(request.json_body).encode()  # what requests will send


def _refusal(vendor: str, operation: str, payload: Any, key: str | None = None) -> str:
    with pytest.raises(InvalidJob) as refused:
        enqueue(vendor, operation, payload, idempotency_key=key)
    return str(refused.value)


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("operation", ["create_profile", "send_event"])
def test_a_botsi_customer_user_id_longer_than_255_characters_is_refused(operation: str) -> None:
    payload = jobs.botsi_profile if operation == "create_profile" else jobs.botsi_event
    reason = _refusal("botsi", operation, payload("u" * 300))
    assert "payload.customerUserId" in reason and "255" in reason


@pytest.mark.usefixtures("clean")
def test_nul_characters_are_refused_wherever_they_are_with_their_field_path() -> None:
    assert "payload.user.email" in _refusal(
        "vtcdn", "send_event", jobs.vtcdn_update(email="a\x00@example.com")
    )
    nul_key = {**jobs.gravityfield_event(), "ctx": {"ref\x00": 1}}
    assert "payload.ctx" in _refusal("gravityfield", "send_event", nul_key)
    in_list = jobs.gravityfield_event()
    in_list["data"][0]["name"] = "Sho\x00es"
    assert "payload.data.0.name" in _refusal("gravityfield", "send_event", in_list)
    assert "idempotency_key" in _refusal("infobip", "send_event", jobs.infobip_event(), key="k\x00")


@pytest.mark.usefixtures("clean")
def test_text_that_is_not_valid_unicode_is_refused() -> None:
    # A lone surrogate cannot be encoded as UTF-8 for a text column (the key) ...
    reason = _refusal("infobip", "send_event", jobs.infobip_event(), key="order-\ud83d")
    assert "idempotency_key" in reason and "surrogate" in reason
    # ... and would reach the vendor as invalid Unicode (JSON "\ud83d" alone).
    cut_emoji = {**jobs.infobip_event(), "properties": {"note": "thanks \ud83d"}}
    assert "payload.properties.note" in _refusal("infobip", "send_event", cut_emoji)


@pytest.mark.usefixtures("clean")
def test_a_vtcdn_user_email_of_null_is_refused() -> None:
    for kind in ({"update": {"firstname": "Ana"}}, {"email_open": {}}):
        reason = _refusal(
            "vtcdn", "send_event", {"user": {"email": None, "_id": "u-1"}, "event": kind}
        )
        assert "payload.user.email" in reason


@pytest.mark.usefixtures("clean")
def test_the_cli_refuses_a_too_long_customer_user_id_with_exit_2(cli: Any) -> None:
    job = {"vendor": "botsi", "operation": "send_event", "payload": jobs.botsi_event("u" * 300)}
    result = cli("send", "--json", json.dumps(job), check=False)
    assert result.returncode == 2, result.stderr
    assert "payload.customerUserId" in result.stderr and "nothing was stored" in result.stderr
