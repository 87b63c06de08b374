"""``mlops produce``: send events from a CSV or JSON Lines file to the raw-events topic."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Annotated, Any

import typer
from aiokafka.errors import KafkaError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from services.cli.context import kafka_security, resolve_kafka
from services.cli.output import ExitCode, JsonOutput, console, err_console, fail, print_json
from services.cli.rows import BadRow, Row, count_lines, detect_format, read_rows
from services.cli.topics import BootstrapOption, topic_name
from services.common.kafka import create_producer

MAX_EVENT_BYTES = 1024 * 1024


def produce(
    path: Annotated[str, typer.Argument(metavar="FILE", help="A .csv or .jsonl file, or - for stdin.")],
    dataset: Annotated[
        str | None,
        typer.Option(help="Dataset (schema) name for rows that do not carry a 'dataset' field."),
    ] = None,
    key_field: Annotated[
        str, typer.Option(help="Field whose value keys the record (keeps one entity's events in order).")
    ] = "event_id",
    rate: Annotated[
        float, typer.Option(min=0, help="Events per second; 0 sends as fast as the broker takes them.")
    ] = 0.0,
    fmt: Annotated[
        str | None, typer.Option("--format", help="csv or jsonl; default: from the file name.")
    ] = None,
    infer_types: Annotated[
        bool, typer.Option(help="Turn CSV cells that are numbers into JSON numbers.")
    ] = True,
    topic: Annotated[str, typer.Option(help="Topic, short or full name.")] = "events.raw",
    bootstrap_servers: BootstrapOption = None,
    json_output: JsonOutput = False,
) -> None:
    """Send events to the platform, one JSON object per Kafka record, with a progress bar.

    Each row becomes an event like
    [bold]{"dataset": "demo", "event_id": "e1", "f0": 0.3, ..., "label": 1}[/]:
    ingest validates it against the dataset's schema, stores it, and dead-letters what
    does not fit (watch with [bold]mlops topics tail events.raw.dlq[/]). A line that is not
    an object is reported with its number and skipped; the exit code is then 2.

      mlops produce events.csv --dataset demo --rate 200
    """
    try:
        file_format = detect_format(path, fmt)
    except ValueError as exc:
        fail(str(exc), ExitCode.USAGE)
    bootstrap, prefix = resolve_kafka(bootstrap_servers)
    target = topic_name(topic, prefix)
    try:
        total = count_lines(path)
    except OSError as exc:
        fail(f"{path}: {exc.strerror}", ExitCode.USAGE)
    if total is not None and file_format == "csv":
        total -= 1

    async def send() -> tuple[int, list[BadRow], float]:
        producer = create_producer(bootstrap, "mlops-cli-produce", linger_ms=10, security=kafka_security())
        await producer.start()
        bad: list[BadRow] = []
        sent = 0
        started = time.monotonic()
        pending: list[asyncio.Future[Any]] = []
        progress = Progress(
            TextColumn("[bold]producing[/] to " + target),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=json_output,
        )
        try:
            with progress:
                task = progress.add_task("produce", total=total)
                for item in read_rows(path, file_format, infer_types=infer_types):
                    progress.advance(task)
                    if isinstance(item, BadRow):
                        bad.append(item)
                        continue
                    event, problem = _event(item, dataset)
                    if problem:
                        bad.append(BadRow(item.line, problem))
                        continue
                    key = event.get(key_field)
                    pending.append(
                        await producer.send(
                            target, event_bytes(event), key=str(key).encode() if key is not None else None
                        )
                    )
                    sent += 1
                    if len(pending) >= 1000:
                        await asyncio.gather(*pending)
                        pending.clear()
                    if rate:
                        delay = started + sent / rate - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                await asyncio.gather(*pending)
        finally:
            await producer.stop()
        return sent, bad, time.monotonic() - started

    try:
        sent, bad, seconds = asyncio.run(send())
    except OSError as exc:
        fail(f"{path}: {exc}", ExitCode.USAGE)
    except KafkaError as exc:
        fail(f"Kafka at {bootstrap}: {exc!r}", ExitCode.UNAVAILABLE)
    for row in bad[:20]:
        err_console.print(f"[yellow]skipped line {row.line}:[/] {row.reason}", highlight=False)
    if len(bad) > 20:
        err_console.print(f"[yellow]... and {len(bad) - 20} more skipped lines[/]")
    summary = {
        "topic": target,
        "sent": sent,
        "skipped": len(bad),
        "seconds": round(seconds, 3),
        "events_per_second": round(sent / seconds, 1) if seconds > 0 else None,
    }
    if json_output:
        print_json({**summary, "skipped_lines": [{"line": b.line, "reason": b.reason} for b in bad]})
    else:
        console.print(
            f"sent {sent} events to {target} in {seconds:.1f}s ({summary['events_per_second']}/s)"
            + (f", skipped {len(bad)}" if bad else "")
        )
    if bad:
        raise typer.Exit(int(ExitCode.USAGE))


def event_bytes(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), allow_nan=False).encode()


def _event(row: Row, dataset: str | None) -> tuple[dict[str, Any], str]:
    event = dict(row.values)
    if "dataset" not in event:
        if dataset is None:
            return event, "no 'dataset' field and no --dataset given"
        event["dataset"] = dataset
    if not isinstance(event["dataset"], str) or not event["dataset"]:
        return event, "'dataset' must be a non-empty string"
    if len(event_bytes(event)) > MAX_EVENT_BYTES:
        return event, f"event larger than {MAX_EVENT_BYTES} bytes"
    return event, ""
