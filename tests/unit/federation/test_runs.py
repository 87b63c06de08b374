"""A run's files and Flower's command lines, which the CLI and the service share."""

from __future__ import annotations

import doctest
import json
import tomllib
from pathlib import Path

import numpy as np

from services.federation import runtime
from services.federation.status import (
    Round,
    RunInputs,
    RunRecorder,
    RunStatus,
    Site,
    read_receipts,
    read_status,
)


def test_doctests() -> None:
    assert doctest.testmod(runtime).failed == 0


def test_status_survives_a_round_trip_and_receipts_append(tmp_path: Path) -> None:
    recorder = RunRecorder(tmp_path, RunStatus(model_name="m", rounds_planned=2))
    recorder.status.sites["7"] = Site(name="a", train_rows=10)
    recorder.status.rounds.append(Round(1, asked=["a"], refused={"a": "array 0 holds 1 NaN"}))
    recorder.save()
    recorder.receipt({"site": "a", "type": "train", "arrays": {"p": {"0": [[1, 3], "float64"]}}})
    recorder.receipt({"site": "a", "type": "evaluate"})
    found = read_status(tmp_path)
    assert found == recorder.status
    assert [r["type"] for r in read_receipts(tmp_path)] == ["train", "evaluate"]
    assert not list(tmp_path.glob(".status.json.*"))  # no temporary file left behind
    assert read_status(tmp_path / "nothing") is None


def test_run_inputs_keep_the_parents_arrays_exactly(tmp_path: Path) -> None:
    arrays = [np.arange(6.0).reshape(2, 3), np.array([0.5, -0.5])]
    RunInputs('{"model_name": "m"}', arrays, parent_version=3).write(tmp_path)
    read = RunInputs.read(tmp_path)
    assert read.parent_version == 3 and read.spec_json == '{"model_name": "m"}'
    assert read.initial is not None
    assert all(np.array_equal(a, b) for a, b in zip(read.initial, arrays, strict=True))
    RunInputs("{}").write(tmp_path / "fresh")
    assert RunInputs.read(tmp_path / "fresh").initial is None


def test_the_app_manifest_carries_no_code_and_names_the_installed_apps(tmp_path: Path) -> None:
    runtime.write_app(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["pyproject.toml"]
    manifest = tomllib.loads((tmp_path / "pyproject.toml").read_text())
    assert manifest["tool"]["flwr"]["app"]["components"] == {
        "serverapp": "services.federation.server_app:app",
        "clientapp": "services.federation.site.client_app:app",
    }
    assert manifest["tool"]["flwr"]["app"]["config"] == {runtime.RUN_DIR_KEY: ""}


def test_flower_processes_run_without_telemetry_and_with_tls_unless_told(tmp_path: Path) -> None:
    flower = runtime.Flower(tmp_path / "bin")
    env = flower.env(tmp_path / "home")
    assert env["FLWR_TELEMETRY_ENABLED"] == "0" and env["PATH"].startswith(str(tmp_path / "bin"))
    certificates = runtime.Certificates(tmp_path / "ca.pem", tmp_path / "s.pem", tmp_path / "s.key")
    secure = flower.superlink("127.0.0.1", 9, certificates)
    assert "--insecure" not in secure and "--disable-runtime-dependency-installation" in secure
    assert "--insecure" in flower.superlink("127.0.0.1", 9, None)
    node = flower.supernode("h:1", 2, {"site": "a"}, tmp_path / "ca.pem")
    assert node[node.index("--root-certificates") + 1] == str(tmp_path / "ca.pem")
    runtime.write_connection(tmp_path / "home", "127.0.0.1:9", tmp_path / "ca.pem")
    connection = tomllib.loads((tmp_path / "home" / "config.toml").read_text())["superlink"]
    assert connection["default"] == runtime.FLOWER_CONNECTION
    assert connection[runtime.FLOWER_CONNECTION]["root-certificates"] == str(tmp_path / "ca.pem")
    assert json.dumps(connection).count("insecure") == 0
