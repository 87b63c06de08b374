"""Soak: the whole local stack under steady traffic for a long time, watching what grows.

``python -m bench.soak [--minutes 30] [--rate 40]`` starts the local stack (every service its
own process, the embedded broker and database) and runs the closed-loop demo's traffic
stretched over the duration: events to ingest, a prediction per event and its label, the
concept drifting at about 80% of the way, the retrain, the swap, then traffic on the new
version. Every ``--sample-seconds`` it records each process's resident memory and the
consumers' lag (``mlops_kafka_consumer_lag_records``, summed per service); at the end it
counts the events the database did not store, failed requests and ERROR log lines.

Memory is judged flat when no service process grows by more than 10% between the end of the
warm-up (the first fifth of the run; models loaded, caches and buffers filled) and its
largest later sample (the embedded broker and database are reported, not judged: they hold
the records and rows, in memory for the broker). The exit code is 0 when memory is flat and nothing was lost or failed.
This is not part of ``python -m bench``: it runs for half an hour by default.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient
from pymongo.collection import Collection
from rich.console import Console

from services.cli.demo.command import endpoints_of
from services.cli.demo.scenario import ClosedLoopDemo, DemoConfig
from services.cli.demo.spec import DATASET
from services.cli.stack import ALL_SERVICES, INFRA, LocalStack
from services.cli.stack_state import StackPorts

FLAT = 0.10
"""Largest growth of a process's memory after warm-up that still counts as flat."""
WARM_UP = 0.2
"""Share of the run before memory is judged."""


@dataclass
class Sample:
    at: float
    rss_mib: dict[str, float]
    lag: dict[str, float]


