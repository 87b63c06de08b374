"""``mlops token``: mint and inspect the platform's bearer tokens."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated

import typer

from services.cli.context import resolve_auth_secret
from services.cli.output import ExitCode, JsonOutput, console, fail, print_json
from services.common.auth import AuthError, Scope, TokenVerifier, mint_token, parse_scopes

app = typer.Typer(
    help="Mint and inspect bearer tokens (HS256, signed with MLOPS_AUTH_SECRET).", no_args_is_help=True
)

SCOPES_HELP = (
    "read: get/list/download; write: create models, versions, schemas; promote: move aliases, "
    "roll back; approve: approve or reject versions; predict: inference; ingest: send events; "
    "admin: everything."
)


@app.command()
def create(
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help=f"A scope to grant (repeatable). {SCOPES_HELP}")
    ],
    subject: Annotated[
        str, typer.Option(help="Who the token is for; it appears in the audit log.")
    ] = f"user:{os.environ.get('USER', 'operator')}",
    ttl: Annotated[
        float | None, typer.Option(help="Seconds until it expires; without it the token never expires.")
    ] = None,
    json_output: JsonOutput = False,
) -> None:
    """Mint a token with only the scopes a client needs.

    The signing secret comes from [bold]MLOPS_AUTH_SECRET[/], or from the running local
    stack. The token alone goes to stdout, so it can be captured:

      export MLOPS_TOKEN=$(mlops token create -s predict --subject app:checkout --ttl 86400)
    """
    try:
        scopes = parse_scopes(scope)
    except ValueError as exc:
        fail(f"--scope: {exc}", ExitCode.USAGE)
    if ttl is not None and ttl <= 0:
        fail("--ttl: must be a positive number of seconds", ExitCode.USAGE)
    if not subject.strip():
        fail("--subject: must not be empty", ExitCode.USAGE)
    secret = resolve_auth_secret(os.environ.get("MLOPS_AUTH_SECRET"))
    if len(secret) < 32:
        fail("MLOPS_AUTH_SECRET: must be at least 32 characters", ExitCode.USAGE)
    token = mint_token(secret, subject, scopes, ttl_seconds=ttl)
    if json_output:
        principal = TokenVerifier(secret).verify(f"Bearer {token}")
        print_json(_describe(token, principal.subject, principal.scopes, principal.expires_at))
    else:
        print(token)


@app.command()
def inspect(
    token: Annotated[str, typer.Argument(help="The token to check.", envvar="MLOPS_TOKEN", show_envvar=True)],
    json_output: JsonOutput = False,
) -> None:
    """Verify a token's signature and expiry and show its subject and scopes (exit 4 if invalid)."""
    secret = resolve_auth_secret(os.environ.get("MLOPS_AUTH_SECRET"))
    try:
        principal = TokenVerifier(secret).verify(f"Bearer {token}")
    except AuthError as exc:
        fail(str(exc), ExitCode.DENIED)
    described = _describe(token, principal.subject, principal.scopes, principal.expires_at)
    if json_output:
        described.pop("token")
        print_json(described)
        return
    console.print(f"subject  {described['subject']}", highlight=False)
    console.print(f"scopes   {' '.join(sorted(s.value for s in principal.scopes))}", highlight=False)
    console.print(f"expires  {described['expires_at'] or 'never'}", highlight=False)


def _describe(
    token: str, subject: str, scopes: frozenset[Scope], expires_at: float | None
) -> dict[str, object]:
    return {
        "token": token,
        "subject": subject,
        "scopes": sorted(s.value for s in scopes),
        "expires_at": datetime.fromtimestamp(expires_at, UTC).isoformat() if expires_at else None,
    }
