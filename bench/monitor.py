"""The monitor: detection delay against the bare detector, throughput against raw
consumption, and memory over a steady run.

``python -m bench.monitor [--seeds 3] [--backlog 64000] [--seconds 120] [--rate 300]``

Everything runs for real: an embedded broker, and the monitor as its own process
(``python -m services.monitor``), fed through Kafka as serving and ingest would feed it.

1. Detection delay, per seed: a classifier's error rate goes from 10% to 30% at sample
   2,000; separately, one of 20 input features shifts its mean by 0.5 sd at sample
   2,000. The same streams go once through the monitor and once straight into river's
   ADWIN in this process; the delay is the number of post-change samples each had seen
   when it fired. Samples before and after the change are sent apart, as time would
   separate them (a backlog spread over partitions is consumed partition by partition).
   Target (issue 7): the monitor adds no more than one micro-batch (MONITOR_BATCH_SIZE
   samples) to the bare detector's delay.
2. Throughput: a backlog of predictions with labels (20 features, eight models, two on each
   partition of the samples topic) is consumed by one monitor process, then a backlog
   like it by two processes in one consumer group, started together, timed from when each
   owns partitions of every stage; the monitor decodes, joins, and runs every detector. A bare
   aiokafka consumer reading the first backlog is the floor. Targets (issue 18): one
   process at least 10% of the floor, two at least 1.7x one. Each process's CPU seconds
   are read from /proc, so records per CPU second tell the monitor's own cost from the
   machine's load.
3. Steady run: predictions and labels at a fixed rate for ``--seconds``, stationary; the
   monitor's resident memory is sampled throughout. Targets: memory flat (the last quarter
   within 10% of the second); no false alarm on the stationary streams of steps 2 and 3
   (100,000 samples with the defaults), whatever the detector: errors, 20 features, classes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from google.protobuf.timestamp_pb2 import Timestamp
from river.drift import ADWIN

from bench.monitor_process import Monitor, count_reached, counted, read_drift, wait_until
from bench.processes import cpu_seconds, machine_ticks
from services.common.auth import PlatformKeys, Scope
from services.common.events import OutgoingRecord, Topics, encode
from services.common.kafka import create_producer, ensure_topics, publish
from services.common.localstack import ManagedProcess, free_port, start_kafka, start_process
from services.common.proto.mlops.v1 import events_pb2, model_pb2
from services.monitor.join import partition_of
from services.monitor.settings import DATA_ADWIN_DELTA, MonitorSettings

N_FEATURES = 20
FEATURES = [f"f{i}" for i in range(N_FEATURES)]
CHANGE_AT = 2000
STREAM = 4000
SHIFTED = "f3"
BATCH_SIZE = 500


def _timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def prediction(
    topics: Topics, event_id: str, model: str, label: str, features: list[float], at: float
) -> OutgoingRecord:
    message = events_pb2.PredictionRecord(
        request_id=event_id,
        model_name=model,
        model_version=1,
        route="production",
        occurred_at=_timestamp(at),
        feature_names=FEATURES,
        rows=[events_pb2.PredictedRow(id=event_id, features=features, probabilities=[0.4, 0.6], label=label)],
    )
    return encode(topics.predictions, message, source="/bench/serving", key=event_id)


def label(topics: Topics, event_id: str, value: str, at: float) -> OutgoingRecord:
    message = events_pb2.LabelRecord(
        event_id=event_id,
        dataset="bench",
        label=model_pb2.FeatureValue(string_value=value),
        event_time=_timestamp(at),
        ingested_at=_timestamp(at),
    )
    return encode(topics.labels, message, source="/bench/ingest", key=event_id)


async def send(producer: AIOKafkaProducer, records: Iterable[OutgoingRecord]) -> None:
    batch: list[OutgoingRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) >= 1000:
            await publish(producer, batch)
            batch = []
    await publish(producer, batch)


def bare_delay(values: list[float], delta: float) -> int | None:
    """Post-change samples river's ADWIN had seen when it first fired after the change."""
    detector = ADWIN(delta=delta)
    for i, value in enumerate(values):
        detector.update(value)
        if detector.drift_detected and i >= CHANGE_AT:
            return i - CHANGE_AT + 1
    return None


