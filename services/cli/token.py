"""``mlops token``: issue, list, revoke and inspect the platform's bearer tokens, and make
the keys that sign them.

The registry issues tokens (``create``, with an admin token): every token expires, and
the registry records it (never the token itself) so ``list`` shows it and ``revoke``
cuts it off everywhere within seconds.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer
from google.protobuf.timestamp_pb2 import Timestamp
from rich.table import Table

from services.cli.context import RegistryAddressOption as Address
from services.cli.context import TokenOption as Token
from services.cli.context import call_service, resolve_public_keys
from services.cli.output import ExitCode, JsonOutput, console, fail, print_json
from services.common.auth import (
    AuthError,
    InvalidKey,
    KeySet,
    Principal,
    SigningKey,
    TokenIssuer,
    TokenVerifier,
    jwks_json,
    parse_scopes,
)
from services.common.clients.access import AccessClient
from services.common.proto.mlops.v1 import registry_pb2

app = typer.Typer(
    help="Issue, list, revoke and inspect bearer tokens; make the keys that sign them.", no_args_is_help=True
)

T = TypeVar("T")

SCOPES_HELP = (
    "read: get/list/download; write: create models, versions, schemas; promote: move aliases, "
    "roll back; approve: approve or reject versions; predict: inference; ingest: send events; "
    "admin: everything, in every team."
)


def call_access(
    address: str | None, token: str | None, what: str, call: Callable[[AccessClient], Awaitable[T]]
) -> T:
    """``call`` with a client of the registry's access API (see ``call_service``)."""
    return call_service(AccessClient, "registry_grpc", address, token, what, call)


def when(stamp: Timestamp) -> str | None:
    """An RFC 3339 time, or None for an unset timestamp."""
    return stamp.ToDatetime(UTC).isoformat() if stamp.seconds or stamp.nanos else None


def token_json(info: registry_pb2.TokenInfo) -> dict[str, Any]:
    return {
        "id": info.id,
        "subject": info.subject,
        "scopes": list(info.scopes),
        "teams": list(info.teams),
        "issued_at": when(info.issued_at),
        "expires_at": when(info.expires_at),
        "issued_by": info.issued_by,
        "revoked_at": when(info.revoked_at),
        "key_id": info.key_id,
    }


@app.command()
def create(
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help=f"A scope to grant (repeatable). {SCOPES_HELP}")
    ],
    subject: Annotated[
        str, typer.Option(help="Who the token is for; it appears in the audit log.")
    ] = f"user:{os.environ.get('USER', 'operator')}",
    team: Annotated[
        list[str] | None,
        typer.Option(
            "--team",
            "-t",
            help="A team the token acts for, with its scopes there (repeatable); the subject must be a "
            "member (mlops teams add-member). None: the default team. Admin tokens name none.",
        ),
    ] = None,
    ttl: Annotated[
        int | None,
        typer.Option(
            help="Seconds until it expires (default: the registry's, 7 days unless configured).", min=1
        ),
    ] = None,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Issue a token with only the scopes (and teams) a client needs; needs an admin token.

    The token alone goes to stdout, so it can be captured:

      export MLOPS_TOKEN=$(mlops token create -s predict -t fraud --subject app:checkout --ttl 86400)

    With --json: {"token", "id", "expires_at", ...}; the id is what `mlops token revoke` takes.
    """
    try:
        parse_scopes(scope)
    except ValueError as exc:
        fail(f"--scope: {exc}", ExitCode.USAGE)
    created = call_access(
        address,
        token,
        "issuing the token",
        lambda client: client.create_token(subject, scope, teams=team or [], ttl_seconds=ttl or 0),
    )
    if json_output:
        print_json({"token": created.token, **token_json(created.info)})
    else:
        print(created.token)


@app.command()
def revoke(
    token_id: Annotated[
        str, typer.Argument(metavar="ID", help="The token's id (its jti; see `mlops token list`).")
    ],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Revoke a token: every service refuses it within seconds. Needs an admin token."""
    info = call_access(
        address, token, f"revoking token {token_id}", lambda client: client.revoke_token(token_id, reason)
    )
    if json_output:
        print_json(token_json(info))
    else:
        console.print(
            f"revoked token {info.id} (it would have expired {when(info.expires_at)})", highlight=False
        )


