"""``mlops models``: models in the registry, their versions, aliases, approvals, lineage,
specs, artifacts and the audit log.

Talks to the registry's gRPC API (``MLOPS_REGISTRY_ADDRESS``, else the local stack's, else
127.0.0.1:50051) with ``MLOPS_TOKEN`` (or the local stack's token). Every command that
reports something takes ``--json``; exit codes are those of ``mlops`` (2 bad input,
4 denied, 5 not found, 1 for a refused change such as a lost compare-and-set).

This module holds the group, what its commands share (options, the registry call, JSON
and tables, gate reports) and the commands that only read; :mod:`services.cli.model_changes`,
:mod:`services.cli.model_reviews` and :mod:`services.cli.model_specs` hold the rest, and
``mlops``'s entry point registers them all in the order ``mlops models --help`` lists them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

import typer
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from rich.table import Table
from rich.text import Text

from services.cli.context import RegistryAddressOption as Address
from services.cli.context import TokenOption as Token
from services.cli.context import call_service
from services.cli.output import ExitCode, JsonOutput, console, fail, print_json
from services.common.artifacts import DigestMismatch
from services.common.clients.registry import RegistryClient, gate_margin, parse_metric_filter
from services.common.proto.mlops.v1 import model_pb2, registry_pb2

app = typer.Typer(
    help="Models in the registry: versions, aliases, approvals, lineage, specs, artifacts, audit.",
    no_args_is_help=True,
)

T = TypeVar("T")
M = TypeVar("M", bound=Message)

Name = Annotated[str, typer.Argument(help="The model's name.")]
VersionArg = Annotated[int, typer.Argument(help="The version number.", min=1)]
VersionOption = Annotated[
    int, typer.Option("--version", "-v", help="A version number (default: by alias).", min=0)
]
AliasOption = Annotated[str, typer.Option("--alias", "-a", help="An alias such as production.")]
Tags = Annotated[list[str] | None, typer.Option("--tag", help="key=value (repeatable).")]
Reason = Annotated[str, typer.Option(help="Why, for the audit log.")]
Expect = Annotated[
    int | None, typer.Option(help="Compare-and-set: only if the alias points at this version now.", min=1)
]
Limit = Annotated[int, typer.Option(min=1, max=1000)]

POLICIES = {"auto": registry_pb2.PROMOTION_POLICY_AUTO, "manual": registry_pb2.PROMOTION_POLICY_MANUAL}
STAGES = ("staging", "production", "candidate", "archived")


def call_registry(
    address: str | None, token: str | None, what: str, call: Callable[[RegistryClient], Awaitable[T]]
) -> T:
    """``call`` with a registry client; a failed call ends the command (see ``call_service``)."""
    return call_service(RegistryClient, "registry_grpc", address, token, what, call)


_INT64 = {
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED64,
}


def message_json(message: Message) -> dict[str, Any]:
    """The message's proto3 JSON, with 64-bit integers as numbers (versions, sizes) as the
    REST API returns them, rather than the strings the canonical mapping uses, and every
    gate result whole (``passed: false`` included) with its :func:`gate_margin`."""
    result: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    _numbers(cast(Descriptor, message.DESCRIPTOR), result)
    return result


def _numbers(descriptor: Descriptor, document: dict[str, Any]) -> None:
    for field in descriptor.fields:
        if field.name not in document:
            continue
        value = document[field.name]
        kind = field.message_type
        if kind is not None and kind.full_name == model_pb2.GateResult.DESCRIPTOR.full_name:
            document[field.name] = [
                gate_json(json_format.ParseDict(item, model_pb2.GateResult())) for item in value
            ]
        elif kind is not None and kind.GetOptions().map_entry:
            value_field = kind.fields_by_name["value"]
            for key, item in value.items():
                if value_field.type in _INT64:
                    value[key] = int(item)
                elif value_field.message_type is not None:
                    _numbers(value_field.message_type, item)
        elif kind is not None and kind.full_name != "google.protobuf.Timestamp":
            for item in value if field.is_repeated else [value]:
                _numbers(kind, item)
        elif field.type in _INT64:
            document[field.name] = [int(v) for v in value] if field.is_repeated else int(value)


def print_message(message: M, json_output: bool, show: Callable[[M], None]) -> None:
    """``message`` as JSON for scripts, or shown to a person."""
    if json_output:
        print_json(message_json(message))
    else:
        show(message)


# ------------------------------------------------------------------ gate reports


def gate_json(gate: model_pb2.GateResult) -> dict[str, Any]:
    """One gate result with every field, for ``--json``."""
    return {
        "name": gate.name,
        "passed": gate.passed,
        "value": gate.value,
        "threshold": gate.threshold,
        "margin": gate_margin(gate),
        "detail": gate.detail,
    }


def gates_failed(gates: Sequence[model_pb2.GateResult]) -> str:
    """The failed gates and by how much, for one line: ``challenger by 0.0067, ...``."""
    return ", ".join(f"{g.name} by {-gate_margin(g):.4f}" for g in gates if not g.passed)


def gates_table(gates: Sequence[model_pb2.GateResult], title: str = "") -> Table:
    """Every gate: name, result, value, threshold, margin (+ passed by, - failed by) and the
    trainer's detail; failed gates in red."""
    table = Table(
        "gate",
        "result",
        "value",
        "threshold",
        "margin",
        "detail",
        title=title or None,
        title_justify="left",
    )
    for gate in gates:
        table.add_row(
            Text(gate.name),
            "pass" if gate.passed else "FAIL",
            f"{gate.value:.4f}",
            f"{gate.threshold:.4f}",
            f"{gate_margin(gate):+.4f}",
            Text(gate.detail),
            style=None if gate.passed else "bold red",
        )
    return table


