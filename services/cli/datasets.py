"""``mlops datasets``: dataset schemas, their versions, stored windows and data quality.

Talks to ingest's ``DatasetService`` over gRPC (``MLOPS_DATASETS_ADDRESS``, else the local
stack's, else 127.0.0.1:50052) with ``MLOPS_TOKEN`` (or the local stack's token).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from google.protobuf import json_format
from rich.table import Table

from services.cli.context import DatasetsAddressOption as Address
from services.cli.context import TokenOption as Token
from services.cli.context import call_service
from services.cli.output import ExitCode, JsonOutput, console, fail, parse_time, print_json
from services.common.clients.datasets import DatasetClient, WindowIntegrityError, timestamp
from services.common.errors import NotFound
from services.common.proto.mlops.v1.datasets_pb2 import DatasetSchema, FieldType
from services.common.proto.mlops.v1.events_pb2 import FeatureRow
from services.common.proto.mlops.v1.model_pb2 import DataWindow
from services.common.values import from_feature_value

app = typer.Typer(
    help="Dataset schemas, their versions, stored windows and data quality.", no_args_is_help=True
)

T = TypeVar("T")

DatasetName = Annotated[str, typer.Argument(help="Dataset name.")]
WindowStart = Annotated[str | None, typer.Option(help="Oldest event time, inclusive (ISO-8601 with offset).")]
WindowEnd = Annotated[str | None, typer.Option(help="Newest event time, inclusive (ISO-8601 with offset).")]
MAX_ROWS = 2**63 - 1
MaxRows = Annotated[int, typer.Option(min=0, max=MAX_ROWS, help="Only the newest N rows; 0 for all.")]
FIELD_TYPES = {
    name.removeprefix("FIELD_TYPE_").lower(): name
    for name in FieldType.keys()
    if name != "FIELD_TYPE_UNSPECIFIED"
}


def _call(
    address: str | None, token: str | None, what: str, call: Callable[[DatasetClient], Awaitable[T]]
) -> T:
    return call_service(DatasetClient, "ingest_grpc", address, token, what, call)


def data_window(
    dataset: str, start: str | None, end: str | None, max_rows: int = 0, min_rows: int = 0
) -> DataWindow:
    """A ``DataWindow`` from the window options (times checked, a usage error otherwise)."""
    window = DataWindow(dataset=dataset, max_rows=max_rows, min_rows=min_rows)
    for option, value, field in (("--start", start, "start_time"), ("--end", end, "end_time")):
        moment = parse_time(option, value)
        if moment is not None:
            getattr(window, field).CopyFrom(timestamp(moment))
    return window


def read_schema_file(path: Path) -> DatasetSchema:
    """A schema from JSON: the ``DatasetSchema`` message's JSON form, where a field's
    ``type`` may also be written short (``number``, ``category``, ``boolean``,
    ``timestamp``, ``text``)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected a JSON object")
    for spec in document.get("fields") or []:
        if isinstance(spec, dict) and isinstance(spec.get("type"), str):
            spec["type"] = FIELD_TYPES.get(spec["type"].lower(), spec["type"])
    try:
        return json_format.ParseDict(document, DatasetSchema())
    except json_format.ParseError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _schema_json(schema: DatasetSchema) -> dict[str, Any]:
    result: dict[str, Any] = json_format.MessageToDict(schema, preserving_proto_field_name=True)
    return result


def _show_schema(schema: DatasetSchema) -> None:
    console.print(f"[bold]{schema.name}[/] v{schema.version}  {schema.description}", highlight=False)
    roles = {
        schema.event_id_field: "event id",
        schema.entity_id_field: "entity id",
        schema.timestamp_field: "timestamp",
        schema.label_field: "label",
    }
    table = Table("field", "type", "required", "private", "constraints", "role")
    for spec in schema.fields:
        constraints = []
        if spec.has_min:
            constraints.append(f">= {spec.min:g}")
        if spec.has_max:
            constraints.append(f"<= {spec.max:g}")
        if spec.allowed_values:
            constraints.append("in " + ", ".join(spec.allowed_values))
        if spec.max_length:
            constraints.append(f"<= {spec.max_length} chars")
        table.add_row(
            spec.name,
            FieldType.Name(spec.type).removeprefix("FIELD_TYPE_").lower(),
            "yes" if spec.required else "",
            "yes" if spec.private else "",
            "; ".join(constraints),
            roles.get(spec.name, ""),
        )
    console.print(table)
    for feature in schema.derived:
        extra = f" at {list(feature.boundaries)}" if feature.boundaries else ""
        console.print(
            f"derived [bold]{feature.name}[/] = {feature.function}({', '.join(feature.inputs)}){extra}"
        )
    if schema.retention_seconds:
        console.print(f"retention: {schema.retention_seconds} s")


