"""``mlops models spec``: versioned training specs (what the trainer trains and how it is
judged), stored in the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from google.protobuf import json_format
from rich.table import Table

from services.cli.context import RegistryAddressOption as Address
from services.cli.context import TokenOption as Token
from services.cli.models import Name, call_registry, message_json
from services.cli.output import ExitCode, JsonOutput, console, fail, print_json
from services.common.proto.mlops.v1 import model_pb2

app = typer.Typer(help="Versioned training specs (what the trainer trains and how it is judged).")


@app.command("put")
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


@app.command("get")
def spec_get(
    name: Name,
    spec_version: Annotated[int, typer.Option("--spec-version", help="0: the latest.", min=0)] = 0,
    address: Address = None,
    token: Token = None,
) -> None:
    """A spec as JSON (the latest unless --spec-version) ([bold]read[/] scope)."""
    spec = call_registry(address, token, f"spec of {name}", lambda c: c.get_spec(name, spec_version))
    print_json(message_json(spec))


@app.command("list")
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
