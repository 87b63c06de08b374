"""``mlops datasets`` against the running ingest service: register versions from a file,
list and show them, materialise a window with its hash, read the quality summary."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from typer.testing import CliRunner, Result

from services.cli.__main__ import app
from services.cli.output import ExitCode
from services.common.auth import Scope
from services.common.proto.mlops.v1.model_pb2 import DataWindow
from tests.helpers.datasets import orders_schema
from tests.helpers.waiting import eventually
from tests.integration.ingest.conftest import Ingest

runner = CliRunner()


async def mlops(
    ingest: Ingest, tmp_path: Path, *args: str, scopes: tuple[Scope, ...] = (Scope.READ, Scope.WRITE)
) -> Result:
    """Run the CLI in a thread: it runs its own event loop while the service runs in ours."""
    env = {
        "MLOPS_DATASETS_ADDRESS": f"127.0.0.1:{ingest.app.grpc_port}",
        "MLOPS_TOKEN": ingest.infra.token(*scopes),
        "MLOPS_STACK_DIR": str(tmp_path / "no-stack"),
    }
    return await asyncio.to_thread(runner.invoke, app, ["datasets", *args], env=env)


def schema_file(tmp_path: Path, dataset: str, **overrides: Any) -> Path:
    document = json_format.MessageToDict(
        orders_schema(dataset, **overrides), preserving_proto_field_name=True
    )
    for spec in document["fields"]:
        spec["type"] = spec["type"].removeprefix("FIELD_TYPE_").lower()  # the short form people write
    path = tmp_path / f"{dataset}.json"
    path.write_text(json.dumps(document))
    return path


async def test_register_list_show_window_and_quality(ingest: Ingest, dataset: str, tmp_path: Path) -> None:
    first = await mlops(ingest, tmp_path, "register", str(schema_file(tmp_path, dataset)), "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["version"] == 1

    breaking = json.loads(schema_file(tmp_path, dataset).read_text())
    breaking["fields"] = [f for f in breaking["fields"] if f["name"] != "country"]
    (tmp_path / "breaking.json").write_text(json.dumps(breaking))
    refused = await mlops(ingest, tmp_path, "register", str(tmp_path / "breaking.json"))
    assert refused.exit_code == ExitCode.FAILED and "field 'country' removed" in refused.output
    accepted = await mlops(ingest, tmp_path, "register", str(tmp_path / "breaking.json"), "--new-version")
    assert accepted.exit_code == 0 and f"{dataset} v2" in accepted.stdout

    listed = await mlops(ingest, tmp_path, "list", "--json")
    assert {s["name"]: s["version"] for s in json.loads(listed.stdout)}[dataset] == 2
    shown = await mlops(ingest, tmp_path, "show", dataset, "--version", "1")
    assert shown.exit_code == 0 and "country" in shown.stdout and "event id" in shown.stdout

    await ingest.send_json(
        [
            {
                "event_id": f"c{i}",
                "customer": "x",
                "ts": f"2026-11-26T0{i}:00:00Z",
                "amount": i,
                "label": "yes",
            }
            for i in range(3)
        ]
        + [{"event_id": "bad", "customer": "x", "ts": "2026-11-26T00:00:00Z", "amount": -1}],
        dataset,
    )
    expected = await asyncio.wait_for(_window_of(ingest, dataset, 3), 20)
    # The refused event may sit on another partition than the rows: wait for its dead letter.
    await ingest.raw_dead_letters.wait_for(
        lambda r: b'"bad"' in (r.value or b"") and dataset.encode() in (r.value or b""),
        1,
    )
    rows_file = tmp_path / "rows.jsonl"
    shown_window = await mlops(ingest, tmp_path, "window", dataset, "--out", str(rows_file), "--json")
    assert shown_window.exit_code == 0, shown_window.output
    described = json.loads(shown_window.stdout)
    assert (described["rows"], described["content_sha256"]) == (3, expected)
    assert described["start_time"] == "2026-11-26T00:00:00Z"
    assert [json.loads(line)["event_id"] for line in rows_file.read_text().splitlines()] == ["c0", "c1", "c2"]

    summary = json.loads((await mlops(ingest, tmp_path, "quality", dataset, "--json")).stdout)
    assert (summary["accepted"], summary["rejected"]) == ("3", "1")
    assert summary["issues"] == [{"error_class": "out_of_range", "field": "amount", "count": "1"}]


async def _window_of(ingest: Ingest, dataset: str, rows: int) -> str:
    data = await eventually(
        lambda: ingest.datasets.read_window(DataWindow(dataset=dataset)),
        lambda d: d.summary.row_count >= rows,
    )
    return data.summary.content_sha256


async def test_errors_map_to_exit_codes(ingest: Ingest, dataset: str, tmp_path: Path) -> None:
    missing = await mlops(ingest, tmp_path, "show", "no-such-dataset")
    assert missing.exit_code == ExitCode.NOT_FOUND
    denied = await mlops(
        ingest, tmp_path, "register", str(schema_file(tmp_path, dataset)), scopes=(Scope.READ,)
    )
    assert denied.exit_code == ExitCode.DENIED
    (tmp_path / "broken.json").write_text('{"name": "x", "fields": [{"name": "a", "type": "colour"}]}')
    broken = await mlops(ingest, tmp_path, "register", str(tmp_path / "broken.json"))
    assert broken.exit_code == ExitCode.USAGE and "colour" in broken.output
    naive = await mlops(ingest, tmp_path, "window", dataset, "--start", "2026-01-01T00:00")
    assert naive.exit_code == ExitCode.USAGE and "--start" in naive.output