def concept_stream(seed: int) -> list[bool]:
    rng = random.Random(seed)
    return [rng.random() < (0.1 if i < CHANGE_AT else 0.3) for i in range(STREAM)]


def feature_stream(seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    rows = []
    for i in range(STREAM):
        row = [rng.gauss(0.0, 1.0) for _ in FEATURES]
        if i >= CHANGE_AT:
            row[FEATURES.index(SHIFTED)] += 0.5
        rows.append(row)
    return rows


async def detection_delays(
    topics: Topics, producer: AIOKafkaProducer, monitor: Monitor, bootstrap: str, seeds: int
) -> list[tuple[str, int, int | None, int | None]]:
    results: list[tuple[str, int, int | None, int | None]] = []
    now = time.time()
    for seed in range(seeds):
        wrong = concept_stream(seed)
        rows = feature_stream(1000 + seed)
        steady = random.Random(seed)
        for kind, model in (("concept", f"delay-concept-{seed}"), ("data", f"delay-data-{seed}")):
            records_by_phase = []
            for phase in (range(0, CHANGE_AT), range(CHANGE_AT, STREAM)):
                records = []
                for i in phase:
                    event_id = f"{model}-{i}"
                    if kind == "concept":
                        features = [steady.gauss(0.0, 1.0) for _ in FEATURES]
                        truth = "0" if wrong[i] else "1"
                    else:
                        features, truth = rows[i], "1"
                    records.append(prediction(topics, event_id, model, "1", features, now + i))
                    records.append(label(topics, event_id, truth, now + i))
                records_by_phase.append((phase.stop, records))
            for stop, records in records_by_phase:
                await send(producer, records)
                await wait_until(
                    lambda m=model, s=stop: count_reached(monitor, m, "labelled", s), f"{model} samples"
                )
            events = [
                e
                for e in await read_drift(bootstrap, topics.drift)
                if e.model_name == model
                and e.kind
                == (events_pb2.DRIFT_KIND_CONCEPT if kind == "concept" else events_pb2.DRIFT_KIND_DATA)
                and (kind == "concept" or e.feature == SHIFTED)
                and e.sample_index >= CHANGE_AT
            ]
            through = min(e.sample_index for e in events) - CHANGE_AT + 1 if events else None
            if kind == "concept":
                bare = bare_delay([float(w) for w in wrong], delta=0.002)
            else:
                # The monitor's data drift detector: ADWIN at its stricter default delta.
                bare = bare_delay([r[FEATURES.index(SHIFTED)] for r in rows], delta=DATA_ADWIN_DELTA)
            results.append((kind, seed, bare, through))
            print(
                f"  {kind:8s} seed {seed}: bare ADWIN {bare} samples, through the monitor {through} samples",
                flush=True,
            )
    return results


async def raw_floor(bootstrap: str, topics: list[str]) -> float:
    """Records per second a bare aiokafka consumer reads the backlog at."""
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(t, p) for t in topics for p in range(4)])
        total = sum(ends.values())
        seen = 0
        started = time.perf_counter()
        while seen < total:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                seen += len(records)
        return seen / (time.perf_counter() - started)
    finally:
        await consumer.stop()


def backlog_models(partitions: int, per_partition: int = 2) -> list[str]:
    """Model names, ``per_partition`` on each partition of the monitor's samples topic, so
    that processes splitting the partitions split the detectors' work evenly."""
    models: list[str] = []
    taken: Counter[int] = Counter()
    k = 0
    while len(models) < partitions * per_partition:
        name = f"backlog-{k}"
        partition = partition_of(name, partitions)
        if taken[partition] < per_partition:
            models.append(name)
            taken[partition] += 1
        k += 1
    return models


@dataclass
class BacklogRun:
    monitors: list[Monitor]
    rate: float
    """Records (predictions and labels) per second, through the monitor."""
    per_cpu_second: float
    """Records per CPU second of the monitor processes."""
    cores: float
    """CPU seconds the monitor processes used per second of the run."""
    broker_cores: float
    """The same for the broker, which shares the machine's cores with them."""
    machine_busy: float
    """The share of all the machine's cores that was busy (anything: monitors, broker, bench)."""


