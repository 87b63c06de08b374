"""The manager keeps the served set equal to the registry's aliases and swaps atomically.

The registry here is an in-memory one holding real skops artifacts; the integration
tests run the same flows against the real registry service.
"""

from __future__ import annotations

import asyncio
import doctest
import random

import numpy as np
import pytest

from services.common.auth import Principal, Scope
from services.common.errors import NotFound
from services.common.proto.mlops.v1 import registry_pb2
from services.serving import models
from services.serving.errors import Forbidden, InvalidInput, ModelNotFound, ModelUnavailable
from services.serving.models import ModelManager, ModelState
from services.serving.routing import ModelPolicy, Rollout
from tests.unit.serving.conftest import Fitted


class MemoryRegistry:
    """Models, aliases and artifacts in memory, answering as the registry client does."""

    def __init__(self) -> None:
        self.models: dict[str, registry_pb2.Model] = {}
        self.versions: dict[tuple[str, int], tuple[registry_pb2.ModelVersion, bytes]] = {}
        self.downloads: list[tuple[str, int]] = []
        self.history: dict[str, list[registry_pb2.AliasChange]] = {}

    def add(self, name: str, number: int, fitted: Fitted, tags: dict[str, str] | None = None) -> None:
        self.models.setdefault(name, registry_pb2.Model(name=name))
        self.versions[(name, number)] = fitted.version(name, number, tags)

    def alias(self, name: str, alias: str, number: int | None) -> None:
        previous = self.models[name].aliases.get(alias, 0)
        if number is None:
            del self.models[name].aliases[alias]
        else:
            self.models[name].aliases[alias] = number
        change = registry_pb2.AliasChange(alias=alias, version=number or 0, previous_version=previous)
        self.history.setdefault(name, []).insert(0, change)

    async def get_model(self, name: str) -> registry_pb2.Model:
        if name not in self.models:
            raise NotFound(f"model {name!r} not found")
        return registry_pb2.Model().FromString(self.models[name].SerializeToString())

    async def list_models(self, alias: str = "") -> list[registry_pb2.Model]:
        return [m for m in self.models.values() if not alias or alias in m.aliases]

    async def download_artifact(
        self, name: str, version: int = 0, alias: str = ""
    ) -> tuple[registry_pb2.ModelVersion, bytes]:
        self.downloads.append((name, version))
        return self.versions[(name, version)]

    async def alias_history(
        self, name: str, alias: str = "", limit: int = 100
    ) -> list[registry_pb2.AliasChange]:
        return [c for c in self.history.get(name, []) if not alias or c.alias == alias][:limit]


@pytest.fixture
def registry(classifier: Fitted, other_classifier: Fitted) -> MemoryRegistry:
    registry = MemoryRegistry()
    registry.add("iris", 1, classifier)
    registry.add("iris", 2, other_classifier)
    registry.alias("iris", "production", 1)
    return registry


def answer(manager: ModelManager, X: np.ndarray) -> tuple[int, np.ndarray]:
    chosen = manager.route("iris")
    return chosen.target.number, chosen.target.predictor.predict(X)["probabilities"]


async def test_models_with_a_production_alias_are_loaded_and_routed(
    registry: MemoryRegistry, classifier: Fitted
) -> None:
    registry.add("unserved", 1, classifier)
    manager = ModelManager(registry)
    await manager.sync_all()
    assert set(manager.models) == {"iris"}
    number, probabilities = answer(manager, classifier.X[:3])
    assert number == 1
    np.testing.assert_allclose(probabilities, classifier.estimator.predict_proba(classifier.X[:3]))
    with pytest.raises(ModelNotFound, match="model 'unserved' is not served"):
        manager.route("unserved")


async def test_a_promotion_swaps_while_a_request_holding_the_old_version_finishes_on_it(
    registry: MemoryRegistry, classifier: Fitted, other_classifier: Fitted
) -> None:
    manager = ModelManager(registry)
    await manager.sync_all()
    in_flight = manager.route("iris")
    registry.alias("iris", "production", 2)
    await manager.sync("iris")
    assert manager.route("iris").target.number == 2
    # The request that resolved before the swap still has version 1, intact.
    assert in_flight.target.number == 1
    np.testing.assert_allclose(
        in_flight.target.predictor.predict(classifier.X[:2])["probabilities"],
        classifier.estimator.predict_proba(classifier.X[:2]),
    )
    np.testing.assert_allclose(
        answer(manager, classifier.X[:2])[1], other_classifier.estimator.predict_proba(classifier.X[:2])
    )


