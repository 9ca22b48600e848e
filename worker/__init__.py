"""The worker side of eventrelay, installed as `eventrelay.worker`.

`celery -A eventrelay.worker worker ...` (and `... flower`) find the Celery app here as
`eventrelay.worker.app`. It is built on first access, not at import: importing a producer or
integration module never builds an app nor reads a setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery

    app: Celery
    celery: Celery


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from eventrelay.worker.engine.celery_app import get_app

        return get_app()
    raise AttributeError(f"module 'eventrelay.worker' has no attribute {name!r}")


__all__ = ["app", "celery"]
