"""Latency sweep: throughput when the vendor answers in 0, 20, 100 and 500 ms.

    python -m tests.benchmarks.latency                 # the full sweep (README, "Benchmark")
    python -m tests.benchmarks.latency --smoke         # small and quick, what CI runs

Real vendors answer in 50-300 ms, so throughput is requests in flight / latency. Each row runs
a backlog of vtcdn `update` events (one unbatched vendor) through each contender, with the
same mock, Redis and PostgreSQL, for at most `--seconds`:

* eventrelay: `eventrelay worker --concurrency 2`, the same command in every row;
* a plain Celery task (`requests.post` + `autoretry_for`) under prefork `-c 2`;
* the same plain task under `--pool threads -c 64`.

At 0 ms a fourth contender sets the floor: the keep-alive ceiling, one bare `requests.Session`
loop per worker process posting the same bodies to the same mock (`ceiling`), the least CPU a
delivery can cost while we stay on `requests`.

Requests in flight are measured as rate × latency (Little's law). CPU per delivery is the CPU
time over the measured window, divided by the deliveries in it, of the contender's processes
(Celery's main process and its pool children), of the mock, and of the services the contender
makes work: PostgreSQL (the backends connected to the benchmark's database, and the server's
WAL writer, checkpointer and background writer) and Redis (the server: the benchmark starts its
own `redis-server` unless `--shared-redis`, so nobody else's traffic is counted). On a shared
2-core machine CPU per delivery says more than the rate does about what each delivery costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import requests

from tests.benchmarks import bench
from tests.benchmarks.bench import (
    BENCH_DB,
    ENV,
    MOCK,
    ROOT,
    Fleet,
    cpu_seconds,
    deliveries_at,
    mock_reset,
    naive_request,
    postgres_cpu_seconds,
    redis_cpu_seconds,
    reset_state,
    start_mock,
    use_benchmark_environment,
    use_redis,
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


def _cpu_now(pid: int) -> dict[str, float]:
    """CPU seconds so far of the contender (`pid` and its children), the mock and the services."""
    return {
        "worker": cpu_seconds(pid),
        "mock": cpu_seconds(_MOCK_PID[0]) if _MOCK_PID else 0.0,
        "postgresql": postgres_cpu_seconds(BENCH_DB),
        "redis": redis_cpu_seconds(bench.REDIS),
    }


def _per_delivery(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    ms = {k: 1000 * (after[k] - before[k]) / max(1, n) for k in before}
    return {
        "cpu_ms_per_delivery": ms["worker"],
        "mock_cpu_ms_per_request": ms["mock"],
        "postgresql_cpu_ms_per_delivery": ms["postgresql"],
        "redis_cpu_ms_per_delivery": ms["redis"],
        "services_cpu_ms_per_delivery": ms["postgresql"] + ms["redis"],
    }


def _measure(n: int, seconds: float, pid: int) -> dict[str, float]:
    """Deliveries per second over the run: until `n` arrived or `seconds` passed; and CPU
    milliseconds per delivery of process `pid` (with its children), of the mock and of
    PostgreSQL and Redis, from the first delivery seen to the last poll."""
    deadline = time.monotonic() + seconds + 30  # the worker's start is not counted
    seen, records = 0, []
    first: float | None = None
    cpu0: dict[str, float] = {}
    counted0 = 0
    while time.monotonic() < deadline:
        new = requests.get(f"{MOCK}/_mock/received", params={"since": seen}, timeout=60).json()
        if new:
            if first is None:
                first = time.monotonic()
                cpu0, counted0 = _cpu_now(pid), len(records) + len(new)
            records.extend(new)
            seen = new[-1]["seq"]
        if first is not None and (len(records) >= n or time.monotonic() - first >= seconds):
            break
        time.sleep(0.25)
    points = deliveries_at(records)
    if len(points) < 2 or not cpu0:
        return {"deliveries_per_second": 0.0, "delivered": len(points)}
    cpu = _per_delivery(cpu0, _cpu_now(pid), len(records) - counted0)
    span = max(1e-9, points[-1][0] - points[0][0])
    return {"deliveries_per_second": (len(points) - 1) / span, "delivered": len(points), **cpu}


def _ceiling_loop(bodies: list[tuple[str, dict[str, str], Any]], out: Any) -> None:
    """One bare keep-alive loop: post each body, nothing else (the floor of a delivery's CPU)."""
    import os

    session = requests.Session()
    started, cpu = time.monotonic(), os.times()
    for url, headers, body in bodies:
        session.post(url, json=body, headers=headers, timeout=10)
    done = os.times()
    out.put(
        (len(bodies), time.monotonic() - started, done.user + done.system - cpu.user - cpu.system)
    )


def run_ceiling(n: int, processes: int, run: str) -> dict[str, float]:
    """The keep-alive ceiling: `processes` bare `requests.Session` loops posting the same
    vtcdn bodies as the contenders, `n` in all; requests/s and CPU ms per request."""
    import multiprocessing as mp

    bodies = [naive_request(vtcdn_job(i, run)) for i in range(n)]
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    share = -(-n // processes)
    procs = [
        ctx.Process(target=_ceiling_loop, args=(bodies[k * share : (k + 1) * share], q))
        for k in range(processes)
    ]
    before = {"postgresql": postgres_cpu_seconds(BENCH_DB), "redis": redis_cpu_seconds(bench.REDIS)}
    mock0 = cpu_seconds(_MOCK_PID[0]) if _MOCK_PID else 0.0
    for p in procs:
        p.start()
    results = [q.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    sent = sum(r[0] for r in results)
    mock = (cpu_seconds(_MOCK_PID[0]) if _MOCK_PID else 0.0) - mock0
    return {
        # Each loop's rate, summed: the loops run side by side over the same window.
        "deliveries_per_second": sum(r[0] / r[1] for r in results),
        "delivered": sent,
        "cpu_ms_per_delivery": 1000 * sum(r[2] for r in results) / sent,
        "mock_cpu_ms_per_request": 1000 * mock / sent,
        "postgresql_cpu_ms_per_delivery": 1000
        * (postgres_cpu_seconds(BENCH_DB) - before["postgresql"])
        / sent,
        "redis_cpu_ms_per_delivery": 1000
        * (redis_cpu_seconds(bench.REDIS) - before["redis"])
        / sent,
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


CONTENDERS = ("eventrelay", "plain_prefork_c2", "plain_threads_c64")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--jobs", type=int, help="backlog per contender (3,000; 300 with --smoke)")
    parser.add_argument(
        "--latencies", help="comma-separated vendor latencies in ms (0,20,100,500; 0,100 smoke)"
    )
    parser.add_argument(
        "--shared-redis",
        action="store_true",
        help="use EVENTRELAY_BENCH_REDIS instead of a private redis-server (its CPU is shared)",
    )
    parser.add_argument(
        "--only", help="comma-separated contenders to run (ceiling, eventrelay, plain_...)"
    )
    parser.add_argument("--out", default=str(ROOT / "bench-results"))
    args = parser.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    n = args.jobs or (300 if args.smoke else 3000)
    seconds = 2.0 if args.smoke else 20.0
    latencies = (
        tuple(int(x) for x in args.latencies.split(","))
        if args.latencies
        else (0, 100)
        if args.smoke
        else LATENCIES_MS
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(out, 2)
    if not args.shared_redis:
        from eventrelay.worker.dev.processes import start_redis

        redis_proc, port = start_redis(out)
        use_redis(f"redis://127.0.0.1:{port}")
        fleet.env.update(ENV)
    use_benchmark_environment()
    reset_state()
    _MOCK_PID.append(start_mock(fleet).pid)
    rows: list[dict[str, Any]] = []
    try:
        for latency in latencies:
            row: dict[str, Any] = {"latency_ms": latency}
            runners = [
                ("eventrelay", lambda r: run_eventrelay(fleet, n, seconds, r)),
                ("plain_prefork_c2", lambda r: run_naive(fleet, n, seconds, r, "prefork", 2)),
                ("plain_threads_c64", lambda r: run_naive(fleet, n, seconds, r, "threads", 64)),
            ]
            if latency == 0:  # the floor: at a latency it would only measure the latency
                runners.insert(0, ("ceiling", lambda r: run_ceiling(n, fleet.concurrency, r)))
            for name, runner in runners:
                if only is not None and name not in only:
                    continue
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
        if not args.shared_redis:
            redis_proc.stop()
    result = {"jobs": n, "rows": rows, "ratios": _ratios(rows)}
    (out / "latency.json").write_text(json.dumps(result, indent=2))
    _chart(rows, out / "latency.png")
    _print(result)
    return 0


def _ratios(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    by = {r["latency_ms"]: r for r in rows}

    def figure(latency: int, who: str, what: str = "deliveries_per_second") -> float:
        return float(by[latency].get(who, {}).get(what, 0.0)) if latency in by else 0.0

    def ratio(a: float, b: float) -> float | None:
        return a / b if b else None

    def cpu(latency: int, who: str) -> float:
        return figure(latency, who, "cpu_ms_per_delivery")

    return {
        "er_0_over_ceiling_0": ratio(figure(0, "eventrelay"), figure(0, "ceiling")),
        "er_cpu_over_ceiling_cpu_0": ratio(cpu(0, "eventrelay"), cpu(0, "ceiling")),
        "er_cpu_over_ceiling_cpu_100": ratio(cpu(100, "eventrelay"), cpu(0, "ceiling")),
        "er_100_over_threads64_100": ratio(
            figure(100, "eventrelay"), figure(100, "plain_threads_c64")
        ),
        "er_100_over_er_0": ratio(figure(100, "eventrelay"), figure(0, "eventrelay")),
        "er_500_over_er_0": ratio(figure(500, "eventrelay"), figure(0, "eventrelay")),
        "er_0_over_prefork_0": ratio(figure(0, "eventrelay"), figure(0, "plain_prefork_c2")),
    }


def _print(result: dict[str, Any]) -> None:
    names = ("ceiling", *CONTENDERS)
    print(f"{'latency':>8} | " + " | ".join(f"{k[:18]:>18}" for k in names))
    for r in result["rows"]:
        cells = [
            f"{r[k]['deliveries_per_second']:7.0f}/s ({r[k]['in_flight']:4.0f})" if k in r else "-"
            for k in names
        ]
        print(f"{r['latency_ms']:>6}ms | " + " | ".join(f"{c:>18}" for c in cells))
    print("CPU ms per delivery: contender's processes / PostgreSQL / Redis / mock per request")
    for r in result["rows"]:
        cells = [
            "{:5.2f} / {:4.2f} / {:4.2f} / {:4.2f}".format(
                r[k].get("cpu_ms_per_delivery", 0),
                r[k].get("postgresql_cpu_ms_per_delivery", 0),
                r[k].get("redis_cpu_ms_per_delivery", 0),
                r[k].get("mock_cpu_ms_per_request", 0),
            )
            if k in r
            else "-"
            for k in names
        ]
        print(f"{r['latency_ms']:>6}ms | " + " | ".join(f"{c:>18}" for c in cells))
    for k, v in result["ratios"].items():
        print(f"ratio {k}: {v:.2f}" if v is not None else f"ratio {k}: -")


def _chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Deliveries/s per contender and latency; beside it, CPU ms per delivery stacked by who
    spent it (the contender's processes, PostgreSQL, Redis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, cpu_ax) = plt.subplots(1, 2, figsize=(13, 4.8))
    labels = {
        "ceiling": "bare requests.Session loops",
        "eventrelay": "eventrelay worker -c 2",
        "plain_prefork_c2": "plain task, prefork -c 2",
        "plain_threads_c64": "plain task, threads -c 64",
    }
    width = 0.2
    xs = range(len(rows))
    for k, name in enumerate(labels):
        rate_ax.bar(
            [x + (k - 1.5) * width for x in xs],
            [r[name]["deliveries_per_second"] if name in r else 0 for r in rows],
            width,
            label=labels[name],
        )
    rate_ax.set_xticks(list(xs), [f"{r['latency_ms']} ms" for r in rows])
    rate_ax.set_xlabel("vendor answer latency")
    rate_ax.set_ylabel("deliveries / s")
    rate_ax.set_title("Backlog of vtcdn updates, 2 cores, one run")
    rate_ax.legend(fontsize=8)

    bars = [
        (f"{name[:12]} {r['latency_ms']}ms", r[name])
        for r in rows
        for name in labels
        if name in r and (name != "plain_prefork_c2" or r["latency_ms"] == 0)
    ]
    bottom = [0.0] * len(bars)
    for part, label in (
        ("cpu_ms_per_delivery", "contender's processes"),
        ("postgresql_cpu_ms_per_delivery", "PostgreSQL"),
        ("redis_cpu_ms_per_delivery", "Redis"),
    ):
        values = [float(b[1].get(part, 0.0)) for b in bars]
        cpu_ax.barh(range(len(bars)), values, left=bottom, label=label)
        bottom = [x + v for x, v in zip(bottom, values, strict=True)]
    cpu_ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
    cpu_ax.invert_yaxis()
    cpu_ax.set_xlabel("CPU ms per delivery")
    cpu_ax.set_title("What a delivery costs the fleet")
    cpu_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
