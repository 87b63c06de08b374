"""``mlops models`` commands that change the registry: register and update models, create
versions, move and remove aliases, roll back, archive (and read an alias's history)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from google.protobuf import json_format
from rich.table import Table
from rich.text import Text

from services.cli.context import RegistryAddressOption as Address
from services.cli.context import TokenOption as Token
from services.cli.models import (
    POLICIES,
    STAGES,
    Expect,
    Limit,
    Name,
    Reason,
    Tags,
    VersionArg,
    call_registry,
    format_time,
    key_values,
    message_json,
    metric_values,
    print_message,
    show_model,
    show_version,
)
from services.cli.output import ExitCode, JsonOutput, console, fail, platform_errors, print_json
from services.common.clients.registry import RegistryClient
from services.common.flavors import FLAVORS
from services.common.flavors.mlflow_model import read_mlflow_model, version_of
from services.common.flavors.signature import TASKS, InputExample, SignatureReport, complete_signature
from services.common.proto.mlops.v1 import model_pb2, registry_pb2

Team = Annotated[
    str, typer.Option(help="The team that owns a new model (default: your only team, else default).")
]

# ------------------------------------------------------------------------- models


def register(
    name: Name,
    description: Annotated[str, typer.Option(help="What the model is for.")] = "",
    policy: Annotated[
        str, typer.Option(help="auto (promote when gates pass) or manual (approval needed).")
    ] = "auto",
    tag: Tags = None,
    exist_ok: Annotated[bool, typer.Option(help="Succeed if the model exists already.")] = False,
    team: Team = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Register a model name in a team (needs the [bold]write[/] scope there)."""
    if policy not in POLICIES:
        fail(f"--policy: one of {', '.join(POLICIES)}", ExitCode.USAGE)
    tags = key_values(tag, "--tag")
    model = call_registry(
        address,
        token,
        f"register {name}",
        lambda c: c.create_model(name, description, POLICIES[policy], tags, exist_ok=exist_ok, team=team),
    )
    print_message(model, json_output, show_model)


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
    tags = key_values(tag, "--tag")
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
    print_message(model, json_output, show_model)


# ----------------------------------------------------------------------- versions


def create_version(
    name: Name,
    artifact: Annotated[Path, typer.Argument(help="The artifact file.", exists=True, dir_okay=False)],
    artifact_format: Annotated[
        str, typer.Option("--format", help=f"The artifact's flavor: {', '.join(FLAVORS)}.")
    ] = "skops",
    input_example: Annotated[
        Path | None,
        typer.Option(
            help="A few rows of the model's input: CSV with a header (names the features) or .npy.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    task: Annotated[
        str | None, typer.Option(help="classification or regression, when the artifact does not say.")
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(help="Class names in the order of the model's outputs, comma-separated (a,b,c)."),
    ] = None,
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

    The signature (features, task, classes, inputs) is what --metadata, --task and --classes
    declare, completed from the artifact itself and from --input-example; the artifact is
    loaded and asked for the example's rows before anything is uploaded. What could not be
    inferred is printed (and listed in --json under [bold]signature_inference[/]).

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
    meta.metrics.update(metric_values(metric))
    meta.params.update(key_values(param, "--param"))
    meta.tags.update(key_values(tag, "--tag"))
    if signature_hmac:
        meta.signature_hmac = signature_hmac
    declare_signature(meta.signature, task, classes)
    data = read_file(artifact)
    example = read_example(input_example)
    with platform_errors(f"signature of {artifact}"):
        report = complete_signature(
            meta.artifact.format, data, declared=meta.signature, example=example, params=meta.params
        )
    meta.signature.CopyFrom(report.signature)
    version = call_registry(
        address, token, f"create a version of {name}", lambda c: c.create_version(meta, data)
    )
    show_registered(version, report, json_output)


def import_mlflow(
    directory: Annotated[
        Path, typer.Argument(help="The MLflow model directory (with its MLmodel file).", file_okay=False)
    ],
    name: Name,
    task: Annotated[
        str | None, typer.Option(help="classification or regression, when the model does not say.")
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(help="Class names in the order of the model's outputs, comma-separated (a,b,c)."),
    ] = None,
    tag: Tags = None,
    team: Team = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Register an MLflow model directory as a new version of NAME ([bold]write[/] scope).

    Reads the MLmodel file and the files it names (never MLflow's code) and registers the
    model through the matching flavor: onnx, xgboost, lightgbm, or sklearn saved with skops
    (MLflow 3's default). Models that would need unpickling (pyfunc with custom code, pickle
    or cloudpickle) are refused, saying what to export instead. MLmodel's signature and input
    example complete the version's signature as --input-example does for create-version; the
    model is registered first if NAME is new.
    """
    with platform_errors(f"import {directory}"):
        imported = read_mlflow_model(directory)
    declare_signature(imported.signature, task, classes)
    with platform_errors(f"signature of {directory}"):
        meta, report = version_of(imported, name)
    meta.tags.update(key_values(tag, "--tag"))

    async def call(client: RegistryClient) -> registry_pb2.ModelVersion:
        description = f"Imported from MLflow ({imported.mlflow_flavor})."
        await client.create_model(name, description, exist_ok=True, team=team)
        return await client.create_version(meta, imported.data)

    version = call_registry(address, token, f"import {directory} as {name}", call)
    show_registered(version, report, json_output)


def declare_signature(signature: model_pb2.Signature, task: str | None, classes: str | None) -> None:
    """Add ``--task`` and ``--classes`` to a declared signature."""
    if task is not None:
        if task not in TASKS:
            fail(f"--task: one of {', '.join(TASKS)}", ExitCode.USAGE)
        signature.task = TASKS[task]
    if classes is not None:
        names = [c.strip() for c in classes.split(",")]
        if not all(names) or len(set(names)) != len(names):
            fail(f"--classes: distinct, non-empty names separated by commas, got {classes!r}", ExitCode.USAGE)
        del signature.classes[:]
        signature.classes.extend(names)


def read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        fail(f"{path}: {exc}", ExitCode.USAGE)


def read_example(path: Path | None) -> InputExample | None:
    if path is None:
        return None
    with platform_errors(f"--input-example {path}"):
        return InputExample.parse(read_file(path), path.name)


def show_registered(version: registry_pb2.ModelVersion, report: SignatureReport, json_output: bool) -> None:
    """The new version, and what of its signature was inferred and what was not."""
    if json_output:
        print_json(message_json(version) | {"signature_inference": report.as_json()})
        return
    show_version(version)
    for line in report.inferred:
        console.print(f"inferred: {line}", highlight=False, markup=False)
    for line in report.not_inferred:
        console.print(Text.assemble(("not inferred: ", "yellow"), line), highlight=False)


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
    print_message(archived, json_output, show_version)


# ------------------------------------------------------------------------ aliases


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
    print_message(model, json_output, show_model)


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
    print_message(model, json_output, show_model)


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
    print_message(model, json_output, show_model)


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
            format_time(c.changed_at),
            c.alias,
            str(c.previous_version or "-"),
            str(c.version or "-"),
            c.action,
            c.actor,
            c.reason,
        )
    console.print(table)
