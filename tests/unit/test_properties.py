"""Arbitrary JSON never crashes validation with anything but the documented `InvalidJob`."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from eventrelay.worker.engine.tasks import decode_ids
from eventrelay.worker.errors import InvalidJob
from eventrelay.worker.producer import validate_job
from eventrelay.worker.vendors import VENDOR_CLASSES

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
vendors = st.sampled_from(sorted(VENDOR_CLASSES)) | st.text(max_size=10) | json_values
operations = st.sampled_from(["send_event", "create_profile"]) | st.text(max_size=10) | json_values


def _configured(vendor: str) -> Any:
    cls = VENDOR_CLASSES[vendor]
    secrets = {
        name: SecretStr("k")
        for name, f in cls.settings_class.model_fields.items()
        if "SecretStr" in str(f.annotation)
    }
    return cls(cls.settings_class.model_construct(base_url="https://vendor.example", **secrets))


def _shaped_like(vendor: str) -> st.SearchStrategy[Any]:
    """Payloads with the right keys and arbitrary values: the interesting half of the space."""
    model = next(iter(VENDOR_CLASSES[vendor].operations.values()))
    keys = list(model.model_fields)
    return st.fixed_dictionaries(
        {}, optional={k: json_values for k in keys + ["user", "event", "_id"]}
    )


@given(
    vendor=vendors,
    operation=operations,
    payload=json_values,
    key=st.none() | st.text(max_size=300) | json_values,
)
def test_validation_of_arbitrary_json_only_raises_invalid_job(
    vendor: Any, operation: Any, payload: Any, key: Any
) -> None:
    try:
        job = validate_job(vendor, operation, payload, key)
    except InvalidJob as exc:
        assert exc.errors and all(e.msg for e in exc.errors)
    else:
        assert job.vendor == vendor and job.operation == operation


@given(data=st.data(), vendor=st.sampled_from(sorted(VENDOR_CLASSES)))
def test_vendor_shaped_garbage_only_raises_invalid_job(data: st.DataObject, vendor: str) -> None:
    payload = data.draw(_shaped_like(vendor))
    for operation in VENDOR_CLASSES[vendor].operations:
        try:
            job = validate_job(vendor, operation, payload)
        except InvalidJob:
            continue
        # Whatever passes validation must also become a request without error.
        request = _configured(vendor).build_request(operation, [job.payload])
        assert request.method == "POST" and request.url.startswith("https://vendor.example")


@given(raw=json_values)
def test_message_id_decoding_never_raises(raw: Any) -> None:
    ids = decode_ids(raw)
    # None: malformed, dropped. A list of UUIDs, empty meaning "drain the vendor's due work".
    assert ids is None or (isinstance(ids, list) and len(ids) == len(raw))
