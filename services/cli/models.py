"""``mlops models``: models in the registry, their versions, aliases, approvals, lineage,
specs, artifacts and the audit log.

Talks to the registry's gRPC API (``MLOPS_REGISTRY_ADDRESS``, else the local stack's, else
127.0.0.1:50051) with ``MLOPS_TOKEN`` (or the local stack's token). Every command that
reports something takes ``--json``; exit codes are those of ``mlops`` (2 bad input,
4 denied, 5 not found, 1 for a refused change such as a lost compare-and-set).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
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
from services.common.clients.registry import RegistryClient, parse_metric_filter
from services.common.flavors import FLAVORS
from services.common.proto.mlops.v1 import model_pb2, registry_pb2

app = typer.Typer(
    help="Models in the registry: versions, aliases, approvals, lineage, specs, artifacts, audit.",
    no_args_is_help=True,
)
spec_app = typer.Typer(help="Versioned training specs (what the trainer trains and how it is judged).")
app.add_typer(spec_app, name="spec")

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


def _print(message: M, json_output: bool, show: Callable[[M], None]) -> None:
    """``message`` as JSON for scripts, or shown to a person."""
    if json_output:
        print_json(message_json(message))
    else:
        show(message)


# ------------------------------------------------------------------ gate reports


def gate_margin(gate: model_pb2.GateResult) -> float:
    """How far the gate's value lies on the passing side of its threshold: positive by how
    much it passed, negative by how much it failed.

    Gates point both ways (a floor on the holdout metric and on the gain over production,
    a ceiling on drops and gaps); the margin reads the same for all of them.
    """
    distance = abs(gate.value - gate.threshold)
    return distance if gate.passed else -distance


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


def _key_values(values: list[str] | None, option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values or ():
        key, sep, text = value.partition("=")
        if not sep or not key:
            fail(f"{option}: expected key=value, got {value!r}", ExitCode.USAGE)
        pairs[key] = text
    return pairs


def _metrics(values: list[str] | None) -> dict[str, float]:
    parsed: dict[str, float] = {}
    for key, text in _key_values(values, "--metric").items():
        try:
            parsed[key] = float(text)
        except ValueError:
            fail(f"--metric {key}: {text!r} is not a number", ExitCode.USAGE)
    return parsed


def _status(status: int) -> str:
    return registry_pb2.VersionStatus.Name(status).removeprefix("VERSION_STATUS_").lower()  # type: ignore[arg-type]


def _policy(policy: int) -> str:
    return registry_pb2.PromotionPolicy.Name(policy).removeprefix("PROMOTION_POLICY_").lower()  # type: ignore[arg-type]


def _when(stamp: Any) -> str:
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if stamp.seconds else ""


def _show_model(model: registry_pb2.Model) -> None:
    aliases = ", ".join(f"{alias}={version}" for alias, version in sorted(model.aliases.items())) or "-"
    tags = ", ".join(f"{k}={v}" for k, v in sorted(model.tags.items())) or "-"
    console.print(
        f"[bold]{model.name}[/]  policy {_policy(model.promotion_policy)}  latest v{model.latest_version}  "
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
            _when(v.created_at),
            v.created_by,
        ]
        table.add_row(*([v.model_name, *row] if with_model else row))
    return table


def _show_version(v: registry_pb2.ModelVersion) -> None:
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
    console.print(f"created {_when(v.created_at)} by {v.created_by}", highlight=False)


def _lineage_line(v: registry_pb2.ModelVersion) -> str:
    data = v.lineage.data
    return (
        f"{v.model_name} v{v.version}: dataset {data.window.dataset or '-'}, {data.row_count} rows, "
        f"content {data.content_sha256 or '-'}, code {v.lineage.code_version or '-'}, "
        f"request {v.lineage.train_request_id or '-'}, trigger {v.lineage.trigger or '-'}"
    )


# ------------------------------------------------------------------------- models


@app.command()
def register(
    name: Name,
    description: Annotated[str, typer.Option(help="What the model is for.")] = "",
    policy: Annotated[
        str, typer.Option(help="auto (promote when gates pass) or manual (approval needed).")
    ] = "auto",
    tag: Tags = None,
    exist_ok: Annotated[bool, typer.Option(help="Succeed if the model exists already.")] = False,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Register a model name (needs the [bold]write[/] scope)."""
    if policy not in POLICIES:
        fail(f"--policy: one of {', '.join(POLICIES)}", ExitCode.USAGE)
    tags = _key_values(tag, "--tag")
    model = call_registry(
        address,
        token,
        f"register {name}",
        lambda c: c.create_model(name, description, POLICIES[policy], tags, exist_ok=exist_ok),
    )
    _print(model, json_output, _show_model)


