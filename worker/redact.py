"""Masking of secrets and personal data in anything we log or store about a response."""

from __future__ import annotations

import re
from collections.abc import Iterable

EXCERPT_CHARS = 300

_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
# Full eight-group form, or any compressed form with "::" (so clock times like 18:42:10 pass).
_IPV6 = re.compile(
    r"(?<![\w:])(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}"
    r"|(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{0,4}::(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4})(?![\w:])"
)
# International numbers (+385 91 ...), "(555) 123-4567" and "555-123-4567"; not dates, times or
# small ids such as paywallId 42.
_PHONE = re.compile(
    r"(?<![\w.:\-])(?:\+\d[\d\s().\-]{6,}\d|\(\d{2,4}\)\s?[\d\s.\-]{5,}\d|\d{3}[\s.\-]\d{3}[\s.\-]\d{4})(?![\w.:\-])"
)

_known_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values so that `redact` removes them wherever they appear."""
    for value in values:
        if value and len(value) >= 4:
            _known_secrets.add(value)


def mask_pii(text: str) -> str:
    """Mask emails, IP addresses and phone numbers."""
    text = _EMAIL.sub(_mask_email, text)
    text = _IPV6.sub("[ip]", text)
    text = _IPV4.sub("[ip]", text)
    return _PHONE.sub("[phone]", text)


def _mask_email(match: re.Match[str]) -> str:
    local, _, domain = match.group(0).partition("@")
    return f"{local[:1]}***@{domain}"


def redact(text: str | None, limit: int | None = EXCERPT_CHARS) -> str:
    """Remove known secrets and mask personal data; truncate to `limit` characters."""
    if not text:
        return ""
    if limit is not None and len(text) > limit * 2:
        text = text[: limit * 2]  # no need to scan what will be cut off
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, "[secret]")
    text = mask_pii(text)
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text
