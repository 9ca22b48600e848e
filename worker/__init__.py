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
        import sys

        from eventrelay.worker.errors import ConfigurationError
        from eventrelay.worker.fleet.celery_app import get_app

        try:
            return get_app()
        except ConfigurationError:
            if "celery.bin.celery" not in sys.modules:
                raise  # imported by an application: it gets the error, naming the variable
            # `celery -A eventrelay.worker worker|flower`: one line per bad setting, exit 2,
            # no traceback (README, "What a bad setting does").
            from eventrelay.worker.engine.startup import refuse_bad_start

            refuse_bad_start("celery", sends=False)
            raise
    raise AttributeError(f"module 'eventrelay.worker' has no attribute {name!r}")


__all__ = ["app", "celery"]
