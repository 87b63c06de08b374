"""What the registry stores with a federated version. No I/O.

The global model is a scikit-learn estimator saved with skops, with the signature
serving enforces (one ``features`` FP64 matrix in the spec's feature order; the class
probabilities and label out), so serving and the monitor treat it like any other version.
Its record names how it was made and nothing about any row:

- **gates**, computed from the sites' own evaluations: the metric floor, and the
  comparison with the production version scored by the same sites on the same rows;
  the registry's promotion policy acts on them as on the trainer's;
- **lineage**: the spec's dataset name, the rows trained on (a total), the parent
  version, the request and trigger (``federated``, ``drift`` ...), packages, code;
- **params**: sites, rounds, strategy, secure aggregation, privacy mechanism and budget;
- **metrics**: accuracy (overall, per site, holdout), epsilon and delta;
- the platform **spec**, whose ``training`` is ``TRAINING_FEDERATED``, so a drift's
  retrain request comes back to the federation rather than to the trainer.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import skops.io as sio

from services.federation import protocol
from services.federation.model import Arrays
from services.federation.privacy import ACCOUNTANT
from services.federation.spec import FederationSpec
from services.federation.status import RunStatus

RECORDED_PACKAGES = ("flwr", "scikit-learn", "numpy", "skops", "dp-accounting")
TRAINING_FEDERATED = "TRAINING_FEDERATED"


@dataclass(frozen=True)
class Trigger:
    """Why a run happened, for lineage and for the train result it answers."""

    request_id: str
    kind: str = "federated"
    """``federated`` (started by an operator), ``drift``, ``manual`` ... as the request said."""
    drift_event_id: str = ""
    idempotency_key: str = ""


def artifact(spec: FederationSpec, parameters: Arrays) -> tuple[bytes, Any]:
    """The global model as skops bytes (and the estimator they hold)."""
    estimator = protocol.architecture(spec).estimator(parameters)
    return bytes(sio.dumps(estimator)), estimator


def gate_metric(evaluation: dict[str, Any]) -> tuple[str, float | None]:
    """What the gates judge: the holdout sites' accuracy when there are any, else the
    training sites' accuracy on their evaluation rows."""
    if "holdout_accuracy" in evaluation:
        return "holdout sites' rows", float(evaluation["holdout_accuracy"])
    if "accuracy" in evaluation:
        return "the sites' evaluation rows", float(evaluation["accuracy"])
    return "", None


def gates(spec: FederationSpec, evaluation: dict[str, Any], parent_version: int) -> list[dict[str, Any]]:
    """The metric floor (always recorded, so the promotion policy applies) and, when the run
    started from a production version, the challenger gate against it on the same sites."""
    where, accuracy = gate_metric(evaluation)
    if accuracy is None:
        missing = {"passed": False, "value": 0.0, "detail": "no site evaluated the global model"}
        return [{"name": "min_metric", "threshold": spec.gates.min_metric, **missing}]
    floor = spec.gates.min_metric
    results = [
        {
            "name": "min_metric",
            "passed": accuracy >= floor,
            "value": accuracy,
            "threshold": floor,
            "detail": f"accuracy {accuracy:.4f} on {where} {'meets' if accuracy >= floor else 'misses'} "
            f"the floor {floor:.4f} by {abs(accuracy - floor):.4f}",
        }
    ]
    parent = evaluation.get("parent") or {}
    if parent_version and parent.get("sites"):
        shared = sorted(set(parent["sites"]) & set(evaluation.get("sites", {})))
        if shared:
            ours = _weighted(evaluation["sites"], shared)
            theirs = _weighted(parent["sites"], shared)
            change = ours - theirs
            allowed = spec.gates.max_regression
            results.append(
                {
                    "name": "challenger",
                    "passed": change >= -allowed,
                    "value": change,
                    "threshold": -allowed,
                    "detail": f"accuracy {ours:.4f} vs production v{parent_version} {theirs:.4f} on the rows of "
                    f"{', '.join(shared)}: {abs(change):.4f} {'better' if change >= 0 else 'worse'}; "
                    f"may be at most {allowed:.4f} worse",
                }
            )
    return results


def _weighted(sites: dict[str, dict[str, Any]], names: list[str]) -> float:
    rows = sum(int(sites[n]["rows"]) for n in names)
    return sum(float(sites[n]["accuracy"]) * int(sites[n]["rows"]) for n in names) / rows if rows else 0.0


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def platform_spec(spec: FederationSpec) -> dict[str, Any]:
    """The platform's ``ModelSpec`` (proto3 JSON) for this federation."""
    estimator: dict[str, Any] = {
        "learning_rate": spec.model.learning_rate,
        "l2": spec.model.l2,
        "batch_size": spec.model.batch_size,
        "local_epochs": spec.model.local_epochs,
    }
    if spec.model.family == "mlp":
        estimator["hidden_layers"] = list(spec.model.hidden_layers)
    return {
        "model_name": spec.model_name,
        "dataset": spec.dataset_name,
        "features": list(spec.features),
        "target": spec.target,
        "task": "TASK_CLASSIFICATION",
        "estimators": [{"family": spec.model.family, "params_json": json.dumps(estimator, sort_keys=True)}],
        "metric": "accuracy",
        "gates": {"min_metric": spec.gates.min_metric, "max_regression": spec.gates.max_regression},
        "seed": spec.seed,
        "holdout_fraction": spec.eval_fraction,
        "training": TRAINING_FEDERATED,
    }


