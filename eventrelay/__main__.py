"""`python -m eventrelay ...` is the `eventrelay` command."""

from eventrelay.worker.ops.cli import main

main()
