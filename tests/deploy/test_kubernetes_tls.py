"""The Kubernetes TLS component (deploy/k8s/components/tls) in the production-tls overlay,
rendered by ``kubectl kustomize`` and schema-validated: every service mounts the
cert-manager certificate, reads the TLS settings, and is probed over TLS."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.settings import PlatformSettings, variable_name
from tests.deploy.conftest import DEPLOYED, ROOT, VENV_BIN, render_kustomize

OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "production-tls"
GRPC = {"registry": "50051", "ingest": "50052", "serving": "8001"}


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    return [m for m in yaml.safe_load_all(render_kustomize(OVERLAY)) if m]


def named(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def test_the_overlay_passes_strict_schema_validation(manifests: list[dict[str, Any]], tmp_path: Path) -> None:
    # cert-manager's Certificate is a custom resource the validator has no schema for.
    core = [m for m in manifests if m["kind"] != "Certificate"]
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(core))
    result = subprocess.run(
        [str(VENV_BIN / "kubernetes-validate"), "--strict", str(rendered)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_mounts_the_certificate_and_is_probed_over_tls(manifests: list[dict[str, Any]]) -> None:
    config = named(manifests, "ConfigMap")["mlops-platform"]["data"]
    known = {variable_name(PlatformSettings, n) for n in PlatformSettings.model_fields}
    tls_variables = {k: v for k, v in config.items() if k.startswith("MLOPS_TLS")}
    assert set(tls_variables) <= known and config["MLOPS_TLS"] == "true"
    deployments = named(manifests, "Deployment")
    for name in DEPLOYED:
        pod = deployments[name]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["tls"]["secret"]["secretName"] == "mlops-tls"
        mount = next(m for m in container["volumeMounts"] if m["name"] == "tls")
        for variable in ("MLOPS_TLS_CERT_FILE", "MLOPS_TLS_KEY_FILE", "MLOPS_TLS_CA_FILE"):
            assert config[variable].startswith(mount["mountPath"] + "/")
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]
            if name in GRPC:
                assert "grpc" not in probe
                assert probe["exec"]["command"][-1] == f"127.0.0.1:{GRPC[name]}", (name, kind)
            else:
                assert probe["httpGet"]["scheme"] == "HTTPS", (name, kind)
    console_env = {
        e["name"]: e.get("value")
        for e in deployments["console"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert console_env["CONSOLE_INGEST_URL"].startswith("https://")
    assert "https://" in console_env["CONSOLE_MONITOR_URLS"]


def test_the_certificate_names_every_service(manifests: list[dict[str, Any]]) -> None:
    certificate = named(manifests, "Certificate")["mlops-tls"]["spec"]
    assert certificate["secretName"] == "mlops-tls"
    names = set(certificate["dnsNames"])
    for service in named(manifests, "Service"):
        if service not in ("kafka", "mongodb"):
            assert service in names, service


def test_only_the_registry_holds_the_artifact_keys(manifests: list[dict[str, Any]]) -> None:
    for name, deployment in named(manifests, "Deployment").items():
        sources = deployment["spec"]["template"]["spec"]["containers"][0].get("envFrom", [])
        holds = {"secretRef": {"name": "mlops-registry-keys"}} in sources
        assert holds == (name == "registry"), name
