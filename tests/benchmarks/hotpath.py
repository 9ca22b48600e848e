"""CPU per item of each step of a delivery, measured in one process, one step at a time.

    python -m tests.benchmarks.hotpath                # 3,000 items a step
    python -m tests.benchmarks.hotpath --items 500    # quicker

The latency benchmark (`tests/benchmarks/latency.py`) says what a delivery costs the fleet; this
one says which step it goes to, with nothing else running in the process: each step is run
`--items` times against the real mock vendor (a separate process), PostgreSQL and the code under
test, and its CPU (this process's, all threads) is divided by the items it handled. PostgreSQL's
CPU for the database steps (the backends connected to the benchmark's database) is beside it.

* `bare_post`: `requests.Session().post(url, json=body)`, the floor while we stay on requests;
* `send`: `vendors.base.send`, one vtcdn request and its classified answer;
* `send_group`: the request step as the send pool runs it (build, send, outcome);
* `claim`: claiming a vtcdn backlog 64 rows at a time, per row;
* `record`: recording delivered outcomes 100 at a time (attempts, counters), per outcome;
* `log_attempt`: the per-attempt log line, formatted and written to /dev/null.

Run it on two checkouts, one after the other, to see a change's before and after in one run;
it prints one JSON object (and writes it to `--out`/hotpath.json).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.benchmarks.bench import (
    BENCH_DB,
    MOCK,
    ROOT,
    Fleet,
    naive_request,
    postgres_cpu_seconds,
    reset_state,
    start_mock,
    use_benchmark_environment,
)
from tests.benchmarks.latency import vtcdn_job

LEASE_SECONDS = 60.0
CLAIM_ROWS = 64
RECORD_BATCH = 100


def _timed(n: int, step: Callable[[], int], database: bool = False) -> dict[str, float]:
    """Run `step` (which handles some items and says how many) until `n` items are done:
    CPU microseconds per item of this process, and of PostgreSQL for a database step."""
    pg0 = postgres_cpu_seconds(BENCH_DB) if database else 0.0
    cpu0, wall0 = time.process_time(), time.perf_counter()
    done = 0
    while done < n:
        handled = step()
        if not handled:
            break
        done += handled
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    out = {"items": done, "cpu_us": 1e6 * cpu / max(1, done), "wall_us": 1e6 * wall / max(1, done)}
    if database:
        out["postgresql_cpu_us"] = 1e6 * (postgres_cpu_seconds(BENCH_DB) - pg0) / max(1, done)
    return out


def measure(n: int) -> dict[str, Any]:
    import requests

    from eventrelay.models.delivery import AttemptOutcome
    from eventrelay.models.session import get_engine
    from eventrelay.worker.config import get_settings
    from eventrelay.worker.engine.pump.request import send_group
    from eventrelay.worker.engine.state import Outcome, claim, record
    from eventrelay.worker.logs import configure, log_attempt
    from eventrelay.worker.producer import enqueue_many
    from eventrelay.worker.vendors import get_vendor
    from eventrelay.worker.vendors.base import send

    settings = get_settings()
    vendor = get_vendor("vtcdn")
    results: dict[str, Any] = {}

    session = requests.Session()
    bodies = iter([naive_request(vtcdn_job(i, "bare")) for i in range(n)])

    def bare_post() -> int:
        url, headers, body = next(bodies)
        _ = session.post(url, json=body, headers=headers, timeout=10).content
        return 1

    results["bare_post"] = _timed(n, bare_post)

    requests_ = iter(
        [vendor.build_request("send_event", [vtcdn_job(i, "send")["payload"]]) for i in range(n)]
    )

    def one_send() -> int:
        send(
            vendor,
            next(requests_),
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            max_response_bytes=settings.max_response_bytes,
            deadline_seconds=settings.request_deadline_seconds,
        )
        return 1

    results["send"] = _timed(n, one_send)

    for start in range(0, n, 2000):
        enqueue_many([vtcdn_job(i, "claim") for i in range(start, min(n, start + 2000))])
    engine = get_engine()
    claimed: list[Any] = []

    def claim_some() -> int:
        with engine.begin() as conn:
            rows = claim(conn, "vtcdn", [], LEASE_SECONDS, top_up=CLAIM_ROWS)
        claimed.extend(rows)
        return len(rows)

    results["claim"] = _timed(n, claim_some, database=True)

    groups = iter([[c] for c in claimed])

    def one_group() -> int:
        send_group(vendor, next(groups), settings, None)
        return 1

    results["send_group"] = _timed(len(claimed), one_group)

    now = datetime.now(UTC)
    outcomes = [
        Outcome(c, AttemptOutcome.DELIVERED, status_code=200, duration_ms=3, started_at=now)
        for c in claimed
    ]
    batches = iter([outcomes[k : k + RECORD_BATCH] for k in range(0, len(outcomes), RECORD_BATCH)])

    def record_batch() -> int:
        batch = next(batches, [])
        if batch:
            with engine.begin() as conn:
                record(conn, batch)
        return len(batch)

    results["record"] = _timed(len(outcomes), record_batch, database=True)

    configure()
    with open(os.devnull, "w") as devnull:
        logging.getLogger("eventrelay").handlers[0].setStream(devnull)  # type: ignore[attr-defined]
        lines = iter(outcomes)

        def one_line() -> int:
            o = next(lines, None)
            if o is None:
                return 0
            log_attempt(o)
            return 1

        results["log_attempt"] = _timed(len(outcomes), one_line)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--out", default=str(ROOT / "bench-results"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(out, 1)
    use_benchmark_environment()
    reset_state()
    start_mock(fleet)
    try:
        import requests

        requests.post(f"{MOCK}/_mock/faults", json={"vendor": "vtcdn", "latency_ms": 0}, timeout=10)
        results = {"items": args.items, "steps": measure(args.items)}
    finally:
        fleet.stop_all()
    (out / "hotpath.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results))
    for name, figures in results["steps"].items():
        pg = figures.get("postgresql_cpu_us")
        print(
            f"{name:>12}: {figures['cpu_us']:7.1f} us CPU per item"
            + (f", PostgreSQL {pg:6.1f} us" if pg is not None else "")
            + f"  ({figures['items']} items)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
