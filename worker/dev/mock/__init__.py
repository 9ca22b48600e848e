"""The mock vendor server: `MockVendors` in-process, `main()` as `eventrelay mock-vendors`.

server.py is the core; each vendor's API is a module of its own (base.py has the contract).
"""

from __future__ import annotations

from eventrelay.worker.dev.mock.server import DEFAULT_CREDENTIALS, MockVendors, main

__all__ = ["DEFAULT_CREDENTIALS", "MockVendors", "main"]
