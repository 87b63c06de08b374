"""Teams and tokens: create teams and manage their members, issue, list and revoke tokens,
the revocation list every service reads, and the public keys tokens are verified with."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from services.common.proto.mlops.v1 import registry_pb2
from services.registry import rest_models as shapes
from services.registry.rest.deps import Admin, Reader, RegistryDep, SettingsDep
from services.registry.rest.params import PageSize, PageToken
from services.registry.store.documents import timestamp

if TYPE_CHECKING:
    # Built from the protobuf descriptors at import time; plain pydantic models to the type checker.
    from pydantic import BaseModel as CreateTeamBody
    from pydantic import BaseModel as CreateTokenBody
    from pydantic import BaseModel as MemberBody
    from pydantic import BaseModel as RevokeTokenBody
else:
    from services.registry.rest_models import CreateTeamBody, CreateTokenBody, MemberBody, RevokeTokenBody

router = APIRouter()


@router.post("/teams", name="CreateTeam", status_code=201, response_model=shapes.Team, tags=["teams"])
async def create_team(body: CreateTeamBody, registry: RegistryDep, actor: Admin) -> Any:
    message = shapes.to_proto(body, registry_pb2.CreateTeamRequest(), "body")
    return shapes.from_proto(
        shapes.Team, await registry.create_team(actor, message.name, message.description)
    )


@router.get("/teams", name="ListTeams", response_model=shapes.TeamList, tags=["teams"])
async def list_teams(
    registry: RegistryDep, actor: Reader, page_size: PageSize = 0, page_token: PageToken = ""
) -> Any:
    """The caller's teams (every team for an admin)."""
    page = await registry.list_teams(actor, page_size=page_size, page_token=page_token)
    return shapes.paged(shapes.TeamList, registry_pb2.ListTeamsResponse, "teams", page)


@router.get("/teams/{team}", name="GetTeam", response_model=shapes.Team, tags=["teams"])
async def get_team(team: str, registry: RegistryDep, actor: Reader) -> Any:
    return shapes.from_proto(shapes.Team, await registry.get_team(actor, team))


@router.put(
    "/teams/{team}/members/{subject}", name="AddTeamMember", response_model=shapes.Team, tags=["teams"]
)
async def add_member(team: str, subject: str, body: MemberBody, registry: RegistryDep, actor: Admin) -> Any:
    """Add the subject to the team, or change the scopes it may be given there."""
    message = shapes.to_proto(body, registry_pb2.TeamMemberRequest(), "body")
    return shapes.from_proto(
        shapes.Team, await registry.set_member(actor, team, subject, list(message.scopes))
    )


@router.delete(
    "/teams/{team}/members/{subject}", name="RemoveTeamMember", response_model=shapes.Team, tags=["teams"]
)
async def remove_member(team: str, subject: str, registry: RegistryDep, actor: Admin) -> Any:
    return shapes.from_proto(shapes.Team, await registry.remove_member(actor, team, subject))


@router.post(
    "/tokens", name="CreateToken", status_code=201, response_model=shapes.CreatedToken, tags=["tokens"]
)
async def create_token(body: CreateTokenBody, registry: RegistryDep, actor: Admin) -> Any:
    """Issue a token (shown once, in this answer only). Every token expires."""
    message = shapes.to_proto(body, registry_pb2.CreateTokenRequest(), "body")
    created = await registry.create_token(
        actor, message.subject, list(message.scopes), list(message.teams), message.ttl_seconds
    )
    return shapes.from_proto(shapes.CreatedToken, created)


@router.get("/tokens", name="ListTokens", response_model=shapes.TokenList, tags=["tokens"])
async def list_tokens(
    registry: RegistryDep,
    actor: Admin,
    subject: Annotated[str, Query(max_length=1024)] = "",
    include_revoked: bool = False,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> Any:
    """Tokens issued and not expired yet, newest first."""
    page = await registry.list_tokens(
        subject=subject, include_revoked=include_revoked, page_size=page_size, page_token=page_token
    )
    return shapes.paged(shapes.TokenList, registry_pb2.ListTokensResponse, "tokens", page)


@router.post(
    "/tokens/{token_id}/revoke", name="RevokeToken", response_model=shapes.TokenInfo, tags=["tokens"]
)
async def revoke_token(
    token_id: str, registry: RegistryDep, actor: Admin, body: RevokeTokenBody | None = None
) -> Any:
    """Every service refuses the token within seconds."""
    message = shapes.to_proto(body or RevokeTokenBody(), registry_pb2.RevokeTokenRequest(), "body")
    return shapes.from_proto(shapes.TokenInfo, await registry.revoke_token(actor, token_id, message.reason))


@router.get("/revoked-tokens", name="ListRevokedTokens", response_model=shapes.RevokedList, tags=["tokens"])
async def revoked_tokens(
    registry: RegistryDep,
    actor: Reader,
    since: AwareDatetime | None = None,
    page_size: PageSize = 0,
    page_token: PageToken = "",
) -> Any:
    """Revocations of tokens not expired yet, made at or after ``since``, oldest first."""
    page = await registry.revoked_tokens(since, page_size=page_size, page_token=page_token)
    response = registry_pb2.ListRevokedTokensResponse(
        tokens=[
            registry_pb2.RevokedToken(
                id=r.id, revoked_at=timestamp(r.revoked_at), expires_at=timestamp(r.expires_at)
            )
            for r in page.items
        ],
        next_page_token=page.next_page_token,
    )
    return shapes.from_proto(shapes.RevokedList, response)


well_known = APIRouter(tags=["tokens"])


@well_known.get("/.well-known/jwks.json", name="PublicKeys")
async def public_keys(settings: SettingsDep) -> dict[str, Any]:
    """The public keys platform tokens are verified with (a JWKS; no token needed)."""
    keys: dict[str, Any] = json.loads(settings.auth_public_keys)
    return keys
