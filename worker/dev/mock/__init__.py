"""The mock vendor server: `MockVendors` in-process, `main()` as `eventrelay mock-vendors`.

server.py is the core (routing, faults applied, the request log); http.py the HTTP framing,
faults.py the fault knobs and counters, vendors.py the registry, cli.py the command; each
vendor's API is a module of its own (base.py has the contract).
"""

from __future__ import annotations

from eventrelay.worker.dev.mock.cli import main
from eventrelay.worker.dev.mock.server import DEFAULT_CREDENTIALS, MockVendors

__all__ = ["DEFAULT_CREDENTIALS", "MockVendors", "main"]
