"""The compose TLS overlay (deploy/docker/compose.tls.yml), rendered by the Compose v2
parser: every service serves and calls with TLS from secret files, every health check and
the serving load balancer speak TLS, and the TLS variables are ones the settings read."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from services.common.settings import PlatformSettings, variable_name
from tests.deploy.conftest import DEPLOYED, REQUIRED_ENV, ROOT, compose_binary

OVERLAY = ROOT / "deploy" / "docker" / "compose.tls.yml"
NGINX_TLS = ROOT / "deploy" / "docker" / "nginx-serving-tls.conf"


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    result = subprocess.run(
        [
            str(compose_binary()),
            "-f",
            str(ROOT / "docker-compose.yml"),
            "-f",
            str(OVERLAY),
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", **REQUIRED_ENV},
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_every_service_serves_tls_from_secret_files(config: dict[str, Any]) -> None:
    known = {variable_name(PlatformSettings, name) for name in PlatformSettings.model_fields}
    for name in DEPLOYED:
        service = config["services"][name]
        environment = service["environment"]
        assert environment["MLOPS_TLS"] == "true", name
        mounted = {secret["target"] for secret in service["secrets"]}
        for variable in ("MLOPS_TLS_CERT_FILE", "MLOPS_TLS_KEY_FILE", "MLOPS_TLS_CA_FILE"):
            assert variable in known
            assert environment[variable] in mounted, (name, variable)
        # What the overlay adds keeps what the base file set (it is merged, not replaced).
        assert "MLOPS_KAFKA_BOOTSTRAP_SERVERS" in environment, name
    assert config["services"]["console"]["environment"]["CONSOLE_INGEST_URL"].startswith("https://")


def test_health_checks_speak_tls(config: dict[str, Any]) -> None:
    for name in DEPLOYED:
        test = config["services"][name]["healthcheck"]["test"]
        kind, target = test[4], test[5]
        if kind == "http":
            assert target.startswith("https://"), (name, target)
        else:
            # The gRPC probe reads MLOPS_TLS and MLOPS_TLS_CA_FILE from the service's environment.
            assert kind == "grpc" and config["services"][name]["environment"]["MLOPS_TLS"] == "true"


def test_the_serving_load_balancer_terminates_and_originates_tls(config: dict[str, Any]) -> None:
    lb = config["services"]["serving-lb"]
    assert [v["source"] for v in lb["volumes"]] == [str(NGINX_TLS)]
    nginx = NGINX_TLS.read_text()
    for line in (
        "listen 8001 ssl;",
        "listen 8000 ssl;",
        "grpc_pass grpcs://serving_grpc;",
        "proxy_pass https://serving_http;",
        "grpc_ssl_verify on;",
        "proxy_ssl_verify on;",
        "ssl_certificate /run/secrets/tls_cert;",
    ):
        assert line in nginx
    assert {s["target"] for s in lb["secrets"]} == {
        "/run/secrets/tls_cert",
        "/run/secrets/tls_key",
        "/run/secrets/tls_ca",
    }


def test_artifacts_are_encrypted_in_every_compose_deployment(config: dict[str, Any]) -> None:
    assert (
        config["services"]["registry"]["environment"]["REGISTRY_ARTIFACT_KEYS"]
        == REQUIRED_ENV["REGISTRY_ARTIFACT_KEYS"]
    )
