"""``mlops topics``: create, list and tail the platform's Kafka topics, decoded."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.json_format import MessageToDict
from rich.table import Table

from services.cli.context import kafka_security, resolve_kafka
from services.cli.output import ExitCode, JsonOutput, console, err_console, fail, print_json
from services.common.events import EnvelopeError, IncomingRecord, Topics, decode
from services.common.kafka import DLQ_ERROR_CLASS, TailReader, ensure_topics
from services.common.proto.mlops.v1 import batch_pb2, datasets_pb2, events_pb2, model_pb2, registry_pb2

app = typer.Typer(
    help="The platform's Kafka topics: create, list, and tail them decoded.", no_args_is_help=True
)

# Importing the generated modules registers every message type in the default pool,
# which is how a record's ce_type finds its protobuf class.
_PROTO_MODULES = (batch_pb2, datasets_pb2, events_pb2, model_pb2, registry_pb2)

BootstrapOption = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        envvar="MLOPS_KAFKA_BOOTSTRAP_SERVERS",
        show_envvar=True,
        help="Kafka host:port list; default: the local stack's broker.",
    ),
]


def topic_name(name: str, prefix: str) -> str:
    """A topic from its short name (``predictions``, ``models.events.dlq``) or its full name."""
    if name.startswith(f"{prefix}."):
        return name
    return f"{prefix}.{name}"


def decode_record(record: IncomingRecord) -> dict[str, Any]:
    """A record as a plain dict: the envelope's attributes and payload when it is one, the
    JSON document when it is a raw event, and the bytes (base64) otherwise."""
    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in record.headers}
    out: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
        "timestamp": datetime.fromtimestamp(record.timestamp_ms / 1000, UTC).isoformat(),
        "key": record.key.decode("utf-8", "replace") if record.key is not None else None,
    }
    dlq = {k: v for k, v in headers.items() if k.startswith("dlq.")}
    if dlq:
        out["dead_letter"] = dlq
    traceparent = headers.get("traceparent", "").split("-")
    if len(traceparent) == 4:
        out["trace_id"] = traceparent[1]  # look the record's trace up in the tracing backend
    ce_type = headers.get("ce_type")
    if ce_type:
        try:
            message_class = message_factory.GetMessageClass(
                descriptor_pool.Default().FindMessageTypeByName(ce_type)
            )
            envelope = decode(record, message_class)
        except KeyError:
            out["error"] = f"unknown message type {ce_type!r}"
        except EnvelopeError as exc:
            out["error"] = f"{exc.error_class}: {exc}"
        else:
            out["type"] = envelope.type
            out["id"] = envelope.id
            out["source"] = envelope.source
            out["message"] = MessageToDict(envelope.message, preserving_proto_field_name=True)
            return out
    if record.value is None:
        out["value"] = None
        return out
    try:
        out["value"] = json.loads(record.value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        out["value_base64"] = base64.b64encode(record.value[:4096]).decode()
    return out


async def tail_records(
    bootstrap: str, topic: str, *, from_beginning: bool, idle_timeout: float | None
) -> AsyncIterator[IncomingRecord]:
    """Records of ``topic`` as they come, without joining a group (nothing is committed).

    Raises :class:`LookupError` when the topic does not exist."""
    reader = TailReader(
        bootstrap,
        [topic],
        client_id="mlops-cli-tail",
        from_beginning=from_beginning,
        metadata_timeout=0,
        security=kafka_security(),
    )
    try:
        await reader.start()
        idle_since = asyncio.get_running_loop().time()
        while True:
            records = await reader.read(timeout_ms=200, max_records=500)
            now = asyncio.get_running_loop().time()
            if not records:
                if idle_timeout is not None and now - idle_since > idle_timeout:
                    return
                continue
            idle_since = now
            for record in records:
                yield record
    finally:
        await reader.stop()


@app.command()
def tail(
    name: Annotated[
        str,
        typer.Argument(
            help="Short name (predictions, labels, models.events, drift, train.results, events.raw, "
            "features, train.requests, any of them + .dlq) or the full topic name."
        ),
    ],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", "-b", help="Start at the oldest record, not at new ones.")
    ] = False,
    max_records: Annotated[
        int | None, typer.Option("--max", "-n", min=1, help="Stop after this many.")
    ] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Stop after this many seconds without a record.")
    ] = None,
    bootstrap_servers: BootstrapOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per record (JSON Lines).")
    ] = False,
) -> None:
    """Print a topic's records as they arrive, decoded: CloudEvents attributes and the
    protobuf payload as JSON; raw events as sent; dead letters with the reason they were
    refused. Reads without a consumer group, so it never disturbs the services.

      mlops topics tail predictions

      mlops topics tail events.raw.dlq --from-beginning --max 10 --json
    """
    bootstrap, prefix = resolve_kafka(bootstrap_servers)
    topic = topic_name(name, prefix)

    async def run() -> int:
        seen = 0
        async for record in tail_records(
            bootstrap, topic, from_beginning=from_beginning, idle_timeout=idle_timeout
        ):
            _show(decode_record(record), json_output)
            seen += 1
            if max_records is not None and seen >= max_records:
                break
        return seen

    try:
        asyncio.run(run())
    except LookupError:
        fail(f"topic {topic!r} does not exist (see `mlops topics list`)", ExitCode.NOT_FOUND)
    except KafkaError as exc:
        fail(f"Kafka at {bootstrap}: {exc}", ExitCode.UNAVAILABLE)
    except KeyboardInterrupt:
        pass


def _show(decoded: dict[str, Any], json_output: bool) -> None:
    if json_output:
        print_json(decoded)
        return
    where = f"{decoded['topic']}[{decoded['partition']}]@{decoded['offset']}"
    kind = decoded.get("type") or ("json" if "value" in decoded else "bytes")
    console.print(
        f"[bold]{where}[/] {decoded['timestamp']} key={decoded['key']} [cyan]{kind}[/]", highlight=False
    )
    if "dead_letter" in decoded:
        reason = decoded["dead_letter"]
        err = reason.get(DLQ_ERROR_CLASS, "")
        console.print(f"  [red]dead letter[/] {err}: {reason.get('dlq.error.message', '')}", highlight=False)
    if "error" in decoded:
        console.print(f"  [red]{decoded['error']}[/]", highlight=False)
    body = decoded.get("message", decoded.get("value", decoded.get("value_base64")))
    console.print_json(json.dumps(body, default=str))


@app.command("list")
def list_topics(bootstrap_servers: BootstrapOption = None, json_output: JsonOutput = False) -> None:
    """The platform's topics with their partitions and how many records each holds."""
    bootstrap, prefix = resolve_kafka(bootstrap_servers)

    async def describe() -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            client_id="mlops-cli-topics",
            **kafka_security().aiokafka(),
        )
        try:
            await consumer.start()
            names = sorted(t for t in await consumer.topics() if t.startswith(f"{prefix}."))
            rows = []
            for name in names:
                partitions = [
                    TopicPartition(name, p) for p in sorted(consumer.partitions_for_topic(name) or ())
                ]
                start = await consumer.beginning_offsets(partitions) if partitions else {}
                end = await consumer.end_offsets(partitions) if partitions else {}
                rows.append(
                    {
                        "topic": name,
                        "partitions": len(partitions),
                        "records": sum(end[tp] - start[tp] for tp in partitions),
                    }
                )
            return rows
        finally:
            await consumer.stop()

    try:
        rows = asyncio.run(describe())
    except KafkaError as exc:
        fail(f"Kafka at {bootstrap}: {exc}", ExitCode.UNAVAILABLE)
    if json_output:
        print_json(rows)
        return
    table = Table(title=f"topics under {prefix!r} on {bootstrap}")
    for column in ("topic", "partitions", "records"):
        table.add_column(column, justify="left" if column == "topic" else "right")
    for row in rows:
        table.add_row(row["topic"], str(row["partitions"]), str(row["records"]))
    console.print(table)


