"""``mlops demo``: the closed loop, end to end."""

from __future__ import annotations

import typer


def demo() -> None:
    """Run the closed loop on the local stack: train, serve, drift, retrain, swap."""
    typer.echo("not yet")
    raise typer.Exit(1)
