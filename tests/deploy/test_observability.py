"""Prometheus configuration (checked by promtool), the alert rules, and the Grafana
dashboard: every query must name metrics and labels the code really exports."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from services.cli.stack import SERVICES
from services.cli.stack_state import StackPorts
from tests.deploy.conftest import DEPLOYED, ROOT

OBSERVABILITY = ROOT / "deploy" / "observability"
DASHBOARD = OBSERVABILITY / "grafana" / "dashboards" / "mlops-platform.json"
METRIC = re.compile(r"\b(mlops_[a-z0-9_]+)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"(mlops_[a-z0-9_]+)\{([^}]*)\}")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found: install Debian's prometheus package (`make observability-tools`)")
    return path


def exported_metrics() -> dict[str, tuple[str, set[str]]]:
    """Every metric the platform's code defines: name -> (type, label names)."""
    found: dict[str, tuple[str, set[str]]] = {}
    for module_name in ["services.common.metrics", *(f"services.{s}.metrics" for s in DEPLOYED)]:
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                name = value._name
                kind = value._type
                assert kind is not None  # every concrete metric class sets it
                if kind == "counter":
                    name += "_total"
                found[name] = (kind, set(value._labelnames))
    return found


def queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every dashboard target, annotation and alert."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    out += [(a["name"], a["expr"]) for a in dashboard["annotations"]["list"]]
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    out += [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]
    return out


def test_prometheus_config_and_rules_pass_promtool() -> None:
    result = subprocess.run(
        [promtool(), "check", "config", str(OBSERVABILITY / "prometheus.yml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout + result.stderr


def test_prometheus_scrapes_every_service_on_its_metrics_port() -> None:
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    defaults = StackPorts.defaults()
    for service in DEPLOYED:
        port = getattr(defaults, SERVICES[service].http_port)
        job = jobs[service]
        if "dns_sd_configs" in job:  # replicas, one target each
            assert job["dns_sd_configs"][0] == {**job["dns_sd_configs"][0], "names": [service], "port": port}
        else:
            assert job["static_configs"][0]["targets"] == [f"{service}:{port}"]


def test_dashboard_covers_what_operators_watch() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["datasource"]["uid"] == "prometheus" for p in panels)
    titles = " | ".join(p["title"].lower() for p in panels)
    for topic in ("latency", "throughput", "error", "drift", "accuracy", "lag", "dead letters"):
        assert topic in titles, topic
    provisioning = yaml.safe_load(
        (OBSERVABILITY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert provisioning["datasources"][0]["uid"] == "prometheus"


@pytest.mark.parametrize("where, expr", queries())
def test_every_query_names_metrics_and_labels_the_code_exports(where: str, expr: str) -> None:
    exported = exported_metrics()
    names = set(METRIC.findall(expr))
    if expr.startswith("up{"):  # Prometheus's own scrape-health series
        return
    assert names, f"{where}: no platform metric in {expr!r}"
    labels_in_use: set[str] = set()
    for group in GROUPING.findall(expr):
        labels_in_use |= {label.strip() for label in group.split(",") if label.strip()}
    for _metric, matchers in MATCHERS.findall(expr):
        labels_in_use |= {m.split("=")[0].strip(" !~") for m in matchers.split(",") if m.strip()}
    available: set[str] = {"le", "job", "instance"}
    for name in names:
        base = name
        if name not in exported and name.endswith(HISTOGRAM_SUFFIXES):
            base = name.rsplit("_", 1)[0]
            assert exported.get(base, ("",))[0] == "histogram", f"{where}: {name} is not a histogram series"
        assert base in exported, f"{where}: {base} is not a metric the platform exports"
        available |= exported[base][1]
    assert labels_in_use <= available, f"{where}: labels {labels_in_use - available} not on {names}"


def test_metric_names_follow_the_conventions() -> None:
    for name, (kind, _) in exported_metrics().items():
        assert name.startswith("mlops_"), name
        if kind == "counter":
            assert name.endswith("_total"), name
        assert not re.search(r"_(ms|milliseconds|kb|mb|percent)(_|$)", name), f"{name}: use base units"