@app.command()
def update(
    name: Name,
    description: Annotated[str | None, typer.Option(help="New description.")] = None,
    policy: Annotated[str | None, typer.Option(help="auto or manual.")] = None,
    tag: Tags = None,
    remove_tag: Annotated[list[str] | None, typer.Option("--remove-tag", help="Tag key to remove.")] = None,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Change a model's description, tags or promotion policy ([bold]write[/] scope)."""
    if policy is not None and policy not in POLICIES:
        fail(f"--policy: one of {', '.join(POLICIES)}", ExitCode.USAGE)
    tags = _key_values(tag, "--tag")
    model = call_registry(
        address,
        token,
        f"update {name}",
        lambda c: c.update_model(
            name,
            description=description,
            set_tags=tags,
            remove_tags=remove_tag or [],
            policy=POLICIES[policy] if policy else registry_pb2.PROMOTION_POLICY_UNSPECIFIED,
        ),
    )
    _print(model, json_output, _show_model)


@app.command("list")
def list_models(
    alias: Annotated[str, typer.Option(help="Only models with this alias set.")] = "",
    name_contains: Annotated[str, typer.Option("--name", help="Only names containing this text.")] = "",
    tag: Tags = None,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """List models, optionally by alias, name or tag ([bold]read[/] scope)."""
    tags = _key_values(tag, "--tag")
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
            _when(m.updated_at),
        )
    console.print(table)


@app.command()
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
    _show_model(model)
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


@app.command("create-version")
def create_version(
    name: Name,
    artifact: Annotated[Path, typer.Argument(help="The artifact file.", exists=True, dir_okay=False)],
    artifact_format: Annotated[
        str, typer.Option("--format", help=f"The artifact's flavor: {', '.join(FLAVORS)}.")
    ] = "skops",
    metadata: Annotated[
        Path | None,
        typer.Option(
            help="VersionMetadata as JSON (signature, lineage, gates ...); options below add to it."
        ),
    ] = None,
    metric: Annotated[list[str] | None, typer.Option("--metric", help="name=value (repeatable).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="name=value (repeatable).")] = None,
    tag: Tags = None,
    signature_hmac: Annotated[
        str, typer.Option(help="HMAC-SHA256 (hex), for signed flavors (river-hmac).")
    ] = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Register a new version from an artifact file ([bold]write[/] scope).

    The registry hashes the bytes as it stores them and refuses the version (storing
    nothing) if they do not match. Without gate results the version is READY and moves no
    alias; on a manual-policy model it waits for approval as the candidate.
    """
    meta = registry_pb2.VersionMetadata()
    if metadata is not None:
        try:
            json_format.Parse(metadata.read_text(), meta)
        except (OSError, json_format.ParseError) as exc:
            fail(f"--metadata {metadata}: {exc}", ExitCode.USAGE)
    meta.model_name = name
    meta.artifact.format = meta.artifact.format or artifact_format
    meta.metrics.update(_metrics(metric))
    meta.params.update(_key_values(param, "--param"))
    meta.tags.update(_key_values(tag, "--tag"))
    if signature_hmac:
        meta.signature_hmac = signature_hmac
    try:
        data = artifact.read_bytes()
    except OSError as exc:
        fail(f"{artifact}: {exc}", ExitCode.USAGE)
    version = call_registry(
        address, token, f"create a version of {name}", lambda c: c.create_version(meta, data)
    )
    _print(version, json_output, _show_version)


@app.command()
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
    _print(found, json_output, _show_version)


@app.command()
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
        tags=_key_values(tag, "--tag"),
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


@app.command()
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


@app.command()
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


# ------------------------------------------------------------------------ aliases


@app.command("set-alias")
def set_alias(
    name: Name,
    alias: Annotated[str, typer.Argument(help="production, staging, candidate or your own.")],
    version: VersionArg,
    expect: Expect = None,
    expect_unset: Annotated[
        bool, typer.Option(help="Compare-and-set: only if the alias is unset now.")
    ] = False,
    reason: Reason = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Point an alias at a version ([bold]promote[/] scope). A lost compare-and-set exits 1."""
    if expect is not None and expect_unset:
        fail("--expect and --expect-unset exclude each other", ExitCode.USAGE)
    expected = -1 if expect_unset else (expect or 0)
    model = call_registry(
        address,
        token,
        f"set {alias} of {name}",
        lambda c: c.set_alias(name, alias, version, expected, reason),
    )
    _print(model, json_output, _show_model)


@app.command("delete-alias")
def delete_alias(
    name: Name,
    alias: Annotated[str, typer.Argument(help="The alias to remove.")],
    expect: Expect = None,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Remove an alias ([bold]promote[/] scope)."""
    model = call_registry(
        address, token, f"delete {alias} of {name}", lambda c: c.delete_alias(name, alias, expect or 0)
    )
    _print(model, json_output, _show_model)


@app.command()
def transition(
    name: Name,
    version: VersionArg,
    stage: Annotated[str, typer.Argument(help="staging, production, candidate or archived.")],
    reason: Reason = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Move a version to a stage: point that alias at it, or archive it.

    Stages are aliases here (as in MLflow 2): [bold]production[/] needs the promote scope
    (and an approved version on manual-policy models); [bold]archived[/] needs write.
    """
    if stage not in STAGES:
        fail(f"stage: one of {', '.join(STAGES)}", ExitCode.USAGE)
    if stage == "archived":
        _archive(name, version, reason, address, token, json_output)
        return
    model = call_registry(
        address,
        token,
        f"move {name} v{version} to {stage}",
        lambda c: c.set_alias(name, stage, version, 0, reason),
    )
    _print(model, json_output, _show_model)


@app.command()
def rollback(
    name: Name,
    alias: Annotated[str, typer.Option(help="The alias to move back.")] = "production",
    expect: Expect = None,
    reason: Reason = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Move an alias back to the version it pointed at before ([bold]promote[/] scope)."""
    result = call_registry(
        address, token, f"roll back {alias} of {name}", lambda c: c.rollback(name, alias, expect or 0, reason)
    )
    if json_output:
        print_json(message_json(result))
    else:
        console.print(
            f"{name} {result.alias}: v{result.from_version} -> v{result.to_version}", highlight=False
        )


@app.command()
def history(
    name: Name,
    alias: Annotated[str, typer.Option(help="Only this alias.")] = "",
    limit: Limit = 50,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Every move of a model's aliases, newest first ([bold]read[/] scope)."""
    changes = call_registry(
        address, token, f"history of {name}", lambda c: c.alias_history(name, alias, limit)
    )
    if json_output:
        print_json([message_json(c) for c in changes])
        return
    table = Table("when", "alias", "from", "to", "how", "who", "reason")
    for c in changes:
        table.add_row(
            _when(c.changed_at),
            c.alias,
            str(c.previous_version or "-"),
            str(c.version or "-"),
            c.action,
            c.actor,
            c.reason,
        )
    console.print(table)


# --------------------------------------------------------------- review, archive


@app.command()
def approve(
    name: Name,
    version: VersionArg,
    comment: Annotated[str, typer.Option(help="Why, kept with the version.")] = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Approve a pending version: it becomes production ([bold]approve[/] scope; not its author)."""
    _review(name, version, comment, True, address, token, json_output)


@app.command()
def reject(
    name: Name,
    version: VersionArg,
    comment: Annotated[str, typer.Option(help="Why (required), kept with the version.")],
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Reject a pending version ([bold]approve[/] scope)."""
    _review(name, version, comment, False, address, token, json_output)


@app.command()
def archive(
    name: Name,
    version: VersionArg,
    reason: Reason = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Archive a version no alias points at: kept for lineage, never served ([bold]write[/] scope)."""
    _archive(name, version, reason, address, token, json_output)


def _archive(
    name: str, version: int, reason: str, address: str | None, token: str | None, json_output: bool
) -> None:
    archived = call_registry(
        address, token, f"archive {name} v{version}", lambda c: c.archive(name, version, reason)
    )
    _print(archived, json_output, _show_version)


def _review(
    name: str,
    version: int,
    comment: str,
    approve: bool,
    address: str | None,
    token: str | None,
    json_output: bool,
) -> None:
    what = f"{'approve' if approve else 'reject'} {name} v{version}"

    async def review(client: RegistryClient) -> registry_pb2.ModelVersion:
        if approve:
            return await client.approve(name, version, comment)
        return await client.reject(name, version, comment)

    _print(call_registry(address, token, what, review), json_output, _show_version)


# -------------------------------------------------------------------------- audit


@app.command()
def audit(
    model: Annotated[str, typer.Option(help="Only records about this model.")] = "",
    actor: Annotated[str, typer.Option(help="Only this token subject.")] = "",
    action: Annotated[str, typer.Option(help="Only this operation (SetAlias, CreateModelVersion ...).")] = "",
    outcome: Annotated[str, typer.Option(help="ok, denied, unauthenticated, aborted ...")] = "",
    request_id: Annotated[str, typer.Option(help="Only this request.")] = "",
    since: Annotated[
        datetime | None, typer.Option(help="From this time (UTC unless an offset is given).")
    ] = None,
    limit: Limit = 50,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """The registry's audit log, newest first: changes and denials ([bold]admin[/] scope)."""
    query = registry_pb2.ListAuditRecordsRequest(
        actor=actor,
        action=action,
        outcome=outcome,
        request_id=request_id,
        resource_prefix=f"models/{model}" if model else "",
        page_size=limit,
    )
    if since is not None:
        query.since.FromDatetime(since)
    page = call_registry(address, token, "read the audit log", lambda c: c.audit_log(query))
    if json_output:
        print_json([message_json(r) for r in page.records])
        return
    table = Table("when", "who", "action", "resource", "outcome", "change", "detail")
    table.columns[3].overflow = "fold"
    for r in page.records:
        change = " -> ".join(part for part in (_compact(r.before_json), _compact(r.after_json)) if part)
        table.add_row(_when(r.occurred_at), r.actor, r.action, r.resource, r.outcome, change, r.detail)
    console.print(table)


def _compact(document: str) -> str:
    """An audit before/after object as ``key=value`` pairs, long hashes shortened."""
    if not document:
        return ""
    try:
        values = json.loads(document)
    except ValueError:
        return document
    if not isinstance(values, dict):
        return document
    parts = []
    for key, value in values.items():
        text = json.dumps(value) if isinstance(value, dict | list) else str(value)
        parts.append(f"{key}={text[:12] + '…' if len(text) > 16 and key.endswith('sha256') else text}")
    return " ".join(parts)


# -------------------------------------------------------------------------- specs


@spec_app.command("put")
def spec_put(
    file: Annotated[Path, typer.Argument(help="A ModelSpec as JSON.", exists=True, dir_okay=False)],
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Store a spec as the model's next spec version ([bold]write[/] scope)."""
    spec = model_pb2.ModelSpec()
    try:
        json_format.Parse(file.read_text(), spec)
    except (OSError, json_format.ParseError) as exc:
        fail(f"{file}: {exc}", ExitCode.USAGE)
    stored = call_registry(address, token, f"store the spec of {spec.model_name}", lambda c: c.put_spec(spec))
    if json_output:
        print_json(message_json(stored))
    else:
        console.print(f"{stored.model_name}: spec version {stored.spec_version} stored", highlight=False)


@spec_app.command("get")
def spec_get(
    name: Name,
    spec_version: Annotated[int, typer.Option("--spec-version", help="0: the latest.", min=0)] = 0,
    address: Address = None,
    token: Token = None,
) -> None:
    """A spec as JSON (the latest unless --spec-version) ([bold]read[/] scope)."""
    spec = call_registry(address, token, f"spec of {name}", lambda c: c.get_spec(name, spec_version))
    print_json(message_json(spec))


@spec_app.command("list")
def spec_list(
    name: Name, address: Address = None, token: Token = None, json_output: JsonOutput = False
) -> None:
    """A model's spec versions, newest first ([bold]read[/] scope)."""
    specs = call_registry(address, token, f"specs of {name}", lambda c: c.list_specs(name))
    if json_output:
        print_json([message_json(s) for s in specs])
        return
    table = Table("spec version", "dataset", "task", "metric", "features", "estimators")
    for s in specs:
        table.add_row(
            str(s.spec_version),
            s.dataset,
            model_pb2.Task.Name(s.task).removeprefix("TASK_").lower(),
            s.metric,
            str(len(s.features)),
            ", ".join(e.family for e in s.estimators),
        )
    console.print(table)