def headline_metrics(metrics: Mapping[str, float]) -> str:
    """The holdout metrics as ``name=value``; dotted names (``importance.f0``,
    ``robustness.noise_drop`` ...) are the measurements behind the gates, left to the report."""
    return ", ".join(f"{k}={value:.4g}" for k, value in sorted(metrics.items()) if "." not in k)


def _gates_title(v: registry_pb2.ModelVersion) -> str:
    if v.gates_passed:
        return f"gates of {v.model_name} v{v.version}: passed"
    return f"gates of {v.model_name} v{v.version}: FAILED ({gates_failed(v.gates)}), not promotable"


def _gates_cell(v: registry_pb2.ModelVersion) -> str:
    if not v.gates:
        return ""
    return "pass" if v.gates_passed else "FAIL " + ", ".join(g.name for g in v.gates if not g.passed)


def key_values(values: list[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values or ():
        key, sep, text = value.partition("=")
        if not sep or not key:
            fail(f"{option}: expected key=value, got {value!r}", ExitCode.USAGE)
        pairs[key] = text
    return pairs


def metric_values(values: list[str] | None) -> dict[str, float]:
    parsed: dict[str, float] = {}
    for key, text in key_values(values, "--metric").items():
        try:
            parsed[key] = float(text)
        except ValueError:
            fail(f"--metric {key}: {text!r} is not a number", ExitCode.USAGE)
    return parsed


def _status(status: int) -> str:
    return registry_pb2.VersionStatus.Name(status).removeprefix("VERSION_STATUS_").lower()  # type: ignore[arg-type]


def _policy(policy: int) -> str:
    return registry_pb2.PromotionPolicy.Name(policy).removeprefix("PROMOTION_POLICY_").lower()  # type: ignore[arg-type]


def format_time(stamp: Any) -> str:
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if stamp.seconds else ""


def show_model(model: registry_pb2.Model) -> None:
    aliases = ", ".join(f"{alias}={version}" for alias, version in sorted(model.aliases.items())) or "-"
    tags = ", ".join(f"{k}={v}" for k, v in sorted(model.tags.items())) or "-"
    console.print(
        f"[bold]{model.name}[/]  team {model.team}  policy {_policy(model.promotion_policy)}  "
        f"latest v{model.latest_version}  "
        f"aliases {aliases}  tags {tags}",
        highlight=False,
    )
    if model.description:
        console.print(model.description, highlight=False)


def _versions_table(versions: list[registry_pb2.ModelVersion], with_model: bool = False) -> Table:
    columns = [
        "version",
        "status",
        "aliases",
        "gates",
        "metrics",
        "dataset",
        "data hash",
        "parent",
        "created",
        "by",
    ]
    table = Table(*(["model", *columns] if with_model else columns))
    for v in versions:
        metrics = headline_metrics(v.metrics)
        row = [
            str(v.version),
            _status(v.status) + (" (rolled back)" if v.rolled_back else ""),
            ", ".join(v.aliases),
            _gates_cell(v),
            metrics,
            v.lineage.data.window.dataset,
            v.lineage.data.content_sha256[:12],
            str(v.lineage.parent_version or ""),
            format_time(v.created_at),
            v.created_by,
        ]
        table.add_row(*([v.model_name, *row] if with_model else row))
    return table


def show_version(v: registry_pb2.ModelVersion) -> None:
    console.print(
        f"[bold]{v.model_name}[/] v{v.version}  {_status(v.status)}  aliases: {', '.join(v.aliases) or '-'}",
        highlight=False,
    )
    console.print(
        f"artifact {v.artifact.format} {v.artifact.size_bytes} bytes sha256 {v.artifact.sha256}",
        highlight=False,
    )
    if v.metrics:
        console.print("metrics: " + ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items())))
    if v.gates:
        console.print(gates_table(v.gates, _gates_title(v)))
    if v.review.reviewer:
        console.print(
            f"review: {_status(v.review.decision)} by {v.review.reviewer}: {v.review.comment}",
            highlight=False,
        )
    console.print(f"created {format_time(v.created_at)} by {v.created_by}", highlight=False)


