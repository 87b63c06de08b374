"""The local stack's configuration, without starting anything: ports, the environment each
service gets, start order, secrets, and the state file other commands read."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
from typer.testing import CliRunner

from services.cli.__main__ import app
from services.cli.output import ExitCode
from services.cli.stack import ALL_SERVICES, SERVICES, LocalStack
from services.cli.stack_state import ADMIN_TOKEN_TTL_SECONDS, StackPorts, StackState, running_stack
from services.common.auth import KeySet, Scope, SigningKey, TokenVerifier
from services.common.settings import ServiceSettings
from services.console.settings import ConsoleSettings


def test_default_ports_are_the_documented_ones() -> None:
    assert StackPorts.defaults().as_dict() == {
        "kafka": 9092,
        "mongodb": 27017,
        "registry_grpc": 50051,
        "registry_http": 8080,
        "serving_grpc": 8001,
        "serving_http": 8000,
        "ingest_grpc": 50052,
        "ingest_http": 8081,
        "monitor_http": 8082,
        "trainer_http": 8083,
        "console_http": 8090,
    }


def test_free_ports_are_distinct_and_unprivileged() -> None:
    ports = list(StackPorts.free().as_dict().values())
    assert len(set(ports)) == len(ports)
    assert all(1024 < p < 65536 for p in ports)


def test_replacing_an_unknown_port_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="serving_grpc"):
        StackPorts.defaults().replace({"servng_grpc": 1})
    assert StackPorts.defaults().replace({"serving_grpc": 9001}).serving_grpc == 9001


def test_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown service"):
        LocalStack(Path("/nonexistent"), StackPorts.defaults(), services=["serving", "sevring"])


def test_each_service_gets_its_ports_and_the_platform_settings(tmp_path: Path) -> None:
    ports = StackPorts.free()
    stack = LocalStack(tmp_path, ports, topic_prefix="demo")
    serving = stack.env_for("serving")
    assert serving["SERVING_GRPC_PORT"] == str(ports.serving_grpc)
    assert serving["SERVING_HTTP_PORT"] == str(ports.serving_http)
    assert serving["SERVING_HOST"] == "127.0.0.1"
    assert serving["MLOPS_REGISTRY_ADDRESS"] == f"127.0.0.1:{ports.registry_grpc}"
    assert serving["MLOPS_DATASETS_ADDRESS"] == f"127.0.0.1:{ports.ingest_grpc}"
    assert serving["MLOPS_KAFKA_BOOTSTRAP_SERVERS"] == f"127.0.0.1:{ports.kafka}"
    assert serving["MLOPS_TOPIC_PREFIX"] == "demo"
    monitor = stack.env_for("monitor")
    assert "MONITOR_GRPC_PORT" not in monitor
    assert monitor["MONITOR_HTTP_PORT"] == str(ports.monitor_http)
    # What the stack passes is what the platform settings read.
    settings = ServiceSettings.model_validate(serving)
    assert settings.public_keys.kids() == sorted([stack.keys.issuer.kid, stack.keys.service.kid])
    assert settings.service_signing_key().private_pem() == stack.keys.service.private_pem()  # type: ignore[union-attr]
    registry = stack.env_for("registry")
    assert "MLOPS_SERVICE_KEY" not in registry, "the registry signs with its own key only"
    assert SigningKey.from_pem(registry["REGISTRY_SIGNING_KEY"]).kid == stack.keys.issuer.kid
    assert settings.kafka_bootstrap_servers == stack.kafka_bootstrap


def test_the_console_gets_the_apis_it_calls_and_no_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = StackPorts.free()
    env = LocalStack(tmp_path, ports).env_for("console")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = ConsoleSettings()
    assert settings.http_port == ports.console_http
    assert settings.registry_address == f"127.0.0.1:{ports.registry_grpc}"
    assert settings.monitor_urls == [f"http://127.0.0.1:{ports.monitor_http}"]
    assert settings.ingest_url == f"http://127.0.0.1:{ports.ingest_http}"
    assert settings.session_key is not None
    # It acts with each person's token: it holds nothing that could mint or bypass one.
    held = {"MLOPS_SERVICE_KEY", "REGISTRY_SIGNING_KEY", "MLOPS_ARTIFACT_SIGNING_KEY", "MLOPS_MONGODB_URI"}
    assert not held & set(env)
    assert "MLOPS_SERVICE_KEY" in LocalStack(tmp_path, ports).env_for("monitor"), "unlike the back end"
    again = LocalStack(tmp_path, ports).env_for("console")
    assert again["CONSOLE_SESSION_KEY"] == env["CONSOLE_SESSION_KEY"]  # sessions survive a restart


def test_extra_environment_wins_over_the_stacks(tmp_path: Path) -> None:
    stack = LocalStack(
        tmp_path, StackPorts.defaults(), env={"MLOPS_LOG_LEVEL": "DEBUG", "SERVING_HOST": "::1"}
    )
    assert stack.env_for("serving")["MLOPS_LOG_LEVEL"] == "DEBUG"
    assert stack.env_for("serving")["SERVING_HOST"] == "::1"


def test_keys_are_random_per_stack_and_the_admin_token_verifies_and_expires(tmp_path: Path) -> None:
    one = LocalStack(tmp_path, StackPorts.defaults())
    two = LocalStack(tmp_path, StackPorts.defaults())
    assert one.keys.issuer.kid != two.keys.issuer.kid
    assert one.artifact_signing_key != two.artifact_signing_key
    assert len(one.artifact_signing_key) >= 32
    principal = asyncio.run(
        TokenVerifier(KeySet.from_json(one.keys.public_keys)).verify(f"Bearer {one.admin_token}")
    )
    assert principal.allows(Scope.ADMIN)
    assert principal.expires_at is not None and principal.expires_at - time.time() <= ADMIN_TOKEN_TTL_SECONDS


def test_the_cli_mints_a_new_admin_token_from_the_stack_key_when_the_saved_one_expires(
    tmp_path: Path,
) -> None:
    stack = LocalStack(tmp_path, StackPorts.defaults(), admin_token_ttl=600)
    state = stack.state()
    assert state.admin_token() == state.token, "a token with time left is reused"
    later = time.time() + 590
    renewed = state.admin_token(now=later)
    assert renewed != state.token
    key = KeySet.from_json(state.public_keys).get(stack.keys.issuer.kid)
    assert key is not None
    claims = jwt.decode(renewed, key, algorithms=["EdDSA"], options={"verify_iat": False})
    assert claims["sub"] == "local-admin" and claims["scope"] == "admin"
    assert claims["exp"] == pytest.approx(later + 3600, abs=2)


def test_services_start_after_the_ones_they_call(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, StackPorts.defaults())
    tiers = list(stack._tiers())
    position = {service: i for i, tier in enumerate(tiers) for service in tier}
    assert sorted(position) == sorted(ALL_SERVICES)
    for service, spec in SERVICES.items():
        for dependency in spec.after:
            assert position[dependency] < position[service], (service, dependency)
    # A subset runs without waiting for services it does not include.
    assert list(LocalStack(tmp_path, StackPorts.defaults(), services=["serving"])._tiers()) == [["serving"]]


def test_state_file_is_private_and_round_trips(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, StackPorts.free())
    state = stack.state()
    path = tmp_path / "stack.json"
    state.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert StackState.load(path) == state
    assert running_stack(tmp_path) == state  # this process is the "supervisor"


def test_a_state_file_left_by_a_dead_supervisor_is_not_a_running_stack(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(finished.stdout)
    LocalStack(tmp_path, StackPorts.free()).state(supervisor_pid=dead_pid).save(tmp_path / "stack.json")
    assert running_stack(tmp_path) is None
    (tmp_path / "stack.json").write_text("{not json")
    assert running_stack(tmp_path) is None


runner = CliRunner()


@pytest.mark.parametrize(
    "args, message",
    [
        (["up", "--port", "serving_grpc"], "NAME=PORT"),
        (["up", "--port", "serving_grpc=99999"], "NAME=PORT"),
        (["up", "--port", "servng_grpc=9001"], "serving_grpc"),
        (["up", "--services", "registry,sevring"], "sevring"),
        (["status", "--port", "kafka=x"], "NAME=PORT"),
    ],
)
def test_bad_arguments_exit_2_naming_the_problem(args: list[str], message: str, tmp_path: Path) -> None:
    result = runner.invoke(app, [*args, "--workdir", str(tmp_path)])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert message in result.output


def test_down_with_nothing_running_is_not_an_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["down", "--workdir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    assert '"stopped": false' in result.output


def test_up_refuses_to_start_a_second_stack_in_the_same_directory(tmp_path: Path) -> None:
    LocalStack(tmp_path, StackPorts.free()).state(supervisor_pid=os.getpid()).save(tmp_path / "stack.json")
    result = runner.invoke(app, ["up", "--workdir", str(tmp_path)])
    assert result.exit_code == ExitCode.FAILED
    assert "already running" in result.output


def test_only_ingest_gets_the_pseudonymization_key_and_it_survives_restarts(tmp_path: Path) -> None:
    first = LocalStack(tmp_path, StackPorts.defaults())
    key = first.env_for("ingest")["INGEST_PSEUDONYMIZATION_KEY"]
    assert len(key) >= 32
    assert stat.S_IMODE((tmp_path / "pseudonymization.key").stat().st_mode) == 0o600
    assert all("INGEST_PSEUDONYMIZATION_KEY" not in first.env_for(s) for s in ALL_SERVICES if s != "ingest")
    assert LocalStack(tmp_path, StackPorts.defaults()).env_for("ingest")["INGEST_PSEUDONYMIZATION_KEY"] == key


def test_a_reused_pid_is_not_taken_for_the_stack(tmp_path: Path) -> None:
    state = LocalStack(tmp_path, StackPorts.free()).state()
    assert state.pid_started > 0
    dataclasses.replace(state, pid_started=state.pid_started - 1).save(tmp_path / "stack.json")
    assert running_stack(tmp_path) is None  # same pid, another process's start time
