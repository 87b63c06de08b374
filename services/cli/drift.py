"""``mlops drift``: Drift detection and live model quality."""

from __future__ import annotations

import typer

app = typer.Typer(help="Drift detection and live model quality.", no_args_is_help=True)