@app.command()
def register(
    file: Annotated[Path, typer.Argument(help="Schema as JSON (see `mlops datasets register --help`).")],
    new_version: Annotated[
        bool,
        typer.Option(
            help="Register as the next version even if the change breaks models trained on the latest."
        ),
    ] = False,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Register a dataset schema (needs the [bold]write[/] scope).

    A new dataset becomes version 1. A compatible change (new fields, bounds, allowed
    values, retention) becomes the next version; a breaking one (removed field, changed
    type, ...) is refused with the reasons unless [bold]--new-version[/] says it is meant
    as a new version. Registering the latest unchanged is a no-op.

      {"name": "orders", "event_id_field": "event_id", "timestamp_field": "ts",
       "label_field": "label", "fields": [
         {"name": "event_id", "type": "text", "required": true},
         {"name": "ts", "type": "timestamp", "required": true},
         {"name": "amount", "type": "number", "required": true, "has_min": true, "min": 0},
         {"name": "label", "type": "category", "allowed_values": ["yes", "no"]}]}
    """
    try:
        schema = read_schema_file(file)
    except ValueError as exc:
        fail(str(exc), ExitCode.USAGE)

    async def call(client: DatasetClient) -> DatasetSchema:
        if new_version:
            try:
                latest = await client.get_schema(schema.name)
                schema.version = latest.version + 1
            except NotFound:
                schema.version = 1  # a new dataset: its first version is the new one
        return await client.register_schema(schema)

    stored = _call(address, token, f"register {schema.name or file}", call)
    if json_output:
        print_json(_schema_json(stored))
    else:
        console.print(f"registered [bold]{stored.name}[/] v{stored.version}", highlight=False)


@app.command("list")
def list_datasets(address: Address = None, token: Token = None, json_output: JsonOutput = False) -> None:
    """Every dataset with its latest schema version."""
    schemas = _call(address, token, "list datasets", lambda client: client.list_schemas())
    if json_output:
        print_json([_schema_json(schema) for schema in schemas])
        return
    table = Table("dataset", "version", "fields", "derived", "label", "retention (s)", "created")
    for schema in schemas:
        created = (
            schema.created_at.ToDatetime().isoformat(timespec="seconds")
            if schema.HasField("created_at")
            else ""
        )
        table.add_row(
            schema.name,
            str(schema.version),
            str(len(schema.fields)),
            str(len(schema.derived)),
            schema.label_field,
            str(schema.retention_seconds or ""),
            created,
        )
    console.print(table)


@app.command()
def show(
    name: DatasetName,
    version: Annotated[int, typer.Option(min=0, help="Schema version; 0 for the latest.")] = 0,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """One version of a dataset's schema (the latest by default)."""
    schema = _call(address, token, f"show {name}", lambda client: client.get_schema(name, version))
    if json_output:
        print_json(_schema_json(schema))
    else:
        _show_schema(schema)


def _row_json(row: FeatureRow) -> dict[str, Any]:
    return {
        "event_id": row.event_id,
        "entity_id": row.entity_id,
        "event_time": row.event_time.ToDatetime().isoformat() + "Z",
        "schema_version": row.schema_version,
        "features": {name: from_feature_value(value) for name, value in sorted(row.features.items())},
        "label": from_feature_value(row.label) if row.HasField("label") else None,
    }


@app.command()
def window(
    name: DatasetName,
    start: WindowStart = None,
    end: WindowEnd = None,
    max_rows: MaxRows = 0,
    unlabelled: Annotated[bool, typer.Option(help="Include rows without a label.")] = False,
    out: Annotated[Path | None, typer.Option(help="Write the rows here as JSON Lines.")] = None,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Materialise a window: row count, resolved bounds and content hash, as lineage records them.

    The hash is checked against the rows received; with [bold]--out[/] the rows are saved too.
    """
    request = data_window(name, start, end, max_rows)

    async def call(client: DatasetClient) -> Any:
        try:
            return await client.read_window(request, labelled_only=not unlabelled)
        except WindowIntegrityError as exc:
            fail(f"window {name}: {exc}", ExitCode.FAILED)

    data = _call(address, token, f"window {name}", call)
    if out is not None:
        with out.open("w") as handle:
            for row in data.rows:
                handle.write(json.dumps(_row_json(row)) + "\n")
    summary = data.summary
    resolved = summary.window
    described = {
        "dataset": name,
        "rows": summary.row_count,
        "content_sha256": summary.content_sha256,
        "schema_version": summary.schema_version,
        "start_time": resolved.start_time.ToDatetime().isoformat() + "Z"
        if resolved.HasField("start_time")
        else None,
        "end_time": resolved.end_time.ToDatetime().isoformat() + "Z"
        if resolved.HasField("end_time")
        else None,
    }
    if json_output:
        print_json(described)
    else:
        for key, value in described.items():
            console.print(f"{key:>15}: {value}", highlight=False)


@app.command()
def quality(
    name: DatasetName,
    start: Annotated[
        str | None, typer.Option(help="From this processing time (ISO-8601 with offset).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Until this processing time, exclusive.")] = None,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """What became of a dataset's events: accepted, duplicates, labels, and rejections by reason and field."""
    since, until = parse_time("--start", start), parse_time("--end", end)
    summary = _call(
        address, token, f"quality {name}", lambda client: client.quality_summary(name, since, until)
    )
    if json_output:
        print_json(
            json_format.MessageToDict(
                summary, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            )
        )
        return
    console.print(
        f"[bold]{name}[/]: {summary.accepted} accepted, {summary.duplicates} duplicates, "
        f"{summary.rejected} rejected, {summary.labels} labels for earlier events",
        highlight=False,
    )
    if summary.issues:
        table = Table("reason", "field", "events")
        for issue in summary.issues:
            table.add_row(issue.error_class, issue.field, str(issue.count))
        console.print(table)
