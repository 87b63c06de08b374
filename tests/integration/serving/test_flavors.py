"""Models made outside the platform, one per flavor, registered with the CLI as a team would
(``mlops models create-version`` inferring the signature from the artifact and an input
example), promoted with ``mlops models set-alias NAME production 1``, and asked by
tritonclient (from its own environment, as a real client): the answers are the library's
own, in process (1e-6; 1e-4 where the graph computes in float32), and boosters'
contributions add up to their margin while ONNX graphs refuse explanations by name."""

from __future__ import annotations

import dataclasses
import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import onnxruntime
import xgboost
from skl2onnx import to_onnx
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from services.common.auth import Scope
from services.common.flavors import flavor, flavor_of
from services.common.proto.mlops.v1 import events_pb2, model_pb2, registry_pb2
from services.monitor.app import MonitorApp
from services.monitor.settings import MonitorSettings
from services.trainer.profiles import reference_profile
from services.trainer.tabular import Feature, FeatureKind, Table
from tests.conftest import Infra
from tests.helpers.apps import app_settings, started
from tests.helpers.cli import Cli
from tests.helpers.kafka import TopicReader
from tests.integration.serving.conftest import N_FEATURES, ROOT, Stack, features_request, require_client

SCRIPT = ROOT / "tests" / "clients" / "triton_flavors.py"
FIXTURES = ROOT / "tests" / "fixtures"
NAMES = tuple(f"f{i}" for i in range(N_FEATURES))


@dataclass(frozen=True)
class Outside:
    """A model as its team hands it over: the artifact, and what the library answers in process."""

    flavor: str
    artifact: bytes
    rows: np.ndarray
    probabilities: np.ndarray
    tolerance: float
    margin: np.ndarray | None = None
    """The raw score contributions must add up to (boosters); None where explanations are refused."""


def made_outside() -> dict[str, Outside]:
    X, y = make_classification(
        n_samples=500, n_features=N_FEATURES, n_informative=3, n_redundant=0, random_state=7
    )
    rows = np.random.default_rng(8).normal(size=(16, N_FEATURES))
    booster = xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(X, y)
    gbm = lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(X, y)
    graph = to_onnx(make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y), X[:1].astype(np.float32))
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    zipped = session.run(["output_probability"], {"X": rows.astype(np.float32)})[0]
    torch_expected = json.loads((FIXTURES / "torch_classifier.expected.json").read_text())
    return {
        "xgboost": Outside(
            "xgboost",
            flavor_of(booster).save(booster).data,
            rows,
            np.asarray(booster.predict_proba(rows)),
            1e-6,
            np.asarray(booster.predict(rows, output_margin=True)),
        ),
        "lightgbm": Outside(
            "lightgbm",
            flavor_of(gbm).save(gbm).data,
            rows,
            np.asarray(gbm.predict_proba(rows)),
            1e-6,
            np.asarray(gbm.predict(rows, raw_score=True)),
        ),
        # onnxruntime in process is the library here; the graph computes in float32.
        "onnx-skl2onnx": Outside(
            "onnx", graph.SerializeToString(), rows, np.array([[p[0], p[1]] for p in zipped]), 1e-6
        ),
        "onnx-torch": Outside(
            "onnx",
            (FIXTURES / "torch_classifier.onnx").read_bytes(),
            np.array(torch_expected["rows"]),
            np.array(torch_expected["probabilities"]),
            1e-4,
        ),
    }


def signature_of(outside: Outside) -> model_pb2.Signature:
    """What the artifact says of itself, completed with the names a team would give."""
    inferred = flavor(outside.flavor).infer_signature(outside.artifact)
    completed = dataclasses.replace(
        inferred,
        task=inferred.task or model_pb2.TASK_CLASSIFICATION,
        feature_names=NAMES,
        classes=inferred.classes or ("0", "1"),
    )
    return completed.to_proto()


async def register_and_promote(stack: Stack, name: str, outside: Outside, workdir: Path) -> dict[str, Any]:
    """``outside`` registered and promoted with the CLI; what ``create-version --json`` said."""
    cli = Cli(f"127.0.0.1:{stack.registry.grpc_port}", stack.infra.token(Scope.ADMIN), workdir)
    artifact = workdir / f"{name}.model"
    artifact.write_bytes(outside.artifact)
    example = workdir / f"{name}.csv"
    example.write_text(
        ",".join(NAMES) + "\n" + "\n".join(",".join(map(str, row)) for row in outside.rows[:3])
    )
    await cli.json("register", name)
    declared = (
        [] if flavor(outside.flavor).infer_signature(outside.artifact).task else ["--task", "classification"]
    )
    made = await cli.json(
        "create-version",
        name,
        str(artifact),
        "--format",
        outside.flavor,
        "--input-example",
        str(example),
        *declared,
    )
    assert "aliases" not in made, "no gates: nothing promotes it but the alias set below"
    promoted = await cli.json("set-alias", name, "production", str(made["version"]))
    assert promoted["aliases"] == {"production": made["version"]}
    return dict(made)