async def consume_backlog(
    bootstrap: str,
    producer: AIOKafkaProducer,
    topics: Topics,
    models: Sequence[str],
    count: int,
    processes: int,
    start_monitor: Callable[[str], Awaitable[Monitor]],
    broker: ManagedProcess,
) -> BacklogRun:
    """Send ``count`` predictions with labels, then start ``processes`` monitors in one group
    together, and time the backlog through them from when each owns partitions of every
    stage. (Sent while the monitor runs, the backlog would be timed at the bench's own
    sending rate.)"""
    await ensure_topics(bootstrap, topics.all())
    rng = random.Random(7)
    for start in range(0, count, 5000):
        await send(producer, stationary_records(topics, models, start, min(5000, count - start), rng))
    monitors = list(await asyncio.gather(*(start_monitor(topics.prefix) for _ in range(processes))))
    join, samples = f"{topics.prefix}.monitor.join", f"{topics.prefix}.monitor.samples"

    async def spread() -> bool:
        owned = [await m.assignment() for m in monitors]
        return all(all(o.get(t) for t in (topics.predictions, join, samples)) for o in owned)

    await wait_until(spread, f"{processes} processes to share the partitions", within=60)
    await wait_until(lambda: _any_counted(monitors), "first prediction")
    started, cpu = time.perf_counter(), sum(m.cpu_seconds() for m in monitors)
    broker_cpu = cpu_seconds(broker.pid)
    machine = machine_ticks()
    # Count from what was handled by then (a process may have started before the other).
    done_at_start = sum(await counted(monitors, "predictions")) + sum(await counted(monitors, "labelled"))

    async def all_labelled() -> bool:
        return sum(await counted(monitors, "labelled")) >= count

    await wait_until(all_labelled, "backlog labelled")
    elapsed = time.perf_counter() - started
    used = sum(m.cpu_seconds() for m in monitors) - cpu
    broker_used = cpu_seconds(broker.pid) - broker_cpu
    busy, total = (after - before for after, before in zip(machine_ticks(), machine, strict=True))
    records = 2 * count - done_at_start
    split = await counted(monitors, "labelled")
    print(
        f"  {processes} process{'es' if processes > 1 else ''}: {records / elapsed:,.0f} records/s "
        f"({elapsed:.1f} s, {used:.1f} CPU s, the broker {broker_used:.1f} CPU s, the machine's cores "
        f"{busy / total:.0%} busy, labelled per process {split})",
        flush=True,
    )
    return BacklogRun(
        monitors, records / elapsed, records / used, used / elapsed, broker_used / elapsed, busy / total
    )


async def _any_counted(monitors: Sequence[Monitor]) -> bool:
    return sum(await counted(monitors, "predictions")) > 0


def stationary_records(
    topics: Topics, models: Sequence[str], start: int, count: int, rng: random.Random
) -> list[OutgoingRecord]:
    """Predictions with their labels, stationary, the models taking turns."""
    now = time.time()
    out = []
    for i in range(start, start + count):
        model = models[i % len(models)]
        event_id = f"{model}-{i}"
        out.append(prediction(topics, event_id, model, "1", [rng.gauss(0.0, 1.0) for _ in FEATURES], now))
        out.append(label(topics, event_id, "0" if rng.random() < 0.1 else "1", now))
    return out


