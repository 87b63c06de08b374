"""Models: creating and updating them (name, team, description, tags, promotion policy), and
finding them (a caller finds only the models of its teams)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.common.auth import Scope
from services.common.proto.mlops.v1 import events_pb2, registry_pb2
from services.registry import access, lifecycle, validation
from services.registry.changes import Actor, Change, UseCases, policy_name, resource
from services.registry.errors import AlreadyExists, InvalidArgument, NotFound, PermissionDenied
from services.registry.store import Page
from services.registry.store.models import ModelFilter, ModelRepository

Model = registry_pb2.Model


def _check_policy(policy: int) -> None:
    if policy not in registry_pb2.PromotionPolicy.values():
        raise InvalidArgument("promotion_policy: unknown policy", field="promotion_policy")


class ModelUseCases(UseCases):
    async def create_model(
        self,
        actor: Actor,
        name: str,
        description: str = "",
        tags: Mapping[str, str] | None = None,
        policy: registry_pb2.PromotionPolicy.ValueType = registry_pb2.PROMOTION_POLICY_AUTO,
        team: str = "",
    ) -> Model:
        tags = dict(tags or {})
        target = resource("models", name)
        team = team or actor.principal.home_team()

        def check() -> None:
            validation.model_name(name, "name")
            access.team(team)
            validation.text(description, "description")
            validation.tags(tags)
            _check_policy(policy)
            if not actor.principal.may(Scope.WRITE, team):
                raise PermissionDenied(f"{actor.subject!r} may not create models in team {team!r}")

        await self._validated(actor, "CreateModel", target, check)

        async def work(change: Change) -> Model:
            change.team = team
            if await change.tx.teams.get(team) is None:
                raise NotFound(f"team {team!r} not found: create it first", field="team")
            if await change.tx.models.exists(name):
                # Names are global (serving and the topics key by them): this says the name is
                # taken, never by which team.
                raise AlreadyExists(f"model {name!r} already exists")
            model = await change.tx.models.create(
                name,
                team=team,
                description=description,
                tags=tags,
                policy=lifecycle.effective_policy(policy),
                created_by=actor.subject,
                now=change.now,
            )
            await change.audit(
                target,
                None,
                {
                    "team": team,
                    "description": description,
                    "tags": tags,
                    "promotion_policy": policy_name(model.promotion_policy),
                },
            )
            await change.emit(events_pb2.MODEL_EVENT_TYPE_MODEL_CREATED, name)
            return model

        return await self._change(actor, "CreateModel", target, work)

    async def update_model(
        self,
        actor: Actor,
        name: str,
        *,
        description: str | None = None,
        set_tags: Mapping[str, str] | None = None,
        remove_tags: Sequence[str] = (),
        policy: registry_pb2.PromotionPolicy.ValueType = registry_pb2.PROMOTION_POLICY_UNSPECIFIED,
    ) -> Model:
        set_tags = dict(set_tags or {})
        target = resource("models", name)

        def check() -> None:
            validation.model_name(name, "name")
            if description is not None:
                validation.text(description, "description")
            validation.tags(set_tags, "set_tags")
            for i, key in enumerate(remove_tags):
                validation.key(key, f"remove_tags[{i}]")
            _check_policy(policy)

        await self._validated(actor, "UpdateModel", target, check)

        async def work(change: Change) -> Model:
            model = await change.model(name)
            before = {
                "description": model.description,
                "tags": dict(sorted(model.tags.items())),
                "promotion_policy": policy_name(model.promotion_policy),
            }
            tags = dict(model.tags)
            tags.update(set_tags)
            for key in remove_tags:
                tags.pop(key, None)
            if len(tags) > validation.MAX_TAGS:
                raise InvalidArgument(
                    f"set_tags: a model has at most {validation.MAX_TAGS} tags", field="set_tags"
                )
            model.tags.clear()
            model.tags.update(tags)
            if description is not None:
                model.description = description
            if policy:
                model.promotion_policy = policy
            await change.tx.models.update(
                name, description=model.description, tags=tags, policy=model.promotion_policy
            )
            after = {
                "description": model.description,
                "tags": dict(sorted(tags.items())),
                "promotion_policy": policy_name(model.promotion_policy),
            }
            await change.audit(target, before, after)
            await change.emit(events_pb2.MODEL_EVENT_TYPE_MODEL_UPDATED, name)
            return model

        return await self._change(actor, "UpdateModel", target, work)

    async def get_model(self, actor: Actor, name: str) -> Model:
        validation.model_name(name, "name")
        return await self._model(actor, name)

    async def list_models(
        self,
        actor: Actor,
        *,
        alias: str = "",
        name_contains: str = "",
        tags: Mapping[str, str] | None = None,
        team: str = "",
        page_size: int = 0,
        page_token: str = "",
    ) -> Page[Model]:
        """Models of the caller's teams (of ``team`` only, when given)."""
        if alias:
            validation.alias(alias)
        if name_contains:
            validation.text(name_contains, "name_contains", 128)
        if team:
            access.team(team)
        tags = dict(tags or {})
        validation.tags(tags, "tags")
        request = self._page(ModelRepository.BY_NAME, page_size, page_token)
        where = ModelFilter(alias, name_contains, tags, team, actor.visible_teams())
        return await self._store.models.page(where, request)
