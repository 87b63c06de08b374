"""Where a run starts: the production version when it is a model of the spec's shape."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from services.federation import runtime
from services.federation.protocol import architecture
from services.federation.service import FederationError, FederationService
from services.federation.settings import FederationSettings
from services.federation.spec import FederationSpec

SPEC = FederationSpec.parse({"model_name": "m", "features": ["a", "b"], "target": "y", "classes": ["0", "1"]})


class Registry:
    """The two answers the starting point needs, as the registry's REST API gives them."""

    def __init__(self, artifact: bytes | None, artifact_format: str = "skops"):
        self.artifact = artifact
        self.format = artifact_format

    def production(self, model: str) -> dict[str, Any] | None:
        if self.artifact is None:
            return None
        sha = hashlib.sha256(self.artifact).hexdigest()
        return {"version": 3, "artifact": {"sha256": sha, "format": self.format}}

    def download(self, model: str, version: dict[str, Any]) -> bytes:
        assert self.artifact is not None
        return self.artifact


def service(registry: Registry, tmp_path: Path) -> FederationService:
    settings = FederationSettings(token="t", insecure=True, workdir=tmp_path)
    return FederationService(settings, SPEC, runtime.Flower(tmp_path), registry)  # type: ignore[arg-type]


def test_no_production_version_starts_fresh(tmp_path: Path) -> None:
    assert service(Registry(None), tmp_path).starting_point()[:2] == (0, None)


def test_a_production_model_of_the_specs_shape_is_the_start(tmp_path: Path) -> None:
    parameters = [np.array([[0.5, -2.0]]), np.array([0.25])]
    artifact = sio.dumps(architecture(SPEC).estimator(parameters))
    version, start, note = service(Registry(artifact), tmp_path).starting_point()
    assert version == 3 and note == "starting from production v3"
    assert start is not None and all(np.array_equal(a, b) for a, b in zip(start, parameters, strict=True))


def test_a_production_model_of_another_kind_is_replaced_from_scratch(tmp_path: Path) -> None:
    X, y = np.random.default_rng(0).normal(size=(20, 2)), np.array(["0", "1"] * 10)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    version, start, note = service(Registry(sio.dumps(pipeline)), tmp_path).starting_point()
    assert (version, start) == (3, None) and "starting fresh" in note
    version, start, note = service(Registry(b"a pickle", "river-hmac"), tmp_path).starting_point()
    assert (version, start) == (3, None) and "river-hmac" in note


def test_an_artifact_with_untrusted_types_or_not_skops_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FederationError, match="not a skops file"):
        service(Registry(b"not a zip"), tmp_path).starting_point()
    untrusted = sio.dumps({"model": Path("/etc")})
    with pytest.raises(FederationError, match="outside the trusted list"):
        service(Registry(untrusted), tmp_path).starting_point()