def version_metadata(
    *,
    spec: FederationSpec,
    status: RunStatus,
    data: bytes,
    classes: list[str],
    parent_version: int,
    trigger: Trigger,
    code_version: str,
    run_id: int,
) -> dict[str, Any]:
    """The registry's ``VersionMetadata`` (proto3 JSON) for the global model ``data`` holds."""
    evaluation = status.evaluation
    contributed = sorted({name for r in status.rounds if r.applied for name in r.aggregated})
    rows = {s.name: s.train_rows for s in status.sites.values() if s.name in contributed}
    applied = sum(1 for r in status.rounds if r.applied)
    checked = gates(spec, evaluation, parent_version)
    _, accuracy = gate_metric(evaluation)
    metrics: dict[str, float] = {"federation.rounds_applied": float(applied)}
    if accuracy is not None:
        metrics["accuracy"] = accuracy
    if "loss" in evaluation:
        metrics["loss"] = float(evaluation["loss"])
    if "holdout_accuracy" in evaluation and "accuracy" in evaluation:
        metrics["sites.accuracy"] = float(evaluation["accuracy"])
    for name, site in evaluation.get("sites", {}).items():
        metrics[f"site.{name}.accuracy"] = float(site["accuracy"])
    params = {
        "family": spec.model.family,
        "metric": "accuracy",
        "seed": str(spec.seed),
        "features": json.dumps(list(spec.features)),
        "training": "federated",
        "federation.strategy": spec.strategy.name,
        "federation.proximal_mu": f"{spec.strategy.proximal_mu:g}"
        if spec.strategy.name == "fedprox"
        else "0",
        "federation.rounds": str(spec.strategy.rounds),
        "federation.rounds_applied": str(applied),
        "federation.min_sites": str(spec.strategy.min_sites),
        "federation.sites": json.dumps(contributed),
        "federation.site_train_rows": json.dumps(rows, sort_keys=True),
        "federation.weighting": spec.weighting,
        "federation.secure_aggregation": "secagg+" if spec.secure_aggregation.enabled else "off",
        "federation.flower_run_id": str(run_id),
        "estimator.local_epochs": str(spec.model.local_epochs),
        "estimator.learning_rate": f"{spec.model.learning_rate:g}",
        "estimator.l2": f"{spec.model.l2:g}",
        "estimator.batch_size": str(spec.model.batch_size),
    }
    if spec.model.family == "mlp":
        params["estimator.hidden_layers"] = json.dumps(list(spec.model.hidden_layers))
    if spec.privacy.enabled:
        params.update(
            {
                "privacy.mechanism": "gaussian noise on the average of site updates clipped at the sites",
                "privacy.unit": "site",
                "privacy.noise_multiplier": f"{spec.privacy.noise_multiplier:g}",
                "privacy.clipping_norm": f"{spec.privacy.clipping_norm:g}",
                "privacy.epsilon": f"{status.epsilon:.6g}",
                "privacy.delta": f"{spec.privacy.delta:g}",
                "privacy.accountant": ACCOUNTANT,
            }
        )
        if math.isfinite(status.epsilon):
            metrics["privacy.epsilon"] = status.epsilon
        metrics["privacy.delta"] = spec.privacy.delta
    else:
        params["privacy.mechanism"] = "none"
    privacy_text = (
        f"({status.epsilon:.2f}, {spec.privacy.delta:g})-differential privacy at the level of sites"
        if spec.privacy.enabled
        else "no differential privacy"
    )
    return {
        "model_name": spec.model_name,
        "artifact": {"sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data), "format": "skops"},
        "metrics": metrics,
        "params": params,
        "signature": {
            "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, len(spec.features)]}],
            "outputs": [
                {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(classes)]},
                {"name": "label", "datatype": "BYTES", "shape": [-1]},
            ],
            "feature_names": list(spec.features),
            "classes": classes,
            "task": "TASK_CLASSIFICATION",
        },
        "lineage": {
            "data": {"window": {"dataset": spec.dataset_name}, "row_count": sum(rows.values())},
            "code_version": code_version,
            "package_versions": package_versions(),
            "parent_version": parent_version,
            "train_request_id": trigger.request_id,
            "trigger": trigger.kind,
            "drift_event_id": trigger.drift_event_id,
        },
        "gates": checked,
        "gates_passed": all(g["passed"] for g in checked),
        "tags": {"training": "federated", "flavor": "sklearn", "family": spec.model.family},
        "card": {
            "description": (
                f"{spec.model.family} trained by {spec.strategy.name} over {len(contributed)} sites "
                f"({', '.join(contributed)}) in {applied} rounds, "
                f"{'under SecAgg+' if spec.secure_aggregation.enabled else 'without secure aggregation'}, "
                f"with {privacy_text}; accuracy "
                + (f"{accuracy:.4f}" if accuracy is not None else "unknown")
                + " on the sites' own evaluation rows."
            ),
            "intended_use": "Predictions on rows shaped like the sites' data, served by the platform.",
            "limitations": (
                "No row left the sites: the platform never saw the training data, so the version has no "
                "reference profile (no data-drift detection on its inputs) and only the accuracy gates "
                "the sites can compute. Row counts and evaluation metrics the sites report are not "
                "covered by the privacy budget."
            ),
        },
        "spec": platform_spec(spec),
    }
