"""``mlops keys``: the registry's artifact key-encryption keys (docs/security.md).

It runs the registry's own key commands (:mod:`services.registry.keys`) with the registry's
settings from the environment (``REGISTRY_ARTIFACT_KEYS``, ``MLOPS_MONGODB_URI`` ...), so
run it where a registry runs: it talks to the database, not to an API.
"""

from __future__ import annotations

import typer

from services.cli.output import JsonOutput, console, print_json

app = typer.Typer(
    help="Artifact encryption keys: which key wraps how many artifacts, and rotation.", no_args_is_help=True
)


def _run(command: str, json_output: bool) -> None:
    # Imported here: the registry's store (and pymongo) only for this command.
    from services.common.entrypoint import load_settings
    from services.registry.keys import run
    from services.registry.settings import RegistrySettings

    report = run(command, load_settings("mlops keys", RegistrySettings))
    if json_output:
        print_json(report)
        return
    if "rewrapped" in report:
        console.print(f"re-wrapped {report['rewrapped']} data keys under {report['active_key_id']!r}")
    counts = report["artifacts"]
    assert isinstance(counts, dict)
    for key_id, count in counts.items():
        console.print(f"{key_id}: {count} artifacts", highlight=False)


@app.command()
def status(json_output: JsonOutput = False) -> None:
    """How many artifacts each key id wraps ("unencrypted": stored before keys were set)."""
    _run("status", json_output)


@app.command()
def rotate(json_output: JsonOutput = False) -> None:
    """Re-wrap every artifact's data key under REGISTRY_ARTIFACT_KEY_ID (the bytes stay as they
    are). Run it after adding the new key and rolling the registries; then `mlops keys status`
    shows nothing under the old key, which can go."""
    _run("rotate", json_output)
