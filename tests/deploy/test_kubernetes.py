"""The Kustomize base and production overlay, rendered by ``kubectl kustomize`` and
validated against the Kubernetes schemas, then checked against the settings classes."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from services.cli.stack import SERVICES
from services.cli.stack_state import StackPorts
from services.common.settings import ServiceSettings
from tests.deploy.conftest import (
    CONSOLE,
    DEPLOYED,
    ROOT,
    VENV_BIN,
    render_kustomize,
    service_env_names,
    settings_class,
)
from tests.helpers.keys import KEYS

K8S = ROOT / "deploy" / "k8s"


def by_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


@pytest.mark.parametrize("directory", ["base", "overlays/production"])
def test_rendered_manifests_pass_strict_schema_validation(directory: str, tmp_path: Any) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(render_kustomize(K8S / directory))
    result = subprocess.run(
        [str(VENV_BIN / "kubernetes-validate"), "--strict", "--quiet", str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("service", DEPLOYED)
def test_deployment_is_probed_limited_locked_down_and_configured_as_the_code_reads(
    service: str, production_manifests: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = by_kind(production_manifests, "Deployment")[service]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    spec = SERVICES[service]
    defaults = StackPorts.defaults()
    http_port = getattr(defaults, spec.http_port)

    # Native gRPC probes where the service speaks gRPC, the HTTP health routes otherwise.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if spec.health == "grpc":
            assert container[probe]["grpc"]["port"] == getattr(defaults, spec.grpc_port or ""), probe
        else:
            assert container[probe]["httpGet"]["port"] == "http", probe
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == http_port
    if spec.grpc_port:
        assert ports["grpc"] == getattr(defaults, spec.grpc_port)

    assert (
        set(container["resources"]["requests"]) == set(container["resources"]["limits"]) == {"cpu", "memory"}
    )
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["automountServiceAccountToken"] is False
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert container["workingDir"] == "/tmp"  # relative writes must not hit the read-only root

    # Settings come from the shared ConfigMap, the Secret, and the service's own env; the
    # token-signing key and the artifact keys from Secrets only the registry reads. The
    # console gets its own Secret (its session key), never the platform's.
    secrets = {"mlops-console"} if service == CONSOLE else {"mlops-secrets"}
    secrets |= {"mlops-registry-signing", "mlops-registry-keys"} if service == "registry" else set()
    sources = [(next(iter(ref)), next(iter(ref.values()))["name"]) for ref in container["envFrom"]]
    assert sorted(sources) == sorted(
        [("configMapRef", "mlops-platform"), *(("secretRef", s) for s in secrets)]
    )
    cls = settings_class(service)
    known = service_env_names(cls)
    config = by_kind(production_manifests, "ConfigMap")["mlops-platform"]["data"]
    own = {e["name"]: e["value"] for e in container["env"]}
    # The shared ConfigMap's back-end settings (the database's name) are not the console's.
    ignored = set() if issubclass(cls, ServiceSettings) else set(service_env_names(ServiceSettings))
    unknown = (
        (set(own) | set(config)) - set(known) - ignored - {"OTEL_EXPORTER_OTLP_ENDPOINT", "OMP_NUM_THREADS"}
    )
    assert not unknown, f"{service}: manifests set variables its settings do not read: {unknown}"
    for name in list(known):
        monkeypatch.delenv(name, raising=False)
    for name, value in {**config, **own}.items():
        monkeypatch.setenv(name, value)
    if issubclass(cls, ServiceSettings):
        monkeypatch.setenv("MLOPS_AUTH_PUBLIC_KEYS", KEYS.public_keys)  # from the Secret at run time
    settings = cls()
    assert settings.http_port == http_port  # type: ignore[attr-defined]
    assert settings.host == "0.0.0.0"  # type: ignore[attr-defined]


def test_serving_scales_on_cpu_and_keeps_a_replica_through_disruptions(
    production_manifests: list[dict[str, Any]],
) -> None:
    hpa = by_kind(production_manifests, "HorizontalPodAutoscaler")["serving"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "serving"}
    assert hpa["spec"]["minReplicas"] >= 2
    assert "replicas" not in by_kind(production_manifests, "Deployment")["serving"]["spec"]
    assert by_kind(production_manifests, "PodDisruptionBudget")["serving"]["spec"]["minAvailable"] == 1


def test_ingress_is_denied_by_default_and_opened_per_service(
    production_manifests: list[dict[str, Any]],
) -> None:
    policies = by_kind(production_manifests, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    covered = set()
    for policy in policies.values():
        selector = policy["spec"]["podSelector"]
        covered |= {selector.get("matchLabels", {}).get("app.kubernetes.io/name")}
        for expression in selector.get("matchExpressions", []):
            covered |= set(expression["values"])
    assert set(DEPLOYED) <= covered


def test_kafka_and_mongodb_are_external_and_secrets_are_only_referenced(
    production_manifests: list[dict[str, Any]],
) -> None:
    services = by_kind(production_manifests, "Service")
    assert services["kafka"]["spec"]["externalName"].endswith(".svc.cluster.local")
    assert services["mongodb"]["spec"]["externalName"].endswith(".svc.cluster.local")
    assert "Secret" not in {m["kind"] for m in production_manifests}
    namespace = by_kind(production_manifests, "Namespace")["mlops"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_topic_partitions_match_the_monitor(production_manifests: list[dict[str, Any]]) -> None:
    job = by_kind(production_manifests, "Job")["topic-init"]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    monitor = by_kind(production_manifests, "Deployment")["monitor"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    env = {e["name"]: e["value"] for e in monitor["env"]}
    assert env["MONITOR_PARTITIONS"] == args[args.index("--partitions") + 1]
    assert args[args.index("--replication-factor") + 1] == "3"


def test_the_console_asks_every_monitor_pod(production_manifests: list[dict[str, Any]]) -> None:
    """Each monitor pod watches a share of the models: the console's monitor address is a
    headless Service, which DNS answers with every pod, and the monitors let it in."""
    console = by_kind(production_manifests, "Deployment")[CONSOLE]["spec"]["template"]["spec"]["containers"][
        0
    ]
    env = {e["name"]: e["value"] for e in console["env"]}
    assert env["CONSOLE_MONITOR_URLS"] == '["http://monitor-processes:8082"]'
    headless = by_kind(production_manifests, "Service")["monitor-processes"]["spec"]
    assert headless["clusterIP"] == "None" and headless["selector"] == {"app.kubernetes.io/name": "monitor"}
    policy = by_kind(production_manifests, "NetworkPolicy")["monitor-from-console"]["spec"]
    assert policy["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "console"}}}
    ]
