"""``mlops models`` as an operator runs it: a separate process, the address and token from
the environment, JSON for scripts, exit codes that say what happened."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from services.common.artifacts import sha256_hex
from services.common.auth import Scope
from services.common.clients.registry import RegistryClient
from services.registry.app import RegistryApp
from tests.conftest import Infra
from tests.helpers.artifacts import model_bytes, random_artifact
from tests.helpers.cli import Cli
from tests.integration.registry.helpers import metadata


async def test_an_operator_session(
    registry_app: RegistryApp, infra: Infra, admin: RegistryClient, model_name: str, tmp_path: Path
) -> None:
    cli = Cli(f"127.0.0.1:{registry_app.grpc_port}", infra.token(Scope.ADMIN, subject="operator"), tmp_path)
    registered = await cli.json("register", model_name, "--policy", "manual", "--tag", "team=ops")
    assert registered["promotion_policy"] == "PROMOTION_POLICY_MANUAL"
    code, _, err = await cli("register", model_name)
    assert code == 1 and "ALREADY_EXISTS" in err

    # Versions from the trainer (another subject), through the API.
    for payload in (model_bytes("first"), model_bytes("second")):
        await admin.create_version(metadata(model_name, payload), payload)
    artifact_file = tmp_path / "model.skops"
    artifact_file.write_bytes(random_artifact(70_000))
    made = await cli.json("create-version", model_name, str(artifact_file), "--metric", "accuracy=0.91")
    assert (made["version"], made["status"]) == (3, "VERSION_STATUS_PENDING_APPROVAL")

    approved = await cli.json("approve", model_name, "1", "--comment", "holdout and slices fine")
    assert approved["aliases"] == ["production"]
    code, _, err = await cli("approve", model_name, "3")
    assert code == 4 and "four-eyes" in err
    await cli.json("reject", model_name, "2", "--comment", "regresses on segment B")
    code, _, err = await cli("set-alias", model_name, "staging", "1", "--expect", "2")
    assert code == 1 and "ABORTED" in err
    staged = await cli.json("transition", model_name, "1", "staging")
    assert staged["aliases"] == {"production": 1, "staging": 1, "candidate": 3}

    found = await cli.json("search", "--model", model_name, "--metric", "accuracy>=0.9")
    assert [v["version"] for v in found] == [3, 2, 1]
    lineage = await cli.json("lineage", model_name, "--version", "1")
    assert lineage["version"]["lineage"]["data"]["window"]["dataset"] == "demo"

    output = tmp_path / "downloaded.skops"
    code, out, err = await cli("download", model_name, "--version", "3", "--output", str(output))
    assert code == 0, err
    assert output.read_bytes() == artifact_file.read_bytes()
    assert sha256_hex(output.read_bytes()) in out
    code, _, err = await cli("download", model_name, "--version", "3", "--output", str(output))
    assert code == 2 and "exists" in err

    records = await cli.json("audit", "--model", model_name, "--actor", "operator")
    actions = [(r["action"], r["outcome"]) for r in records]
    assert ("ApproveVersion", "ok") in actions and ("SetAlias", "aborted") in actions
    assert ("ApproveVersion", "denied") in actions  # the four-eyes refusal


async def test_exit_codes_say_what_went_wrong(
    registry_app: RegistryApp, infra: Infra, model_name: str, tmp_path: Path
) -> None:
    cli = Cli(f"127.0.0.1:{registry_app.grpc_port}", infra.token(Scope.READ, subject="viewer"), tmp_path)
    outcomes = [
        await cli("get", model_name, "--version", "1"),
        await cli("register", model_name),
        await cli("list", token="garbage"),
        await cli("get", "bad/name", "--version", "1"),
        await cli("search", "--metric", "accuracy~1"),
        await Cli("127.0.0.1:1", infra.token(Scope.READ), tmp_path)("list"),
    ]
    assert [code for code, _, _ in outcomes] == [5, 4, 4, 2, 2, 3], [err for _, _, err in outcomes]


async def test_the_console_script_runs_as_its_own_process(
    registry_app: RegistryApp, infra: Infra, admin: RegistryClient, model_name: str, tmp_path: Path
) -> None:
    await admin.create_model(model_name, tags={"team": "ops"})
    env = {
        **os.environ,
        "MLOPS_REGISTRY_ADDRESS": f"127.0.0.1:{registry_app.grpc_port}",
        "MLOPS_TOKEN": infra.token(Scope.READ),
        "MLOPS_STACK_DIR": str(tmp_path),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "models",
        "list",
        "--tag",
        "team=ops",
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert model_name in [m["name"] for m in json.loads(out)]
