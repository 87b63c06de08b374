"""``mlops models``: Models in the registry: versions, aliases, approvals, lineage, artifacts."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Models in the registry: versions, aliases, approvals, lineage, artifacts.", no_args_is_help=True
)
