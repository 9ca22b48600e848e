"""The vendor registry: adding a vendor is one module and one line in VENDOR_CLASSES."""

from __future__ import annotations

from functools import cache

from eventrelay.worker.errors import FieldError, InvalidJob
from eventrelay.worker.vendors.base import Vendor
from eventrelay.worker.vendors.botsi import Botsi
from eventrelay.worker.vendors.gravityfield import GravityField
from eventrelay.worker.vendors.infobip import Infobip
from eventrelay.worker.vendors.vtcdn import Vtcdn

VENDOR_CLASSES: dict[str, type[Vendor]] = {
    cls.name: cls for cls in (Botsi, Vtcdn, Infobip, GravityField)
}


def vendor_names() -> list[str]:
    return sorted(VENDOR_CLASSES)


@cache
def get_vendor(name: str) -> Vendor:
    """The vendor called `name`, configured from the environment (one instance per process)."""
    cls = VENDOR_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise InvalidJob(
            [
                FieldError(
                    "vendor", f"unknown vendor {name!r}; valid vendors: {', '.join(vendor_names())}"
                )
            ]
        )
    return cls()


__all__ = ["VENDOR_CLASSES", "Vendor", "get_vendor", "vendor_names"]