@app.command()
def create(
    partitions: Annotated[
        int, typer.Option(min=1, help="Partitions per topic: the most consumers a group can spread over.")
    ] = 4,
    replication_factor: Annotated[int, typer.Option(min=1, help="Copies of each partition.")] = 1,
    bootstrap_servers: BootstrapOption = None,
    wait: Annotated[float, typer.Option(help="Seconds to keep retrying while the broker starts.")] = 60.0,
) -> None:
    """Create every platform topic and its dead-letter topic; existing ones are left as they
    are. The docker-compose and Kubernetes init steps run this.
    """
    bootstrap, prefix = resolve_kafka(bootstrap_servers)
    names = Topics(prefix).all()

    async def create_all() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            try:
                await ensure_topics(
                    bootstrap,
                    names,
                    partitions=partitions,
                    replication_factor=replication_factor,
                    security=kafka_security(),
                )
                return
            except (KafkaError, OSError) as exc:
                if loop.time() > deadline:
                    raise
                err_console.print(f"waiting for Kafka at {bootstrap}: {exc!r}", highlight=False)
                await asyncio.sleep(2)

    try:
        asyncio.run(create_all())
    except (KafkaError, OSError) as exc:
        fail(f"Kafka at {bootstrap}: {exc!r}", ExitCode.UNAVAILABLE)
    console.print(f"{len(names)} topics ready under {prefix!r} ({partitions} partitions each)")