async def run(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    kafka_port = free_port()
    kafka = start_kafka(kafka_port, log_path=workdir / "kafka.log")
    bootstrap = f"127.0.0.1:{kafka_port}"
    keys = PlatformKeys()
    # An administrator sees every model's status: no registry runs here to tell the
    # monitor which team a model is of, and a team member would see none of them.
    token = keys.mint("bench", Scope.ADMIN)
    monitors: list[ManagedProcess] = []

    async def start_monitor(prefix: str, tree: Path | None = None, **env: str) -> Monitor:
        """A monitor process on ``prefix``; from the source ``tree`` when given (``services``
        is imported from the working directory first), else from this one."""
        port = free_port()
        process = start_process(
            f"monitor-{prefix}",
            [sys.executable, "-m", "services.monitor"],
            cwd=tree,
            env={
                **os.environ,
                "MLOPS_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
                "MLOPS_TOPIC_PREFIX": prefix,
                **keys.env(),
                "MONITOR_HTTP_PORT": str(port),
                "MONITOR_BATCH_SIZE": str(BATCH_SIZE),
                # The bare detector it is compared with knows no training data either, and
                # no registry runs here to ask.
                "MONITOR_TRAINING_REFERENCE": "false",
                "MLOPS_LOG_LEVEL": "WARNING",
                **env,
            },
            log_path=workdir / f"monitor-{prefix}-{len(monitors)}.log",
        )
        monitors.append(process)
        monitor = Monitor(process, f"http://127.0.0.1:{port}", token)

        async def ready() -> bool:
            try:
                async with httpx.AsyncClient(timeout=2) as client:
                    return (await client.get(f"{monitor.url}/health/ready")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(ready, "ready monitor", within=120)
        return monitor

    producer = create_producer(bootstrap, "bench-monitor")
    await producer.start()
    try:
        print(f"monitor bench (broker and monitor are separate processes; logs in {workdir})", flush=True)
        print("\n1. detection delay (post-change samples seen when the detector fired)", flush=True)
        delays_topics = Topics("delays")
        await ensure_topics(bootstrap, delays_topics.all())
        monitor = await start_monitor(delays_topics.prefix)
        delays = await detection_delays(delays_topics, producer, monitor, bootstrap, args.seeds)
        monitor.process.stop()

        print(
            f"\n2. throughput on a backlog of {args.backlog} predictions with labels, {N_FEATURES} features",
            flush=True,
        )
        models = backlog_models(MonitorSettings.model_fields["partitions"].default)
        runs = {}
        for processes in (1, 2):
            backlog = Topics(f"backlog{processes}")
            runs[processes] = await consume_backlog(
                bootstrap, producer, backlog, models, args.backlog, processes, start_monitor, kafka
            )
            # Stopped one by one, each leaving the group and committing what it handled.
            for monitor in runs[processes].monitors:
                monitor.process.stop()
        if args.peer_tree is not None:
            print(f"  the monitor of {args.peer_tree}, one process:", flush=True)
            peer = await consume_backlog(
                bootstrap,
                producer,
                Topics("backlogpeer"),
                models,
                args.backlog,
                1,
                lambda prefix: start_monitor(prefix, tree=args.peer_tree),
                kafka,
            )
            peer.monitors[0].process.stop()
            print(f"  this tree against it: {runs[1].rate / peer.rate:.2f}x records/s", flush=True)
        floor = await raw_floor(bootstrap, [Topics("backlog1").predictions, Topics("backlog1").labels])
        print(f"  raw aiokafka consumption of the first backlog: {floor:,.0f} records/s", flush=True)
        backlog_alarms = [
            e
            for processes in runs
            for e in await read_drift(bootstrap, Topics(f"backlog{processes}").drift)
            if e.model_name in models
        ]

        print(
            f"\n3. steady run: {args.rate} predictions and labels per second for {args.seconds} s, stationary",
            flush=True,
        )
        steady = Topics("steady")
        await ensure_topics(bootstrap, steady.all())
        monitor = await start_monitor(steady.prefix, MONITOR_JOIN_WINDOW_SECONDS=str(args.join_window))
        rss: list[tuple[float, float]] = []
        sent = 0
        rng = random.Random(11)
        began = time.monotonic()
        next_sample = began
        while time.monotonic() - began < args.seconds:
            second = time.monotonic()
            await send(producer, stationary_records(steady, ["steady"], sent, args.rate, rng))
            sent += args.rate
            if time.monotonic() >= next_sample:
                rss.append((time.monotonic() - began, monitor.rss_mb()))
                next_sample += 5
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - second)))
        await wait_until(lambda: count_reached(monitor, "steady", "labelled", sent), "steady stream labelled")
        rss.append((time.monotonic() - began, monitor.rss_mb()))
        false_alarms = backlog_alarms + [
            e for e in await read_drift(bootstrap, steady.drift) if e.model_name == "steady"
        ]
        monitor.process.stop()
        for at, mb in rss[:: max(1, len(rss) // 8)]:
            print(f"  t={at:5.0f}s  monitor RSS {mb:6.1f} MB", flush=True)

        print("\nresults", flush=True)
        ok = True
        for kind in ("concept", "data"):
            rows = [(b, t) for k, _, b, t in delays if k == kind]
            found = [(b, t) for b, t in rows if b is not None and t is not None]
            if len(found) < len(rows):
                print(f"  {kind} drift: missed in {len(rows) - len(found)} of {len(rows)} runs")
                ok = False
            if found:
                extra = [t - b for b, t in found]
                within = all(e <= BATCH_SIZE for e in extra)
                ok &= within
                print(
                    f"  {kind} drift delay: bare ADWIN mean {statistics.mean(b for b, _ in found):.0f}, "
                    f"through the monitor mean {statistics.mean(t for _, t in found):.0f} samples; "
                    f"added at most {max(extra)} (target <= one micro-batch, {BATCH_SIZE}): "
                    f"{'met' if within else 'MISSED'}"
                )
        one, two = runs[1], runs[2]
        ratio = one.rate / floor
        ok &= ratio >= 0.10
        print(
            f"  throughput, one process: {one.rate:,.0f} vs raw {floor:,.0f} records/s = {ratio:.1%} of the floor "
            f"(target >= 10%): {'met' if ratio >= 0.10 else 'MISSED'}"
        )
        scaling = two.rate / one.rate
        ok &= scaling >= 1.7
        print(
            f"  two processes: {two.rate:,.0f} vs one {one.rate:,.0f} records/s = {scaling:.2f}x "
            f"(target >= 1.7x): {'met' if scaling >= 1.7 else 'MISSED'}; records per CPU second "
            f"{two.per_cpu_second:,.0f} vs {one.per_cpu_second:,.0f} "
            f"({two.per_cpu_second / one.per_cpu_second:.2f}x: what two processes cost in work, whatever the load)"
        )
        # What the ratio of two processes can be depends on free cores: the broker and this
        # bench run on the same machine.
        print(
            f"    cores used: one process {one.cores:.2f}, the broker {one.broker_cores:.2f}, the machine "
            f"{one.machine_busy:.0%} busy; two processes {two.cores:.2f}, the broker {two.broker_cores:.2f}, "
            f"the machine {two.machine_busy:.0%} busy (of {os.cpu_count()} cores)"
        )
        second_quarter = [mb for at, mb in rss if args.seconds * 0.25 <= at < args.seconds * 0.5]
        last_quarter = [mb for at, mb in rss if at >= args.seconds * 0.75]
        if second_quarter and last_quarter:
            growth = max(last_quarter) / max(second_quarter) - 1
            flat = growth <= 0.10
            ok &= flat
            print(
                f"  memory: {max(second_quarter):.0f} MB in the second quarter, {max(last_quarter):.0f} MB in the last "
                f"({growth:+.1%}; join window {args.join_window:.0f} s; target flat within 10%): {'met' if flat else 'MISSED'}"
            )
        ok &= not false_alarms
        print(
            f"  false alarms on {args.backlog + sent:,} stationary samples ({N_FEATURES} features, classes and errors watched): "
            f"{len(false_alarms)}"
            + "".join(f"\n    {e.kind} {e.feature} at {e.sample_index}" for e in false_alarms[:5])
        )
        return 0 if ok else 1
    finally:
        await producer.stop()
        for process in monitors:
            process.stop()
        kafka.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.monitor", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="Streams per detection-delay scenario.")
    parser.add_argument(
        "--backlog", type=int, default=64_000, help="Predictions (each with a label) in the backlog."
    )
    parser.add_argument("--seconds", type=int, default=120, help="Length of the steady run.")
    parser.add_argument(
        "--rate", type=int, default=300, help="Predictions (each with a label) per second in the steady run."
    )
    parser.add_argument(
        "--peer-tree",
        type=Path,
        help="Also time one process of the monitor in this source tree (e.g. `git archive main services`"
        " unpacked) on the same backlog, in the same run.",
    )
    parser.add_argument(
        "--join-window", type=float, default=30.0, help="The monitor's join window in the steady run."
    )
    return asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