async def test_a_rollback_to_a_recent_version_needs_no_download(registry: MemoryRegistry) -> None:
    manager = ModelManager(registry, retained_versions=1)
    await manager.sync_all()
    registry.alias("iris", "production", 2)
    await manager.sync("iris")
    registry.alias("iris", "production", 1)
    await manager.sync("iris")
    assert manager.route("iris").target.number == 1
    assert registry.downloads == [("iris", 1), ("iris", 2)]


async def test_a_tampered_artifact_is_refused_and_the_current_version_keeps_serving(
    registry: MemoryRegistry, classifier: Fitted
) -> None:
    version, data = classifier.version("iris", 3)
    registry.versions[("iris", 3)] = (version, data[:-1] + bytes([data[-1] ^ 1]))
    manager = ModelManager(registry)
    await manager.sync_all()
    registry.alias("iris", "production", 3)
    await manager.sync("iris")
    model = manager.models["iris"]
    assert model.state is ModelState.READY and manager.route("iris").target.number == 1
    assert "version 3 (production) cannot be served: artifact digest mismatch" in model.reason


async def test_a_model_whose_only_version_cannot_load_is_unavailable(classifier: Fitted) -> None:
    registry = MemoryRegistry()
    registry.add("iris", 1, classifier)
    version, data = registry.versions[("iris", 1)]
    version.artifact.format = "pmml"
    registry.alias("iris", "production", 1)
    manager = ModelManager(registry)
    await manager.sync_all()
    with pytest.raises(
        ModelUnavailable,
        match="model 'iris' is unavailable: .*unknown artifact format 'pmml'; the flavors are skops, river-hmac",
    ):
        manager.route("iris")


async def test_after_a_restart_a_production_version_that_cannot_load_falls_back_to_the_one_before(
    registry: MemoryRegistry, other_classifier: Fitted
) -> None:
    # Version 3 passed the registry's checks, but its signature names classes the model lacks.
    version, data = other_classifier.version("iris", 3)
    del version.signature.classes[:]
    version.signature.classes.extend(["setosa", "versicolor", "virginica"])
    registry.versions[("iris", 3)] = (version, data)
    registry.alias("iris", "production", 2)
    registry.alias("iris", "production", 3)

    restarted = ModelManager(registry)
    await restarted.sync_all()
    model = restarted.models["iris"]
    assert model.state is ModelState.READY and model.fallback_from == 3
    assert restarted.route("iris").target.number == 2
    assert "version 3 (production) cannot be served: signature classes" in model.reason
    assert "serving version 2, production before it" in model.reason

    # Production moving to a version that loads ends the fallback.
    registry.alias("iris", "production", 1)
    await restarted.sync("iris")
    assert restarted.models["iris"].fallback_from == 0 and restarted.route("iris").target.number == 1


async def test_without_an_earlier_production_version_that_loads_the_model_is_unavailable(
    classifier: Fitted,
) -> None:
    registry = MemoryRegistry()
    registry.add("iris", 1, classifier)
    version, _ = registry.versions[("iris", 1)]
    version.signature.classes.append("extra")
    registry.alias("iris", "production", 1)
    manager = ModelManager(registry)
    await manager.sync_all()
    assert (
        manager.models["iris"].state is ModelState.UNAVAILABLE and manager.models["iris"].fallback_from == 0
    )


async def test_models_disappear_when_their_production_alias_or_the_model_goes(
    registry: MemoryRegistry,
) -> None:
    manager = ModelManager(registry)
    await manager.sync_all()
    registry.alias("iris", "production", None)
    await manager.sync("iris")
    assert "iris" not in manager.models
    registry.alias("iris", "production", 1)
    await manager.sync("iris")
    assert "iris" in manager.models
    del registry.models["iris"]
    await manager.sync_all()
    assert "iris" not in manager.models


