"""``mlops datasets``: Dataset schemas and stored training data."""

from __future__ import annotations

import typer

app = typer.Typer(help="Dataset schemas and stored training data.", no_args_is_help=True)
