"""eventrelay: durable delivery of application events to third-party vendor APIs.

The short public face, for code inside a web app::

    from eventrelay import enqueue, enqueue_many, InvalidJob

Importing this package (or any producer or integration module) builds no Celery app, opens no
connection and reads no settings: the names below are resolved on first use (PEP 562), and
settings are read by the first `enqueue`. The worker side lives in `eventrelay.worker`
(`celery -A eventrelay.worker worker ...`).
"""

from __future__ import annotations

from pkgutil import extend_path
from typing import TYPE_CHECKING, Any

# From the repository's root, this folder (which holds only this module) comes first on
# sys.path and would hide the rest of the package, which the strict editable install links in
# build/: every `eventrelay` folder on sys.path is part of this package.
__path__ = extend_path(__path__, __name__)

__version__ = "0.2.0"

if TYPE_CHECKING:
    from eventrelay.worker.errors import ConfigurationError, EventRelayError, InvalidJob
    from eventrelay.worker.producer import Receipt, enqueue, enqueue_many

_FACE = {
    "enqueue": "eventrelay.worker.producer",
    "enqueue_many": "eventrelay.worker.producer",
    "Receipt": "eventrelay.worker.producer",
    "InvalidJob": "eventrelay.worker.errors",
    "ConfigurationError": "eventrelay.worker.errors",
    "EventRelayError": "eventrelay.worker.errors",
}


def __getattr__(name: str) -> Any:
    module = _FACE.get(name)
    if module is None:
        raise AttributeError(f"module 'eventrelay' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_FACE])


__all__ = [
    "ConfigurationError",
    "EventRelayError",
    "InvalidJob",
    "Receipt",
    "__version__",
    "enqueue",
    "enqueue_many",
]
