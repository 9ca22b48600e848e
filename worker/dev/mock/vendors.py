"""The registry of vendor mocks: one line per vendor, in the order logs, counters and env list
them. A fifth vendor is its module (a VendorMock subclass) plus its line here."""

from __future__ import annotations

from eventrelay.worker.dev.mock.base import VendorMock
from eventrelay.worker.dev.mock.botsi import BotsiMock
from eventrelay.worker.dev.mock.gravityfield import GravityFieldMock
from eventrelay.worker.dev.mock.infobip import InfobipMock
from eventrelay.worker.dev.mock.vtcdn import VtcdnMock

VENDOR_MOCKS: tuple[type[VendorMock], ...] = (BotsiMock, VtcdnMock, InfobipMock, GravityFieldMock)

VENDORS: tuple[str, ...] = tuple(mock.name for mock in VENDOR_MOCKS)

DEFAULT_CREDENTIALS: dict[str, str] = {
    key: value for mock in VENDOR_MOCKS for key, value in mock.default_credentials.items()
}
