"""The drift status a caller sees: its teams' models only, the registry asked once a while."""

from __future__ import annotations

from services.common.auth import Principal, Scope
from services.common.errors import NotFound, Unavailable
from services.common.proto.mlops.v1 import registry_pb2
from services.monitor.teams import ModelTeams


class Registry:
    def __init__(self, teams: dict[str, str]):
        self.teams = teams
        self.asked: list[str] = []
        self.away = False

    async def get_model(self, name: str) -> registry_pb2.Model:
        self.asked.append(name)
        if self.away:
            raise Unavailable("the registry is away")
        if name not in self.teams:
            raise NotFound(f"model {name!r} not found", field="name")
        return registry_pb2.Model(name=name, team=self.teams[name])


ENTRIES = [{"model": "churn"}, {"model": "fraud"}, {"model": "gone"}]


async def test_a_caller_sees_the_models_it_may_read_and_admins_see_all() -> None:
    registry = Registry({"churn": "alpha", "fraud": "beta"})
    now = [0.0]
    teams = ModelTeams(registry, ttl_seconds=60, clock=lambda: now[0])
    alpha = Principal.of("ann", [Scope.READ], teams=["alpha"])
    assert await teams.visible(ENTRIES, alpha) == [{"model": "churn", "team": "alpha"}]
    predict_only = Principal.of("app", [Scope.PREDICT], teams=["alpha", "beta"])
    assert await teams.visible(ENTRIES, predict_only) == []
    admin = Principal.of("root", [Scope.ADMIN])
    assert [e["team"] for e in await teams.visible(ENTRIES, admin)] == ["alpha", "beta", None]
    assert registry.asked.count("churn") == 1, "answers are remembered"

    registry.away, now[0] = True, 61.0
    assert await teams.visible(ENTRIES, alpha) == [{"model": "churn", "team": "alpha"}], "kept while away"
    asked = len(registry.asked)
    await teams.visible(ENTRIES, alpha)
    assert len(registry.asked) == asked, "a registry away is not asked again at once"
