from __future__ import annotations

from worker.redact import mask_pii, redact, register_secrets


def test_emails_phones_and_ips_are_masked() -> None:
    text = "user jane.doe+x@example.com from 192.168.1.1 phone +385 91 123 4567 id 42"
    masked = mask_pii(text)
    assert "jane.doe" not in masked and "192.168.1.1" not in masked and "123 4567" not in masked
    assert "example.com" in masked and "id 42" in masked


def test_registered_secrets_are_removed_and_text_is_truncated() -> None:
    register_secrets(["s3cr3t-value"])
    out = redact("auth failed for s3cr3t-value " + "x" * 1000, limit=100)
    assert "s3cr3t-value" not in out and len(out) == 100