def _lineage_line(v: registry_pb2.ModelVersion) -> str:
    data = v.lineage.data
    return (
        f"{v.model_name} v{v.version}: dataset {data.window.dataset or '-'}, {data.row_count} rows, "
        f"content {data.content_sha256 or '-'}, code {v.lineage.code_version or '-'}, "
        f"request {v.lineage.train_request_id or '-'}, trigger {v.lineage.trigger or '-'}"
    )


# ------------------------------------------------------------------------- models


def list_models(
    alias: Annotated[str, typer.Option(help="Only models with this alias set.")] = "",
    name_contains: Annotated[str, typer.Option("--name", help="Only names containing this text.")] = "",
    tag: Tags = None,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """List models, optionally by alias, name or tag ([bold]read[/] scope)."""
    tags = key_values(tag, "--tag")
    models = call_registry(
        address, token, "list models", lambda c: c.list_models(alias, name_contains=name_contains, tags=tags)
    )
    if json_output:
        print_json([message_json(m) for m in models])
        return
    table = Table("model", "policy", "latest", "aliases", "tags", "updated")
    for m in models:
        table.add_row(
            m.name,
            _policy(m.promotion_policy),
            str(m.latest_version),
            ", ".join(f"{a}={v}" for a, v in sorted(m.aliases.items())),
            ", ".join(f"{k}={v}" for k, v in sorted(m.tags.items())),
            format_time(m.updated_at),
        )
    console.print(table)


def show(
    name: Name,
    version: Annotated[
        int, typer.Option("--version", "-v", help="Whose gate report to show (default: the newest).", min=0)
    ] = 0,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """A model, its versions newest first, and one version's gate report ([bold]read[/] scope).

    The report has every gate the trainer ran: its value, threshold and margin (positive:
    passed by that much; negative: failed by that much). A version whose gates failed is
    kept for the record but never promoted. [bold]--json[/] has every version's gates.
    """

    async def call(client: RegistryClient) -> tuple[registry_pb2.Model, list[registry_pb2.ModelVersion]]:
        return await client.get_model(name), await client.list_versions(name)

    model, versions = call_registry(address, token, f"show {name}", call)
    chosen = next((v for v in versions if v.version == version), None) if version else None
    if version and chosen is None:
        fail(f"show {name}: NOT_FOUND: model {name!r} has no version {version}", ExitCode.NOT_FOUND)
    if json_output:
        print_json({"model": message_json(model), "versions": [message_json(v) for v in versions]})
        return
    show_model(model)
    console.print(_versions_table(versions))
    chosen = chosen or (versions[0] if versions else None)
    if chosen is None:
        return
    if chosen.gates:
        console.print(gates_table(chosen.gates, _gates_title(chosen)))
    else:
        console.print(
            f"{name} v{chosen.version}: no gates ran (registered without an evaluation)", highlight=False
        )


# ----------------------------------------------------------------------- versions


def get(
    name: Name,
    version: VersionOption = 0,
    alias: AliasOption = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """One version, by number or alias (default: production) ([bold]read[/] scope)."""
    alias = alias or ("" if version else "production")
    found = call_registry(address, token, f"get {name}", lambda c: c.get_version(name, version, alias))
    print_message(found, json_output, show_version)


def search(
    model: Annotated[str, typer.Option(help="Only this model.")] = "",
    dataset: Annotated[str, typer.Option(help="Versions trained on this dataset.")] = "",
    content_hash: Annotated[
        str, typer.Option(help="Versions trained on exactly this data (window hash).")
    ] = "",
    tag: Tags = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", help="NAME OP NUMBER, e.g. 'accuracy>=0.9' (repeatable).")
    ] = None,
    status: Annotated[
        str, typer.Option(help="ready, pending_approval, approved, rejected, archived ...")
    ] = "",
    alias: Annotated[str, typer.Option(help="Versions this alias points at.")] = "",
    request_id: Annotated[str, typer.Option(help="Versions trained for this train request.")] = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Find versions of any model by lineage, tag, metric, status or alias ([bold]read[/] scope)."""
    query = registry_pb2.SearchModelVersionsRequest(
        model_name=model,
        dataset=dataset,
        content_sha256=content_hash,
        tags=key_values(tag, "--tag"),
        alias=alias,
        train_request_id=request_id,
    )
    for value in metric or ():
        try:
            query.metrics.append(parse_metric_filter(value))
        except ValueError as exc:
            fail(f"--metric: {exc} (e.g. accuracy>=0.9)", ExitCode.USAGE)
    if status:
        full = "VERSION_STATUS_" + status.upper()
        if full not in registry_pb2.VersionStatus.keys():
            fail(f"--status: unknown status {status!r}", ExitCode.USAGE)
        query.status = registry_pb2.VersionStatus.Value(full)
    versions = call_registry(address, token, "search versions", lambda c: c.search_versions(query))
    if json_output:
        print_json([message_json(v) for v in versions])
    else:
        console.print(_versions_table(versions, with_model=True))


def download(
    name: Name,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the artifact.")],
    version: VersionOption = 0,
    alias: AliasOption = "",
    force: Annotated[bool, typer.Option(help="Overwrite the output file.")] = False,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Download a version's artifact, verified against its SHA-256 ([bold]read[/] scope)."""
    if output.exists() and not force:
        fail(f"{output} exists (use --force to overwrite)", ExitCode.USAGE)
    alias = alias or ("" if version else "production")

    async def call(client: RegistryClient) -> tuple[registry_pb2.ModelVersion, bytes]:
        try:
            return await client.download_artifact(name, version, alias)
        except DigestMismatch as exc:
            fail(f"download of {name} refused: {exc}", ExitCode.FAILED)

    found, data = call_registry(address, token, f"download {name}", call)
    output.write_bytes(data)
    if json_output:
        print_json(
            {"model": name, "version": found.version, "sha256": found.artifact.sha256, "path": str(output)}
        )
    else:
        console.print(
            f"{name} v{found.version}: {len(data)} bytes, sha256 {found.artifact.sha256} verified -> {output}",
            highlight=False,
        )


def lineage(
    name: Name,
    version: VersionOption = 0,
    alias: AliasOption = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """What produced a version and what it produced ([bold]read[/] scope).

    Shows the version's data window (dataset, rows, content hash), code and request, its
    parent chain, the versions trained from it, and other versions trained on the same data.
    """
    alias = alias or ("" if version else "production")
    found = call_registry(address, token, f"lineage of {name}", lambda c: c.lineage(name, version, alias))
    if json_output:
        print_json(message_json(found))
        return
    console.print("[bold]version[/]  " + _lineage_line(found.version), highlight=False)
    packages = ", ".join(f"{k} {v}" for k, v in sorted(found.version.lineage.package_versions.items()))
    if packages:
        console.print(f"packages  {packages}", highlight=False)
    for ancestor in found.ancestors:
        console.print("[bold]parent[/]   " + _lineage_line(ancestor), highlight=False)
    for child in found.children:
        console.print("[bold]child[/]    " + _lineage_line(child), highlight=False)
    for same in found.same_data:
        console.print("[bold]same data[/] " + _lineage_line(same), highlight=False)
