"""``mlops``: run the local stack, the demo, and manage models, datasets and drift.

Each command group lives in its own module; this file only assembles them.
"""

from __future__ import annotations

import typer

from services.cli import (
    batch,
    config_reference,
    datasets,
    demo,
    drift,
    federation,
    keys,
    lifecycle,
    model_changes,
    model_reviews,
    model_specs,
    models,
    predict,
    probe,
    produce,
    runs,
    teams,
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
# `mlops models`, from the modules that hold it, in the order its help lists them. Training
# sits with the model it makes a version of, next to `models spec` and `models show`.
for name, command in (
    ("register", model_changes.register),
    ("update", model_changes.update),
    ("list", models.list_models),
    ("show", models.show),
    ("create-version", model_changes.create_version),
    ("import-mlflow", model_changes.import_mlflow),
    ("get", models.get),
    ("search", models.search),
    ("download", models.download),
    ("lineage", models.lineage),
    ("set-alias", model_changes.set_alias),
    ("delete-alias", model_changes.delete_alias),
    ("transition", model_changes.transition),
    ("rollback", model_changes.rollback),
    ("history", model_changes.history),
    ("approve", model_reviews.approve),
    ("reject", model_reviews.reject),
    ("archive", model_changes.archive),
    ("audit", model_reviews.audit),
    ("train", train.train),
):
    models.app.command(name)(command)
models.app.add_typer(model_specs.app, name="spec")
app.add_typer(models.app, name="models")
app.add_typer(runs.app, name="runs")
app.add_typer(datasets.app, name="datasets")
app.add_typer(batch.app, name="batch")
app.add_typer(drift.app, name="drift")
app.add_typer(federation.app, name="federation")
app.add_typer(teams.app, name="teams", rich_help_panel="Operations")
app.add_typer(token.app, name="token", rich_help_panel="Operations")
app.add_typer(keys.app, name="keys", rich_help_panel="Operations")
app.add_typer(probe.app, name="probe", rich_help_panel="Operations")
app.add_typer(config_reference.app, name="config", rich_help_panel="Operations")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
