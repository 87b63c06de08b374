"""``mlops models`` commands of review and record: approve or reject a pending version,
and read the registry's audit log."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from services.cli.context import RegistryAddressOption as Address
from services.cli.context import TokenOption as Token
from services.cli.models import (
    Limit,
    Name,
    VersionArg,
    call_registry,
    format_time,
    message_json,
    print_message,
    show_version,
)
from services.cli.output import JsonOutput, console, print_json
from services.common.clients.registry import RegistryClient
from services.common.proto.mlops.v1 import registry_pb2

# ------------------------------------------------------------------------ reviews


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

    print_message(call_registry(address, token, what, review), json_output, show_version)


# -------------------------------------------------------------------------- audit


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
        table.add_row(format_time(r.occurred_at), r.actor, r.action, r.resource, r.outcome, change, r.detail)
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
