"""``mlops topics`` and ``mlops produce`` against the real broker: topics created for a
prefix, events sent from files, and records tailed back decoded (envelopes, raw JSON,
dead letters)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from services.cli.__main__ import app
from services.cli.output import ExitCode
from services.common.events import IncomingRecord, Topics, encode
from services.common.kafka import DeadLetter, create_producer, publish
from services.common.localstack import free_port
from services.common.proto.mlops.v1 import events_pb2
from tests.conftest import Infra

runner = CliRunner()


@pytest.fixture
def cli_env(infra: Infra, topics: Topics, tmp_path: Path) -> dict[str, str]:
    return {
        "MLOPS_KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "MLOPS_TOPIC_PREFIX": topics.prefix,
        "MLOPS_STACK_DIR": str(tmp_path / "no-stack"),
    }


def tail(env: dict[str, str], name: str, count: int) -> list[dict[str, Any]]:
    result = runner.invoke(
        app,
        ["topics", "tail", name, "--from-beginning", "--max", str(count), "--idle-timeout", "15", "--json"],
        env=env,
    )
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_create_then_list_every_platform_topic(cli_env: dict[str, str], topics: Topics) -> None:
    created = runner.invoke(app, ["topics", "create", "--partitions", "2"], env=cli_env)
    assert created.exit_code == 0, created.output
    listed = runner.invoke(app, ["topics", "list", "--json"], env=cli_env)
    assert listed.exit_code == 0, listed.output
    rows = {row["topic"]: row for row in json.loads(listed.stdout)}
    assert set(rows) == set(topics.all())
    assert {row["partitions"] for row in rows.values()} == {2}
    assert {row["records"] for row in rows.values()} == {0}


def test_produce_sends_each_good_row_once_and_reports_bad_lines(
    cli_env: dict[str, str], topics: Topics, tmp_path: Path
) -> None:
    events = tmp_path / "events.csv"
    events.write_text("event_id,entity_id,f0,color,label\ne1,u1,0.5,red,1\ne2,u2,1.5\ne3,u1,nan,blue,0\n")
    result = runner.invoke(app, ["produce", str(events), "--dataset", "demo", "--json"], env=cli_env)
    assert result.exit_code == ExitCode.USAGE, result.output  # one bad line
    summary = json.loads(result.stdout)
    assert (summary["topic"], summary["sent"], summary["skipped"]) == (topics.raw_events, 2, 1)
    assert summary["skipped_lines"] == [{"line": 3, "reason": "3 cells for 5 columns"}]

    records = tail(cli_env, "events.raw", 2)
    by_key = {r["key"]: r["value"] for r in records}
    assert by_key == {
        "e1": {"event_id": "e1", "entity_id": "u1", "f0": 0.5, "color": "red", "label": 1, "dataset": "demo"},
        # Not a finite number: sent as the text it was, for ingest to dead-letter by field.
        "e3": {
            "event_id": "e3",
            "entity_id": "u1",
            "f0": "nan",
            "color": "blue",
            "label": 0,
            "dataset": "demo",
        },
    }


def test_produce_without_a_dataset_refuses_every_row(cli_env: dict[str, str], tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"event_id": "e1", "f0": 1}\n')
    result = runner.invoke(app, ["produce", str(events), "--json"], env=cli_env)
    assert result.exit_code == ExitCode.USAGE
    assert json.loads(result.stdout)["sent"] == 0
    assert "no 'dataset' field" in result.output


def test_tail_decodes_envelopes_and_dead_letters(
    infra: Infra, cli_env: dict[str, str], topics: Topics
) -> None:
    event = events_pb2.ModelEvent(
        event_id="ev1",
        type=events_pb2.MODEL_EVENT_TYPE_ALIAS_SET,
        model_name="churn",
        version=3,
        alias="production",
    )
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    good = encode(
        topics.model_events,
        event,
        source="/registry",
        key="churn",
        event_id="ev1",
        headers=[("traceparent", traceparent)],
    )
    poison = DeadLetter(
        record=IncomingRecord(topics.labels, 0, 7, b"k", b"\xff not a label", (), 0),
        error_class="decode_error",
        message="cannot parse",
    ).to_outgoing()

    async def send() -> None:
        producer = create_producer(infra.kafka_bootstrap, "test")
        await producer.start()
        try:
            await publish(producer, [good, poison])
        finally:
            await producer.stop()

    asyncio.run(send())
    (decoded,) = tail(cli_env, "models.events", 1)
    assert decoded["type"] == "mlops.v1.ModelEvent"
    assert decoded["id"] == "ev1" and decoded["key"] == "churn"
    assert decoded["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert decoded["message"] == {
        "event_id": "ev1",
        "type": "MODEL_EVENT_TYPE_ALIAS_SET",
        "model_name": "churn",
        "version": "3",
        "alias": "production",
    }
    (dead,) = tail(cli_env, f"{topics.labels}.dlq", 1)
    assert dead["dead_letter"]["dlq.error.class"] == "decode_error"
    assert dead["dead_letter"]["dlq.original.topic"] == topics.labels
    assert "value_base64" in dead


def test_tail_of_a_missing_topic_is_not_found(cli_env: dict[str, str]) -> None:
    result = runner.invoke(app, ["topics", "tail", "no.such.topic", "--max", "1"], env=cli_env)
    assert result.exit_code == ExitCode.NOT_FOUND, result.output


def test_commands_report_an_unreachable_broker(cli_env: dict[str, str]) -> None:
    env = {**cli_env, "MLOPS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    result = runner.invoke(app, ["topics", "list"], env=env)
    assert result.exit_code == ExitCode.UNAVAILABLE, result.output
