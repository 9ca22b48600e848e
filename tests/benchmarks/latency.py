"""Latency sweep: throughput when the vendor answers in 0, 20, 100 and 500 ms.

    python -m tests.benchmarks.latency                 # the full sweep (README, "Benchmark")
    python -m tests.benchmarks.latency --smoke         # small and quick, what CI runs

Real vendors answer in 50-300 ms, so throughput is requests in flight / latency. Each row runs
a backlog of vtcdn `update` events (one unbatched vendor) through each contender, with the
same mock, Redis and PostgreSQL, for at most `--seconds`:

* eventrelay: `eventrelay worker --concurrency 2`, the same command in every row;
* a plain Celery task (`requests.post` + `autoretry_for`) under prefork `-c 2`;
* the same plain task under `--pool threads -c 64`.

Requests in flight are measured as rate × latency (Little's law). CPU per delivery is the CPU
time of the contender's processes (Celery's main process and its pool children) and of the mock
over the measured window, divided by the deliveries in it: on a shared 2-core machine it says
more than the rate does about what each delivery costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.benchmarks.bench import (
    ENV,
    MOCK,
    ROOT,
    Fleet,
    cpu_seconds,
    deliveries_at,
    mock_reset,
    naive_request,
    reset_state,
    start_mock,
    use_benchmark_environment,
)

LATENCIES_MS = (0, 20, 100, 500)


def vtcdn_job(n: int, run: str) -> dict[str, Any]:
    marker = f"{run}-{n}"
    return {
        "vendor": "vtcdn",
        "operation": "send_event",
        "payload": {
            "user": {"email": f"{marker}@example.com"},
            "event": {"update": {"firstname": marker}},
        },
    }


_MOCK_PID: list[int] = []  # the mock's process, for its CPU time


def _measure(n: int, seconds: float, pid: int) -> dict[str, float]:
    """Deliveries per second over the run: until `n` arrived or `seconds` passed; and CPU
    milliseconds per delivery of process `pid` (with its children) and of the mock, from
    the first delivery seen to the last poll."""
    deadline = time.monotonic() + seconds + 30  # the worker's start is not counted
    seen, records = 0, []
    first: float | None = None
    cpu0 = mock0 = 0.0
    counted0 = 0
    while time.monotonic() < deadline:
        new = requests.get(f"{MOCK}/_mock/received", params={"since": seen}, timeout=60).json()
        if new:
            if first is None:
                first = time.monotonic()
                cpu0, counted0 = cpu_seconds(pid), len(records) + len(new)
                mock0 = cpu_seconds(_MOCK_PID[0]) if _MOCK_PID else 0.0
            records.extend(new)
            seen = new[-1]["seq"]
        if first is not None and (len(records) >= n or time.monotonic() - first >= seconds):
            break
        time.sleep(0.25)
    cpu = cpu_seconds(pid) - cpu0
    mock_cpu = (cpu_seconds(_MOCK_PID[0]) if _MOCK_PID else 0.0) - mock0
    points = deliveries_at(records)
    if len(points) < 2:
        return {"deliveries_per_second": 0.0, "delivered": len(points)}
    span = max(1e-9, points[-1][0] - points[0][0])
    counted = max(1, len(records) - counted0)
    return {
        "deliveries_per_second": (len(points) - 1) / span,
        "delivered": len(points),
        "cpu_ms_per_delivery": 1000 * cpu / counted,
        "mock_cpu_ms_per_request": 1000 * mock_cpu / counted,
    }


def _clear_backlog() -> None:
    import redis
    from sqlalchemy import text

    from eventrelay.models.session import get_engine

    with get_engine().begin() as conn:
        conn.execute(text("TRUNCATE delivery_attempts, deliveries, idempotency_keys CASCADE"))
    for url in (ENV["EVENTRELAY_BROKER_URL"], ENV["NAIVE_BROKER_URL"]):
        redis.Redis.from_url(url).flushdb()


def run_eventrelay(fleet: Fleet, n: int, seconds: float, run: str) -> dict[str, float]:
    from eventrelay.worker.producer import enqueue_many

    for start in range(0, n, 2000):
        enqueue_many([vtcdn_job(i, run) for i in range(start, min(n, start + 2000))])
    proc = fleet.start(
        [sys.executable, "-m", "eventrelay", "worker", "--concurrency", "2", "-l", "WARNING"],
        f"er-{run}",
    )
    try:
        return _measure(n, seconds, proc.pid)
    finally:
        fleet.stop(proc)


def run_naive(
    fleet: Fleet, n: int, seconds: float, run: str, pool: str, c: int
) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from tests.benchmarks.naive_app import post

    for i in range(n):
        url, headers, body = naive_request(vtcdn_job(i, run))
        post.apply_async(args=(url, headers, body))
    proc = fleet.start(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.benchmarks.naive_app",
            "worker",
            "-P",
            pool,
            "-c",
            str(c),
            "-l",
            "WARNING",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"{run}@%h",
        ],
        f"naive-{run}",
    )
    try:
        return _measure(n, seconds, proc.pid)
    finally:
        fleet.stop(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "bench-results"))
    args = parser.parse_args(argv)
    use_benchmark_environment()
    n = 300 if args.smoke else 4000
    seconds = 4.0 if args.smoke else 20.0
    latencies = (0, 100) if args.smoke else LATENCIES_MS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    reset_state()
    fleet = Fleet(out, 2)
    _MOCK_PID.append(start_mock(fleet).pid)
    rows: list[dict[str, Any]] = []
    try:
        for latency in latencies:
            row: dict[str, Any] = {"latency_ms": latency}
            for name, runner in (
                ("eventrelay", lambda r: run_eventrelay(fleet, n, seconds, r)),
                ("plain_prefork_c2", lambda r: run_naive(fleet, n, seconds, r, "prefork", 2)),
                ("plain_threads_c64", lambda r: run_naive(fleet, n, seconds, r, "threads", 64)),
            ):
                _clear_backlog()
                mock_reset()
                requests.post(
                    f"{MOCK}/_mock/faults",
                    json={"vendor": "vtcdn", "latency_ms": latency},
                    timeout=10,
                )
                figures = runner(f"{name}-{latency}")
                figures["in_flight"] = figures["deliveries_per_second"] * latency / 1000
                row[name] = figures
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        fleet.stop_all()
    result = {"rows": rows, "ratios": _ratios(rows)}
    (out / "latency.json").write_text(json.dumps(result, indent=2))
    _chart(rows, out / "latency.png")
    _print(result)
    return 0


def _ratios(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    by = {r["latency_ms"]: r for r in rows}

    def rate(latency: int, who: str) -> float:
        return float(by[latency][who]["deliveries_per_second"]) if latency in by else 0.0

    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    return {
        "er_100_over_threads64_100": ratio(rate(100, "eventrelay"), rate(100, "plain_threads_c64")),
        "er_100_over_er_0": ratio(rate(100, "eventrelay"), rate(0, "eventrelay")),
        "er_500_over_er_0": ratio(rate(500, "eventrelay"), rate(0, "eventrelay")),
        "er_0_over_prefork_0": ratio(rate(0, "eventrelay"), rate(0, "plain_prefork_c2")),
    }


def _print(result: dict[str, Any]) -> None:
    print(
        f"{'latency':>8} | {'eventrelay':>16} | {'plain prefork c2':>16} | {'plain threads 64':>16}"
    )
    for r in result["rows"]:
        cells = [
            f"{r[k]['deliveries_per_second']:7.0f}/s ({r[k]['in_flight']:4.0f})"
            for k in ("eventrelay", "plain_prefork_c2", "plain_threads_c64")
        ]
        print(f"{r['latency_ms']:>6}ms | " + " | ".join(f"{c:>16}" for c in cells))
    print("CPU ms per delivery (contender's processes / mock per request):")
    for r in result["rows"]:
        cells = [
            f"{r[k].get('cpu_ms_per_delivery', 0):5.2f} / {r[k].get('mock_cpu_ms_per_request', 0):4.2f}"
            for k in ("eventrelay", "plain_prefork_c2", "plain_threads_c64")
        ]
        print(f"{r['latency_ms']:>6}ms | " + " | ".join(f"{c:>16}" for c in cells))
    for k, v in result["ratios"].items():
        print(f"ratio {k}: {v:.2f}" if v is not None else f"ratio {k}: -")


def _chart(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.27
    xs = range(len(rows))
    for k, (name, label) in enumerate(
        (
            ("eventrelay", "eventrelay worker -c 2"),
            ("plain_prefork_c2", "plain task, prefork -c 2"),
            ("plain_threads_c64", "plain task, threads -c 64"),
        )
    ):
        ax.bar(
            [x + (k - 1) * width for x in xs],
            [r[name]["deliveries_per_second"] for r in rows],
            width,
            label=label,
        )
    ax.set_xticks(list(xs), [f"{r['latency_ms']} ms" for r in rows])
    ax.set_xlabel("vendor answer latency")
    ax.set_ylabel("deliveries / s")
    ax.set_title("Backlog of vtcdn updates, 2 cores, one run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