async def test_versions_and_aliases_can_be_pinned(registry: MemoryRegistry) -> None:
    registry.alias("iris", "candidate", 2)
    manager = ModelManager(registry)
    await manager.sync_all()
    assert manager.route("iris", version="2").target.number == 2
    assert manager.route("iris", version="2").route == "candidate"
    assert manager.route("iris", alias="candidate").target.number == 2
    with pytest.raises(
        ModelNotFound,
        match=r"version 7 of model 'iris' is not served; served: 1 \(production\), 2 \(candidate\)",
    ):
        manager.route("iris", version="7")
    with pytest.raises(ModelNotFound, match="alias 'staging' of model 'iris' is not served"):
        manager.route("iris", alias="staging")
    with pytest.raises(
        InvalidInput, match="model_version must be a positive decimal version number, got 'latest'"
    ):
        manager.route("iris", version="latest")
    with pytest.raises(InvalidInput, match="model_version 1 and alias 'candidate' disagree"):
        manager.route("iris", version="1", alias="candidate")


async def test_canary_and_shadow_follow_the_tags(registry: MemoryRegistry, other_classifier: Fitted) -> None:
    registry.add("iris", 3, other_classifier, tags={"rollout": "canary", "canary_share": "0.5"})
    registry.alias("iris", "candidate", 3)
    manager = ModelManager(registry, rng=random.Random(1))
    await manager.sync_all()
    routes = [manager.route("iris").route for _ in range(2_000)]
    assert 800 < routes.count("candidate") < 1_200
    assert {manager.route("iris", routing_key="k1").route for _ in range(50)} in (
        {"candidate"},
        {"production"},
    )

    registry.models["iris"].tags["rollout"] = "shadow"
    registry.versions[("iris", 3)][0].tags.pop("rollout")
    manager = ModelManager(registry)
    await manager.sync_all()
    route = manager.route("iris")
    assert route.target.number == 1 and route.shadow is not None and route.shadow.number == 3


async def test_without_a_rollout_the_candidate_only_answers_when_asked(registry: MemoryRegistry) -> None:
    registry.alias("iris", "candidate", 2)
    manager = ModelManager(registry, defaults=ModelPolicy(rollout=Rollout.NONE))
    await manager.sync_all()
    assert {manager.route("iris").target.number for _ in range(200)} == {1}


async def test_a_model_serves_only_callers_of_its_team(registry: MemoryRegistry) -> None:
    registry.models["iris"].team = "alpha"
    manager = ModelManager(registry)
    await manager.sync_all()
    alpha = Principal.of("app:a", [Scope.PREDICT], teams=["alpha"])
    assert manager.route("iris", caller=alpha).target.number == 1
    beta = Principal.of("app:b", [Scope.PREDICT], teams=["beta"])
    with pytest.raises(ModelNotFound, match="model 'iris' is not served"):  # as if it did not exist
        manager.route("iris", caller=beta)
    with pytest.raises(ModelNotFound):
        manager.version("iris", "1", beta)
    reader = Principal("app:c", {"alpha": frozenset({Scope.READ}), "beta": frozenset({Scope.PREDICT})})
    with pytest.raises(Forbidden, match="lacks scope 'predict' in team 'alpha'"):
        manager.route("iris", caller=reader)
    assert manager.models["iris"].team == "alpha"


def test_the_examples_in_the_docstrings_run() -> None:
    result = doctest.testmod(models)
    assert result.failed == 0 and result.attempted > 0


class SlowRegistry(MemoryRegistry):
    """Lists its models only once ``listed`` is set: a replica restarted while the
    registry is slow to answer."""

    def __init__(self) -> None:
        super().__init__()
        self.listed = asyncio.Event()

    async def list_models(self, alias: str = "") -> list[registry_pb2.Model]:
        await self.listed.wait()
        return await super().list_models(alias)


async def test_before_the_first_registry_read_every_model_is_unavailable_not_absent(
    classifier: Fitted,
) -> None:
    registry = SlowRegistry()
    registry.add("iris", 1, classifier)
    registry.alias("iris", "production", 1)
    manager = ModelManager(registry)
    first_read = asyncio.create_task(manager.sync_all())
    # NOT_FOUND would tell clients not to retry a model that is about to be served.
    for name in ("iris", "unserved"):
        with pytest.raises(ModelUnavailable, match=f"model '{name}' is not loaded yet"):
            manager.route(name)
    registry.listed.set()
    await first_read
    assert manager.route("iris").target.number == 1
    with pytest.raises(ModelNotFound, match="model 'unserved' is not served"):
        manager.route("unserved")
