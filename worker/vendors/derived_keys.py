"""Idempotency keys derived from a job (vendor rules): stable, bounded in length, and free of
the personal data they are made from. (The Redis keys are in fleet/keys.py.)"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def derived_key(kind: str, *parts: Any) -> str:
    """`kind:` + a SHA-256 of the parts, so emails and ids never sit in the keys table."""
    canonical = json.dumps(parts, separators=(",", ":"), sort_keys=True, default=str)
    return f"{kind}:{hashlib.sha256(canonical.encode()).hexdigest()}"
