"""``mlops federation``: what it refuses before starting anything, and a run's status."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from services.cli.__main__ import app as mlops
from services.federation.status import Round, RunRecorder, RunStatus, Site

runner = CliRunner()


def run_directory(workdir: Path) -> Path:
    directory = workdir / "runs" / "20260101T000000Z-first"
    status = RunStatus(model_name="clinics", state="finished", strategy="fedavg", epsilon=3.5, delta=1e-5)
    status.sites = {
        "1": Site("north", train_rows=10),
        "2": Site("south", refused="the file has no column(s) age"),
    }
    status.rounds = [Round(1, asked=["north", "west"], aggregated=["north"], dropped=["west"], applied=True)]
    status.rounds[0].refused = {"east": "array 0 holds 3 NaN or infinite value(s)"}
    RunRecorder(directory, status)
    return directory


def test_status_shows_the_latest_runs_rounds_sites_and_refusals(tmp_path: Path) -> None:
    run_directory(tmp_path)
    result = runner.invoke(mlops, ["federation", "status", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for text in (
        "clinics: finished",
        "epsilon 3.50",
        "north",
        "the file has no column(s) age",
        "east: array 0",
    ):
        assert text in result.output
    result = runner.invoke(mlops, ["federation", "status", "--workdir", str(tmp_path), "--json"])
    report = json.loads(result.output)
    assert report["rounds"][0]["dropped"] == ["west"] and report["run_dir"].endswith("first")


def test_status_without_runs_is_not_found(tmp_path: Path) -> None:
    result = runner.invoke(mlops, ["federation", "status", "--workdir", str(tmp_path)])
    assert result.exit_code == 5 and "no federation run" in result.output


def test_start_refuses_to_run_without_tls_unless_told(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("model_name: m\nfeatures: [a]\ntarget: y\nclasses: ['0', '1']\n")
    result = runner.invoke(mlops, ["federation", "start", "--spec", str(spec)])
    assert result.exit_code == 2 and "--certificates" in result.output


def test_a_missing_federation_environment_names_the_fix(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("model_name: m\nfeatures: [a]\ntarget: y\nclasses: ['0', '1']\n")
    result = runner.invoke(
        mlops,
        [
            "federation",
            "start",
            "--spec",
            str(spec),
            "--insecure",
            "--token",
            "t",
            "--registry-url",
            "http://x",
        ],
        env={
            "MLOPS_FEDERATION_PYTHON": str(tmp_path / "nowhere" / "python"),
            "MLOPS_STACK_DIR": str(tmp_path),
        },
    )
    assert result.exit_code == 2 and "make federation-venv" in " ".join(result.output.split())
