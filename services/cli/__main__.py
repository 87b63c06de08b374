"""``mlops``: run the local stack, the demo, and manage models, datasets and drift.

Each command group lives in its own module; this file only assembles them.
"""

from __future__ import annotations

import typer

from services.cli import datasets, demo, drift, models

app = typer.Typer(
    name="mlops",
    help="Operate the MLOps platform: the local stack, the closed-loop demo, models, datasets and drift.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.add_typer(models.app, name="models")
app.add_typer(datasets.app, name="datasets")
app.add_typer(drift.app, name="drift")
app.command("demo")(demo.demo)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