@app.command("list")
def list_tokens(
    subject: Annotated[str, typer.Option(help="Only this subject's tokens.")] = "",
    include_revoked: Annotated[
        bool, typer.Option("--include-revoked", help="Show revoked ones too.")
    ] = False,
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """The tokens the registry issued that have not expired yet, newest first. Needs an admin token."""
    tokens = call_access(
        address,
        token,
        "listing tokens",
        lambda client: client.list_tokens(subject, include_revoked=include_revoked),
    )
    if json_output:
        print_json([token_json(info) for info in tokens])
        return
    table = Table("id", "subject", "scopes", "teams", "expires", "revoked")
    for info in tokens:
        described = token_json(info)
        table.add_row(
            info.id,
            info.subject,
            " ".join(info.scopes),
            " ".join(info.teams) or "default",
            str(described["expires_at"]),
            str(described["revoked_at"] or ""),
        )
    console.print(table)


@app.command()
def inspect(
    token: Annotated[str, typer.Argument(help="The token to check.", envvar="MLOPS_TOKEN", show_envvar=True)],
    json_output: JsonOutput = False,
) -> None:
    """Verify a token's signature and expiry against the platform's public keys
    (MLOPS_AUTH_PUBLIC_KEYS, or the local stack's) and show what it grants (exit 4 if
    invalid). Revocation is the services' to check."""
    try:
        keys = KeySet.from_json(resolve_public_keys(os.environ.get("MLOPS_AUTH_PUBLIC_KEYS")))
    except InvalidKey as exc:
        fail(f"MLOPS_AUTH_PUBLIC_KEYS: {exc}", ExitCode.USAGE)
    try:
        principal = asyncio.run(TokenVerifier(keys).verify(f"Bearer {token}"))
    except AuthError as exc:
        fail(str(exc), ExitCode.DENIED)
    described = _describe(principal)
    if json_output:
        print_json(described)
        return
    for key in ("subject", "id", "scopes", "teams", "expires_at"):
        value = described[key]
        console.print(f"{key:<11}{' '.join(value) if isinstance(value, list) else value}", highlight=False)


def _describe(principal: Principal) -> dict[str, object]:
    return {
        "subject": principal.subject,
        "id": principal.token_id,
        "scopes": sorted(s.value for s in principal.scopes),
        "teams": sorted(principal.teams),
        "expires_at": (
            datetime.fromtimestamp(principal.expires_at, UTC).isoformat() if principal.expires_at else None
        ),
    }


@app.command()
def sign(
    private_key: Annotated[Path, typer.Option(help="The registry's signing key (PEM).")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help=f"A scope to grant (repeatable). {SCOPES_HELP}")
    ],
    subject: Annotated[str, typer.Option(help="Who the token is for; it appears in the audit log.")],
    team: Annotated[
        list[str] | None, typer.Option("--team", "-t", help="A team it acts for (repeatable).")
    ] = None,
    ttl: Annotated[int, typer.Option(help="Seconds until it expires.", min=1, max=86400)] = 3600,
    key_id: Annotated[
        str, typer.Option(help="The kid (default: derived from the key, as keygen prints it).")
    ] = "",
) -> None:
    """Sign a token offline with the registry's key, without asking the registry: the first
    admin token of a new deployment, or break-glass access. It is not recorded, so `list`
    does not show it (`revoke` takes its id all the same); prefer `create` otherwise."""
    try:
        issuer = TokenIssuer(SigningKey.from_pem(private_key.read_text(), kid=key_id))
        minted = issuer.mint(subject, parse_scopes(scope), teams=team or [], ttl_seconds=ttl)
    except (OSError, ValueError) as exc:
        fail(str(exc), ExitCode.USAGE)
    print(minted.token)


@app.command()
def keygen(
    private_key: Annotated[
        Path, typer.Option(help="Where to write the private key (PEM, mode 0600); it must not exist.")
    ],
    service: Annotated[
        bool, typer.Option("--service", help="A service key (signs service credentials only).")
    ] = False,
    algorithm: Annotated[Literal["EdDSA", "ES256"], typer.Option(help="Ed25519 or P-256.")] = "EdDSA",
) -> None:
    """Make a signing key: the private key goes to a file, its public JWK (with its key id)
    to stdout, for MLOPS_AUTH_PUBLIC_KEYS (see docs/access.md for rotation)."""
    key = SigningKey.generate(algorithm, service=service)
    try:
        fd = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        fail(f"--private-key: {exc}", ExitCode.USAGE)
    with os.fdopen(fd, "w") as handle:
        handle.write(key.private_pem())
    print_json(key.public_jwk())


@app.command()
def jwks(
    key: Annotated[
        list[Path] | None,
        typer.Option("--key", help="A token-signing key (PEM), current or previous (repeatable)."),
    ] = None,
    service_key: Annotated[
        list[Path] | None, typer.Option("--service-key", help="A service key (PEM) (repeatable).")
    ] = None,
) -> None:
    """Print the JWKS (public keys only) of signing keys: the value of MLOPS_AUTH_PUBLIC_KEYS.

    export MLOPS_AUTH_PUBLIC_KEYS=$(mlops token jwks --key registry.pem --service-key service.pem)
    """
    keys: list[SigningKey] = []
    for path, is_service in [*((p, False) for p in key or ()), *((p, True) for p in service_key or ())]:
        try:
            keys.append(SigningKey.from_pem(path.read_text(), service=is_service))
        except (OSError, InvalidKey) as exc:
            fail(f"{path}: {exc}", ExitCode.USAGE)
    if not keys:
        fail("give at least one --key or --service-key", ExitCode.USAGE)
    print(jwks_json(keys))
