"""`eventrelay mock-vendors` (or `python -m eventrelay.worker.dev.mock.cli`): serve every mock
vendor on one port, printing the `export ...` lines that point eventrelay at it."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

from eventrelay.worker.dev.mock.server import DEFAULT_PORT, MockVendors
from eventrelay.worker.dev.mock.vendors import VENDOR_MOCKS


def _env_lines(mock: MockVendors) -> Iterator[str]:
    for name, value in mock.env().items():
        yield f"export {name}={shlex.quote(value)}"


def _titles() -> str:
    """The registry in words, e.g. "Botsi, vtcdn, Infobip and Gravity Field"."""
    *rest, last = (mock.title for mock in VENDOR_MOCKS)
    return f"{', '.join(rest)} and {last}" if rest else last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mockvendors",
        description=f"Serve mock {_titles()} APIs for eventrelay.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help="port, 0 picks a free one (default %(default)s)",
    )
    args = parser.parse_args(argv)
    mock = MockVendors(host=args.host, port=args.port)
    for line in _env_lines(mock):
        print(line)
    sys.stdout.flush()  # a parent process reads these lines before we block
    print(f"mockvendors: serving on {mock.url} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # shutdown() waits for the serve loop, which runs in this very thread: delegate it.
        threading.Thread(target=mock.stop, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, request_stop)
    try:
        mock.serve_forever()
    finally:
        mock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
