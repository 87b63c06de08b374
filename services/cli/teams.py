"""``mlops teams``: the teams that own models, and their members.

A token may act for a team only if its subject is a member there with (at least) the
token's scopes; creating teams and changing members needs an admin token.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from services.cli.context import RegistryAddressOption as Address
from services.cli.context import TokenOption as Token
from services.cli.output import JsonOutput, console, print_json
from services.cli.token import call_access, when
from services.common.proto.mlops.v1 import registry_pb2

app = typer.Typer(
    help="Teams own models, their versions and specs; members get tokens for them.", no_args_is_help=True
)

TeamName = Annotated[str, typer.Argument(help="The team's name (lower-case letters, digits, . _ -).")]


def team_json(team: registry_pb2.Team) -> dict[str, Any]:
    return {
        "name": team.name,
        "description": team.description,
        "members": [{"subject": m.subject, "scopes": list(m.scopes)} for m in team.members],
        "created_at": when(team.created_at),
        "created_by": team.created_by,
    }


def _show(team: registry_pb2.Team, json_output: bool) -> None:
    if json_output:
        print_json(team_json(team))
        return
    console.print(f"team {team.name}: {team.description or '-'}", highlight=False)
    for member in team.members:
        console.print(f"  {member.subject}: {' '.join(member.scopes)}", highlight=False)


@app.command()
def create(
    name: TeamName,
    description: Annotated[str, typer.Option(help="What the team works on.")] = "",
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Create a team (admin)."""
    team = call_access(
        address, token, f"creating team {name}", lambda client: client.create_team(name, description)
    )
    _show(team, json_output)


@app.command("list")
def list_teams(address: Address = None, token: Token = None, json_output: JsonOutput = False) -> None:
    """Your teams (every team with an admin token)."""
    teams = call_access(address, token, "listing teams", lambda client: client.list_teams())
    if json_output:
        print_json([team_json(team) for team in teams])
        return
    table = Table("team", "description", "members")
    for team in teams:
        table.add_row(team.name, team.description, ", ".join(m.subject for m in team.members))
    console.print(table)


@app.command()
def show(
    name: TeamName, address: Address = None, token: Token = None, json_output: JsonOutput = False
) -> None:
    """A team and its members."""
    _show(
        call_access(address, token, f"reading team {name}", lambda client: client.get_team(name)), json_output
    )


@app.command("add-member")
def add_member(
    name: TeamName,
    subject: Annotated[str, typer.Argument(help="Who (user:alice, app:checkout ...), as tokens name them.")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", "-s", help="A scope the member may be given in this team (repeatable)."),
    ],
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Add a member, or change the scopes it may be given in the team (admin)."""
    team = call_access(
        address,
        token,
        f"adding {subject} to team {name}",
        lambda client: client.add_member(name, subject, scope),
    )
    _show(team, json_output)


@app.command("remove-member")
def remove_member(
    name: TeamName,
    subject: Annotated[str, typer.Argument(help="The member to remove.")],
    address: Address = None,
    token: Token = None,
    json_output: JsonOutput = False,
) -> None:
    """Remove a member (admin); revoke its tokens to cut it off at once."""
    team = call_access(
        address,
        token,
        f"removing {subject} from team {name}",
        lambda client: client.remove_member(name, subject),
    )
    _show(team, json_output)