async def test_tritonclient_gets_each_flavors_own_answers(stack: Stack, tmp_path: Path) -> None:
    require_client()
    models = made_outside()
    names = {key: f"{key}-{uuid.uuid4().hex[:8]}" for key in models}
    for key, outside in models.items():
        made = await register_and_promote(stack, names[key], outside, tmp_path)
        inference = made["signature_inference"]
        assert made["signature"]["feature_names"] == list(NAMES), "named by the input example's header"
        assert inference["example_rows_answered"] == 3
        if key in ("xgboost", "lightgbm", "onnx-torch"):
            # Boosters and torch graphs know their classes by position only, and the CLI says so.
            assert any(line.startswith("class names:") for line in inference["not_inferred"]), inference
    for key in models:
        await stack.served(names[key], production=1)

    case = tmp_path / "case.json"
    case.write_text(
        json.dumps([{"model": names[k], "rows": m.rows.tolist(), "explain": True} for k, m in models.items()])
    )
    _, lines = await stack.run_client(SCRIPT, case)
    answers = {line["model"]: line for line in lines}

    for key, outside in models.items():
        answer = answers[names[key]]
        assert "error" not in answer, answer
        assert answer["version"] == "1" and answer["platform"] == flavor(outside.flavor).platform
        np.testing.assert_allclose(answer["probabilities"], outside.probabilities, atol=outside.tolerance)
        assert answer["labels"] == [str(i) for i in np.argmax(answer["probabilities"], axis=1)]
        if outside.margin is not None:
            total = np.sum(answer["contributions"], axis=1) + np.array(answer["contributions_base"])
            np.testing.assert_allclose(total, outside.margin, atol=1e-5)
        else:
            refused = answer["explain_error"]
            assert refused["status"] == "StatusCode.INVALID_ARGUMENT"
            assert "onnx graphs are not explained" in refused["message"]


async def test_the_monitor_detects_drift_on_a_booster_served_by_the_platform(
    stack: Stack, infra: Infra
) -> None:
    """Predictions to drift, through the real services: an XGBoost model registered with the
    profile of its training data, live rows shifted on one feature, a drift event for it."""
    rng = np.random.default_rng(11)
    X = rng.normal(size=(2000, N_FEATURES))
    y = (X[:, 0] + X[:, 2] > 0).astype(int)
    booster = xgboost.XGBClassifier(n_estimators=10, max_depth=3).fit(X, y)
    outside = Outside(
        "xgboost", flavor_of(booster).save(booster).data, X[:1], booster.predict_proba(X[:1]), 1e-6
    )
    name = f"drift-xgb-{uuid.uuid4().hex[:8]}"
    await stack.admin.create_model(name)
    described = registry_pb2.VersionMetadata(
        model_name=name, artifact=registry_pb2.Artifact(format="xgboost"), signature=signature_of(outside)
    )
    features = tuple(Feature(n, FeatureKind.NUMERIC) for n in NAMES)
    described.reference_profile.CopyFrom(
        reference_profile(Table(features, X, y, tuple(str(i) for i in range(len(X)))), seed=1)
    )
    await stack.admin.create_version(described, outside.artifact)
    await stack.admin.set_alias(name, "production", 1)
    await stack.served(name, production=1)

    settings = app_settings(
        MonitorSettings,
        infra,
        stack.topics.prefix,
        registry_address=f"127.0.0.1:{stack.registry.grpc_port}",
        commit_interval_seconds=0.2,
    )
    async with (
        started(MonitorApp(settings)),
        TopicReader(infra.kafka_bootstrap, stack.topics.drift, events_pb2.DriftEvent) as drift,
    ):
        live = rng.normal(size=(600, N_FEATURES))
        live[:, 1] += 1.5  # the second feature moves 1.5 sd away from what the model was trained on
        for start in range(0, len(live), 20):
            await stack.infer(features_request(name, live[start : start + 20], request_id=f"{name}-{start}"))
        found = await drift.wait_for(
            lambda d: d.model_name == name and d.kind == events_pb2.DRIFT_KIND_DATA, count=1, within=90
        )
        assert {d.feature for d in found} == {"f1"}
