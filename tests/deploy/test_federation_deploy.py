"""The federation's deployment: its compose profile, its image stage and its Kustomize
component, rendered by the real tools and checked against its settings class."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.federation.settings import FederationSettings
from tests.deploy.conftest import REQUIRED_ENV, ROOT, VENV_BIN, kubectl, run_compose, service_env_names
from tests.deploy.test_compose import dockerfile_stages


@pytest.fixture(scope="module")
def federation_service() -> dict[str, Any]:
    result = run_compose("--profile", "federation", "config", "--format", "json", env=REQUIRED_ENV)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout)["services"]["federation"])


def test_compose_runs_it_only_in_its_profile_locked_down_after_the_registry(
    federation_service: dict[str, Any],
) -> None:
    default = json.loads(run_compose("config", "--format", "json", env=REQUIRED_ENV).stdout)
    assert "federation" not in default["services"]
    service = federation_service
    assert service["profiles"] == ["federation"]
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"]
    assert service["depends_on"]["registry"]["condition"] == "service_healthy"
    assert {p["host_ip"] for p in service["ports"]} == {"127.0.0.1"}
    assert {p["target"] for p in service["ports"]} == {8084}
    assert "8084" in " ".join(service["healthcheck"]["test"])


def test_compose_environment_is_what_the_federation_settings_read(
    federation_service: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    environment: dict[str, str] = federation_service["environment"]
    known = service_env_names(FederationSettings)
    assert set(environment) <= set(known), set(environment) - set(known)
    for name in known:
        monkeypatch.delenv(name, raising=False)
    for name, value in {**environment, "FEDERATION_TOKEN": "a-token"}.items():
        monkeypatch.setenv(name, value)
    settings = FederationSettings()  # the container's settings validate (TLS files, no insecure)
    assert settings.port == 8084 and settings.host == "0.0.0.0" and not settings.insecure
    monkeypatch.setenv("FEDERATION_TOKEN", "")
    with pytest.raises(ValueError, match="token"):
        FederationSettings()  # compose's empty default stops it, naming the variable


def test_the_image_stage_installs_the_pinned_environment_and_runs_unprivileged() -> None:
    stages = dockerfile_stages()
    builder, image = "\n".join(stages["federation-builder"]), "\n".join(stages["federation"])
    assert "pip install -r requirements.lock" in builder
    assert "COPY services/federation/requirements.lock" in builder
    assert "USER 10001:10001" in image and "HEALTHCHECK" in image
    assert 'CMD ["python", "-m", "services.federation", "serve"' in image
    assert not re.search(r"apt-get|pip install|gcc", image)
    ignored = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text()
    assert "!protos/" in ignored  # the builder generates the federation's own code from them


def test_the_kustomize_component_renders_valid_and_lets_the_federation_reach_the_registry(
    tmp_path: Path,
) -> None:
    k8s = ROOT / "deploy" / "k8s"
    relative = os.path.relpath(k8s, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [f"{relative}/base"],
                "components": [f"{relative}/components/federation"],
            }
        )
    )
    rendered = subprocess.run(
        [kubectl(), "kustomize", "--load-restrictor=LoadRestrictionsNone", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr
    (tmp_path / "rendered.yaml").write_text(rendered.stdout)
    validated = subprocess.run(
        [str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", str(tmp_path / "rendered.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr
    manifests = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    deployment = next(
        m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"] == "federation"
    )
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert {
        probe: container[probe]["tcpSocket"]["port"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe")
    } == {
        "startupProbe": "fleet",
        "readinessProbe": "fleet",
        "livenessProbe": "fleet",
    }
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    names = {e["name"] for e in container["env"]}
    assert names <= set(service_env_names(FederationSettings))
    registry_policy = next(m for m in manifests if m["metadata"]["name"] == "registry-from-platform")
    allowed = registry_policy["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "federation"}}} in allowed
