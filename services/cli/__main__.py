"""``mlops``: run the local stack, the demo, and manage models, datasets and drift.

Each command group lives in its own module; this file only assembles them.
"""

from __future__ import annotations

import typer

from services.cli import (
    config_reference,
    datasets,
    demo,
    drift,
    federation,
    lifecycle,
    models,
    predict,
    probe,
    produce,
    token,
    topics,
    train,
)
from services.cli.output import EXIT_CODES_HELP

app = typer.Typer(
    name="mlops",
    help="Operate the MLOps platform: the local stack, the closed-loop demo, models, datasets and drift.\n\n"
    "Commands find the platform through MLOPS_* variables (MLOPS_TOKEN, addresses), else the local "
    "stack `mlops up` runs, else the default ports.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    rich_markup_mode="rich",
)
app.command("up", rich_help_panel="Local stack")(lifecycle.up)
app.command("down", rich_help_panel="Local stack")(lifecycle.down)
app.command("status", rich_help_panel="Local stack")(lifecycle.status)
app.command("demo", rich_help_panel="Local stack")(demo.demo)
app.command("produce", rich_help_panel="Data and predictions")(produce.produce)
app.command("predict", rich_help_panel="Data and predictions")(predict.predict)
app.add_typer(topics.app, name="topics", rich_help_panel="Data and predictions")
# Training sits with the model it makes a version of, next to `models spec` and `models show`.
models.app.command("train")(train.train)
app.add_typer(models.app, name="models")
app.add_typer(datasets.app, name="datasets")
app.add_typer(drift.app, name="drift")
app.add_typer(federation.app, name="federation")
app.add_typer(token.app, name="token", rich_help_panel="Operations")
app.add_typer(probe.app, name="probe", rich_help_panel="Operations")
app.add_typer(config_reference.app, name="config", rich_help_panel="Operations")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