@dataclass
class Sampler:
    """Memory and lag of every component of ``stack``, every ``interval`` seconds, in a thread."""

    stack: LocalStack
    interval: float
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._started = time.monotonic()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            self._stop.wait(self.interval)

    def sample(self) -> Sample:
        rss = {name: rss_mib(process.pid) for name, process in self.stack.processes.items()}
        lag = {name: consumer_lag(self.stack.http_url(name)) for name in self.stack.services}
        return Sample(round(time.monotonic() - self._started, 1), rss, lag)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + 10)
        self.samples.append(self.sample())


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` (MiB; 0 when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def consumer_lag(url: str) -> float:
    """Records the service's consumers have not committed yet (-1 when it cannot be read)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return -1.0
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "mlops_kafka_consumer_lag_records"
        for sample in family.samples
    )


def judge_memory(samples: list[Sample], duration: float) -> dict[str, dict[str, float]]:
    """Per process: memory at the end of the warm-up, the largest after it, the last, the growth."""
    warm = [s for s in samples if s.at >= duration * WARM_UP] or samples[-1:]
    verdict = {}
    for name in warm[0].rss_mib:
        base = warm[0].rss_mib[name]
        later = [s.rss_mib.get(name, 0.0) for s in warm]
        peak = max(later)
        verdict[name] = {
            "warm_mib": base,
            "peak_mib": peak,
            "last_mib": later[-1],
            "growth": round((peak - base) / base, 3) if base else 0.0,
        }
    return verdict


def stored_events(stack: LocalStack, run_id: str, sent: int, within: float = 120.0) -> int:
    """Events of the run the database holds, once ingest has worked off its backlog (or
    ``within`` seconds have passed: what is missing then is lost)."""
    client: MongoClient[dict[str, object]]
    with MongoClient(stack.mongodb_uri) as client:
        rows: Collection[dict[str, object]] = client["mlops"]["ingest_rows"]
        deadline = time.monotonic() + within
        while True:
            stored = rows.count_documents({"dataset": DATASET, "event_id": {"$regex": f"^{run_id}-"}})
            if stored >= sent or time.monotonic() > deadline:
                return stored
            time.sleep(1.0)


def error_lines(stack: LocalStack) -> dict[str, int]:
    """ERROR (or worse) lines in each service's JSON log."""
    counts = {}
    for name in stack.services:
        path = stack.log_path(name)
        count = 0
        for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
            try:
                level = json.loads(line).get("level", "")
            except ValueError:
                level = "error"  # a line that is not JSON is a defect of its own
            count += level in ("error", "critical")
        counts[name] = count
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="how long the traffic runs")
    parser.add_argument("--rate", type=float, default=40.0, help="samples per second (prediction + event)")
    parser.add_argument(
        "--sample-seconds", type=float, default=30.0, help="how often memory and lag are read"
    )
    parser.add_argument(
        "--join-window-minutes",
        type=float,
        default=None,
        help="the monitor's join window (default: the monitor's, 60): it holds every prediction "
        "waiting for its label that long, so its memory grows until one window has passed",
    )
    parser.add_argument("--report", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    seconds = args.minutes * 60
    samples = int(args.rate * seconds)
    config = DemoConfig(
        rate=args.rate,
        concurrency=4,
        pre_drift_samples=int(samples * 0.8),
        post_swap_samples=int(samples * 0.15),
        post_drift_timeout=max(150.0, seconds * 0.2),
    )
    workdir = Path(tempfile.mkdtemp(prefix="mlops-soak-"))
    console = Console(stderr=True)
    services = [s for s in ALL_SERVICES if s != "console"]
    env = {}
    if args.join_window_minutes is not None:
        env["MONITOR_JOIN_WINDOW_SECONDS"] = str(args.join_window_minutes * 60)
    stack = LocalStack(workdir, StackPorts.free(), services=services, env=env)
    stack.start(timeout=300)  # a shared machine may take minutes to start six processes
    try:
        sampler = Sampler(stack, args.sample_seconds)
        demo = ClosedLoopDemo(endpoints_of(stack), config, console)
        started = time.monotonic()
        report = asyncio.run(demo.run())
        duration = time.monotonic() - started
        sampler.stop()
        sent = demo.events_sent
        stored = stored_events(stack, report.run_id, sent)
        errors = error_lines(stack)
    finally:
        stack.stop()
    memory = judge_memory(sampler.samples, duration)
    figures = {
        "minutes": round(duration / 60, 1),
        "rate": args.rate,
        "join_window_minutes": args.join_window_minutes,
        "events_sent": sent,
        "events_lost": sent - stored,
        "failed_requests": report.failed_requests,
        "loop": report.verdict,
        "retrain_requests": report.retrain_requests,
        "error_lines": errors,
        "max_lag": {name: max(s.lag.get(name, -1) for s in sampler.samples) for name in stack.services},
        "memory": memory,
        "series": [{"at": s.at, "rss_mib": s.rss_mib, "lag": s.lag} for s in sampler.samples],
        "logs": str(workdir / "logs"),
    }
    if args.report is not None:
        args.report.write_text(json.dumps(figures, indent=2))
    print(f"soak: {figures['minutes']} min at {args.rate:g} samples/s; the loop: {report.verdict}")
    print(f"events sent {sent}, lost {sent - stored}; failed requests {report.failed_requests}")
    print(f"ERROR log lines: {errors}; largest consumer lag: {figures['max_lag']}")
    print(f"{'process':<10}{'warm MiB':>10}{'peak MiB':>10}{'last MiB':>10}{'growth':>8}")
    for name, row in memory.items():
        print(
            f"{name:<10}{row['warm_mib']:>10.1f}{row['peak_mib']:>10.1f}{row['last_mib']:>10.1f}{row['growth']:>8.1%}"
        )
    # The embedded broker keeps every record in memory and the database its data: they grow
    # with what they hold, by design. The platform's processes must not.
    flat = all(row["growth"] <= FLAT for name, row in memory.items() if name not in INFRA)
    print(
        f"services' memory flat within {FLAT:.0%} after warm-up: {'yes' if flat else 'NO'} (kafka and mongodb hold the data)"
    )
    return 0 if flat and sent == stored and not report.failed_requests else 1


if __name__ == "__main__":
    sys.exit(main())
